"""Multiple-choice evaluation (smaug.eval.mc, tools/eval_mc.py): scoring, tie-aware accuracy, bad rows, and a
real 2-process run that scores every row exactly once."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_qa import WORDS, FakeTokenizer, fake_clip

from conftest import REPO, run_ranks, subprocess_env, tool_in_process
from model_helpers import tiny_config


def tiny_model():
    from smaug.models import SmaugModel

    torch.manual_seed(0)
    return SmaugModel(tiny_config()).eval()


def test_tie_aware_hit():
    from smaug.eval.mc import tie_aware_hit

    assert tie_aware_hit(torch.tensor([0.1, 0.9, 0.3]), 1) == 1.0
    assert tie_aware_hit(torch.tensor([0.1, 0.9, 0.3]), 0) == 0.0
    assert tie_aware_hit(torch.zeros(5), 2) == pytest.approx(0.2)  # no information: chance, not 100%
    assert tie_aware_hit(torch.tensor([1.0, 1.0, 0.0]), 0) == 0.5


def test_bad_mc_rows_are_skipped_and_counted(tmp_path):
    from smaug.data.qa_data import read_mc

    (tmp_path / "a.mp4").write_bytes(b"x")
    rows = [
        {"video": "a.mp4", "caption": ["x", "y", "z"], "answer": 2},
        {"video": "a.mp4", "caption": ["x", "y"], "answer": 2},
        {"video": "a.mp4", "caption": ["x", "y"], "answer": -1},
        {"video": "a.mp4", "caption": ["x"], "answer": 0},
        {"video": "a.mp4", "caption": ["x", " "], "answer": 0},
        {"video": "gone.mp4", "caption": ["x", "y"], "answer": 0},
        {"video": "a.mp4", "caption": "x", "answer": 0},
        {"video": "a.mp4", "caption": ["x", "y"], "answer": True},
        {"video": "a.mp4", "caption": ["x", "y"], "answer": "1"},
    ]
    (tmp_path / "mc.json").write_text(json.dumps(rows))
    good, bad = read_mc(str(tmp_path / "mc.json"), str(tmp_path))
    assert [r["index"] for r in good] == [0]
    assert bad == Counter(answer_out_of_range=2, too_few_options=1, empty_option=1, missing_file=1, malformed_row=3)


def test_scores_are_the_models_vtc_vtm_and_their_combination():
    from smaug.eval.mc import evaluate_mc, mc_metrics

    m = tiny_model()
    tok = FakeTokenizer(WORDS)
    rows = [
        {
            "index": 0,
            "video": "v0",
            "caption": ["red", "left", "up", "b", "a b c"],
            "answer": 1,
            "type": "motion",
            "differs": ["colour", "", "motion", "motion", "shape"],
        },
        {"index": 1, "video": "v1", "caption": ["blue circle", "red left up", "b"], "answer": 0, "type": "mixed"},
    ]
    res = evaluate_mc(m, rows, fake_clip, tok, torch.device("cpu"), batch_size=2)
    assert [r["index"] for r in res["rows"]] == [0, 1] and res["skipped"] == {}
    with torch.no_grad():
        for row, got in zip(rows, res["rows"]):
            video = fake_clip(row["video"])[None]
            ft, vf, ff = m.encode_video(video)
            t = tok(row["caption"])
            h, tf = m.encode_text(t["input_ids"], t["attention_mask"])
            n = len(row["caption"])
            vtc = (vf @ tf.t())[0]
            vtm = m.vtm_logits(ft.expand(n, -1, -1, -1), ff.expand(n, -1, -1), h, tf, t["attention_mask"])
            torch.testing.assert_close(torch.tensor(got["vtc"]), vtc, atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.tensor(got["vtm"]), vtm, atol=1e-5, rtol=0)
            comb = torch.log_softmax(vtc / m.temp, 0) + torch.nn.functional.logsigmoid(vtm)
            torch.testing.assert_close(torch.tensor(got["combined"]), comb, atol=1e-5, rtol=0)
            assert got["vtc_hit"] == float(vtc.argmax() == row["answer"])
    met = mc_metrics(res["rows"])
    assert met["chance"] == pytest.approx(100 * (1 / 5 + 1 / 3) / 2)
    assert set(met["per_type"]) == {"motion", "mixed"} and met["pairwise"]["motion"]["num_pairs"] == 2
    assert met["pairwise"]["colour"]["num_pairs"] == 1 and met["pairwise"]["shape"]["num_pairs"] == 1


@pytest.mark.slow
def test_two_process_mc_eval_scores_every_row_once(pretrained_run, synthetic_shards, tmp_path):
    c = Path(synthetic_shards["corpus"])
    rows = json.loads((c / "mc_test.json").read_text())
    rows.insert(3, {"video": "eval/none.mp4", "caption": ["a", "b"], "answer": 0})  # missing video: skipped
    rows.insert(5, {"video": rows[0]["video"], "caption": ["a", "b"], "answer": 7})  # answer out of range
    (tmp_path / "mc.json").write_text(json.dumps(rows))
    args = [
        str(REPO / "tools" / "eval_mc.py"),
        "--checkpoint",
        str(pretrained_run),
        "--json",
        str(tmp_path / "mc.json"),
        "--video-root",
        str(c / "videos"),
        "--batch-size",
        "3",
        "--workers",
        "0",
    ]
    one = tool_in_process("eval_mc.py", *args[1:], "--out", tmp_path / "one.json")  # 1 process: this one
    run_ranks([sys.executable, *args, "--out", tmp_path / "two.json"], 2, env=subprocess_env(OMP_NUM_THREADS="1"))
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert b["protocol"]["world_size"] == 2 and a["protocol"]["world_size"] == 1
    n = len(rows) - 2
    assert a["protocol"]["num_rows"] == b["protocol"]["num_rows"] == n
    assert a["skipped"] == b["skipped"] == {"missing_file": 1, "answer_out_of_range": 1}
    idx = [r["index"] for r in b["rows"]]
    assert idx == sorted(set(idx)) and len(idx) == n
    for x, y in zip(a["rows"], b["rows"]):
        assert x["index"] == y["index"]
        for m in ("vtc", "vtm", "combined"):
            assert x[m] == pytest.approx(y[m], abs=1e-5)
    for m in ("vtc", "vtm", "combined"):
        assert a["results"][m]["accuracy"] == pytest.approx(b["results"][m]["accuracy"])
    assert "motion" in a["results"]["per_type"] and "motion" in a["results"]["pairwise"]
    assert "chance 20.00" in one.stdout
