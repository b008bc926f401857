#!/usr/bin/env python
"""Fine-tune a pre-trained smaug model for open-ended VideoQA, evaluate it, and measure two baselines.

    python tools/finetune_qa.py --init runs/pt --train-json msrvtt_qa_train.json --test-json msrvtt_qa_test.json \\
        --answer-list answer_list.json --video-root msrvtt/videos --out runs/qa_msrvtt \\
        [--nproc 8] [--k 128] [--no-blind] [key=value ...]

Steps (rerunning the same command resumes each one):
1. OUT/init_config.yaml: the checkpoint's own run config (same model, tokenizer, data settings), as
   tools/finetune_retrieval.py writes it.
2. QA fine-tuning with the pre-training trainer (`python -m smaug.train.qa`, torchrun with --nproc > 1):
   --config OUT/init_config.yaml --config smaug/configs/finetune_qa.yaml [--config more.yaml]
   model.init_from=INIT qa.*=... [key=value ...]; the run evaluates the test split at its end (OUT/qa_eval.json:
   protocol, accuracy overall and per question type, out-of-list count, per-question predictions).
3. The text-only (blind) baseline, unless --no-blind: the same run with qa.blind=true (every clip replaced by a
   black one) in OUT/blind.
4. OUT/qa_report.json and a summary: accuracy vs the majority answer (the most frequent training answer) vs
   the blind model, overall and per question type.

--init: a DeepSpeed checkpoint (run dir, checkpoints/ dir or step dir) or an exported HF folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smaug.config import CONFIG_DIR
from smaug.train.finetune import run_step, start, train_command

FINETUNE_CONFIG = CONFIG_DIR / "finetune_qa.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", required=True, help="pre-trained weights: DeepSpeed checkpoint or exported HF folder")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--train-json", required=True, help='QA train rows [{"video", "question", "answer"}]')
    p.add_argument("--test-json", required=True, help="QA test rows")
    p.add_argument("--answer-list", required=True, help="answer_list.json: the answers ranked at evaluation")
    p.add_argument("--video-root", help="folder of the JSONs' video paths")
    p.add_argument("--test-video-root", help="folder of the test JSON's video paths (default: --video-root)")
    p.add_argument("--video-shards", help="shards with the videos (instead of --video-root)")
    p.add_argument("--test-video-shards", help="shards with the test videos")
    p.add_argument("--split", default="", help="test split name in the report (default: the test JSON's name)")
    p.add_argument("--config", action="append", default=[], help="extra config overlays after finetune_qa.yaml")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for training and evaluation")
    p.add_argument("--frames", type=int, default=0, help="frames per clip at evaluation (default: the run's)")
    p.add_argument("--k", type=int, default=128, help="answers re-scored by full log-likelihood per question")
    p.add_argument("--no-blind", action="store_true", help="skip the text-only (blind) baseline run")
    p.add_argument("overrides", nargs="*", help="trainer overrides, e.g. train.steps=500 optim.lr=2e-5")
    args = p.parse_args(argv)
    if not (args.video_root or args.video_shards):
        p.error("give --video-root or --video-shards")
    return args


def train(args, base_cfg: Path, out: Path, blind: bool) -> dict:
    qa = {
        "train_json": args.train_json,
        "test_json": args.test_json,
        "answer_list": args.answer_list,
        "video_root": args.video_root,
        "test_video_root": args.test_video_root,
        "video_shards": args.video_shards,
        "test_video_shards": args.test_video_shards,
    }
    sets = [f"qa.{k}={Path(v).resolve()}" for k, v in qa.items() if v]
    sets += [f"qa.k={args.k}", f"qa.blind={'true' if blind else 'false'}"]
    if args.split:
        sets.append(f"qa.split={args.split}")
    if args.frames:
        sets.append(f"eval.num_frames={args.frames}")
    cmd = train_command(args, "smaug.train.qa", base_cfg, FINETUNE_CONFIG, out, sets)
    run_step(cmd, "blind (text-only) QA fine-tuning" if blind else "QA fine-tuning")
    return json.loads((out / "qa_eval.json").read_text())


def _brief(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k != "predictions"}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = start(args, "finetune_qa")
    if started is None:
        return 2
    out, base_cfg, _ = started
    main_rep = train(args, base_cfg, out, blind=False)
    blind_rep = None if args.no_blind else train(args, base_cfg, out / "blind", blind=True)
    maj = main_rep["baselines"]["majority"]
    summary = {
        "init": str(args.init),
        "out": str(out),
        "protocol": main_rep["protocol"],
        "accuracy": main_rep["results"]["accuracy"],
        "majority_accuracy": maj["accuracy"],
        "blind_accuracy": blind_rep["results"]["accuracy"] if blind_rep else None,
        "per_type": {
            t: {
                "model": v["accuracy"],
                "majority": maj["per_type"].get(t, {}).get("accuracy"),
                "blind": blind_rep["results"]["per_type"][t]["accuracy"] if blind_rep else None,
            }
            for t, v in main_rep["results"]["per_type"].items()
        },
        "finetuned": _brief(main_rep),
        "blind": _brief(blind_rep) if blind_rep else None,
    }
    (out / "qa_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    pr = main_rep["protocol"]
    print(
        f"[finetune_qa] split={pr['split']} questions={pr['num_questions']} answer list={pr['answer_list_size']} "
        f"k={pr['k']} frames={pr['frames']} out-of-list={pr['out_of_list']} step={pr['step']}",
        flush=True,
    )
    print(f"[finetune_qa] {'':<22}{'all':>8}" + "".join(f"{t:>9}" for t in summary["per_type"]), flush=True)
    rows = [("model", summary["accuracy"], "model"), (f"majority ({maj['answer']})", maj["accuracy"], "majority")]
    if blind_rep:
        rows.append(("blind", summary["blind_accuracy"], "blind"))
    for name, acc, key in rows:
        per = "".join(f"{(v[key] if v[key] is not None else float('nan')):>9.2f}" for v in summary["per_type"].values())
        print(f"[finetune_qa] {name:<22}{acc:>8.2f}{per}", flush=True)
    for w in main_rep["warnings"]:
        print(f"[finetune_qa] WARNING: {w}", flush=True)
    print(f"[finetune_qa] report: {out / 'qa_report.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
