"""Per-frame ViT video encoder from timm layers, with MAE masking and EViT token sparsification.

Notation: B clips, T frames, N = (image_size / patch_size)^2 patches per frame, D = vision_width.
Frames are encoded independently (space-only attention, as in Singularity), so the block batch
is M = B * T frames; time enters through learned temporal embeddings added to every token.

Pipeline (`forward`):
  embed             patches (+ spatial pos embed) + temporal embed, one [CLS] per frame
  random_masking    MAE: keep int(N * (1 - mask_ratio)) random patches per frame (train only)
  norm_pre          CLIP only: LayerNorm on the embedded tokens (per token, so after masking)
  blocks            timm blocks of `vision_family` (`vit_blocks.py`); at `sparsify_layers` the block
                    runs `block_forward` with EViT reorganisation between attention and MLP
  norm              final LayerNorm; output tokens [B, T, 1 + n_out, D]

Token sparsification reuses the block's own attention pass: `vit_blocks.attention` computes q,
k, v once, runs fused SDPA over all tokens, and gets the [CLS] attention row explicitly from the
same q and k (softmax(q_cls k^T * scale + bias), one query per frame: O(n D), not O(n^2 D)); only
sparsify blocks (and BEiT blocks, whose relative position bias is gathered by the tokens' `ids`)
do this, the others run timm's own forward. The row costs a few percent of the attention pass, a second full
attention-matrix pass would nearly double it (`bench/cls_row.py`; figures in docs/experiments.md).

Pretrained weights load through `smaug.models.pretrained` (timm key names, strict, with a report).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import LayerNorm, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import init_weights_vit_timm

from .common import maybe_checkpoint, sincos_pos_embed_2d
from .frame_tokens import num_kept, resize_time, sparsify_tokens
from .vit_blocks import attention, bias_index, gathered_bias, layer_scale, make_block


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches per frame the encoder sees after MAE masking: int(N * (1 - mask_ratio)), >= 1."""
    return max(1, int(round(num_patches * (1.0 - mask_ratio), 6)))


def token_schedule(n_visible: int, depth: int, sparsify_layers, keep_ratio: float, mode: str):
    """Patch tokens per frame ([CLS] excluded) in each block: [(n_attention, n_mlp)] * depth.

    A sparsify block attends over n tokens and runs its MLP on the kept ones (+1 fused token).
    The last entry's n_mlp is the encoder output count.
    """
    sched, n = [], n_visible
    for i in range(depth):
        n_in = n
        if i in sparsify_layers:
            k = num_kept(n, keep_ratio)
            n = k + (1 if mode == "fuse" and k < n else 0)
        sched.append((n_in, n))
    return sched


def random_masking(x: torch.Tensor, mask_ratio: float):
    """MAE per-frame random masking.

    x: [M, N, D] -> x_vis [M, n_vis, D], mask [M, N] (1 = masked), ids_keep [M, n_vis] (ascending).
    """
    M, N, D = x.shape
    n_keep = num_visible(N, mask_ratio)
    noise = torch.rand(M, N, device=x.device)
    ids_keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    x_vis = x.gather(1, ids_keep[..., None].expand(-1, -1, D))
    mask = torch.ones(M, N, device=x.device, dtype=x.dtype).scatter(1, ids_keep, 0.0)
    return x_vis, mask, ids_keep


def attention_with_cls_row(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None):
    """A block's attention forward plus the head-averaged [CLS] attention row, in one pass.

    x: [M, n, D] (token 0 = [CLS]), bias: BEiT's gathered bias or None -> out [M, n, D], cls_attn [M, n - 1].
    """
    return attention(attn, x, bias, cls_row=True)


@dataclass
class VideoEncoderOutput:
    tokens: torch.Tensor  # [B, T, 1 + n_out, D], token 0 of each frame is its [CLS]
    ids: torch.Tensor  # [B * T, n_out] patch index of each output token, -1 for a fused token
    mask: torch.Tensor | None  # [B * T, N] 1 = masked by MAE, None without masking
    num_visible: int  # patches per frame entering the blocks


class VideoEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D = cfg.vision_width
        clip = cfg.vision_family == "clip"
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, 3, D, bias=not clip)  # timm CLIP: no bias
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        # timm layout: [CLS] slot first; None for BEiT-base (relative position bias only)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, D)) if cfg.vision_abs_pos else None
        self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, 1, D))  # zero: starts as the image model
        self.norm_pre = LayerNorm(D, eps=cfg.vision_norm_eps) if clip else nn.Identity()
        dpr = [cfg.drop_path_rate * i / max(1, cfg.vision_depth - 1) for i in range(cfg.vision_depth)]  # as linspace
        self.blocks = nn.ModuleList(
            [make_block(cfg, self.patch_embed.grid_size, dpr[i]) for i in range(cfg.vision_depth)]
        )
        self.norm = LayerNorm(D, eps=cfg.vision_norm_eps)
        self.grad_checkpointing = False
        if self.pos_embed is not None:  # MAE's 2-D sin-cos init (learned from there; a checkpoint overwrites it):
            # timm's trunc_normal(0.02) leaves a from-scratch ViT nearly blind to where a patch is for
            # thousands of steps, and where an object is in each frame is what motion is made of
            grid = self.patch_embed.grid_size
            if D % 4 == 0 and grid[0] == grid[1]:
                with torch.no_grad():
                    self.pos_embed[0, 1:].copy_(sincos_pos_embed_2d(D, grid[0]))
            else:
                trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights_vit_timm)  # Linear layers; BEiT's q/v biases, tables and layer scale self-initialise

    @property
    def rel_pos(self) -> bool:
        """BEiT: every block has a relative position bias that must follow the tokens."""
        return self.cfg.vision_family == "beit"

    def temporal(self, T: int) -> torch.Tensor:
        """Temporal embeddings for T frames [1, T, 1, D], linearly interpolated if T != num_frames."""
        return resize_time(self.temporal_embed, T)

    def embed(self, video: torch.Tensor):
        """video: [B, T, 3, H, W] normalised -> patches [B*T, N, D], cls [B*T, 1, D]."""
        B, T = video.shape[:2]
        x = self.patch_embed(video.flatten(0, 1))
        cls = self.cls_token
        if self.pos_embed is not None:
            x, cls = x + self.pos_embed[:, 1:], cls + self.pos_embed[:, :1]
        te = self.temporal(T)
        x = (x.unflatten(0, (B, T)) + te).flatten(0, 1)
        cls = (cls + te).expand(B, -1, -1, -1).flatten(0, 1)
        return x, cls

    def block_forward(
        self, blk: nn.Module, x: torch.Tensor, ids: torch.Tensor, idx: torch.Tensor | None, sparsify: bool
    ):
        """One block by hand: attention (+ BEiT's gathered relative bias), EViT reorganisation
        between attention and MLP when `sparsify`, MLP.

        x: [M, 1 + n, D], ids: [M, n], idx: [M or 1, 1 + n, 1 + n] bias rows (BEiT) or None
        -> x [M, 1 + n', D], ids [M, n'].
        """
        bias = gathered_bias(blk.attn, idx) if idx is not None else None  # [M or 1, H, 1 + n, 1 + n]
        out, cls_attn = attention(blk.attn, blk.norm1(x), bias, cls_row=sparsify)
        x = x + blk.drop_path1(layer_scale(blk, 1, out))
        if sparsify:
            keep = num_kept(x.shape[1] - 1, self.cfg.keep_ratio)
            x, ids = sparsify_tokens(x, cls_attn, ids, keep, self.cfg.sparsify_mode)
        x = x + blk.drop_path2(layer_scale(blk, 2, blk.mlp(blk.norm2(x))))
        return x, ids

    def forward_blocks(self, x: torch.Tensor, ids: torch.Tensor, same_ids: bool = False):
        """x: [M, 1 + n, D], ids: [M, n] -> normed x [M, 1 + n_out, D], ids [M, n_out].

        same_ids: every frame holds the same tokens (no masking), so BEiT's bias is computed once
        ([1, H, n, n], broadcast) until the first sparsify layer.
        """
        idx = None
        for i, blk in enumerate(self.blocks):
            sparsify = i in self.cfg.sparsify_layers
            if self.rel_pos and idx is None:  # BEiT: bias rows of the current token set (after each sparsify)
                attn = blk.attn
                idx = bias_index(
                    attn.relative_position_index,
                    ids[:1] if same_ids else ids,
                    attn.relative_position_bias_table.shape[0],
                )
            if sparsify or self.rel_pos:
                x, ids = maybe_checkpoint(self.grad_checkpointing, self.block_forward, blk, x, ids, idx, sparsify)
                if sparsify:
                    idx, same_ids = None, False
            else:
                x = maybe_checkpoint(self.grad_checkpointing, blk, x)
        return self.norm(x), ids

    def forward(self, video: torch.Tensor, mask_ratio: float = 0.0) -> VideoEncoderOutput:
        """video: [B, T, 3, H, W] normalised -> VideoEncoderOutput (tokens [B, T, 1 + n_out, D])."""
        B, T = video.shape[:2]
        x, cls = self.embed(video)
        M, N, _ = x.shape
        mask = None
        if mask_ratio > 0:
            x, mask, ids = random_masking(x, mask_ratio)
        else:
            ids = torch.arange(N, device=x.device).expand(M, -1)
        n_vis = x.shape[1]
        x, ids = self.forward_blocks(self.norm_pre(torch.cat([cls, x], dim=1)), ids, same_ids=mask is None)
        return VideoEncoderOutput(x.unflatten(0, (B, T)), ids, mask, n_vis)
