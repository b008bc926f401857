#!/usr/bin/env python
"""Open-ended VideoQA evaluation of a QA fine-tuning run (tools/finetune_qa.py / python -m smaug.train.qa).

    python tools/eval_qa.py --checkpoint runs/qa_msrvtt [--test-json test.json --answer-list answer_list.json
        --video-root videos/] [--k 128] [--frames 12] [--split msrvtt-qa-test] [--out report.json]
    torchrun --nproc_per_node 8 tools/eval_qa.py ...        # ranks split the questions; each answered once

Data, answer list, k, blind flag and video source default to the run's own `qa` section (so with no options the
result equals the run's qa_eval.json); the options replace them. Method (`smaug.eval.qa`): per question the
answer list's top-k answers by first-token probability, re-ranked by full log-likelihood; exact match; answers
outside the list count as wrong and are counted. The report (--out) records the protocol (checkpoint, step,
split, frames, k, answer-list size, questions, out-of-list count, world size) and every prediction.
"""

from __future__ import annotations

import argparse
import sys

from smaug.checkpoint import CheckpointError
from smaug.eval.cli import checkpoint_step, data_config, open_checkpoint, run_tool

QA_OPTIONS = ("test_json", "answer_list", "video_root", "video_shards", "k", "split")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the QA run dir (or its checkpoints/ or a step dir)")
    p.add_argument("--test-json", default=None, help="QA test rows (default: the run's qa.test_json)")
    p.add_argument("--answer-list", default=None, help="answer_list.json (default: the run's)")
    p.add_argument("--video-root", default=None, help="folder of the test videos (default: the run's)")
    p.add_argument("--video-shards", default=None, help="shards with the test videos (instead of a folder)")
    p.add_argument("--k", type=int, default=0, help="answers re-scored by full log-likelihood (default: the run's)")
    p.add_argument("--split", default=None, help="split name in the report (default: the test JSON's name)")
    p.add_argument("--frames", type=int, default=0, help="frames per clip (default: the run's eval frames)")
    p.add_argument("--batch-size", type=int, default=0, help="questions per batch (default: the run's)")
    p.add_argument("--workers", type=int, default=-1, help="decoding workers (default: the run's)")
    p.add_argument("--shards-root", default=None, help="where relative shard specs resolve (default: the run's)")
    p.add_argument("--max-text-len", type=int, default=0, help="question tokens (default: the run's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=None, help="write the JSON report here")
    return p.parse_args(argv)


def qa_section(run_config: dict, args):
    """The run's `qa` section with this invocation's data options applied (a new folder or shard source
    replaces both of the run's)."""
    from smaug.config import build_section
    from smaug.eval.qa import QASection

    qa = dict(run_config.get("qa") or {})
    if args.video_root or args.video_shards:
        for k in ("video_root", "test_video_root", "video_shards", "test_video_shards"):
            qa[k] = None
    for k in QA_OPTIONS:
        if getattr(args, k):
            qa[k] = getattr(args, k)
    if args.batch_size:
        qa["eval_batch_size"] = args.batch_size
    q = build_section("qa", QASection, qa)
    if not (q.test_json and q.answer_list):
        raise SystemExit("eval_qa: no test set: pass --test-json and --answer-list (the run has none)")
    return q


def run(args) -> dict:
    from smaug.checkpoint import adapt_state_dict, load_smaug_checkpoint
    from smaug.data import load_tokenizer
    from smaug.eval.qa import run_qa_eval
    from smaug.models.answer_decoder import QAModel

    rank, world, device, ref = open_checkpoint(args)
    cfg, sd, run_config, tok_path = load_smaug_checkpoint(args.checkpoint, args.tokenizer)
    q = qa_section(run_config, args)
    model = QAModel(cfg, q.decoder_layers, q.blind)
    own = model.state_dict()
    sd, _ = adapt_state_dict(sd, own, str(ref.path))
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(
            f"checkpoint {ref.path}: not a QA run, {len(missing)} parameters missing (e.g. {', '.join(missing[:4])})"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own})
    model = model.to(device).eval()
    tokenizer = load_tokenizer(tok_path)
    dcfg = data_config(run_config, cfg, args)
    step = checkpoint_step(ref)
    report = run_qa_eval(
        model, q, dcfg, tokenizer, device, rank, world, checkpoint=str(ref.path), step=step, precision="fp32"
    )
    report["rank"] = rank
    return report


def main(argv=None) -> int:
    from smaug.eval.qa import format_qa

    return run_tool("eval_qa", parse_args(argv), run, format_qa)


if __name__ == "__main__":
    sys.exit(main())
