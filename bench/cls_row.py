#!/usr/bin/env python
"""Cost of the explicit [CLS] attention row that token sparsification needs, against timm's fused
attention alone and against a second full attention-matrix pass (what the row avoids).

    python bench/cls_row.py [WIDTH HEADS FRAMES TOKENS]     # default: ViT-B, 16 frames x 50 tokens

Forward of one block's attention module, medians of interleaved runs (load changes hit all three
alike). The figures quoted in smaug/models/video_encoder.py come from here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from timm.models.vision_transformer import Block

from smaug.models.video_encoder import attention_with_cls_row


def bench_cls_row(width: int, heads: int, frames: int, tokens: int, iters: int = 50) -> dict:
    """Median forward time (ms) of one block's attention: timm's fused SDPA alone, with the
    explicit [CLS] row (`attention_with_cls_row`), and with a second full attention-matrix
    pass (what the row avoids)."""
    blk = Block(width, heads, qkv_bias=True).eval()
    x = torch.randn(frames, tokens, width)

    def second_pass(h):
        a = blk.attn
        qkv = a.qkv(h).reshape(frames, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        full = (qkv[0] @ qkv[1].transpose(-2, -1) * a.scale).softmax(-1)  # [M, H, n, n]
        return a(h), full[:, :, 0, 1:].mean(1)

    fns = {"sdpa": blk.attn, "sdpa+row": lambda h: attention_with_cls_row(blk.attn, h), "sdpa+full_matrix": second_pass}
    ts = {k: [] for k in fns}
    with torch.no_grad():
        for i in range(iters + 5):  # interleaved, so load changes hit all three alike
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                if i >= 5:
                    ts[name].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in ts.items()}


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dims", nargs="*", type=int, help="width heads frames tokens (default 768 12 16 50)")
    return p


def main(argv=None) -> int:
    args = arg_parser().parse_args(sys.argv[1:] if argv is None else argv).dims or [768, 12, 16, 50]
    torch.set_num_threads(1)
    r = bench_cls_row(*args)
    base = r["sdpa"]
    print(f"width {args[0]}, heads {args[1]}, {args[2]} frames x {args[3]} tokens (median ms, x SDPA alone):")
    for k, v in r.items():
        print(f"  {k:18} {v:8.2f}  {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
