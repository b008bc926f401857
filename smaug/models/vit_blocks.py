"""The ViT block families of the video encoder: timm ViT, CLIP ViT (as timm ships it) and BEiT.

Every family is built from timm's own modules, so parameter names are those of timm checkpoints:
  vit    `timm.models.vision_transformer.Block` (ImageNet-21k augreg, MAE ViT-B)
  clip   the same blocks, LayerNorm eps 1e-5, quick-GELU where the checkpoint's architecture
         has it; the encoder adds `norm_pre` and a bias-free patch embedding (timm's CLIP layout)
  beit   `timm.models.beit.Block`: q/v biases (no k bias), layer scale `gamma_1/2`, a relative
         position bias table per block; no absolute position embedding for BEiT-base

timm ViT / CLIP blocks run timm's own forward except at sparsify layers. BEiT blocks always run
`block_forward` here: timm's BEiT attention adds the bias of the full, ordered [CLS] + N grid,
while after MAE masking and EViT sparsification each frame holds its own subset of tokens.

Relative position bias that follows the tokens (BEiT). Each frame's patch tokens carry `ids`
[M, n], their original patch index (-1 for the EViT fused token). With pos = [0, ids + 1] ([CLS]
is 0, as in timm's `relative_position_index` rpi [N + 1, N + 1]) the bias of the pair (i, j) is
table[rpi[pos_i, pos_j]]: exactly what the unmasked model gives those two positions.
Fused-token rule: the fused token (id -1) stands for tokens from anywhere in the frame and has no
position; every pair it takes part in (either side, itself included) gets a zero bias, so
attention to and from it is by content alone. Implemented as one extra rpi row/column (reached by
pos -1) that indexes one extra all-zero row appended to each block's table.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm, get_act_layer
from timm.models.beit import Block as BeitBlock
from timm.models.vision_transformer import Block

from .frame_tokens import cls_attention_row

FAMILIES = ("vit", "clip", "beit")
ACTIVATIONS = ("gelu", "quick_gelu")


def make_block(cfg, grid: tuple[int, int], drop_path: float) -> nn.Module:
    """One encoder block of `cfg.vision_family` with the config's width, heads, MLP, eps, activation."""
    norm = partial(LayerNorm, eps=cfg.vision_norm_eps)
    act = get_act_layer(cfg.vision_act)
    ls = cfg.vision_layer_scale or None
    D, H = cfg.vision_width, cfg.vision_heads
    if cfg.vision_family == "beit":
        return BeitBlock(
            D,
            H,
            qkv_bias=cfg.vision_qkv_bias,
            mlp_ratio=cfg.vision_mlp_ratio,
            drop_path=drop_path,
            init_values=ls,
            act_layer=act,
            norm_layer=norm,
            window_size=tuple(grid),
        )
    return Block(
        D,
        H,
        cfg.vision_mlp_ratio,
        qkv_bias=cfg.vision_qkv_bias,
        init_values=ls,
        drop_path=drop_path,
        act_layer=act,
        norm_layer=norm,
    )


def qkv_heads(attn: nn.Module, x: torch.Tensor):
    """x: [M, n, D] -> q, k, v [M, H, n, hd], with timm ViT's qkv bias / qk-norm or BEiT's q/v biases."""
    M, n, _ = x.shape
    if getattr(attn, "gate", None) is not None:
        raise NotImplementedError("gated attention is not supported at sparsify layers")
    q_bias = getattr(attn, "q_bias", None)
    if q_bias is not None:  # BEiT: q and v biases, k has none
        qkv = F.linear(x, attn.qkv.weight, torch.cat([q_bias, torch.zeros_like(q_bias), attn.v_bias]))
    else:
        qkv = attn.qkv(x)
    q, k, v = qkv.reshape(M, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v


def attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None, cls_row: bool = False):
    """timm ViT / BEiT attention forward with an optional additive bias, plus (when `cls_row`) the
    head-averaged [CLS] attention row from the same q and k (one query per frame: O(n D)).

    x: [M, n, D], bias: [M or 1, H, n, n] -> out [M, n, D], cls_attn [M, n - 1] (over non-[CLS]) or None.
    """
    M, n, _ = x.shape
    q, k, v = qkv_heads(attn, x)
    mask = None if bias is None else bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    cls_attn = None
    if cls_row:
        cls_attn = cls_attention_row(q, k, attn.scale, bias)
    out = out.transpose(1, 2).reshape(M, n, -1)
    norm = getattr(attn, "norm", None)  # timm ViT's optional attention-output norm (Identity by default)
    out = attn.proj_drop(attn.proj(norm(out) if norm is not None else out))
    return out, cls_attn


def layer_scale(blk: nn.Module, i: int, y: torch.Tensor) -> torch.Tensor:
    """Layer scale `i` (1: attention, 2: MLP) of a timm ViT (`ls1/ls2`) or BEiT (`gamma_1/2`) block."""
    ls = getattr(blk, f"ls{i}", None)
    if ls is not None:
        return ls(y)
    gamma = getattr(blk, f"gamma_{i}", None)
    return y if gamma is None else gamma * y


# ---------------------------------------------------------------------------- BEiT relative position bias
def bias_index(rpi: torch.Tensor, ids: torch.Tensor, R: int) -> torch.Tensor:
    """Table rows of the relative position bias of every token pair of each frame.

    rpi: [N + 1, N + 1] timm's relative_position_index (row/col 0 = [CLS]); ids: [M, n] original
    patch index per patch token, -1 = fused token; R: rows of the bias table -> idx [M, n + 1, n + 1]
    into the table extended by one zero row (index R: the fused token's pairs). R is passed, not
    read from rpi, which would be a host sync.
    """
    rpi_ext = F.pad(rpi, (0, 1, 0, 1), value=R)  # [N + 2, N + 2]; row/col N + 1 (= -1) -> the zero row
    pos = torch.cat([ids.new_zeros(ids.shape[0], 1), torch.where(ids >= 0, ids + 1, -1)], dim=1)  # [M, n + 1]
    return rpi_ext[pos[:, :, None], pos[:, None, :]]


def gathered_bias(attn: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """One block's bias for the kept tokens: idx [M, n, n] -> [M, H, n, n] (zero for fused-token pairs)."""
    table = F.pad(attn.relative_position_bias_table, (0, 0, 0, 1))  # [R + 1, H], last row = 0
    return table[idx].permute(0, 3, 1, 2)
