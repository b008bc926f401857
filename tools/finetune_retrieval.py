#!/usr/bin/env python
"""Fine-tune a pre-trained smaug model for text-video retrieval (VTC + VTM), then evaluate it.

    python tools/finetune_retrieval.py --init runs/pt --train-json msrvtt_train_9k.json \\
        --video-root msrvtt/videos --eval-json msrvtt_test_1k.json --out runs/ft_msrvtt \\
        [--nproc 8] [--frames 12] [--k 128] [key=value ...]

Steps (each one resumable: rerunning the same command continues where it stopped):
1. Shards of the train and eval JSON (`tools/make_shards.py`, under OUT/shards/) unless
   --train-shards / --eval-shards name existing ones.
2. Zero-shot evaluation of --init on the eval split (`tools/eval_retrieval.py`), unless
   --skip-zero-shot or OUT/zero_shot.json exists.
3. Training with the DeepSpeed trainer (`python -m smaug.train`, or torchrun with --nproc > 1):
   --config OUT/init_config.yaml (the checkpoint's own run config: same model, tokenizer, data
   settings) --config smaug/configs/finetune_retrieval.yaml (VTC + VTM only, fine-tuning LR and
   schedule) [--config more.yaml] model.init_from=INIT data.train_shards=... data.eval_shards=...
   [key=value ...]. The trainer's own periodic eval runs on the eval split.
4. Evaluation of the fine-tuned checkpoint on the eval split, then a summary of zero-shot vs
   fine-tuned R@1 of each ranking (vtc, vtm, combined; OUT/finetune_report.json), with the VTM
   pair accuracy next to its always-"no" prior, so a VTM head that reranks worse than VTC shows.

--init: a DeepSpeed checkpoint (run dir, checkpoints/ dir or step dir) or an exported HF folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smaug.config import CONFIG_DIR
from smaug.train.finetune import launcher, run_step, start, train_command

FINETUNE_CONFIG = CONFIG_DIR / "finetune_retrieval.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", required=True, help="pre-trained weights: DeepSpeed checkpoint or exported HF folder")
    p.add_argument("--out", required=True, help="output directory of the fine-tuning run")
    p.add_argument("--train-json", help="MSRVTT-style train JSON [{video, caption: str|[str]}]")
    p.add_argument("--eval-json", help="MSRVTT-style test JSON")
    p.add_argument("--video-root", help="root of the JSON video paths")
    p.add_argument("--eval-video-root", help="root of the eval JSON video paths (default: --video-root)")
    p.add_argument("--train-shards", help="existing train shards (instead of --train-json)")
    p.add_argument("--eval-shards", help="existing eval shards (instead of --eval-json)")
    p.add_argument("--config", action="append", default=[], help="extra config overlays after finetune_retrieval.yaml")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for training and evaluation")
    p.add_argument("--shard-workers", type=int, default=4, help="make_shards worker processes")
    p.add_argument("--frames", type=int, default=0, help="frames per clip at evaluation (default: the run's)")
    p.add_argument("--k", type=int, default=128, help="VTM rerank top-k at evaluation")
    p.add_argument("--skip-zero-shot", action="store_true", help="do not evaluate --init before fine-tuning")
    p.add_argument("overrides", nargs="*", help="trainer overrides, e.g. train.steps=500 optim.lr=2e-5")
    args = p.parse_args(argv)
    if not (args.train_json or args.train_shards) or (args.train_json and args.train_shards):
        p.error("give exactly one of --train-json / --train-shards")
    if not (args.eval_json or args.eval_shards) or (args.eval_json and args.eval_shards):
        p.error("give exactly one of --eval-json / --eval-shards")
    if (args.train_json or args.eval_json) and not args.video_root:
        p.error("--train-json / --eval-json need --video-root")
    return args


def build_shards(json_path: str, video_root: str, out: Path, prefix: str, workers: int) -> str:
    """Shards of an MSRVTT-style JSON with tools/make_shards.py (resumes; finished shards are kept)."""
    run_step(
        [
            sys.executable,
            "-m",
            "smaug_tools.make_shards",
            "--json",
            json_path,
            "--video-root",
            video_root,
            "--out",
            str(out),
            "--prefix",
            prefix,
            "--workers",
            str(workers),
            "--no-progress",
            # all shards here, also when this runs as a task of a Slurm job array (make_shards would take the
            # array's SLURM_ARRAY_TASK_COUNT/ID as its own split)
            "--num-tasks",
            "1",
            "--task-index",
            "0",
        ],
        f"shards of {json_path}",
    )
    return str(out.resolve())


def evaluate(checkpoint: str, eval_shards: str, out_json: Path, args, tokenizer: str) -> dict:
    cmd = [
        *launcher(args.nproc),
        "-m",
        "smaug_tools.eval_retrieval",
        "--checkpoint",
        checkpoint,
        "--shards",
        eval_shards,
        "--k",
        str(args.k),
        "--out",
        str(out_json),
        "--tokenizer",
        tokenizer,
        "--split",
        Path(args.eval_json).stem if args.eval_json else eval_shards,
    ]
    if args.frames:
        cmd += ["--frames", str(args.frames)]
    run_step(cmd, f"retrieval eval of {checkpoint}")
    return json.loads(out_json.read_text())


def _r1(report: dict) -> dict:
    """R@1 of each ranking of a report (vtc, vtm, combined, vtc_dsl when present), both directions."""
    from smaug.eval.retrieval import RANKINGS

    res = report["results"]
    return {m: {d: res[m][f"{d}_r1"] for d in ("t2v", "v2t")} for m in RANKINGS if res.get(m)}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = start(args, "finetune_retrieval")
    if started is None:
        return 2
    out, base_cfg, tokenizer = started
    train = args.train_shards or build_shards(
        args.train_json, args.video_root, out / "shards" / "train", "train", args.shard_workers
    )
    evals = args.eval_shards or build_shards(
        args.eval_json, args.eval_video_root or args.video_root, out / "shards" / "eval", "eval", args.shard_workers
    )
    zs = None
    if not args.skip_zero_shot:
        zs_path = out / "zero_shot.json"
        zs = (
            json.loads(zs_path.read_text())
            if zs_path.is_file()
            else evaluate(args.init, evals, zs_path, args, tokenizer)
        )
    sets = [f"data.train_shards={train}", f"data.eval_shards={evals}"]
    run_step(train_command(args, "smaug.train", base_cfg, FINETUNE_CONFIG, out, sets), "fine-tuning")
    ft = evaluate(str(out), evals, out / "finetuned.json", args, tokenizer)
    summary = {
        "init": str(args.init),
        "out": str(out),
        "zero_shot_r1": _r1(zs) if zs else None,
        "finetuned_r1": _r1(ft),
        "zero_shot": zs,
        "finetuned": ft,
    }
    (out / "finetune_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, rep in (("zero-shot", zs), ("fine-tuned", ft)):
        if rep:
            r, res = _r1(rep), rep["results"]
            line = "  ".join(f"{m} t2v R@1 {v['t2v']:.2f} v2t R@1 {v['v2t']:.2f}" for m, v in r.items())
            if res.get("vtm_acc") is not None:
                line += f"  vtm_acc {res['vtm_acc']:.3f} (always-no {1 - res['vtm_pos_frac']:.3f})"
            print(f"[finetune] {name:<10} {line}", flush=True)
            for w in rep["warnings"]:
                print(f"[finetune] {name:<10} WARNING: {w}", flush=True)
    print(f"[finetune] report: {out / 'finetune_report.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
