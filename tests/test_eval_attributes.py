"""smaug.eval.attributes: top-1 attribute accuracy against chance, ties in expectation, the frozen-frame
control and the R@1 ceiling of the synthetic benchmark."""

import json

import pytest
import torch

from smaug.eval.attributes import (
    attribute_accuracy,
    frozen_frames,
    load_clip_labels,
    r1_ceiling,
    vtm_content_accuracy,
)

# 6 clips: two (colour, shape) pairs x motions; clips 0 and 1 share every attribute
LABELS = {
    f"eval_{i}": dict(colour=c, shape=s, motion=m)
    for i, (c, s, m) in enumerate(
        [
            ("red", "circle", "left"),
            ("red", "circle", "left"),
            ("red", "circle", "right"),
            ("blue", "square", "up"),
            ("blue", "square", "down"),
            ("blue", "square", "left"),
        ]
    )
}
KEYS = list(LABELS)
T2V = torch.tensor([0, 1, 2, 3, 4, 5, 5])  # clip 5 has two captions


def test_perfect_scores_give_100_and_chance_is_the_uniform_video():
    sim = torch.full((7, 6), -1.0)
    sim[torch.arange(7), T2V] = 1.0
    acc = attribute_accuracy(sim, T2V, KEYS, LABELS)
    assert all(acc[a]["acc"] == pytest.approx(100.0) for a in ("colour", "shape", "motion", "combination"))
    # motion chance: the fraction of the 6 clips sharing each query clip's motion, averaged over the 7 queries
    share = {"left": 3 / 6, "right": 1 / 6, "up": 1 / 6, "down": 1 / 6}
    expect = sum(share[LABELS[KEYS[v]]["motion"]] for v in T2V.tolist()) / 7
    assert acc["motion"]["chance"] == pytest.approx(100 * expect)
    assert acc["colour"]["chance"] == pytest.approx(50.0) and acc["num_queries"] == 7


def test_collapsed_scores_score_chance_not_100():
    acc = attribute_accuracy(torch.zeros(7, 6), T2V, KEYS, LABELS)
    for a in ("colour", "shape", "motion", "combination"):
        assert acc[a]["acc"] == pytest.approx(acc[a]["chance"])


def test_a_model_blind_to_motion_gets_colour_and_shape_but_not_motion():
    """Scores that know colour and shape only: the top-1 set is every clip of the pair (a tie)."""
    code = torch.tensor([0, 0, 0, 1, 1, 1])
    sim = (code[T2V][:, None] == code[None, :]).float()
    acc = attribute_accuracy(sim, T2V, KEYS, LABELS)
    assert acc["colour"]["acc"] == pytest.approx(100.0) and acc["shape"]["acc"] == pytest.approx(100.0)
    # a query on the red circles picks one of 3 at random: left 2/3, right 1/3; blue square: each 1/3
    expect = (2 / 3 + 2 / 3 + 1 / 3 + 1 / 3 + 1 / 3 + 1 / 3 + 1 / 3) / 7
    assert acc["motion"]["acc"] == pytest.approx(100 * expect)


def test_r1_ceiling_counts_indistinguishable_clips():
    # clips 0 and 1 share every attribute: their queries can get R@1 1/2 at best, every other query 1
    assert r1_ceiling(T2V, KEYS, LABELS) == pytest.approx(100 * (0.5 + 0.5 + 5) / 7)


def test_vtm_pairs_count_every_clip_of_the_query_content_as_a_match():
    """A VTM head that reads colour, shape and motion says "match" to clip 1 for a query of clip 0 (same content):
    by content it is right on every pair, where counting only the query's own clip calls it wrong there."""
    pairs = torch.tensor([[t, v] for t in range(7) for v in range(6)])  # (text, video), every pair
    combo = [tuple(LABELS[k].values()) for k in KEYS]
    reads_all = torch.tensor([1.0 if combo[T2V[t]] == combo[v] else -1.0 for t, v in pairs.tolist()])
    r = vtm_content_accuracy(pairs, reads_all, T2V, KEYS, LABELS)
    assert r["acc"] == pytest.approx(100.0) and r["yes_on_match"] == pytest.approx(100.0)
    assert r["no_on_motion"] == pytest.approx(100.0)
    # 9 matching pairs of 42: each query's own clip (7), clip 1 for text 0 and clip 0 for text 1
    assert r["num_match"] == 9 and r["always_yes"] == pytest.approx(100 * 9 / 42)
    assert r["always_no"] == pytest.approx(100 * 33 / 42)
    # motion-only negatives: red circle left <-> right (texts 0, 1 x clip 2; text 2 x clips 0, 1) and the
    # blue squares' 3 motions (texts 3, 4 x 2 others each; texts 5, 6 x clips 3, 4)
    assert r["num_motion"] == 4 + 4 + 4
    # blind to motion: "match" on every clip of the colour-shape pair, the motion-only negatives included
    pair_code = torch.tensor([0, 0, 0, 1, 1, 1])
    blind = torch.tensor([1.0 if pair_code[T2V[t]] == pair_code[v] else -1.0 for t, v in pairs.tolist()])
    b = vtm_content_accuracy(pairs, blind, T2V, KEYS, LABELS)
    assert b["no_on_motion"] == 0.0 and b["yes_on_match"] == pytest.approx(100.0)
    assert b["acc"] == pytest.approx(100 * (42 - 12) / 42)


def test_unlabelled_clips_are_refused():
    with pytest.raises(ValueError, match="no single-object labels"):
        attribute_accuracy(torch.zeros(1, 2), torch.tensor([0]), ["eval_0", "train_9"], LABELS)


def test_frozen_frames_repeat_the_middle_frame():
    video = torch.arange(2 * 5 * 3 * 2 * 2, dtype=torch.uint8).reshape(2, 5, 3, 2, 2)
    out = frozen_frames(video)
    assert out.shape == video.shape and (out == video[:, 2:3]).all()


def test_labels_map_to_the_keys_make_shards_gives_json_rows(tmp_path):
    lab = {
        "clips": [
            {"relpath": "eval/1234.mp4", "objects": [{"colour": "red", "shape": "circle", "motion": "up"}]},
            {
                "relpath": "000001_000050/77.mp4",
                "objects": [
                    {"colour": "red", "shape": "circle", "motion": "up"},
                    {"colour": "blue", "shape": "square", "motion": "down"},
                ],
            },
        ]
    }
    (tmp_path / "labels.json").write_text(json.dumps(lab))
    assert load_clip_labels(tmp_path / "labels.json") == {
        "eval_1234": {"colour": "red", "shape": "circle", "motion": "up"}
    }
