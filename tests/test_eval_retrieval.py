"""tools/eval_retrieval.py and smaug.eval.retrieval: metrics, VTM reranking, agreement with the trainer.

The end-to-end tests run the tool on the `pretrained_run` fixture (a short real training run whose
trainer wrote eval.json): as `main(argv)` in this process (its output captured at the descriptor level, as a
child's), and under torchrun for 2 ranks, where the processes are the point.
"""

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smaug.eval import retrieval as R

from conftest import REPO, run_tool

TOOL = "eval_retrieval.py"
METRIC_KEYS = [f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr")]


def eval_tool(*args, nproc=1, check=True):
    return run_tool(TOOL, *args, nproc=nproc, check=check, in_process=True)


# ---------------------------------------------------------------------------- metric units
def itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
    """ALBEF / Singularity `itm_eval` (numpy, untied scores), with median and mean rank as CLIP4Clip
    reports them (np.median(ranks) + 1, ranks.mean() + 1). Keys renamed to ours: txt = v2t, img = t2v."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    out = {f"v2t_r{k}": 100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)}
    out.update(v2t_medr=np.median(ranks) + 1, v2t_meanr=ranks.mean() + 1)
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    out.update({f"t2v_r{k}": 100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)})
    out.update(t2v_medr=np.median(ranks) + 1, t2v_meanr=ranks.mean() + 1)
    return out


def itm_eval_of(sim: torch.Tensor, t2v: torch.Tensor) -> dict:
    """itm_eval of a [Nt, Nv] similarity matrix."""
    s = sim.double().numpy()
    img2txt = [np.where(t2v.numpy() == v)[0].tolist() for v in range(s.shape[1])]
    return itm_eval(s.T, s, t2v.numpy(), img2txt)


def multi_caption_set(nv: int, seed: int, max_caps: int = 5) -> torch.Tensor:
    """txt2vid of `nv` videos with 1..max_caps captions each, an even number of texts in all."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_caps + 1, (nv,), generator=g)
    if counts.sum() % 2:
        counts[0] = counts[0] % max_caps + 1 if counts[0] < max_caps else counts[0] - 1
    return torch.repeat_interleave(torch.arange(nv), counts)


def test_metrics_on_a_known_matrix():
    # 3 videos, 4 texts (video 0 has two captions)
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # text 0 -> video 0: rank 0
            [0.5, 0.8, 0.1],  # text 1 -> video 0: rank 1
            [0.2, 0.3, 0.1],  # text 2 -> video 1: rank 0
            [0.7, 0.6, 0.5],
        ]
    )  # text 3 -> video 2: rank 2
    t2v = torch.tensor([0, 0, 1, 2])
    m = R.retrieval_metrics(sim, t2v)
    assert m["t2v_r1"] == pytest.approx(50.0) and m["t2v_r5"] == pytest.approx(100.0)
    # ranks 0, 1, 0, 2: the median of an even count is the mean of the middle two (0 and 1), + 1
    assert m["t2v_medr"] == pytest.approx(1.5) and m["t2v_meanr"] == pytest.approx(1.75)
    # video 0: its best caption, text 0 (0.9), is first; video 1: texts 1 (0.8) and 3 (0.6) beat its
    # text 2 (0.3) -> rank 2; video 2: text 3 (0.5) is first
    assert m["v2t_r1"] == pytest.approx(200 / 3) and m["v2t_meanr"] == pytest.approx(5 / 3)
    assert m["v2t_medr"] == pytest.approx(1.0)
    assert (m["num_videos"], m["num_texts"], m["chance_r1"]) == (3, 4, pytest.approx(100 / 3))


def test_untied_scores_equal_albef_singularity_itm_eval():
    t2v = multi_caption_set(20, seed=1)  # 20 videos x 1-5 captions (66 texts)
    nt = len(t2v)
    assert nt % 2 == 0
    sim = torch.randn(nt, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert sim.flatten().unique().numel() == sim.numel()  # no ties
    ours, ref = R.retrieval_metrics(sim, t2v), itm_eval_of(sim, t2v)
    for k in METRIC_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k
    # the even-count medians fall between two ranks here (a lower-middle median would differ)
    assert ref["t2v_medr"] % 1 == 0.5 and ref["v2t_medr"] % 1 == 0.5


@pytest.mark.parametrize("t2v", [torch.arange(12), multi_caption_set(12, seed=0)], ids=["1cap", "multicap"])
def test_collapsed_features_score_chance_not_100(t2v):
    """All similarities equal: every ranking is a coin toss, R@K = chance in both directions."""
    nt, nv = len(t2v), 12
    m = R.retrieval_metrics(torch.full((nt, nv), 0.3), t2v)
    for k in (1, 5, 10):
        assert m[f"t2v_r{k}"] == pytest.approx(100.0 * k / nv), k
        # v2t: a video with c of the Nt captions has one of them in the top K w.p. 1 - C(Nt-c, K) / C(Nt, K)
        caps = torch.bincount(t2v, minlength=nv).tolist()
        v2t = 100.0 * sum(1 - math.comb(nt - c, k) / math.comb(nt, k) for c in caps) / nv
        assert m[f"v2t_r{k}"] == pytest.approx(v2t), k
        assert m[f"v2t_chance_r{k}"] == pytest.approx(v2t) and m[f"chance_r{k}"] == pytest.approx(100.0 * k / nv)
        if max(caps) == 1:
            assert v2t == pytest.approx(100.0 * k / nv)
    assert m["v2t_r1"] == pytest.approx(100.0 / nv)  # R@1 is 1 / Nv with any caption counts
    assert m["t2v_medr"] == pytest.approx((nv + 1) / 2) and m["t2v_meanr"] == pytest.approx((nv + 1) / 2)


def test_tied_rank_law_equals_enumeration():
    """P(rank < K) and E[rank] of the tie model, against every order of the tied items."""
    for above, e, m in ((0, 3, 2), (2, 4, 1), (1, 5, 3), (7, 2, 2)):
        items = [0] * e + [1] * m  # 0 = wrong, 1 = right
        firsts = [above + p.index(1) for p in itertools.permutations(items)]
        r = R.TiedRanks(torch.tensor([above]), torch.tensor([e]), torch.tensor([m]))
        for k in range(0, 12):
            assert r.recall_at(k).item() == pytest.approx(sum(f < k for f in firsts) / len(firsts)), (above, e, m, k)
        assert r.expected().item() == pytest.approx(sum(firsts) / len(firsts))


def _coarse_no_signal(seed: int, t2v: torch.Tensor, nv: int) -> torch.Tensor:
    """Scores in {0, 1, 2}, independent of which video a text belongs to: many ties, no information."""
    return torch.randint(0, 3, (len(t2v), nv), generator=torch.Generator().manual_seed(seed)).double()


def test_coarse_scores_equal_random_tie_breaks_monte_carlo():
    """On one coarse matrix, each metric that is an expectation (R@K, mean rank) equals the mean of
    itm_eval over random tie-breaks."""
    t2v, nv = multi_caption_set(20, seed=1), 20
    sim = _coarse_no_signal(5, t2v, nv)
    ours = R.retrieval_metrics(sim, t2v)
    g = torch.Generator().manual_seed(6)
    draws = [
        itm_eval_of(sim + 1e-3 * torch.rand(sim.shape, generator=g, dtype=torch.float64), t2v) for _ in range(1500)
    ]
    for key in METRIC_KEYS:
        if key.endswith("medr"):
            continue  # a median of expected ranks is not an expectation
        x = np.array([d[key] for d in draws])
        se = x.std() / np.sqrt(len(x))
        assert abs(ours[key] - x.mean()) < 4 * se + 1e-9, (key, ours[key], x.mean(), se)


def test_coarse_no_signal_scores_are_chance_on_average():
    t2v, nv = multi_caption_set(20, seed=2), 20
    runs = [R.retrieval_metrics(_coarse_no_signal(s, t2v, nv), t2v) for s in range(300)]
    chance = runs[0]
    for d in ("t2v", "v2t"):
        for k in (1, 5, 10):
            mean = np.mean([r[f"{d}_r{k}"] for r in runs])
            want = chance[f"chance_r{k}"] if d == "t2v" else chance[f"v2t_chance_r{k}"]
            assert mean == pytest.approx(want, abs=2.0), (d, k, mean, want)


def test_rerank_scores_order_topk_by_vtm_then_rest_by_vtc():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.0]])
    topk = torch.tensor([[0, 1, 2]])
    out = R.rerank_scores(sim, topk, torch.tensor([[-5.0, 3.0, 1.0]]))[0]
    assert out.argsort(descending=True).tolist() == [1, 2, 0, 3, 4]


def test_combined_scores_are_vtc_probability_times_vtm_probability():
    sim = torch.tensor([[0.9, 0.6, 0.2, 0.0]])  # VTC: log-odds of video 0 over 1 = 0.3 / temp = 6
    topk = torch.tensor([[0, 1]])
    temp = 0.05
    for vtm, order in (
        ([-3.0, -2.9], [0, 1]),  # VTM near its prior: VTC's confident choice stays first
        ([-8.0, 6.0], [1, 0]),
    ):  # VTM sure of video 1 and against video 0: it wins
        c = R.combined_scores(sim, topk, torch.tensor([vtm]), temp)[0]
        p_vtc = torch.softmax(sim[0].double() / temp, 0)[:2]
        hand = torch.log(p_vtc * torch.sigmoid(torch.tensor(vtm, dtype=torch.float64)))
        assert torch.allclose(c, hand)
        final = R.rerank_scores(sim, topk, c[None])[0]
        assert final.argsort(descending=True).tolist()[:2] == order
        # the VTM-only ranking follows the logits either way
        assert R.rerank_scores(sim, topk, torch.tensor([vtm]))[0].argsort(descending=True).tolist()[:2] == [1, 0]


def test_report_warns_when_vtm_is_at_its_prior_or_below_vtc():
    vtc = {"t2v_r1": 5.0, "v2t_r1": 9.0}
    ok = {
        "vtc": vtc,
        "vtm": {"t2v_r1": 6.0, "v2t_r1": 9.0},
        "combined": {"t2v_r1": 5.0, "v2t_r1": 10.0},
        "vtm_acc": 0.95,
        "vtm_pos_frac": 0.1,
    }
    assert R.report_warnings(ok) == []
    bad = {**ok, "vtm": {"t2v_r1": 4.5, "v2t_r1": 9.0}, "vtm_acc": 0.9}
    w = R.report_warnings(bad)
    assert len(w) == 2 and "no better than its label prior" in w[0] and "vtm t2v R@1 4.50 is below VTC's 5.00" == w[1]
    assert R.report_warnings({"vtc": vtc, "vtm": None, "combined": None, "vtm_acc": None, "vtm_pos_frac": None}) == []


def test_dual_softmax_over_the_text_axis_fixes_a_hub_video():
    """Video 0 is a hub, nearest to every text; texts 0-2 belong to videos 1-3."""
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.1], [0.9, 0.1, 0.8, 0.1], [0.9, 0.1, 0.1, 0.8]])
    t2v = torch.tensor([1, 2, 3])
    assert R.retrieval_metrics(sim, t2v)["t2v_r1"] == 0.0
    dsl = R.retrieval_metrics(R.dual_softmax(sim, 0), t2v, R.dual_softmax(sim, 1))
    assert dsl["t2v_r1"] == pytest.approx(100.0)
    # the softmax over the videos of each text (the other axis) keeps the hub first
    assert R.retrieval_metrics(R.dual_softmax(sim, 1), t2v)["t2v_r1"] == 0.0
    assert torch.allclose(R.dual_softmax(sim, 0), sim.double() * torch.softmax(100 * sim.double(), 0))


WORDS = "a the red green blue circle square triangle moves left right up down".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny SmaugModel, 2 loader-like eval batches of 4 clips x 2 captions, tokenizer)."""
    from smaug.data import build_wordpiece_tokenizer, tokenizer_fields
    from smaug.models import SmaugConfig, SmaugModel

    words = WORDS
    tok = build_wordpiece_tokenizer([" ".join(words)] * 4, tmp_path_factory.mktemp("tok"), vocab_size=100)
    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny", **tokenizer_fields(tok))
    model = SmaugModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(2):
        caps = [" ".join(words[j] for j in torch.randint(0, len(words), (2 + i,), generator=g)) for i in range(4)]
        batches.append(
            {
                "video": torch.randint(0, 256, (4, 4, 3, 112, 112), dtype=torch.uint8, generator=g),
                "key": [f"v{b}{i}" for i in range(4)],
                "caption": caps,
                "captions": [[c, c + " left"] for c in caps],
            }
        )
    return model, batches, tok


def test_rerank_with_k_all_equals_brute_force_vtm(tiny):
    """k >= every candidate: the vtm ranking is the VTM ranking of all pairs, computed pair by pair, and
    the combined one that of log softmax(sim / temp) + log sigmoid(VTM) over all pairs."""
    model, batches, tok = tiny
    dev = torch.device("cpu")
    out = R.evaluate(model, batches, tok, dev, k=100)
    f = R.extract_features(model, batches, tok, dev, keep_tokens=True)
    sim = f.text @ f.video.t()
    assert torch.equal(out["sim"], sim) and out["features"].keys == f.keys
    assert out["vtc"] == R.retrieval_metrics(sim, f.txt2vid)
    nt, nv = len(f.text), len(f.keys)
    assert out["num_pairs_scored"] == nt * nv
    S = torch.zeros(nt, nv)
    with torch.no_grad():
        for t in range(nt):
            L = int(f.text_mask[t].sum())
            for v in range(nv):
                S[t, v] = model.vtm_logits(
                    f.frame_tokens[v : v + 1],
                    f.frame_feat[v : v + 1],
                    f.text_hidden[t : t + 1, :L],
                    f.text[t : t + 1],
                    f.text_mask[t : t + 1, :L],
                )
    ref = R.retrieval_metrics(S, f.txt2vid)
    temp = float(model.temp.detach())
    comb = R.retrieval_metrics(
        torch.log_softmax(sim.double() / temp, 1) + F.logsigmoid(S.double()),
        f.txt2vid,
        torch.log_softmax(sim.double() / temp, 0) + F.logsigmoid(S.double()),
    )
    for k in METRIC_KEYS:
        assert out["vtm"][k] == pytest.approx(ref[k], abs=1e-9), k
        assert out["combined"][k] == pytest.approx(comb[k], abs=1e-9), k
    own = f.txt2vid[:, None] == torch.arange(nv)[None, :]  # [Nt, Nv]
    assert out["vtm_acc"] == pytest.approx(((S > 0) == own).double().mean().item())
    assert out["vtm_pos_frac"] == pytest.approx(1 / nv)
    assert out["options"]["vtc_temp"] == pytest.approx(temp)


def test_rerank_k1_keeps_vtc_order(tiny):
    """k = 1: one candidate per query, so the vtm and combined ranks equal the VTC ranks."""
    model, batches, tok = tiny
    out = R.evaluate(model, batches, tok, torch.device("cpu"), k=1)
    for k in METRIC_KEYS:
        assert out["vtm"][k] == pytest.approx(out["vtc"][k]), k
        assert out["combined"][k] == pytest.approx(out["vtc"][k]), k


def test_evaluate_leaves_a_training_model_in_training_mode(tiny):
    model, batches, tok = tiny
    model.train()
    try:
        R.evaluate(model, batches, tok, torch.device("cpu"), k=2)
        assert model.training  # the trainer's periodic eval must not switch its model to eval mode
    finally:
        model.eval()


def test_frame_sim_pooling_is_the_mean_of_frame_cosines(tiny):
    model, batches, tok = tiny
    dev = torch.device("cpu")
    out = R.evaluate(model, batches, tok, dev, k=0, pooling="frame_sim")
    with torch.no_grad():
        frames = torch.cat([model.encode_video(b["video"])[2] for b in batches])  # [Nv, T, E]
        caps = [c for b in batches for cs in b["captions"] for c in cs]
        enc = tok(caps, padding=True, truncation=True, max_length=32, return_tensors="pt")
        text = model.get_text_features(enc["input_ids"], enc["attention_mask"])  # [Nt, E]
    nt, nv, nf = len(text), len(frames), frames.shape[1]
    hand = torch.zeros(nt, nv)
    for t in range(nt):
        for v in range(nv):
            hand[t, v] = sum(F.cosine_similarity(frames[v, i], text[t], dim=0) for i in range(nf)) / nf
    assert torch.allclose(out["sim"], hand, atol=1e-5)
    assert out["options"]["pooling"] == "frame_sim"
    embed = R.evaluate(model, batches, tok, dev, k=0)["sim"]
    assert not torch.allclose(embed, hand, atol=1e-3)  # a different similarity than the pooled embedding's


def test_dsl_results_come_next_to_the_plain_ones(tiny):
    model, batches, tok = tiny
    out = R.evaluate(model, batches, tok, torch.device("cpu"), k=0, dsl=True)
    t2v = out["features"].txt2vid
    assert out["vtc"] == R.retrieval_metrics(out["sim"], t2v)
    assert out["vtc_dsl"] == R.retrieval_metrics(R.dual_softmax(out["sim"], 0), t2v, R.dual_softmax(out["sim"], 1))
    assert R.evaluate(model, batches, tok, torch.device("cpu"), k=0)["vtc_dsl"] is None


def test_paragraph_is_one_query_per_video(tiny):
    model, batches, tok = tiny
    out = R.evaluate(model, batches, tok, torch.device("cpu"), k=3, paragraph=True, max_text_len=6)
    f = out["features"]
    assert out["vtc"]["num_texts"] == out["vtc"]["num_videos"] == len(f.keys) == 8
    assert f.txt2vid.tolist() == list(range(8))
    by_key = {k: cs for b in batches for k, cs in zip(b["key"], b["captions"])}
    assert f.captions == [" ".join(by_key[k]) for k in f.keys]  # in order, space-separated
    assert f.text_mask.shape[1] <= 6 and f.text_mask.sum(1).max() == 6  # truncated to max_text_len


def test_video_transform_is_applied_before_encoding(tiny):
    """The hook sees each uint8 batch [B, T, 3, H, W]; here a frozen-frame control (the middle frame)."""
    model, batches, tok = tiny
    dev = torch.device("cpu")
    seen = []

    def frozen(video):
        seen.append((video.dtype, tuple(video.shape)))
        mid = video.shape[1] // 2
        return video[:, mid : mid + 1].expand_as(video).contiguous()

    out = R.evaluate(model, batches, tok, dev, k=0, video_transform=frozen)
    assert seen == [(torch.uint8, (4, 4, 3, 112, 112))] * 2
    pre = [{**b, "video": frozen(b["video"])} for b in batches]
    ref = R.evaluate(model, pre, tok, dev, k=0)
    assert torch.equal(out["features"].video, ref["features"].video) and torch.equal(out["sim"], ref["sim"])
    assert not torch.allclose(out["sim"], R.evaluate(model, batches, tok, dev, k=0)["sim"])


# ---------------------------------------------------------------------------- the tool, end to end
@pytest.fixture(scope="module")
def base_report(pretrained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrep") / "report.json"
    r = eval_tool("--checkpoint", pretrained_run, "--k", 16, "--out", out)
    return json.loads(out.read_text()), r.stdout


@pytest.mark.slow
def test_eval_agrees_with_trainer_periodic_eval(pretrained_run, base_report):
    """The trainer's eval.json (eval.rerank_k = 16 by default) is the tool's report: same schema, same numbers."""
    report, stdout = base_report
    trainer = json.loads((pretrained_run / "eval.json").read_text())
    assert set(trainer) == {"protocol", "results", "warnings"}
    assert trainer["warnings"] == report["warnings"] == R.report_warnings(report["results"])
    for w in report["warnings"]:
        assert f"WARNING: {w}" in stdout
    print(f"\ntrainer eval.json (step {trainer['protocol']['step']}) vs eval_retrieval:")
    for name in ("vtc", "vtm", "combined"):
        for k in METRIC_KEYS:
            print(f"  {name:<9}{k:<10} {trainer['results'][name][k]:8.3f} {report['results'][name][k]:8.3f}")
    print(f"  vtm_acc {report['results']['vtm_acc']:.3f} (always-no {1 - report['results']['vtm_pos_frac']:.3f})")
    assert report["results"] == trainer["results"]
    pr, tp = report["protocol"], trainer["protocol"]
    assert set(pr) == set(tp)
    for key in (
        "step",
        "num_videos",
        "num_texts",
        "chance_r1",
        "v2t_chance_r5",
        "frames",
        "k",
        "split",
        "pooling",
        "queries",
        "max_text_len",
        "vtc_temp",
        "num_pairs_reranked",
        "image_size",
        "world_size",
    ):
        assert pr[key] == tp[key], key
    assert pr["k"] == 16 and pr["frames"] == 4 and "step_00000008" in pr["checkpoint"]
    res = report["results"]
    assert set(res) == {"vtc", "vtm", "combined", "vtm_acc", "vtm_pos_frac"}
    assert 0 <= res["vtm_acc"] <= 1
    assert res["vtm_pos_frac"] == pytest.approx(1 / pr["num_videos"])  # k >= clips: every pair scored
    assert pr["num_pairs_reranked"] == pr["num_videos"] * pr["num_texts"]
    for line in ("vtm       t2v", "combined  v2t", "vtc       v2t", "VTM pair accuracy on the"):
        assert line in stdout, line  # the readable table
    # the periodic evals are in the training log too
    log = [json.loads(x) for x in (pretrained_run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval/vtc/t2v_r1" in r]
    assert [r["step"] for r in evals] == [4, 8]
    for key in ("eval/vtm/t2v_r1", "eval/combined/v2t_r1", "eval/vtm_acc", "eval/vtm_pos_frac", "eval/chance_r1"):
        assert key in evals[-1], key
    assert evals[-1]["eval/combined/t2v_r1"] == res["combined"]["t2v_r1"]


@pytest.mark.slow
def test_eval_two_ranks_equal_one(pretrained_run, base_report, tmp_path):
    out = tmp_path / "w2.json"
    eval_tool("--checkpoint", pretrained_run, "--k", 16, "--out", out, nproc=2)
    rep = json.loads(out.read_text())
    assert rep["protocol"]["world_size"] == 2
    assert rep["results"] == base_report[0]["results"]


@pytest.mark.slow
def test_eval_from_json_equals_shards(pretrained_run, synthetic_shards, base_report, tmp_path):
    corpus = Path(synthetic_shards["corpus"])
    out = tmp_path / "json.json"
    eval_tool(
        "--checkpoint",
        pretrained_run,
        "--json",
        corpus / "eval.json",
        "--video-root",
        corpus / "videos",
        "--k",
        16,
        "--offload-features",
        "cpu",
        "--out",
        out,
    )
    rep = json.loads(out.read_text())
    assert rep["protocol"]["split"] == "eval" and rep["protocol"]["json"].endswith("eval.json")
    assert rep["results"] == base_report[0]["results"]


@pytest.mark.slow
def test_eval_protocol_options_are_recorded(pretrained_run, tmp_path):
    out = tmp_path / "f6.json"
    r = eval_tool(
        "--checkpoint",
        pretrained_run / "checkpoints",
        "--frames",
        6,
        "--k",
        0,
        "--split",
        "held-out",
        "--pooling",
        "frame_sim",
        "--dsl",
        "--paragraph",
        "--max-text-len",
        16,
        "--out",
        out,
    )
    rep = json.loads(out.read_text())
    pr, res = rep["protocol"], rep["results"]
    assert pr["frames"] == 6 and pr["split"] == "held-out" and pr["max_text_len"] == 16
    assert pr["k"] == 0 and res["vtm"] is None and res["combined"] is None and res["vtm_acc"] is None
    assert pr["pooling"] == "frame_sim" and "mean over frames" in pr["similarity"]
    assert pr["queries"].startswith("paragraph") and pr["num_texts"] == pr["num_videos"]
    assert "softmax(100 * sim) over the texts of each video (t2v)" in pr["dsl"]
    assert set(res["vtc_dsl"]) == set(res["vtc"]) and "vtc_dsl   t2v" in r.stdout


def test_eval_labels_add_attribute_accuracy_and_the_frozen_frame_control(
    pretrained_run, synthetic_shards, base_report, tmp_path
):
    """--labels: top-1 colour/shape/motion/combination accuracy per ranking, its frozen-frame control,
    chance and the R@1 ceiling, from the corpus's labels.json; the retrieval numbers are unchanged."""
    from smaug.eval.attributes import load_clip_labels

    out = tmp_path / "attr.json"
    labels = Path(synthetic_shards["corpus"]) / "labels.json"
    r = eval_tool("--checkpoint", pretrained_run, "--k", 16, "--labels", labels, "--out", out)
    rep = json.loads(out.read_text())
    att = rep["attributes"]
    assert set(att["rankings"]) == set(att["frozen_frame_control"]) == {"vtc", "vtm", "combined"}
    names = {"colour", "shape", "motion", "combination"}
    assert all(set(v) == names for v in att["rankings"].values()) and set(att["chance"]) == names
    assert att["num_queries"] == rep["protocol"]["num_texts"] and 0 < att["r1_ceiling"] <= 100
    assert all(0 <= x <= 100 for v in att["rankings"].values() for x in v.values())
    keys = set(load_clip_labels(labels))
    assert keys and att["labels"] == str(labels.resolve())
    assert rep["results"]["vtc"] == base_report[0]["results"]["vtc"]  # the control is a separate pass
    assert "frozen frames" in r.stdout and "R@1 ceiling" in r.stdout
    vp = att["vtm_pairs"]  # the VTM head by content, on the pairs the report's vtm_acc scores
    assert vp["num_pairs"] == rep["protocol"]["num_pairs_reranked"] and "motion-only negatives" in r.stdout
    assert vp["always_no"] + vp["always_yes"] == pytest.approx(100.0) and 0 <= vp["acc"] <= 100


def test_eval_bad_checkpoint_is_a_clear_error(tmp_path):
    r = eval_tool("--checkpoint", tmp_path / "nope", "--shards", tmp_path, check=False)
    assert r.returncode == 2
    assert f"checkpoint {tmp_path / 'nope'}: does not exist" in r.stderr


def test_vtm_negatives_bench_sorts_the_mined_negatives_by_how_they_differ(pretrained_run, synthetic_shards, tmp_path):
    """bench/vtm_negatives.py: the negatives training would draw on the training shards (hard and uniform), by the
    attributes they share with their positive (labels.json keys the CSV rows by videoid), and the VTM head's 'no'
    rate on each kind; the shares of each mode add up to 100 and every negative is labelled or a two-object clip."""
    sys.path.insert(0, str(REPO / "bench"))
    import vtm_negatives

    out = tmp_path / "neg.json"
    labels = Path(synthetic_shards["corpus"]) / "labels.json"
    args = ["--checkpoint", pretrained_run, "--labels", labels, "--shards", synthetic_shards["train"]]
    assert vtm_negatives.main([str(a) for a in [*args, "--batches", 3, "--batch-size", 8, "--json", out]]) == 0
    rep = json.loads(out.read_text())
    for mode in ("hard", "uniform"):
        kinds = rep[mode]["kinds"]
        assert sum(v["share"] for v in kinds.values()) == pytest.approx(100.0)
        assert sum(v["n"] for v in kinds.values()) == 3 * 8 * 2 and set(kinds) <= set(vtm_negatives.KINDS)
        assert set(kinds) - {"two-object"}  # single-object training clips are found in labels.json by videoid
        assert all(0 <= v["no_rate"] <= 100 and 0 <= v["vtc_prefers_positive"] <= 100 for v in kinds.values())
        assert 0 <= rep[mode]["positive_match_rate"] <= 100
