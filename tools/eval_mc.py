#!/usr/bin/env python
"""Multiple-choice video-text evaluation (MSRVTT-MC style) of a smaug retrieval checkpoint; no training.

    python tools/eval_mc.py --checkpoint runs/qs --json mc_test.json --video-root videos/ [--out report.json]
    python tools/eval_mc.py --checkpoint runs/ft_msrvtt --json msrvtt_mc_test.json --video-shards shards/msrvtt_test
    torchrun --nproc_per_node 8 tools/eval_mc.py ...        # ranks split the rows; every row scored once

Rows: [{"video": "x.mp4", "caption": [5 options], "answer": 2}], optional "type" (accuracy per type) and
"differs" (per option, the attribute it differs in: pairwise win rate per attribute). Bad rows (missing video,
too few / empty options, answer index out of range, malformed) are skipped and counted.
Each option is scored against its clip by VTC, VTM and both (`smaug.eval.mc`); all three accuracies are
reported, the headline is --method (default combined). The report (--out) records the protocol: checkpoint,
step, frames, split, rows, options, methods, world size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smaug.eval.cli import data_config, load_model, run_tool


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="DeepSpeed checkpoint dir or exported HF folder")
    p.add_argument("--json", required=True, help='MC rows [{"video", "caption": [options], "answer": index}]')
    p.add_argument("--video-root", default=None, help="folder of the JSON's video paths")
    p.add_argument("--video-shards", default=None, help="shards with the videos (keys as make_shards gives the paths)")
    p.add_argument("--shards-root", default=None, help="where relative shard specs resolve (default: the run's)")
    p.add_argument("--split", default=None, help="split name in the report (default: the JSON's file name)")
    p.add_argument("--method", default="combined", choices=["vtc", "vtm", "combined"], help="headline method")
    p.add_argument("--frames", type=int, default=0, help="frames per clip (default: the run's eval frames)")
    p.add_argument("--max-text-len", type=int, default=0, help="option tokens (default: the run's)")
    p.add_argument("--batch-size", type=int, default=0, help="rows per batch (default: the run's eval batch)")
    p.add_argument("--workers", type=int, default=-1, help="decoding workers (default: the run's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=None, help="write the JSON report here")
    args = p.parse_args(argv)
    if (args.video_root is None) == (args.video_shards is None):
        p.error("give exactly one of --video-root / --video-shards")
    return args


def run(args) -> dict:
    from smaug.data import load_tokenizer
    from smaug.data.qa_data import make_clip_source, read_mc
    from smaug.eval.mc import evaluate_mc, mc_report

    rank, world, device, ref, model, cfg, run_config, tok_path, step = load_model(args)
    model = model.to(device).eval()
    tokenizer = load_tokenizer(tok_path)
    dcfg = data_config(run_config, cfg, args)
    rows, bad = read_mc(args.json, args.video_root)
    clips = make_clip_source(dcfg, tokenizer, video_root=args.video_root, shards=args.video_shards)
    res = evaluate_mc(
        model,
        rows,
        clips,
        tokenizer,
        device,
        dcfg.eval_batch_size or dcfg.batch_size,
        dcfg.num_workers,
        dcfg.max_text_len,
        rank,
        world,
    )
    res["skipped"] = {k: res["skipped"].get(k, 0) + bad.get(k, 0) for k in set(res["skipped"]) | set(bad)}
    report = mc_report(
        res,
        checkpoint=str(ref.path),
        checkpoint_kind=ref.kind,
        step=step,
        split=args.split or Path(args.json).stem,
        json=str(Path(args.json).resolve()),
        videos=str(Path(args.video_root or args.video_shards).resolve()) if args.video_root else args.video_shards,
        frames=dcfg.num_frames,
        image_size=dcfg.image_size,
        headline=args.method,
        world_size=world,
        device=device.type,
    )
    report["rank"] = rank
    return report


def main(argv=None) -> int:
    from smaug.eval.mc import format_mc

    args = parse_args(argv)
    return run_tool("eval_mc", args, run, lambda r: format_mc(r, args.method))


if __name__ == "__main__":
    sys.exit(main())
