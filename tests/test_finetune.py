"""tools/finetune_retrieval.py + smaug/configs/finetune_retrieval.yaml: VTC+VTM fine-tuning on the
same DeepSpeed trainer, evaluated with tools/eval_retrieval.py before and after.

The end-to-end test fine-tunes the `pretrained_run` fixture on an MSRVTT-style train JSON of the
synthetic corpus's training clips and evaluates on its held-out split (eval.json: colour-shape-
motion combinations never seen in training).
"""

import json
from pathlib import Path

import pytest

from conftest import CONFIGS, QS, run_tool

FT_CONFIG = str(CONFIGS / "finetune_retrieval.yaml")
# tiny-model schedule for CPU: at the overlay's 1e-5 the tiny model would need thousands of steps; at 5e-4 90 steps
# of 6 clips learn colour, which on the held-out split (3 colour-shape pairs x 4 motions) lowers the mean rank (1e-3,
# the quickstart's LR, collapsed the features in one CI run: see the last assertion). Schedules measured on the
# fixture's checkpoint (VTC mean rank, zero-shot 6.19): 120 steps x 12 clips -> 4.88 (98 s alone); 120 x 8 -> 3.75
# (93 s); 90 x 6 -> 4.00 (60 s; 4.15 with this test's eval.every); 60 x 6 -> 4.75; 90 x 4 -> 6.35 (none learnt).
FAST = [
    "train.steps=90",
    "optim.lr=5e-4",
    "optim.min_lr=1e-5",
    "optim.warmup_steps=5",
    "eval.every=45",
    "ckpt.every=1000",
    "log.progress=false",
    "data.num_workers=1",
    "data.batch_size=6",
]


def finetune(*args):
    return run_tool("finetune_retrieval.py", *args, in_process=True)  # its steps in their own processes (forked_steps)


def train_json(corpus: Path, out: Path) -> Path:
    """MSRVTT-style train JSON of the synthetic training clips (paths relative to corpus/videos)."""
    labels = json.loads((corpus / "labels.json").read_text())
    rows = [{"video": c["relpath"], "caption": c["caption"]} for c in labels["clips"] if c["split"] == "train"]
    out.write_text(json.dumps(rows, indent=1))
    return out


def test_overlay_turns_pretraining_into_vtc_vtm_finetuning(tmp_path):
    from smaug.config import load_config, model_config

    cfg = load_config([QS, FT_CONFIG], ["data.train_shards=x", "model.keep_ratio=0.5"], str(tmp_path))
    m = model_config(cfg)
    assert (m.w_vtc, m.w_vtm, m.w_mlm, m.w_mvm, m.mask_ratio) == (1.0, 1.0, 0.0, 0.0, 0.0)
    assert m.keep_ratio == 0.5 and cfg.model.preset == "tiny"  # pre-training model settings survive
    assert cfg.optim.lr == 1e-5 and cfg.run.name == "finetune-retrieval"


def _r1(report: dict) -> float:
    """Mean of text->video and video->text R@1 by VTC similarity."""
    vtc = report["results"]["vtc"]
    return (vtc["t2v_r1"] + vtc["v2t_r1"]) / 2


def _meanr(report: dict) -> float:
    """Mean of text->video and video->text mean rank by VTC similarity (chance: (N + 1) / 2)."""
    vtc = report["results"]["vtc"]
    return (vtc["t2v_meanr"] + vtc["v2t_meanr"]) / 2


@pytest.mark.slow
def test_finetuning_improves_retrieval_over_zero_shot(pretrained_run, synthetic_shards, tmp_path, forked_steps):
    corpus = Path(synthetic_shards["corpus"])
    out = tmp_path / "ft"
    r = finetune(
        "--init",
        pretrained_run,
        "--train-json",
        train_json(corpus, tmp_path / "train.json"),
        "--video-root",
        corpus / "videos",
        "--eval-json",
        corpus / "eval.json",
        "--out",
        out,
        "--shard-workers",
        2,
        "--k",
        16,
        *FAST,
    )
    rep = json.loads((out / "finetune_report.json").read_text())
    zs, ft = rep["zero_shot"], rep["finetuned"]
    for key in ("split", "frames", "k", "num_videos", "num_texts"):
        assert zs["protocol"][key] == ft["protocol"][key], key
    assert zs["protocol"]["step"] == 8 and ft["protocol"]["step"] == 90
    # the trainer ran VTC + VTM only, from the pre-trained weights
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [x for x in log if "loss" in x]
    assert losses and all(x["mlm"] == 0.0 and x["mvm"] == 0.0 and x["vtm"] > 0 for x in losses)
    assert "initialised from" in r.stdout + r.stderr
    trainer_eval = json.loads((out / "eval.json").read_text())  # the trainer's own eval on the test split
    assert trainer_eval["protocol"]["step"] == 90 and trainer_eval["protocol"]["k"] == 16
    zs_r1, ft_r1 = _r1(zs), _r1(ft)
    print(
        f"\nsynthetic held-out split ({ft['protocol']['num_videos']} clips, {ft['protocol']['num_texts']} captions, "
        f"chance R@1 {ft['protocol']['chance_r1']:.1f}):"
    )
    for name, rr in (("zero-shot", zs), ("fine-tuned", ft)):
        res = rr["results"]
        print(
            f"  {name:<10} "
            + " | ".join(
                f"{m} t2v R@1 {res[m]['t2v_r1']:5.1f} v2t R@1 {res[m]['v2t_r1']:5.1f}"
                for m in ("vtc", "vtm", "combined")
            )
            + f" | vtm_acc {res['vtm_acc']:.3f} (always-no {1 - res['vtm_pos_frac']:.3f})"
        )
    assert rep["finetuned_r1"].keys() == {"vtc", "vtm", "combined"}
    assert "combined t2v R@1" in r.stdout and "vtm_acc" in r.stdout  # the summary shows all three and the VTM check
    for w in ft["warnings"]:  # e.g. a VTM rerank below VTC: said, not left for the reader to spot
        assert f"fine-tuned WARNING: {w}" in r.stdout
    # The mean rank, not R@1: on 12 held-out clips R@1 moves in steps of 4-8 points, and a run whose
    # features learned colour (rank 4 of 12 at worst) can still swap its few top-1 hits (a CI run went
    # 8.3 -> 6.25 R@1 while R@5 rose); the mean rank over all 24 + 12 queries measures the whole ranking.
    # LR 5e-4, not the quickstart's 1e-3: at 1e-3 the same test collapsed in a CI run (every similarity
    # equal: fine-tuned mean rank = zero-shot's 7.31). Runs used to differ because every tokenizer build
    # differed (smaug/data/tokenizer.py); now two runs give the same figures: zero-shot 6.19, fine-tuned 4.15
    # (the schedule before, 120 steps x 12 clips, had drifted to 6.19 -> 4.88 as the pre-training recipe changed).
    # In a later session, on a venv built afresh, three runs of this test alone gave 6.19 -> 4.79 (margin 1.40).
    zs_mr, ft_mr = _meanr(zs), _meanr(ft)
    print(
        f"  VTC mean rank (t2v, v2t averaged): zero-shot {zs_mr:.2f}, fine-tuned {ft_mr:.2f}; R@1 {zs_r1:.1f} -> {ft_r1:.1f}"
    )
    assert ft_mr < zs_mr - 1.0, (
        f"fine-tuning did not improve the ranking: VTC mean rank zero-shot {zs_mr:.2f}, fine-tuned {ft_mr:.2f}"
    )
