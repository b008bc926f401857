"""Text-guided frame selection: only the `select_frames` frames most related to the caption go to
the fusion layers.

Scoring. Frame t of a (text, video) pair scores s_t = cos(Pv f_t, Pt g) / select_temp, with
f_t the frame's VTC-projected [CLS] (`frame_feat`), g the VTC-projected text [CLS]
(`text_feat`), and Pv, Pt the selector's own linear maps, initialised to the identity (so at
the start the selector ranks frames by the contrastive similarity) and trained by the
fusion losses.

Differentiability: straight-through (Gumbel-softmax style, forward hard, backward soft over all
frames). The forward picks hard top-k indices (training: Gumbel top-k, i.e. k frames sampled
without replacement from softmax(s), for exploration; eval: deterministic top-k). Every chosen
slot then gets + sum_t (w_t - w_t.detach()) x_t, with w = softmax(s) over the T frames and x_t
frame t's tokens. That term is exactly 0, so fusion sees the hard selection, but in backward
dL/dw_t = <sum_slots dL/dslot, x_t> for every frame t, chosen or not: a frame's score rises
when the fusion loss would fall by moving the chosen tokens towards that frame's tokens, so
the scorer learns to compare frames. (The frame tokens themselves get no gradient through
this term.)

Why this method: it costs one [P, T] x [P, T, N*D] contraction, nothing next to the fusion
layers (no extra fusion passes, unlike perturbed top-k which needs several noisy samples),
fusion only ever sees real frames (no blends), and it works for any k. The simpler
`x_t * w_t / w_t.detach()` estimator (gradient only for the chosen frames) was tried first and
dropped: its gradient (1 - w_t) vanishes once a wrong frame is confidently chosen, and it says
nothing about unchosen frames; `tests/test_model_grads.py` has a toy task it fails and this
one solves (the scorer alone learns which frame lowers the loss).

Like every model file, it is copied byte for byte into HF exports (`smaug.hf.MODEL_CODE_FILES`), whose VTM
path runs this `FrameSelector` in eval mode (deterministic top-k).
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
        chosen = frame_tokens.gather(1, idx[:, :, None, None].expand(-1, -1, N, D))  # [P, k, N, D]
        if torch.is_grad_enabled():
            w = s.softmax(dim=1).to(frame_tokens.dtype)  # [P, T]
            zero_with_grad = torch.einsum("pt,ptnd->pnd", w - w.detach(), frame_tokens)  # == 0 in value
            chosen = chosen + zero_with_grad[:, None]
        return chosen.flatten(1, 2), idx
