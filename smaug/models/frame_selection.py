"""Text-guided frame selection: only the `select_frames` frames most related to the caption go to
the fusion layers.

Scoring. Frame t of a (text, video) pair scores s_t = cos(Pv f_t, Pt g) / select_temp, with
f_t the frame's VTC-projected [CLS] (`frame_feat`), g the VTC-projected text [CLS]
(`text_feat`), and Pv, Pt the selector's own linear maps, initialised to the identity (so at
the start the selector ranks frames by the contrastive similarity) and trained by the
fusion losses.

Differentiability: straight-through. The forward picks hard top-k indices (training: Gumbel
top-k, i.e. k frames sampled without replacement from softmax(s), for exploration; eval:
deterministic top-k). The chosen frames' tokens are multiplied by w_t / w_t.detach(), with
w = softmax(s) over the T frames. That factor is exactly 1, so the forward (and what fusion
sees) is the hard selection, while the backward gives
dL/ds_j = sum_{t chosen} <dL/dx_t, x_t> (delta_tj - w_j): a frame's score rises when
scaling its tokens up would lower the VTM/MLM loss. Why this and not perturbed top-k or a
soft mix: it costs nothing extra (no extra fusion passes, no [k, T] soft matrix mixing all
frames' tokens), keeps train and eval fusion inputs identical in kind (real frames, never
blends), and works with any k.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FrameSelector(nn.Module):
    def __init__(self, embed_dim: int, select_frames: int, temp: float, gumbel: bool):
        super().__init__()
        self.k, self.temp, self.gumbel = select_frames, temp, gumbel
        self.video_proj = nn.Linear(embed_dim, embed_dim)
        self.text_proj = nn.Linear(embed_dim, embed_dim)
        for lin in (self.video_proj, self.text_proj):
            nn.init.eye_(lin.weight)
            nn.init.zeros_(lin.bias)

    def scores(self, frame_feat: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
        """frame_feat: [P, T, E], text_feat: [P, E] -> scores [P, T] (logits over frames)."""
        v = F.normalize(self.video_proj(frame_feat).float(), dim=-1)
        t = F.normalize(self.text_proj(text_feat).float(), dim=-1)
        return (v @ t[:, :, None]).squeeze(-1) / self.temp

    def forward(self, frame_tokens: torch.Tensor, frame_feat: torch.Tensor, text_feat: torch.Tensor):
        """frame_tokens: [P, T, N, D], frame_feat: [P, T, E], text_feat: [P, E]
        -> tokens [P, k * N, D] (chosen frames in temporal order, concatenated), idx [P, k]."""
        P, T, N, D = frame_tokens.shape
        k = min(self.k, T)
        s = self.scores(frame_feat, text_feat)
        noisy = s
        if self.training and self.gumbel:
            u = torch.rand_like(s).clamp_(1e-9, 1 - 1e-9)
            noisy = s - torch.log(-torch.log(u))
        idx = noisy.topk(k, dim=1).indices.sort(dim=1).values
        w = s.softmax(dim=1).gather(1, idx)  # [P, k]
        st = (w / w.detach()).to(frame_tokens.dtype)  # == 1 in value, carries d/ds
        chosen = frame_tokens.gather(1, idx[:, :, None, None].expand(-1, -1, N, D)) * st[:, :, None, None]
        return chosen.flatten(1, 2), idx
