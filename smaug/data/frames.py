"""The evaluation view of a clip: which frames, at which decode size, cropped and resized how.

    segment_indices   T frame indices: the clip cut into T equal segments, the centre of each (eval) or
                      a random frame in each (training, with an rng)
    scaled_size       the size a decoder scales a frame to, so its short side is `short_side`
    center_crop_box   the largest centred square (eval); training crops elsewhere (`decode.py`)
    crop_resize       crop `[T, H, W, 3]` uint8 frames and resize to `[T, 3, S, S]` uint8 (antialiased)

This file needs only numpy, torch and the standard library on purpose: `tools/export_hf.py` copies it
byte for byte next to the exported `processing_smaug.py`, so a Hugging Face processor prepares frames
with this very code, as evaluation does (`decode.decode_sample` with `rng=None`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import torch


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side scaled down to `short_side` (never up), both even."""
    if short_side <= 0 or min(width, height) <= short_side:
        w, h = width, height
    else:
        s = short_side / min(width, height)
        w, h = max(2, round(width * s)), max(2, round(height * s))
    return max(2, w - w % 2), max(2, h - h % 2)


def segment_indices(n: int, t: int, rng: Optional[np.random.Generator] = None) -> list[int]:
    """T frame indices in [0, n): one per equal segment, random in it (rng) or its centre."""
    if n <= 0:
        raise ValueError("no frames")
    out = []
    for i in range(t):
        lo = int(math.floor(i * n / t))
        hi = max(lo + 1, int(math.floor((i + 1) * n / t)))
        out.append(int(rng.integers(lo, hi)) if rng is not None else (lo + hi - 1) // 2)
    return [min(x, n - 1) for x in out]


def center_crop_box(h: int, w: int) -> tuple[int, int, int, int]:
    """The largest centred square."""
    s = min(h, w)
    return (h - s) // 2, (w - s) // 2, s, s


def crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop `[T, H, W, 3]` uint8 frames to `box` and resize to `[T, 3, size, size]` uint8.

    The result keeps the frames' HWC memory layout (a channels_last view, not contiguous):
    `collate` writes it into the contiguous batch, so transposing here would copy twice."""
    import torch
    import torch.nn.functional as F

    top, left, ch, cw = box
    # HWC frames viewed as NCHW are channels_last: torch's uint8 bilinear (antialiased) path
    # runs on them directly, ~5x faster than converting to float.
    x = torch.from_numpy(frames[:, top : top + ch, left : left + cw]).permute(0, 3, 1, 2)
    if (ch, cw) != (size, size):
        x = F.interpolate(
            x.contiguous(memory_format=torch.channels_last),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return x
