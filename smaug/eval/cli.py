"""Plumbing of the evaluation tools (tools/eval_retrieval.py, eval_mc.py, eval_qa.py), one home for all three.

    rank, world, device, ref = open_checkpoint(args)   # process group (torchrun env) on --device, --checkpoint
    rank, world, device, ref, model, cfg, run_config, tok_path, step = load_model(args)   # + the retrieval model
    dcfg = data_config(run_config, cfg, args)          # the run's DataConfig with --frames, --batch-size, ...
    return run_tool("eval_mc", args, run, fmt)         # a tool's main(): exit 2 on CheckpointError, else publish

`args` is the tool's argparse namespace; the names read are the options the tools share (--checkpoint,
--tokenizer, --device, --frames, --batch-size, --workers, --shards-root, --max-text-len, --out). Library code:
neither the trainer nor DeepSpeed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from smaug.checkpoint import CheckpointError
from smaug.dist import init_distributed


def open_checkpoint(args):
    """Process group (torchrun env; a plain run has none) on --device and the --checkpoint reference:
    -> (rank, world, device, CheckpointRef)."""
    from smaug.checkpoint import resolve_checkpoint

    kind = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, device = init_distributed(kind)
    return rank, world, device, resolve_checkpoint(args.checkpoint)


def checkpoint_step(ref):
    """The training step of a DeepSpeed checkpoint; None for an exported Hugging Face folder."""
    from smaug.checkpoint import read_client_state

    return read_client_state(ref).get("step") if ref.kind == "deepspeed" else None


def load_model(args):
    """Process group and the checkpoint's retrieval model: -> (rank, world, device, checkpoint ref, model,
    SmaugConfig, run config, tokenizer path, step)."""
    from smaug.checkpoint import model_from_checkpoint

    rank, world, device, ref = open_checkpoint(args)
    model, cfg, run_config, tok_path = model_from_checkpoint(args.checkpoint, args.tokenizer)
    return rank, world, device, ref, model, cfg, run_config, tok_path, checkpoint_step(ref)


def data_config(run_config: dict, cfg, args):
    """The run's DataConfig with the eval-time choices of this invocation applied."""
    from smaug.config import build_section
    from smaug.data import DataConfig

    data = dict(run_config.get("data") or {})
    for k in ("train_shards",):
        data.pop(k, None)
    dcfg = build_section("data", DataConfig, data)
    ev = run_config.get("eval") or {}
    frames = args.frames or int(ev.get("num_frames") or 0) or dcfg.num_frames
    repl = dict(num_frames=frames, image_size=cfg.image_size)
    if args.batch_size:
        repl["eval_batch_size"] = args.batch_size
    if args.workers >= 0:
        repl["num_workers"] = args.workers
    if args.shards_root:
        repl["shards_root"] = args.shards_root
    if args.max_text_len:
        repl["max_text_len"] = args.max_text_len
    return dataclasses.replace(dcfg, **repl)


def publish(report: dict, fmt, out) -> None:
    """Rank 0 prints `fmt(report)` and writes the JSON report to `out` (if given)."""
    if report.pop("rank") == 0:
        print(fmt(report), flush=True)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(report, indent=2) + "\n")
            print(f"report: {out}", flush=True)


def run_tool(name: str, args, run, fmt) -> int:
    """A tool's main(): `run(args)` -> its report (with "rank"), then `publish(report, fmt, args.out)`; 0, or 2
    with "NAME: error" on stderr when the checkpoint cannot be used. Every rank then leaves the process group
    if this call made it (torchrun); a group the caller made (a notebook, an in-process training run that
    evaluates next: DeepSpeed caches its groups) is left as it was."""
    caller_group = dist.is_available() and dist.is_initialized()
    try:
        try:
            report = run(args)
        except CheckpointError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        publish(report, fmt, args.out)
        return 0
    finally:
        if not caller_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
