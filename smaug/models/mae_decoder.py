"""Lightweight per-frame MAE decoder: predicts the pixels of every patch of a frame.

The encoder output of a frame is its [CLS] plus the tokens that survived masking and
sparsification (`ids` says which patch each one came from, -1 for an EViT fused token). The
decoder puts each surviving token back at its patch position, fills every other position
(MAE-masked or dropped by sparsification) with a learned mask token, adds fixed 2-D sin-cos
position embeddings and runs a few timm Blocks. Fused tokens have no position and are not
passed on. The MVM loss (`losses.mvm_loss`) uses the MAE-masked patches only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, init_weights_vit_timm

from .common import maybe_checkpoint, sincos_pos_embed_2d


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """frames: [M, 3, H, W] -> [M, N, patch * patch * 3] (MAE order: row-major patches, pixels (p, q, c))."""
    M, C, H, W = frames.shape
    h, w = H // patch, W // patch
    x = frames.reshape(M, C, h, patch, w, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(M, h * w, patch * patch * C)


class MAEDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.grid = grid = cfg.image_size // cfg.patch_size
        self.num_patches = grid * grid
        Dd = cfg.decoder_width
        self.embed = nn.Linear(cfg.vision_width, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.register_buffer("pos_embed", torch.empty(1, 1 + self.num_patches, Dd), persistent=False)
        self.init_non_persistent_buffers()
        self.blocks = nn.ModuleList(
            [Block(Dd, cfg.decoder_heads, 4.0, qkv_bias=True) for _ in range(cfg.decoder_depth)]
        )
        self.norm = nn.LayerNorm(Dd, eps=1e-6)
        self.pred = nn.Linear(Dd, cfg.patch_size**2 * 3)
        self.grad_checkpointing = False
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_weights_vit_timm)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        """The fixed 2-D sin-cos position embedding [1, 1 + N, Dd] ([CLS] slot 0: zeros), computed, never
        stored (timm's convention: a loader that builds on the meta device calls this after loading)."""
        Dd = self.pos_embed.shape[-1]
        pos = torch.cat([torch.zeros(1, Dd), sincos_pos_embed_2d(Dd, self.grid)])[None]
        self.pos_embed.copy_(pos.to(self.pos_embed.device))

    def unshuffle(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x: [M, n, Dd] tokens, ids: [M, n] patch index (-1 = fused) -> [M, N, Dd] with mask tokens."""
        M, n, Dd = x.shape
        N = self.num_patches
        slot = torch.where(ids < 0, torch.full_like(ids, N), ids)  # fused tokens go to a spare slot N
        full = x.new_zeros(M, N + 1, Dd).scatter(1, slot[..., None].expand(-1, -1, Dd), x)
        filled = torch.zeros(M, N + 1, 1, dtype=torch.bool, device=x.device).scatter(1, slot[..., None], True)
        return torch.where(filled, full, self.mask_token.to(x.dtype))[:, :N]

    def forward(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """tokens: [M, 1 + n, D] encoder output per frame, ids: [M, n] -> pred [M, N, patch^2 * 3]."""
        x = self.embed(tokens)
        x = torch.cat([x[:, :1], self.unshuffle(x[:, 1:], ids)], dim=1) + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = maybe_checkpoint(self.grad_checkpointing, blk, x)
        return self.pred(self.norm(x))[:, 1:]
