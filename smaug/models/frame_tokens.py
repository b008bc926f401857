"""Per-frame token bookkeeping of the video encoder: the temporal embedding at any frame count, and
EViT token sparsification (keep the patch tokens the frame's [CLS] attends to most, fuse the rest).

Like every model file, it is copied byte for byte into HF exports (`smaug.hf.MODEL_CODE_FILES`).

Notation: M = B * T frames, n patch tokens per frame ([CLS] excluded), D width, H heads.
    resize_time          [1, T0, ..., D] -> [1, T, ..., D]  linear in time
    cls_attention_row    q, k [M, H, n + 1, hd] -> [M, n]   head-averaged [CLS] attention over the patches
    num_kept             n -> ceil(keep_ratio * n)           tokens kept at a sparsify block
    sparsify_tokens      x [M, 1 + n, D] -> [M, 1 + keep (+ 1 fused), D], with each token's patch index
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_time(embed: torch.Tensor, T: int) -> torch.Tensor:
    """embed: [1, T0, ..., D] learned per-frame embedding -> [1, T, ..., D], linearly interpolated over time."""
    if embed.shape[1] == T:
        return embed
    rest = embed.shape[2:]
    x = embed.reshape(embed.shape[1], -1).T[None]  # [1, prod(rest), T0]
    x = F.interpolate(x, size=T, mode="linear", align_corners=False)[0].T  # [T, prod(rest)]
    return x.reshape(1, T, *rest)


def cls_attention_row(q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The [CLS] row of softmax(q k^T * scale + bias), averaged over heads, over the patch tokens.

    q, k: [M, H, 1 + n, hd] (token 0 = [CLS]); bias: [M or 1, H, 1 + n, 1 + n] or None -> [M, n] (fp32).
    One query per frame: O(n hd) per head, not the O(n^2 hd) of the full attention matrix."""
    logits = (q[:, :, :1] * scale) @ k.transpose(-2, -1)  # [M, H, 1, 1 + n]
    if bias is not None:
        logits = logits + bias[:, :, :1].to(logits.dtype)
    return logits.float().softmax(dim=-1).mean(dim=1).squeeze(1)[:, 1:]


def num_kept(n: int, keep_ratio: float) -> int:
    """Top-k tokens kept out of n candidates at a sparsify layer: ceil(keep_ratio * n) (EViT), >= 1."""
    return max(1, math.ceil(round(keep_ratio * n, 6)))


def sparsify_tokens(x: torch.Tensor, cls_attn: torch.Tensor, ids: torch.Tensor, keep: int, mode: str = "fuse"):
    """EViT token reorganisation: keep the top-`keep` tokens by [CLS] attention, fuse the rest.

    x: [M, 1 + n, D] (token 0 = [CLS], kept), cls_attn: [M, n], ids: [M, n] original patch
    index of each token (-1 = a fused token). Returns x [M, 1 + keep (+1), D], ids [M, keep (+1)].
    mode "fuse": the dropped tokens become one token sum(a_i x_i) / sum(a_i), a = cls_attn;
    mode "drop": they are discarded. Kept tokens stay in their input order.
    """
    cls, patches = x[:, :1], x[:, 1:]
    M, n, D = patches.shape
    if keep >= n:
        return x, ids
    top = cls_attn.topk(keep, dim=1).indices.sort(dim=1).values
    kept = patches.gather(1, top[..., None].expand(-1, -1, D))
    kept_ids = ids.gather(1, top)
    if mode == "drop":
        return torch.cat([cls, kept], dim=1), kept_ids
    dropped = torch.ones_like(cls_attn, dtype=torch.bool).scatter(1, top, False)
    a = cls_attn * dropped  # [M, n], zero on kept tokens
    fused = (a[..., None] * patches.float()).sum(1, keepdim=True) / a.sum(1).clamp_min(1e-12)[:, None, None]
    fused_ids = torch.full((M, 1), -1, dtype=ids.dtype, device=ids.device)
    return torch.cat([cls, kept, fused.to(x.dtype)], dim=1), torch.cat([kept_ids, fused_ids], dim=1)
