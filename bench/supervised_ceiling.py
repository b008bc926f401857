"""How fast can the quickstart's video encoder learn each appearance attribute when it is told the answer? A
ceiling for what pre-training (VTC, VTM, MLM, MVM: weaker signals than a label) can learn in the same budget.

    python bench/supervised_ceiling.py --data data/synthetic --shards-root shards          # 400 steps of 16 clips
    python bench/supervised_ceiling.py --data data/synthetic --shards-root shards --steps 2000 --image-size 56 \\
        --patch-size 8 --json ceiling.json

The encoder is the model's own (`SmaugModel`'s VideoEncoder of `--preset`, from random init as the quickstart's),
fed by the training loader of the quickstart (same shards, crops, batch size), with one linear head on the mean of
the frames' [CLS] per attribute (colour: 5 ways, shape: 3 ways; motion needs frame order, which this readout
does not have, so it is not probed), trained with cross-entropy on the single-object clips' labels from
labels.json (two-object clips are skipped: about 30% of each batch). AdamW, a linear warm-up then a constant
learning rate. Every `--eval-every` steps it prints the training accuracy over those steps and the accuracy on
the held-out split (colour-shape pairs never seen in training, all on the held-out colour): there a readout that
infers shape from colour scores 0% on shape, chance is 33%, and only reading the shape scores above it.

Variants: `--encoder cnn` (a small CNN in the ViT's place: is a failure the ViT's or the task's?),
`--permute-channels` (colour taken away in training: can shape be read, and transfer, when colour cannot stand in
for it?).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the synthetic corpus folder (labels.json, tokenizer/)")
    p.add_argument("--tokenizer", default=None, help="default: DATA/tokenizer (the quickstart's)")
    p.add_argument(
        "--shards-root", default=None, help="holds synthetic/train and synthetic/test; default $SMAUG_SHARDS"
    )
    p.add_argument("--steps", type=int, default=400, help="training steps (the quickstart's 400)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per step (the quickstart's 16)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--preset", default="tiny", help="SmaugConfig preset of the encoder")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument(
        "--encoder",
        default="vit",
        choices=("vit", "cnn"),
        help="vit: the model's video encoder; cnn: a small convolutional net (`SmallCNN`) in its place",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="loader workers")
    p.add_argument(
        "--permute-channels",
        action="store_true",
        help="train on each clip with its RGB channels in a random order (the colour head then learns nothing, the "
        "loss is shape's alone): is a shape readout that colour cannot stand in for learnable? Held-out clips are "
        "scored as they are",
    )
    p.add_argument("--json", default=None, help="also write the curve here")
    return p


class SmallCNN(nn.Module):
    """`--encoder cnn`: four strided convolutions and a global average pool per frame, a reference point with a
    convolution's inductive bias for the ViT. frames [M, 3, H, W] -> [M, 128]."""

    width = 128

    def __init__(self):
        super().__init__()
        chans = [(3, 32, 5), (32, 64, 3), (64, 64, 3), (64, 128, 3)]
        layers = [m for i, o, k in chans for m in (nn.Conv2d(i, o, k, 2, k // 2), nn.ReLU())]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


class Probe(nn.Module):
    """The encoder and its heads: the mean over frames of the frame feature (the ViT's [CLS], or the CNN's pooled
    map) -> colour and shape logits."""

    def __init__(self, encoder: nn.Module, width: int, colours: int, shapes: int):
        super().__init__()
        self.encoder = encoder
        self.colour, self.shape = nn.Linear(width, colours), nn.Linear(width, shapes)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.encoder, SmallCNN):
            feat = self.encoder(video.flatten(0, 1)).unflatten(0, video.shape[:2]).mean(1)  # [B, D]
        else:
            feat = self.encoder(video).tokens[:, :, 0].mean(1)  # [B, D]
        return self.colour(feat), self.shape(feat)


def class_index(labels: dict) -> tuple[dict[str, list[str]], dict[str, tuple[int, int]]]:
    """The heads' classes (labels.json's colour and shape names, sorted) and each single-object clip's key ->
    (colour, shape) class indices; built once."""
    names = {a: sorted({v[a] for v in labels.values()}) for a in ("colour", "shape")}
    index = {k: (names["colour"].index(v["colour"]), names["shape"].index(v["shape"])) for k, v in labels.items()}
    return names, index


def targets(keys, index: dict) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Rows of single-object clips and their (colour, shape) class indices."""
    rows = [i for i, k in enumerate(keys) if k in index]
    colour = torch.tensor([index[keys[i]][0] for i in rows], dtype=torch.long)
    shape = torch.tensor([index[keys[i]][1] for i in rows], dtype=torch.long)
    return rows, colour, shape


@torch.no_grad()
def held_out_accuracy(model, probe, loader, index: dict) -> dict[str, float]:
    probe.eval()
    right, n = torch.zeros(2), 0
    for batch in loader:
        rows, colour, shape = targets(batch["key"], index)
        if rows:
            c, s = probe(model.normalize_video(batch["video"][rows]))
            right += torch.stack([(c.argmax(1) == colour).sum(), (s.argmax(1) == shape).sum()]).float()
            n += len(rows)
    probe.train()
    return {"colour": 100.0 * float(right[0]) / n, "shape": 100.0 * float(right[1]) / n, "clips": n}


def main(argv=None) -> int:
    args = arg_parser().parse_args(argv)
    if args.shards_root:
        os.environ["SMAUG_SHARDS"] = args.shards_root
    from smaug.data import DataConfig, build_eval_loader, build_train_loader, load_tokenizer
    from smaug.data.tokenizer import tokenizer_fields
    from smaug.eval.attributes import load_clip_labels
    from smaug.models.smaug import SmaugConfig, SmaugModel

    torch.manual_seed(args.seed)
    data = Path(args.data)
    labels = load_clip_labels(data / "labels.json")
    tok = load_tokenizer(args.tokenizer or str(data / "tokenizer"))
    dcfg = DataConfig(
        train_shards="corpus:synthetic",
        eval_shards="corpus:synthetic_test",
        num_frames=args.frames,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        shuffle_buffer=200,
        max_text_len=32,
    )
    cfg = SmaugConfig.preset(
        args.preset,
        num_frames=args.frames,
        image_size=args.image_size,
        patch_size=args.patch_size,
        **tokenizer_fields(tok),
    )
    model = SmaugModel(cfg)  # only its video encoder and pixel normalisation are used
    names, index = class_index(labels)
    encoder, width = (SmallCNN(), SmallCNN.width) if args.encoder == "cnn" else (model.video_encoder, cfg.vision_width)
    probe = Probe(encoder, width, len(names["colour"]), len(names["shape"]))
    opt = torch.optim.AdamW(probe.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
    train = iter(build_train_loader(dcfg, tok, seed=args.seed))
    gen = torch.Generator().manual_seed(args.seed)
    curve, window, seen, t0 = [], [], 0, time.time()
    print(
        f"{'step':>6}{'clips':>8}{'train colour':>14}{'train shape':>13}{'held-out colour':>17}{'held-out shape':>16}"
    )
    for step in range(1, args.steps + 1):
        batch = next(train)
        rows, colour, shape = targets(batch["key"], index)
        if rows:
            video = batch["video"][rows]  # uint8 [b, T, 3, H, W]
            if args.permute_channels:
                order = torch.stack([torch.randperm(3, generator=gen) for _ in rows])  # [b, 3]
                video = torch.stack([v[:, o] for v, o in zip(video, order)])
            c, s = probe(model.normalize_video(video))
            loss = F.cross_entropy(s, shape) + (0.0 if args.permute_channels else F.cross_entropy(c, colour))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(((c.argmax(1) == colour).sum().item(), (s.argmax(1) == shape).sum().item(), len(rows)))
            seen += len(rows)
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            held = held_out_accuracy(model, probe, build_eval_loader(dcfg, tok), index)
            row = {
                "step": step,
                "labelled_clips_seen": seen,
                "train_colour": 100.0 * sum(w[0] for w in window) / max(1, sum(w[2] for w in window)),
                "train_shape": 100.0 * sum(w[1] for w in window) / max(1, sum(w[2] for w in window)),
                "held_out_colour": held["colour"],
                "held_out_shape": held["shape"],
                "held_out_clips": held["clips"],
                "seconds": time.time() - t0,
            }
            curve.append(row)
            window = []
            print(
                f"{step:>6}{seen:>8}{row['train_colour']:>14.1f}{row['train_shape']:>13.1f}"
                f"{row['held_out_colour']:>17.1f}{row['held_out_shape']:>16.1f}",
                flush=True,
            )
    print(
        f"held-out: chance colour {100 / len(names['colour']):.0f} / shape {100 / len(names['shape']):.0f}; on the "
        "quickstart corpus shape inferred from colour scores 0 (each held-out colour has one held-out shape)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "curve": curve}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
