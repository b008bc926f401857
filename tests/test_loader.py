"""smaug.data loader: round trip, eval exactly-once over ranks x workers, exact train resume,
mixing, corrupt samples and the error budget, decoding and augmentation details."""

import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from smaug.data import DataConfig, build_eval_loader, build_train_loader, load_tokenizer
from smaug.data.decode import decode_video, scaled_size, segment_indices

from conftest import NOT_A_VIDEO, assert_one_skip_line


@pytest.fixture(scope="module")
def tok(synthetic_shards):
    return load_tokenizer(synthetic_shards["tokenizer"])


def cfg_for(shards, **kw):
    base = dict(
        shards_root=shards["shards_root"],
        num_frames=4,
        image_size=48,
        batch_size=4,
        num_workers=0,
        shuffle_buffer=6,
        round_batches=3,
        max_text_len=16,
        error_window=20,
    )
    base.update(kw)
    return DataConfig(**base)


def csv_captions(corpus):
    with open(Path(corpus) / "results_2M_train.csv", newline="", encoding="utf-8") as f:
        return {r["videoid"]: r["name"] for r in csv.DictReader(f)}


def test_round_trip_every_caption_and_clip(synthetic_shards, tok):
    caps = csv_captions(synthetic_shards["corpus"])
    cfg = cfg_for(synthetic_shards, eval_shards=synthetic_shards["train"], num_workers=2, batch_size=5)
    got = {}
    for b in build_eval_loader(cfg, tok):
        B = len(b["key"])
        assert b["video"].shape == (B, 4, 3, 48, 48) and b["video"].dtype == torch.uint8
        assert b["input_ids"].dtype == torch.long and b["attention_mask"].dtype == torch.long
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[1] <= 16
        assert (b["input_ids"][:, 0] == tok.cls_token_id).all()
        assert b["is_image"].dtype == torch.bool and not b["is_image"].any()
        assert b["video"].float().std() > 5  # real pixels, not a blank tensor
        for k, c in zip(b["key"], b["caption"]):
            assert k not in got
            got[k] = c
    assert got == caps  # keys are the WebVid ids here
    ids = tok(caps[next(iter(caps))])["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def _eval_keys(cfg, tok, world):
    per_rank = []
    for rank in range(world):
        keys = [k for b in build_eval_loader(cfg, tok, rank=rank, world_size=world) for k in b["key"]]
        per_rank.append(keys)
    return per_rank


@pytest.mark.parametrize("split", ["train", "eval"])  # 5 shards (split by shard) / 3 shards (by sample)
def test_eval_every_key_once_over_2_ranks_x_2_workers(synthetic_shards, tok, split):
    man = json.loads((Path(synthetic_shards[split]) / "manifest.json").read_text())
    cfg = cfg_for(synthetic_shards, eval_shards=synthetic_shards[split], num_workers=2, batch_size=3)
    per_rank = _eval_keys(cfg, tok, 2)
    allkeys = [k for r in per_rank for k in r]
    assert len(allkeys) == len(set(allkeys)) == man["num_samples"]
    assert all(per_rank)  # both ranks get work


def test_eval_batches_carry_all_reference_captions(synthetic_shards, tok):
    entries = json.loads((Path(synthetic_shards["corpus"]) / "eval.json").read_text())
    want = sorted(e["caption"] for e in entries)
    cfg = cfg_for(synthetic_shards, eval_shards="corpus:synthetic_test", batch_size=4)
    got = sorted(c for b in build_eval_loader(cfg, tok) for c in b["captions"])
    assert got == want
    b = next(iter(build_eval_loader(cfg, tok)))
    assert b["caption"] == [c[0] for c in b["captions"]]


def _digest(batch):
    return hashlib.sha1(batch["video"].numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("workers,first", [(2, 5), (0, 4)])
def test_train_resume_gives_the_same_samples(synthetic_shards, tok, workers, first):
    cfg = cfg_for(synthetic_shards, train_shards=synthetic_shards["train"], num_workers=workers)
    loader = build_train_loader(cfg, tok, rank=0, world_size=1, seed=7)
    it = iter(loader)  # one uninterrupted pass
    head = [next(it) for _ in range(first)]
    assert all(b["__meta__"]["worker"] == i % max(1, workers) for i, b in enumerate(head))
    state = json.loads(json.dumps(loader.state_dict()))  # must survive JSON
    cont = [(b["key"], _digest(b)) for b in (next(it) for _ in range(6))]  # crosses a round boundary
    del it
    resumed = build_train_loader(cfg, tok, rank=0, world_size=1, seed=7, state=state)
    again = [(b["key"], _digest(b)) for _, b in zip(range(6), resumed)]
    assert again == cont
    rerun = [(b["key"], _digest(b)) for _, b in zip(range(6), loader)]  # a new iter() continues too
    assert rerun[0] != cont[0] or rerun[1] != cont[1]
    fresh = build_train_loader(cfg, tok, rank=0, world_size=1, seed=7)
    assert [b["key"] for _, b in zip(range(first), fresh)] == [b["key"] for b in head]
    other = build_train_loader(cfg, tok, rank=1, world_size=2, seed=7)
    assert [b["key"] for _, b in zip(range(first), other)] != [b["key"] for b in head]


def test_train_state_rejects_other_setup(synthetic_shards, tok):
    cfg = cfg_for(synthetic_shards, train_shards=synthetic_shards["train"])
    loader = build_train_loader(cfg, tok, seed=1)
    next(iter(loader))
    with pytest.raises(ValueError, match="exact resume"):
        build_train_loader(
            cfg_for(synthetic_shards, train_shards=synthetic_shards["train"], batch_size=2),
            tok,
            seed=1,
            state=loader.state_dict(),
        )


def test_epoch_length_from_manifest_and_endless_stream(synthetic_shards, tok):
    cfg = cfg_for(synthetic_shards, train_shards=synthetic_shards["train"], batch_size=4)
    loader = build_train_loader(cfg, tok, rank=0, world_size=2)
    n = json.loads((Path(synthetic_shards["train"]) / "manifest.json").read_text())["num_samples"]
    assert loader.num_samples == n and loader.steps_per_epoch == -(-n // 8)
    seen = Counter(k for _, b in zip(range(3 * loader.steps_per_epoch), loader) for k in b["key"])
    assert len(seen) > 0.8 * n  # keeps going past one epoch, over uneven shards


def test_mixing_weights_and_images_as_repeated_frames(synthetic_shards, tok):
    cfg = cfg_for(
        synthetic_shards,
        batch_size=8,
        shuffle_buffer=4,
        train_shards=[{"spec": "corpus:synthetic", "weight": 0.7}, {"spec": synthetic_shards["images"], "weight": 0.3}],
    )
    flags = []
    for _, b in zip(range(12), build_train_loader(cfg, tok, seed=3)):
        flags += b["is_image"].tolist()
        for v, img in zip(b["video"], b["is_image"]):
            same = all(torch.equal(v[0], v[t]) for t in range(1, v.shape[0]))
            assert same == bool(img)  # images: one frame repeated T times; videos move
    frac = sum(flags) / len(flags)
    assert 0.15 < frac < 0.45, frac


def _corrupt_shard(src_tar, dst, bad_every):
    """Copy a shard with webdataset, corrupting some samples in different ways."""
    import webdataset as wds

    reasons = []
    with wds.TarWriter(str(dst), encoder=False) as w:
        for i, s in enumerate(wds.WebDataset(str(src_tar), shardshuffle=False)):
            s = {k: v for k, v in s.items() if k in ("__key__", "mp4", "txt", "json")}
            if i % bad_every == 1:
                kind = (i // bad_every) % 3
                if kind == 0:
                    s["mp4"] = s["mp4"][: len(s["mp4"]) // 3]
                    reasons.append("decode_error")
                elif kind == 1:
                    del s["txt"]
                    reasons.append("missing_caption")
                else:
                    s["json"] = b"{not json"
                    reasons.append("bad_json")
            w.write(s)
    return Counter(reasons)


def test_corrupt_samples_are_skipped_and_counted(synthetic_shards, tok, tmp_path):
    src = sorted(Path(synthetic_shards["train"]).glob("*.tar"))[0]
    expected = _corrupt_shard(src, tmp_path / "c-000000.tar", bad_every=3)
    cfg = cfg_for(synthetic_shards, eval_shards=str(tmp_path / "c-000000.tar"), error_budget=0.5, batch_size=2)
    ev = build_eval_loader(cfg, tok)
    keys = [k for b in ev for k in b["key"]]
    assert len(keys) == 8 - sum(expected.values())
    assert ev.skip_counts() == dict(expected)
    cfg = cfg_for(
        synthetic_shards, train_shards=str(tmp_path / "c-000000.tar"), error_budget=0.5, batch_size=2, num_workers=1
    )
    tr = build_train_loader(cfg, tok)
    for _ in zip(range(6), tr):  # several passes over the shard: never ends the epoch
        pass
    counts = tr.skip_counts()
    assert set(counts) == set(expected) and sum(counts.values()) >= sum(expected.values())


@pytest.mark.parametrize("isolate", [False, True])
def test_bytes_that_are_not_a_video_are_one_line_naming_the_sample(
    synthetic_shards, tok, tmp_path, capfd, data_warnings_on_stderr, isolate
):
    """decord's message about bytes it cannot open quotes them, from C++ on fd 2: it must not reach the terminal,
    where the loader says instead, on one line, which sample it skips and why; decoded in this process (as with
    data.num_workers=0) and in the isolated decode process (data.isolate_decode)."""
    import webdataset as wds

    key = "clip-not-a-video"
    good = next(iter(wds.WebDataset(str(sorted(Path(synthetic_shards["train"]).glob("*.tar"))[0]), shardshuffle=False)))
    with wds.TarWriter(str(tmp_path / "x-000000.tar"), encoder=False) as w:
        w.write({"__key__": key, "mp4": NOT_A_VIDEO, "txt": b"a red square"})
        w.write({k: v for k, v in good.items() if k in ("__key__", "mp4", "txt", "json")})
    cfg = cfg_for(synthetic_shards, eval_shards=str(tmp_path / "x-000000.tar"), isolate_decode=isolate)
    capfd.readouterr()
    ev = build_eval_loader(cfg, tok)
    assert [k for b in ev for k in b["key"]] == [good["__key__"]] and ev.skip_counts() == {"decode_error": 1}
    assert_one_skip_line(capfd.readouterr().err, key, "decode_error: RuntimeError: decord cannot open the video")


@pytest.mark.parametrize("workers", [0, 1])
def test_error_budget_names_the_shard(synthetic_shards, tok, tmp_path, workers):
    src = sorted(Path(synthetic_shards["train"]).glob("*.tar"))[0]
    _corrupt_shard(src, tmp_path / "bad-000000.tar", bad_every=2)  # 50% corrupt
    good = sorted(Path(synthetic_shards["train"]).glob("*.tar"))[1]
    spec = f"{good}::{tmp_path / 'bad-000000.tar'}"
    cfg = cfg_for(synthetic_shards, train_shards=spec, error_budget=0.1, error_window=10, num_workers=workers)
    with pytest.raises(Exception, match=r"bad-000000\.tar") as info:
        for _ in zip(range(50), build_train_loader(cfg, tok)):
            pass
    assert "corrupt" in str(info.value)


def test_frames_shards_and_reduced_size_decode(synthetic_shards, tok, tmp_path):
    from conftest import shard_eval_json

    c = Path(synthetic_shards["corpus"])
    shard_eval_json(c, tmp_path / "fr", "--frames", 6, "--resize-short-side", 40)
    cfg = cfg_for(synthetic_shards, eval_shards=str(tmp_path / "fr"), batch_size=20)
    b = next(iter(build_eval_loader(cfg, tok)))
    assert b["video"].shape[1:] == (4, 3, 48, 48) and len(b["key"]) == len(json.loads((c / "eval.json").read_text()))
    assert not b["is_image"].any()
    # decord decodes at reduced size when the metadata gives the source size
    data = next((c / "videos").rglob("*.mp4")).read_bytes()
    import decord

    w, h = decord.VideoReader(io.BytesIO(data))[0].shape[1::-1]
    frames = decode_video(data, 4, 32, None, size_hint=(w, h))
    assert frames.shape[0] == 4 and min(frames.shape[1:3]) == min(scaled_size(w, h, 32)[::-1]) <= 32


def test_segment_sampling():
    assert segment_indices(40, 4) == [4, 14, 24, 34]  # eval: segment centres
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = segment_indices(40, 4, rng)
        assert all(10 * i <= x < 10 * (i + 1) for i, x in enumerate(idx))
    assert segment_indices(2, 4) == [0, 0, 1, 1] and segment_indices(1, 3) == [0, 0, 0]


def test_no_horizontal_flip_motion_survives_training_augmentation(synthetic_shards, tok):
    """Train-mode clips keep their left/right motion (crop and resize only, no flip)."""
    labels = json.loads((Path(synthetic_shards["corpus"]) / "labels.json").read_text())
    horiz = {
        str(x["videoid"]): x["objects"][0]
        for x in labels["clips"]
        if x["split"] == "train" and len(x["objects"]) == 1 and x["objects"][0]["motion"] in ("left", "right")
    }
    cfg = cfg_for(synthetic_shards, train_shards=synthetic_shards["train"], image_size=64, crop_scale=(0.9, 1.0))
    checked = 0
    for _, b in zip(range(10), build_train_loader(cfg, tok, seed=5)):
        for k, v in zip(b["key"], b["video"]):
            if k not in horiz:
                continue
            gray = v.float().mean(1)  # [T, H, W]
            fg = (gray - gray.median()).abs() > 40
            xs = [torch.nonzero(f)[:, 1].float().mean().item() for f in fg if f.any()]
            if len(xs) < 2:
                continue
            sign = 1 if horiz[k]["motion"] == "right" else -1
            assert (xs[-1] - xs[0]) * sign > 0, (k, horiz[k], xs)
            checked += 1
    assert checked >= 3


def test_config_rejects_unknown_keys_and_tokenizer_loads_offline(synthetic_shards):
    with pytest.raises(TypeError):
        DataConfig(**{"num_frames": 4, "nonsense": 1})
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(synthetic_shards["tokenizer"], local_files_only=True)
    assert t.pad_token_id == 0 and t.mask_token_id is not None and t.is_fast
    assert t.convert_ids_to_tokens(t("A Red circle")["input_ids"])[:2] == ["[CLS]", "a"]


def test_shard_spec_forms(synthetic_shards, tmp_path, monkeypatch):
    from smaug.data.specs import resolve_mixture, resolve_spec

    train = Path(synthetic_shards["train"])
    man = json.loads((train / "manifest.json").read_text())
    names = [s["name"] for s in man["shards"]]
    n = len(names)
    root = synthetic_shards["shards_root"]
    by_dir = resolve_spec(str(train), root)
    by_manifest = resolve_spec(str(train / "manifest.json"), root)
    by_brace = resolve_spec(str(train / f"synthetic-{{000000..{n - 1:06d}}}.tar"), root)
    by_rel = resolve_spec(f"train/synthetic-{{000000..{n - 1:06d}}}.tar", root)  # relative to the root
    by_corpus = resolve_spec("corpus:synthetic", root)
    for ss in (by_dir, by_manifest, by_brace, by_rel, by_corpus):
        assert [Path(u).name for u in ss.urls] == names
    assert by_manifest.num_samples == man["num_samples"] and by_brace.num_samples is None
    monkeypatch.setenv("SMAUG_SHARDS", root)
    from smaug.data.config import default_shards_root

    assert default_shards_root() == root
    mix = resolve_mixture([{"spec": "corpus:synthetic", "weight": 3}, {"spec": "corpus:synthetic_images"}], root)
    assert [round(s.weight, 3) for s in mix] == [0.75, 0.25] and mix[1].kind == "image"
    with pytest.raises(FileNotFoundError, match="missing"):
        resolve_spec(str(train / "synthetic-{000000..000099}.tar"), root)
    with pytest.raises(FileNotFoundError, match="corpus:nope"):
        resolve_spec("corpus:nope", root)


def test_device_prefetcher_state_excludes_the_batch_in_flight(synthetic_shards, tok):
    """The trainer pulls one batch ahead (its host-to-device copy overlaps the step); a checkpoint
    taken after k batches must still resume at batch k, not k + 1."""
    from smaug.train.prefetch import DevicePrefetcher

    cfg = cfg_for(synthetic_shards, train_shards=synthetic_shards["train"], num_workers=2)
    plain = build_train_loader(cfg, tok, seed=3)
    want = [b["key"] for _, b in zip(range(7), plain)]
    pre = DevicePrefetcher(build_train_loader(cfg, tok, seed=3), torch.device("cpu"))
    it = iter(pre)
    got = [next(it)["key"] for _ in range(4)]
    assert got == want[:4]
    state, skips = pre.state_dict(), pre.skip_counts()
    assert state["consumed"] == 4 and pre.loader.state_dict()["consumed"] == 5  # one in flight
    resumed = build_train_loader(cfg, tok, seed=3, state=state)
    assert [b["key"] for _, b in zip(range(3), resumed)] == want[4:7]
    four = build_train_loader(cfg, tok, seed=3)
    _ = [b for _, b in zip(range(4), four)]
    assert skips == four.skip_counts() and state == four.state_dict()
