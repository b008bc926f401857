"""tools/index_shards.py over foreign shards in video2dataset's layout.

video2dataset itself does not install here (it pins torch==2.1.2 and transformers==4.37.1), so
the shards are written the way its `WebDatasetSampleWriter` writes them (video2dataset 1.3.0,
data_writer.py): webdataset's own `TarWriter`, members `{key}.mp4`, `{key}.txt` (caption),
`{key}.json` (`json.dumps(meta, indent=4)` with the input columns, `key`, `status`,
`error_message`), keys from `compute_key` (shard id * 10**oom_sample_per_shard + index, zero-padded
to oom_sample_per_shard + oom_shard_count digits), failed downloads written as txt + json without
media, and `{shard}_stats.json` beside each tar (the `.parquet` needs pyarrow, not installed).

A decoder that hangs or kills its process is a real decoder registered for the test: the indexer's
forked children inherit it, as they would inherit a buggy FFmpeg."""

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from smaug.data import DataConfig, build_eval_loader, build_train_loader, decoders
from smaug.data.index import index_shard, index_shards
from smaug.data.tokenizer import load_tokenizer

from conftest import NOT_A_VIDEO, assert_one_skip_line, run_tool

HANG, CRASH = b"SMAUG-TEST-HANG", b"SMAUG-TEST-CRASH"


class FaultyReader(decoders.DecordReader):
    """decord, except that bytes ending in a marker hang forever or SIGKILL the process."""

    def __init__(self, data, width, height):
        if data.endswith(HANG):
            time.sleep(3600)
        if data.endswith(CRASH):
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(data, width, height)


def v2d_key(shard_id, i, oom_sample_per_shard=4, oom_shard_count=5):
    """video2dataset's compute_key."""
    return f"{10**oom_sample_per_shard * shard_id + i:0{oom_sample_per_shard + oom_shard_count}d}"


def write_v2d_shards(corpus: Path, out: Path, num_shards: int = 2) -> dict:
    """`num_shards` shards of 6 samples in video2dataset's layout, the bad samples in the first two; returns
    {key: (caption or None, expected reason)}."""
    import webdataset as wds

    vids = sorted((corpus / "videos").rglob("*.mp4"))
    expect, k = {}, 0
    out.mkdir(parents=True)
    for shard_id in range(num_shards):
        name = f"{shard_id:05d}"
        with open(out / f"{name}.tar", "wb") as fd:
            tw = wds.TarWriter(fd)
            for i in range(6):
                key = v2d_key(shard_id, i)
                caption = f"clip {k} of a coloured shape"
                meta = {
                    "url": f"https://example.com/{k}.mp4",
                    "caption": caption,
                    "key": key,
                    "status": "success",
                    "error_message": None,
                    "yt_meta_dict": None,
                }
                sample = {"__key__": key, "mp4": vids[k % len(vids)].read_bytes(), "txt": caption}
                reason = None
                if (shard_id, i) == (0, 1):
                    del sample["mp4"]
                    meta.update(status="failed_to_download", error_message="HTTP Error 404: Not Found")
                    reason = "failed_download"
                elif (shard_id, i) == (0, 3):
                    sample["mp4"] = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500
                    reason = "decode_error"
                elif (shard_id, i) == (1, 0):
                    sample["txt"] = "   "
                    reason = "bad_caption"
                elif (shard_id, i) == (1, 2):
                    sample["mp4"] += HANG
                    reason = "decode_timeout"
                elif (shard_id, i) == (1, 4):
                    sample["mp4"] += CRASH
                    reason = "decoder_crash"
                sample["json"] = json.dumps(meta, indent=4)
                tw.write(sample)
                expect[key] = (caption, reason)
                k += 1
            tw.close()
        (out / f"{name}_stats.json").write_text(json.dumps({"count": 6, "successes": 5, "failed_to_download": 1}))
    return expect


def test_bytes_that_are_not_a_video_are_one_line_naming_the_sample(tmp_path, capfd, data_warnings_on_stderr):
    """The indexer's check decodes each sample in a forked child, whose fd 2 is this process's: decord's message
    quoting the bytes must not reach it; the indexer says on one line which sample it skips and why, and records
    that reason."""
    import webdataset as wds

    key = "000000003"
    with wds.TarWriter(str(tmp_path / "00000.tar"), encoder=False) as w:
        w.write({"__key__": key, "mp4": NOT_A_VIDEO, "txt": b"a red square"})
    capfd.readouterr()
    stats = index_shard(str(tmp_path / "00000.tar"))
    assert stats["skip_keys"] == [key] and stats["bad"][0]["reason"] == "decode_error"
    assert stats["bad"][0]["detail"].startswith("RuntimeError: decord cannot open the video: Invalid data")
    assert_one_skip_line(capfd.readouterr().err, key, "decode_error: RuntimeError: decord cannot open the video")


@pytest.fixture
def faulty_decoder(monkeypatch):
    monkeypatch.setitem(decoders._READERS, "faulty", FaultyReader)
    return "faulty"


@pytest.mark.slow
def test_index_foreign_shards_counts_and_isolates(synthetic_corpus, synthetic_shards, tmp_path, faulty_decoder):
    shards = tmp_path / "v2d"
    expect = write_v2d_shards(Path(synthetic_corpus), shards)
    man, summary = index_shards(
        sorted(str(p) for p in shards.glob("*.tar")), str(shards), decoder=faulty_decoder, timeout=3, workers=2
    )  # timeout: the planted hang waits it out (10 -> 3 s); the test passed with 4 busy loops on the 2 cores
    bad = {k: r for k, (_, r) in expect.items() if r}
    assert man["num_samples"] == len(expect) - len(bad) == 7
    assert {r: n for r, n in summary["skipped"].items() if n} == {r: 1 for r in bad.values()}
    assert {b["key"]: b["reason"] for b in summary["bad_samples"]} == bad
    assert sorted(k for ks in man["skip_keys"].values() for k in ks) == sorted(bad)
    assert [s["name"] for s in man["shards"]] == ["00000.tar", "00001.tar"] and man["kind"] == "video"
    # the loader reads the indexed folder: every good key once, bad ones dropped unread (the hang
    # and crash samples decode fine with decord: they would appear if they were not skipped)
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    cfg = DataConfig(eval_shards=str(shards), num_frames=4, image_size=32, batch_size=3, num_workers=2, max_text_len=16)
    loader = build_eval_loader(cfg, tok)
    seen = [(k, c) for b in loader for k, c in zip(b["key"], b["caption"])]
    assert sorted(seen) == sorted((k, c) for k, (c, r) in expect.items() if not r)
    assert not loader.skip_counts()


@pytest.mark.slow
def test_index_tool_rewrite_and_training_resume(synthetic_corpus, synthetic_shards, tmp_path):
    """The CLI: --caption-field json:caption needs --rewrite; the rewritten shards carry sizes, and
    a train loader over them resumes exactly."""
    shards = tmp_path / "v2d"
    expect = write_v2d_shards(Path(synthetic_corpus), shards)
    for key in list(expect):  # the faulty-decoder samples decode with the real decoder
        if expect[key][1] in ("decode_timeout", "decoder_crash"):
            expect[key] = (expect[key][0], None)
    r = run_tool("index_shards.py", shards, "--caption-field", "json:caption", check=False)
    assert r.returncode != 0 and "--rewrite" in r.stdout + r.stderr
    clean = tmp_path / "clean"
    r = run_tool(
        "index_shards.py", shards, "--caption-field", "json:caption", "--rewrite", "--out", clean, "--decoder", "pyav"
    )
    # json captions: the blank .txt no longer matters, so only the download and decode failures remain
    assert "10 good, 2 bad" in r.stdout
    man = json.loads((clean / "manifest.json").read_text())
    assert man["num_samples"] == 10 and not man["skip_keys"]
    assert json.loads((clean / "summary.json").read_text())["skipped"]["bad_caption"] == 0
    tok = load_tokenizer(synthetic_shards["tokenizer"])
    cfg = DataConfig(
        train_shards=str(clean),
        num_frames=4,
        image_size=32,
        batch_size=2,
        num_workers=2,
        shuffle_buffer=4,
        round_batches=3,
        max_text_len=16,
    )
    loader = build_train_loader(cfg, tok, seed=3)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    cont = [(b["key"], hashlib.sha1(b["video"].numpy().tobytes()).hexdigest()) for b in (next(it) for _ in range(5))]
    del it
    resumed = build_train_loader(cfg, tok, seed=3, state=state)
    again = [(b["key"], hashlib.sha1(b["video"].numpy().tobytes()).hexdigest()) for _, b in zip(range(5), resumed)]
    assert again == cont
    assert loader.steps_per_epoch == 5  # ceil(10 good samples / batch 2), from the manifest


@pytest.mark.slow
def test_training_over_indexed_foreign_shards_resumes_exactly(synthetic_corpus, synthetic_shards, tmp_path, capfd):
    """The trainer on video2dataset-layout shards indexed in place (bad samples dropped unread): killed
    after the step-3 checkpoint and resumed, it ends bitwise equal to an uninterrupted run."""
    import signal

    import torch
    from test_train import _kill_after_checkpoint, module_state, records, train, train_cmd

    shards = tmp_path / "v2d"
    write_v2d_shards(Path(synthetic_corpus), shards)
    man, summary = index_shards(sorted(str(p) for p in shards.glob("*.tar")), str(shards))
    assert man["num_samples"] == 9  # 12 - failed download, undecodable bytes, blank caption
    extra = ("train.steps=6", "ckpt.every=3", "train.precision=fp32", f"data.train_shards={shards}")
    ref = tmp_path / "ref"
    train(capfd, synthetic_shards, ref, *extra)
    out = tmp_path / "killed"
    rc = _kill_after_checkpoint(train_cmd(synthetic_shards, out, *extra), out / "checkpoints" / "step_00000003")
    assert rc == -signal.SIGKILL
    assert "resumed from" in train(capfd, synthetic_shards, out, *extra)
    a, b = module_state(ref, 6), module_state(out, 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in records(ref) if "loss" in r] == list(range(1, 7))
