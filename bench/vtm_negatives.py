"""What the VTM head is asked on the synthetic corpus, and what it can answer: the negatives mining picks, by how they
differ from their positive, and the head's accuracy on each kind.

    python bench/vtm_negatives.py --checkpoint runs/quickstart --labels data/synthetic/labels.json
    python bench/vtm_negatives.py --checkpoint runs/quickstart --labels data/synthetic/labels.json \\
        --shards corpus:synthetic_test --batches 20 --json negatives.json

Takes one caption per clip of the shards (default: the training shards, `corpus:synthetic`), draws `--batches`
random batches of `--batch-size` clips (the quickstart's 16), and in each draws the VTM negatives as training does
(`smaug.models.losses.sample_negatives` on the checkpoint's VTC similarities, with its ban on identical and
near-identical captions): hard (mined) and uniform, one negative text per video and one negative video per text.
Each negative is sorted by how it differs from its positive, from labels.json: `same` (colour, shape and motion
alike: a false negative, nothing in the caption tells them apart), `motion`, `shape` or `colour` (that attribute
alone), `multi` (two or more), `two-object` (either clip has two objects). For each kind it prints the share of
the negatives, how often the VTM head (logit > 0 = match) says "no match", and how often the VTC similarity ranks
the positive above that negative (what the retrieval embedding reads; 50 = blind to the difference); and the head's
"match" rate on positives.

A head that reads only colour says "no" on the colour negatives and "match" on the shape- and motion-only ones:
mined negatives are mostly the latter, so such a head sits at its prior once hard negatives start.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch

KINDS = ("same", "motion", "shape", "colour", "multi", "two-object")


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run dir, checkpoints/ dir, step dir or exported HF folder")
    p.add_argument("--labels", required=True, help="the synthetic corpus's labels.json")
    p.add_argument("--shards", default="corpus:synthetic", help="shard spec (default: the training shards)")
    p.add_argument("--shards-root", default=None, help="default: the run's data.shards_root / $SMAUG_SHARDS")
    p.add_argument("--batches", type=int, default=40, help="random batches drawn")
    p.add_argument("--batch-size", type=int, default=16, help="clips per batch (the quickstart's 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p


def kind_of(a: tuple | None, b: tuple | None) -> str:
    """How two clips' (colour, shape, motion) differ; None = a two-object clip."""
    from smaug.eval.attributes import content_difference

    return "two-object" if a is None or b is None else content_difference(a, b)


def main(argv=None) -> int:
    args = arg_parser().parse_args(argv)
    from smaug.checkpoint import model_from_checkpoint
    from smaug.data import build_eval_loader, load_tokenizer
    from smaug.eval.attributes import load_clip_labels
    from smaug.eval.cli import data_config
    from smaug.eval.retrieval import extract_features, vtm_pair_scores
    from smaug.models.losses import sample_negatives

    model, cfg, run_config, tok_path = model_from_checkpoint(args.checkpoint)
    model.eval()
    tokenizer = load_tokenizer(tok_path)
    opts = SimpleNamespace(
        frames=0, batch_size=0, workers=-1, shards_root=args.shards_root, max_text_len=0
    )  # data_config's eval-time choices: the run's own
    dcfg = data_config(run_config, cfg, opts)
    device = torch.device("cpu")
    feats = extract_features(
        model,
        build_eval_loader(dcfg, tokenizer, args.shards),
        tokenizer,
        device,
        0,
        dcfg.max_text_len,
        keep_tokens=True,
    )
    labels = load_clip_labels(args.labels)
    content = [tuple(labels[k].values()) if k in labels else None for k in feats.keys]  # None: two objects
    first: dict[int, int] = {}  # one caption per clip
    for t, v in enumerate(feats.txt2vid.tolist()):
        first.setdefault(v, t)
    clips = sorted(first)
    if len(clips) < args.batch_size:
        raise SystemExit(f"vtm_negatives: {len(clips)} clips, fewer than --batch-size {args.batch_size}")
    enc = tokenizer(
        [feats.captions[first[v]] for v in clips],
        padding="max_length",
        max_length=dcfg.max_text_len,
        truncation=True,
        return_tensors="pt",
    )
    ids = enc["input_ids"]
    temp = float(model.temp.detach())
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    asked: list[tuple[str, str, int, int]] = []  # (negatives, kind or "positive", text, video)
    vtc_right: dict = defaultdict(list)  # (negatives, kind) -> VTC scores the positive above the negative
    for _ in range(args.batches):
        rows = rng.sample(range(len(clips)), args.batch_size)
        v = torch.tensor([clips[i] for i in rows])
        t = torch.tensor([first[clips[i]] for i in rows])
        sim = feats.video[v].float() @ feats.text[t].float().T / temp  # [b, b] video-to-text logits
        same = model.caption_duplicates(ids[rows])  # the captions training never takes as each other's negative
        for mode in ("hard", "uniform"):
            neg_text, neg_video = sample_negatives(sim, same, gen, hard=mode == "hard")
            for r in range(args.batch_size):
                kt = kind_of(content[v[r]], content[v[neg_text[r]]])  # video r with another clip's caption
                kv = kind_of(content[v[neg_video[r]]], content[v[r]])  # caption r with another clip
                asked.append((mode, "positive", int(t[r]), int(v[r])))
                asked.append((mode, kt, int(t[neg_text[r]]), int(v[r])))
                asked.append((mode, kv, int(t[r]), int(v[neg_video[r]])))
                vtc_right[mode, kt].append(bool(sim[r, r] > sim[r, neg_text[r]]))
                vtc_right[mode, kv].append(bool(sim[r, r] > sim[neg_video[r], r]))
    pairs = torch.unique(torch.tensor([[a[2], a[3]] for a in asked]), dim=0)
    scores = vtm_pair_scores(model, feats, pairs, device)
    report: dict = {"checkpoint": str(args.checkpoint), "shards": args.shards, "clips": len(clips)}
    for mode in ("hard", "uniform"):
        mine = [a for a in asked if a[0] == mode]
        count = Counter(a[1] for a in mine if a[1] != "positive")
        right = defaultdict(list)
        for _, kind, t, v in mine:
            says_match = scores[(t, v)] > 0
            right[kind].append(says_match if kind == "positive" else not says_match)
        n = sum(count.values())
        report[mode] = {
            "positive_match_rate": 100.0 * sum(right["positive"]) / len(right["positive"]),
            "kinds": {
                k: {
                    "share": 100.0 * count[k] / n,
                    "no_rate": 100.0 * sum(right[k]) / len(right[k]),
                    "vtc_prefers_positive": 100.0 * sum(vtc_right[mode, k]) / len(vtc_right[mode, k]),
                    "n": count[k],
                }
                for k in KINDS
                if count[k]
            },
        }
    lines = [
        f"VTM negatives of {args.checkpoint} on {args.shards} ({len(clips)} clips, {args.batches} batches of "
        f"{args.batch_size}); share of the negatives, how often the VTM head says 'no match' on them and VTC scores "
        "the positive above them (%)"
    ]
    lines.append(f"{'negatives':<10}{'differ in':<12}{'share':>8}{'says no':>9}{'VTC pos>neg':>13}{'n':>6}")
    for mode in ("hard", "uniform"):
        for k, v in report[mode]["kinds"].items():
            lines.append(
                f"{mode:<10}{k:<12}{v['share']:>8.1f}{v['no_rate']:>9.1f}{v['vtc_prefers_positive']:>13.1f}{v['n']:>6}"
            )
        lines.append(
            f"{mode:<10}{'(positives)':<12}{'':>8}{'match ' + format(report[mode]['positive_match_rate'], '.1f'):>9}"
        )
    lines.append("same = a false negative (the caption tells them apart in nothing): 'no' there is not a skill")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
