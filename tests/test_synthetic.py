"""tools/make_synthetic.py: WebVid layout, held-out combinations, motion that matters, determinism."""

import csv
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_tool

WEBVID_HEADER = ["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"]


def _synth_module():
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "tools" / "make_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _labels(corpus):
    return json.loads((Path(corpus) / "labels.json").read_text())


def test_webvid_layout(synthetic_corpus):
    c = Path(synthetic_corpus)
    with open(c / "results_2M_train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == WEBVID_HEADER
    labels = {str(x["videoid"]): x for x in _labels(c)["clips"]}
    assert len(rows) > 10
    for vid, name, page_idx, page_dir, duration, url in rows[1:]:
        assert (c / "videos" / page_dir / f"{vid}.mp4").is_file()
        assert re.fullmatch(r"PT\d\dH\d\dM\d\dS", duration)
        assert int(page_idx) >= 0 and url
        assert name == labels[vid]["caption"] and labels[vid]["split"] == "train"
    evals = json.loads((c / "eval.json").read_text())
    assert evals and all((c / "videos" / e["video"]).is_file() for e in evals)
    assert all(isinstance(e["caption"], list) and e["caption"] for e in evals)
    lines = (c / "images.tsv").read_text(encoding="utf-8").splitlines()
    assert lines and all((c / line.split("\t")[1]).is_file() for line in lines)


def test_clips_decode_with_varied_sizes_and_rates(synthetic_corpus):
    import decord

    c = Path(synthetic_corpus)
    clips = _labels(c)["clips"]
    assert len({(x["width"], x["height"]) for x in clips}) >= 2
    assert len({x["fps"] for x in clips}) >= 2
    for x in clips[:8]:
        vr = decord.VideoReader(str(c / "videos" / x["relpath"]))
        assert len(vr) == x["frames"] and abs(vr.get_avg_fps() - x["fps"]) < 1e-3
        assert vr[0].shape == (x["height"], x["width"], 3)
        assert 1.4 <= x["frames"] / x["fps"] <= 3.1


def test_captions_name_colour_shape_motion(synthetic_corpus):
    mod = _synth_module()
    for x in _labels(synthetic_corpus)["clips"]:
        for o in x["objects"]:
            assert o["colour"] in x["caption"] and o["shape"] in x["caption"]
            assert any(p in x["caption"] for p in mod.PHRASES[o["motion"]])
    assert len({x["caption"] for x in _labels(synthetic_corpus)["clips"]}) > 20  # varied templates


def test_held_out_combinations_never_in_training(synthetic_corpus):
    lab = _labels(synthetic_corpus)
    combos = lambda split: {
        (o["colour"], o["shape"], o["motion"]) for x in lab["clips"] if x["split"] == split for o in x["objects"]
    }
    train, held = combos("train"), combos("eval")
    assert held and train and not (train & held)
    assert held <= {tuple(x) for x in lab["held_out_combos"]}
    full_held = {tuple(x) for x in lab["held_out_combos"]}
    all_train = {tuple(x) for x in lab["train_combos"]}
    assert not (full_held & all_train) and len(full_held) + len(all_train) == 60
    for i in range(3):  # every colour, shape and direction still appears in training
        assert {t[i] for t in all_train} == {t[i] for t in full_held | all_train}


def test_held_out_split_needs_time(synthetic_corpus):
    """Whole (colour, shape) pairs are held out with all four motions, never seen in training (clips
    or images): within the held-out split, colour + shape do not determine the motion."""
    mod = _synth_module()
    lab = _labels(synthetic_corpus)
    held = {tuple(x) for x in lab["held_out_combos"]}
    pairs = {(c, s) for c, s, _ in held}
    assert pairs == set(mod.HELD_OUT_PAIRS) and held == {(c, s, m) for c, s in pairs for m in mod.MOTIONS}
    seen = {
        (o["colour"], o["shape"]) for x in lab["clips"] + lab["images"] if x["split"] != "eval" for o in x["objects"]
    }
    assert seen and not (seen & pairs)
    motions_per_pair: dict = {}
    for x in lab["clips"]:
        if x["split"] == "eval":
            (o,) = x["objects"]  # held-out clips show one object
            motions_per_pair.setdefault((o["colour"], o["shape"]), set()).add(o["motion"])
    assert max(len(m) for m in motions_per_pair.values()) >= 2  # clips that differ only in motion


def _centroid_x_y(frame, rgb):
    mask = np.abs(frame.astype(int) - np.array(rgb)).sum(-1) < 90
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_motion_matches_caption_direction(synthetic_corpus):
    import decord

    mod = _synth_module()
    c = Path(synthetic_corpus)
    checked = 0
    for x in _labels(c)["clips"]:
        if len(x["objects"]) != 1:
            continue
        o = x["objects"][0]
        vr = decord.VideoReader(str(c / "videos" / x["relpath"]))
        first, last = vr.get_batch([0, len(vr) - 1]).asnumpy()
        (x0, y0), (x1, y1) = (_centroid_x_y(f, mod.COLOURS[o["colour"]]) for f in (first, last))
        dx, dy = mod.MOTIONS[o["motion"]]
        moved = (x1 - x0) if dx else (y1 - y0)
        assert moved * (dx or dy) > 0.2 * (x["width"] if dx else x["height"]), (x, moved)
        checked += 1
    assert checked >= 5


def test_single_frame_cannot_tell_left_from_right():
    """Over many planned clips, a frame at a random time has the same horizontal position
    distribution whether the shape moves left or right."""
    mod = _synth_module()
    rng = np.random.default_rng(0)
    pos = {"left": [], "right": []}
    combos = [cb for cb in mod.all_combos(False) if cb[2] in ("left", "right")]
    for i in range(3000):
        spec = mod.plan_clip(rng, i, "eval", combos)
        o = spec["objects"][0]
        u = rng.uniform(-0.5, 0.5)
        pos[o["motion"]].append((o["centre"] + u * o["travel"] * mod.MOTIONS[o["motion"]][0]) / spec["width"])
    left, right = np.array(pos["left"]), np.array(pos["right"])
    assert abs(left.mean() - right.mean()) < 0.01
    assert np.abs(np.quantile(left, [0.1, 0.5, 0.9]) - np.quantile(right, [0.1, 0.5, 0.9])).max() < 0.02


def _tree_digest(d: Path) -> dict:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def test_output_is_a_function_of_the_seed(tmp_path):
    args = ("--num-videos", 6, "--num-images", 2)
    run_tool("make_synthetic.py", "--out", tmp_path / "a", "--seed", 3, "--workers", 2, *args)
    run_tool("make_synthetic.py", "--out", tmp_path / "b", "--seed", 3, "--workers", 1, *args)
    run_tool("make_synthetic.py", "--out", tmp_path / "c", "--seed", 4, "--workers", 1, *args)
    a, b, c = (_tree_digest(tmp_path / k) for k in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_corpus_sizes(tmp_path, n):
    run_tool("make_synthetic.py", "--out", tmp_path, "--num-videos", n, "--num-images", 0, "--workers", 1)
    lab = _labels(tmp_path)
    assert len(lab["clips"]) == n and {x["split"] for x in lab["clips"]} == {"train", "eval"}
