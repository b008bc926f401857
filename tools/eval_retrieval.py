#!/usr/bin/env python
"""Text-to-video and video-to-text retrieval of a smaug checkpoint, the way papers report it.

    python tools/eval_retrieval.py --checkpoint runs/qs --shards corpus:synthetic_test
    python tools/eval_retrieval.py --checkpoint exported/qs --json msrvtt_test_1k.json --video-root videos/ \\
        --frames 12 --k 128 --split msrvtt-1k-test --out report.json
    torchrun --nproc_per_node 8 tools/eval_retrieval.py ...      # ranks split the clips and the rerank work

Method (Singularity's): VTC cosine similarity for all (text, video) pairs, then the VTM head
rescores the top-k candidates of every query (k = --k, default 128; --k 0 = VTC only). Three
rankings, both directions, R@1/5/10 (percent), median and mean rank (1-based):
  vtc       VTC similarity alone;
  vtm       the top-k by VTM logit, then the rest in VTC order (Singularity's rerank);
  combined  the top-k by log softmax(sim / temp) over all videos (t2v) or texts (v2t) + log
            sigmoid(VTM logit), temp the model's VTC temperature (VTC's retrieval probability x
            VTM's match probability), then the rest in VTC order.
Next to them, vtm_acc: the VTM pair accuracy on the scored pairs, and the fraction of positives
among them (an always-"no" head scores 1 - that). Ties count at their expected rank under a random
order (all-equal scores give chance level); the median rank of an even count is the mean of the
two middle ranks (np.median). Every caption of a clip is a text query; video->text counts the
best-ranked caption.

Protocol options: --pooling embed (cosine of the mean-pooled, normalised video embedding) or
frame_sim (mean over frames of each normalised frame embedding's cosine with the text); --dsl
adds dual-softmax VTC results (vtc_dsl: sim * softmax(100 sim) over the texts of each video for
t2v, over the videos of each text for v2t) next to the plain ones; --paragraph joins each clip's
captions (space-separated, in order) into one query (DiDeMo / ActivityNet paragraph retrieval),
truncated to --max-text-len tokens.

--checkpoint: a DeepSpeed checkpoint (run dir, its checkpoints/ dir, or a step dir) or an
exported Hugging Face folder. Data: --shards SPEC (shard spec, dir, manifest or corpus:NAME;
default the run's data.eval_shards) or --json JSON --video-root DIR (videos read directly,
decoded exactly as shards of the same JSON would be). Frames per clip, frame size, decode size,
batch size, workers and caption length default to the run's eval settings, so with no options
the numbers equal the trainer's periodic eval (VTC).

Output: a readable table on stdout and a JSON report (--out) recording the protocol
(checkpoint, step, frames, k, pooling, dsl, queries, split, data, clip/caption counts, chance
levels, precision, world size) next to the metrics: `smaug.eval.retrieval.retrieval_report`, the schema
of the trainer's eval.json too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from smaug.eval.cli import data_config, load_model, run_tool


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="DeepSpeed checkpoint dir or exported HF folder")
    p.add_argument("--shards", default=None, help="eval shard spec (default: the run's data.eval_shards)")
    p.add_argument("--shards-root", default=None, help="where relative specs / corpus:NAME resolve (default: run's)")
    p.add_argument("--json", default=None, help="MSRVTT-style JSON [{video, caption: str|[str]}]")
    p.add_argument("--video-root", default=None, help="root of the JSON's video paths")
    p.add_argument("--split", default=None, help="name of the split, recorded in the report (default: the data path)")
    p.add_argument("--frames", type=int, default=0, help="frames per clip (default: the run's eval frames)")
    p.add_argument("--k", type=int, default=128, help="VTM rerank top-k per query (0 = VTC only; default 128)")
    p.add_argument(
        "--pooling",
        default="embed",
        choices=["embed", "frame_sim"],
        help="embed: cosine of the mean-pooled video embedding; frame_sim: mean of per-frame cosines",
    )
    p.add_argument("--dsl", action="store_true", help="also report dual-softmax VTC results (results.vtc_dsl)")
    p.add_argument(
        "--paragraph",
        action="store_true",
        help="one query per clip: its captions joined by spaces, in order (paragraph retrieval)",
    )
    p.add_argument("--max-text-len", type=int, default=0, help="query tokens incl. [CLS]/[SEP] (default: the run's)")
    p.add_argument("--batch-size", type=int, default=0, help="clips per batch (default: the run's eval batch)")
    p.add_argument("--workers", type=int, default=-1, help="decoding workers per process (default: the run's)")
    p.add_argument("--rerank-batch", type=int, default=64, help="(text, video) pairs per VTM forward")
    p.add_argument("--max-samples", type=int, default=0, help="cap on clips per rank (0 = all)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="fp32, or bf16 weights as the trainer's bf16 engine evaluates",
    )
    p.add_argument(
        "--offload-features",
        default="none",
        choices=["none", "cpu"],
        help="keep the video tokens for reranking on CPU (big eval sets)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="labels.json of the synthetic corpus: add top-1 attribute accuracies (colour, shape, motion, "
        "combination) per ranking, their frozen-frame control and the R@1 ceiling",
    )
    p.add_argument("--out", default=None, help="write the JSON report here")
    args = p.parse_args(argv)
    if args.json and args.shards:
        p.error("--shards and --json are exclusive")
    if args.json and not args.video_root:
        p.error("--json needs --video-root")
    if args.k < 0 or args.frames < 0 or args.max_text_len < 0:
        p.error("--k, --frames and --max-text-len must be >= 0")
    return args


def build_loader(args, dcfg, tokenizer, rank: int, world: int):
    """-> (loader, split name, data description)."""
    if args.json:
        from smaug.data.json_clips import build_json_eval_loader

        loader = build_json_eval_loader(args.json, args.video_root, dcfg, tokenizer, rank, world)
        return (
            loader,
            args.split or Path(args.json).stem,
            {"json": str(Path(args.json).resolve()), "video_root": str(Path(args.video_root).resolve())},
        )
    from smaug.data import build_eval_loader

    spec = args.shards or dcfg.eval_shards
    if not spec:
        raise SystemExit(
            "eval_retrieval: no data: pass --shards SPEC or --json JSON --video-root DIR "
            "(the checkpoint's run config has no data.eval_shards)"
        )
    loader = build_eval_loader(dcfg, tokenizer, spec, rank=rank, world_size=world)
    return loader, args.split or str(spec), {"shards": spec, "shards_root": dcfg.shards_root}


def format_table(report: dict) -> str:
    from smaug.eval.retrieval import ranking_rows

    pr, res = report["protocol"], report["results"]
    head = (
        f"retrieval  split={pr['split']}  clips={pr['num_videos']}  queries={pr['num_texts']}  "
        f"frames={pr['frames']}  k={pr['k']}  pooling={pr['pooling']}  checkpoint={pr['checkpoint']}"
        + (f" (step {pr['step']})" if pr.get("step") is not None else "")
    )
    lines = [head, f"{'method':<10}{'dir':<5}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}{'MeanR':>9}"]
    for name, d, r1, r5, r10, medr, meanr in ranking_rows(res):
        lines.append(f"{name:<10}{d:<5}{r1:>8.2f}{r5:>8.2f}{r10:>8.2f}{medr:>8.1f}{meanr:>9.2f}")
    lines.append(
        f"chance R@1/5/10: t2v {pr['chance_r1']:.2f} / {pr['chance_r5']:.2f} / {pr['chance_r10']:.2f}, "
        f"v2t {pr['v2t_chance_r1']:.2f} / {pr['v2t_chance_r5']:.2f} / {pr['v2t_chance_r10']:.2f}"
    )
    if res.get("vtm_acc") is not None:
        lines.append(
            f"VTM pair accuracy on the {pr['num_pairs_reranked']} scored pairs: {res['vtm_acc']:.3f} "
            f"(positives {res['vtm_pos_frac']:.3f}; always-'no' scores {1 - res['vtm_pos_frac']:.3f})"
        )
    if report.get("attributes"):
        from smaug.eval.attributes import format_attributes

        lines += format_attributes(report["attributes"])
    lines += [f"WARNING: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def run(args) -> dict:
    from smaug.data import load_tokenizer
    from smaug.eval.retrieval import evaluate, retrieval_report

    rank, world, device, ref, model, cfg, run_config, tok_path, step = load_model(args)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    model = model.to(device).eval()
    tokenizer = load_tokenizer(tok_path)
    dcfg = data_config(run_config, cfg, args)
    loader, split, data_desc = build_loader(args, dcfg, tokenizer, rank, world)
    t0 = time.perf_counter()
    opts = dict(
        k=args.k,
        max_text_len=dcfg.max_text_len,
        max_samples=args.max_samples,
        offload=args.offload_features,
        batch_size=args.rerank_batch,
        pooling=args.pooling,
        paragraph=args.paragraph,
    )
    res = evaluate(model, loader, tokenizer, device, dsl=args.dsl, **opts)
    attributes = None
    if args.labels:
        from smaug.eval.attributes import attribute_report, frozen_frames, load_clip_labels

        loader, _, _ = build_loader(args, dcfg, tokenizer, rank, world)
        ctl = evaluate(model, loader, tokenizer, device, video_transform=frozen_frames, **opts)  # the control
        attributes = attribute_report(
            res["t2v_scores"],
            ctl["t2v_scores"],
            res["features"].txt2vid,
            res["keys"],
            load_clip_labels(args.labels),
            str(Path(args.labels).resolve()),
            vtm_pairs=res.get("vtm_pairs"),
        )
    elapsed = time.perf_counter() - t0
    report = retrieval_report(
        res,
        checkpoint=str(ref.path),
        checkpoint_kind=ref.kind,
        step=step,
        split=split,
        data=data_desc,
        frames=dcfg.num_frames,
        image_size=dcfg.image_size,
        decode_short_side=dcfg.short_side,
        precision=args.precision,
        device=device.type,
        world_size=world,
        skipped=loader.skip_counts(),
    )
    if attributes is not None:
        report["attributes"] = attributes
    return {**report, "seconds": round(elapsed, 2), "rank": rank}


def main(argv=None) -> int:
    return run_tool("eval_retrieval", parse_args(argv), run, format_table)


if __name__ == "__main__":
    sys.exit(main())
