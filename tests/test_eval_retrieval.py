"""tools/eval_retrieval.py and smaug.retrieval: metrics, VTM reranking, agreement with the trainer.

The end-to-end tests run the tool as a user would (a subprocess, torchrun for 2 ranks) on the
`pretrained_run` fixture (a short real training run whose trainer wrote eval.json).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smaug import retrieval as R

REPO = Path(__file__).resolve().parents[1]
TOOL = str(REPO / "tools" / "eval_retrieval.py")
METRIC_KEYS = [f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr")]


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_tool(*args, nproc=1, check=True):
    if nproc > 1:
        from weights_helpers import free_port

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", TOOL, *map(str, args)]
    else:
        cmd = [sys.executable, TOOL, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=REPO)
    if check:
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


# ---------------------------------------------------------------------------- metric units
def test_metrics_on_a_known_matrix():
    # 3 videos, 4 texts (video 0 has two captions)
    sim = torch.tensor([[0.9, 0.1, 0.0],    # text 0 -> video 0: rank 0
                        [0.5, 0.8, 0.1],    # text 1 -> video 0: rank 1
                        [0.2, 0.3, 0.1],    # text 2 -> video 1: rank 0
                        [0.7, 0.6, 0.5]])   # text 3 -> video 2: rank 2
    t2v = torch.tensor([0, 0, 1, 2])
    m = R.retrieval_metrics(sim, t2v)
    assert m["t2v_r1"] == pytest.approx(50.0) and m["t2v_r5"] == pytest.approx(100.0)
    assert m["t2v_medr"] == pytest.approx(1.0) and m["t2v_meanr"] == pytest.approx(1.75)
    # video 0: its best caption, text 0 (0.9), is first; video 1: texts 1 (0.8) and 3 (0.6) beat its
    # text 2 (0.3) -> rank 2; video 2: text 3 (0.5) is first
    assert m["v2t_r1"] == pytest.approx(200 / 3) and m["v2t_meanr"] == pytest.approx(5 / 3)
    assert (m["num_videos"], m["num_texts"], m["chance_r1"]) == (3, 4, pytest.approx(100 / 3))


def test_rerank_scores_order_topk_by_vtm_then_rest_by_vtc():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.0]])
    topk = torch.tensor([[0, 1, 2]])
    out = R.rerank_scores(sim, topk, torch.tensor([[-5.0, 3.0, 1.0]]))[0]
    assert out.argsort(descending=True).tolist() == [1, 2, 0, 3, 4]


WORDS = "a the red green blue circle square triangle moves left right up down".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny SmaugModel, 2 loader-like eval batches of 4 clips x 2 captions, tokenizer)."""
    from smaug.data import build_wordpiece_tokenizer
    from smaug.models import SmaugConfig, SmaugModel

    words = WORDS
    tok = build_wordpiece_tokenizer([" ".join(words)] * 4, tmp_path_factory.mktemp("tok"), vocab_size=100)
    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             mask_token_id=tok.mask_token_id, cls_token_id=tok.cls_token_id,
                             sep_token_id=tok.sep_token_id)
    model = SmaugModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(2):
        caps = [" ".join(words[j] for j in torch.randint(0, len(words), (2 + i,), generator=g)) for i in range(4)]
        batches.append({"video": torch.randint(0, 256, (4, 4, 3, 112, 112), dtype=torch.uint8, generator=g),
                        "key": [f"v{b}{i}" for i in range(4)], "caption": caps,
                        "captions": [[c, c + " left"] for c in caps]})
    return model, batches, tok


def test_rerank_with_k_all_equals_brute_force_vtm(tiny):
    """k >= every candidate: the reranked ranking is the VTM ranking of all pairs, computed pair by pair."""
    model, batches, tok = tiny
    dev = torch.device("cpu")
    out = R.evaluate(model, batches, tok, dev, k=100)
    assert out["vtc"] == R.zero_shot(model, batches, tok, dev)  # VTC part = the trainer's function
    f = R.extract_features(model, batches, tok, dev, keep_tokens=True)
    nt, nv = len(f.text), len(f.keys)
    assert out["num_pairs_scored"] == nt * nv
    S = torch.zeros(nt, nv)
    with torch.no_grad():
        for t in range(nt):
            L = int(f.text_mask[t].sum())
            for v in range(nv):
                S[t, v] = model.vtm_logits(f.frame_tokens[v:v + 1], f.frame_feat[v:v + 1], f.text_hidden[t:t + 1, :L],
                                           f.text[t:t + 1], f.text_mask[t:t + 1, :L])
    ref = R.retrieval_metrics(S, f.txt2vid)
    for k in METRIC_KEYS:
        assert out["reranked"][k] == pytest.approx(ref[k], abs=1e-9), k


def test_rerank_k1_keeps_vtc_order(tiny):
    """k = 1: one candidate per query, so the reranked ranks equal the VTC ranks."""
    model, batches, tok = tiny
    out = R.evaluate(model, batches, tok, torch.device("cpu"), k=1)
    for k in METRIC_KEYS:
        assert out["reranked"][k] == pytest.approx(out["vtc"][k]), k


# ---------------------------------------------------------------------------- the tool, end to end
@pytest.fixture(scope="module")
def base_report(pretrained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrep") / "report.json"
    r = run_tool("--checkpoint", pretrained_run, "--k", 16, "--out", out)
    return json.loads(out.read_text()), r.stdout


@pytest.mark.slow
def test_eval_agrees_with_trainer_periodic_eval(pretrained_run, base_report):
    report, stdout = base_report
    trainer = json.loads((pretrained_run / "eval.json").read_text())
    ours = report["results"]["vtc"]
    print(f"\ntrainer eval.json (step {trainer['step']}) vs eval_retrieval VTC:")
    for k in METRIC_KEYS:
        print(f"  {k:<10} {trainer[k]:8.3f} {ours[k]:8.3f}")
        assert ours[k] == trainer[k], k
    pr = report["protocol"]
    assert pr["step"] == trainer["step"]
    assert (pr["num_videos"], pr["num_texts"]) == (trainer["num_videos"], trainer["num_texts"])
    assert pr["chance_r1"] == pytest.approx(trainer["chance_r1"])
    for key in ("frames", "k", "split", "checkpoint", "image_size", "precision", "world_size"):
        assert key in pr, key
    assert pr["k"] == 16 and pr["frames"] == 4 and "step_00000008" in pr["checkpoint"]
    assert report["results"]["reranked"] is not None
    assert "reranked  t2v" in stdout and "vtc       v2t" in stdout  # the readable table


@pytest.mark.slow
def test_eval_two_ranks_equal_one(pretrained_run, base_report, tmp_path):
    out = tmp_path / "w2.json"
    run_tool("--checkpoint", pretrained_run, "--k", 16, "--out", out, nproc=2)
    rep = json.loads(out.read_text())
    assert rep["protocol"]["world_size"] == 2
    assert rep["results"] == base_report[0]["results"]


@pytest.mark.slow
def test_eval_from_json_equals_shards(pretrained_run, synthetic_shards, base_report, tmp_path):
    corpus = Path(synthetic_shards["corpus"])
    out = tmp_path / "json.json"
    run_tool("--checkpoint", pretrained_run, "--json", corpus / "eval.json", "--video-root", corpus / "videos",
             "--k", 16, "--offload-features", "cpu", "--out", out)
    rep = json.loads(out.read_text())
    assert rep["protocol"]["split"] == "eval" and rep["protocol"]["json"].endswith("eval.json")
    assert rep["results"] == base_report[0]["results"]


@pytest.mark.slow
def test_eval_frames_option_is_recorded(pretrained_run, tmp_path):
    out = tmp_path / "f6.json"
    run_tool("--checkpoint", pretrained_run / "checkpoints", "--frames", 6, "--k", 0, "--split", "held-out",
             "--out", out)
    rep = json.loads(out.read_text())
    assert rep["protocol"]["frames"] == 6 and rep["protocol"]["split"] == "held-out"
    assert rep["protocol"]["k"] == 0 and rep["results"]["reranked"] is None


def test_eval_bad_checkpoint_is_a_clear_error(tmp_path):
    r = run_tool("--checkpoint", tmp_path / "nope", "--shards", tmp_path, check=False)
    assert r.returncode == 2
    assert f"checkpoint {tmp_path / 'nope'}: does not exist" in r.stderr
