"""Temporal modelling on top of the per-frame encoder: blocks over the frames' [CLS] tokens
(Singularity-temporal, CLIP4Clip's seqTransf) or over every token of every frame (joint space-time
attention in the last layers, as VindLU finds temporal attention matters).

The video encoder attends within each frame only (space-only, as Singularity), so its frame
features know *when* they are (the temporal embedding) but not what the other frames show: the mean
of per-frame features combines frames additively, and telling "moves left" from "moves right" then
needs every frame to encode its position times the sign of its time offset by itself.
`TemporalEncoder` lets the tokens of different frames attend to each other:

    x = tokens + time[t] [B, T, N, D] -> `depth` timm `Block`s over the T * N tokens -> x - time[t]

with N = 1 (scope "cls": each frame's [CLS]) or N = 1 + n (scope "all": every token; the frame
[CLS] is a summary that a from-scratch encoder trained on captions fills with colour and shape but
not with where the object is, while the patch tokens carry their positions, so only "all" sees
where things go).

Time enters what the blocks read, not what they return: `time` is a learned per-frame embedding
initialised with unit scale (a zero-initialised one, as the encoder's temporal embedding, grows by
~lr per step and leaves the blocks nearly blind to frame order for thousands of steps; a blind
stack of blocks is permutation-equivariant, so its mean over frames cannot tell a motion from its
reverse), and it is subtracted again at the output. With each block's output projections zero at
init the module starts as the exact identity, so a model built on image-pretrained towers starts as
the image model. Scope "cls" is cheap (T tokens per clip); "all" attends over T x (1 + n) tokens,
which SMAUG's masking and sparsification keep short (n = 8 in the tiny preset, 21 in base). SMAUG's savings (masking, sparsification, frame selection) act before and after it
unchanged; the dense baseline gets the same module, so the comparison stays like for like.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, init_weights_vit_timm

from .frame_tokens import resize_time


class TemporalEncoder(nn.Module):
    """`depth` transformer blocks over the frame [CLS] tokens of each clip."""

    def __init__(self, width: int, depth: int, heads: int, num_frames: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_frames, width))  # [1, T, D], unit scale (see above)
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.apply(init_weights_vit_timm)
        for blk in self.blocks:  # residual branches start at zero: with `- time` the module starts as the identity
            nn.init.zeros_(blk.attn.proj.weight)
            nn.init.zeros_(blk.mlp.fc2.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, T, N, D] -> [B, T, N, D], every token aware of the other frames' tokens."""
        B, T, N, D = tokens.shape
        time = resize_time(self.pos_embed, T).to(tokens.dtype)[:, :, None]  # [1, T, 1, D]
        x = (tokens + time).flatten(1, 2)  # [B, T * N, D]
        for blk in self.blocks:
            x = blk(x)
        return x.unflatten(1, (T, N)) - time
