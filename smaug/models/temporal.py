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

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, init_weights_vit_timm


def resize_time(embed: torch.Tensor, T: int) -> torch.Tensor:
    """embed: [1, T0, ..., D] learned per-frame embedding -> [1, T, ..., D], linearly interpolated over time."""
    if embed.shape[1] == T:
        return embed
    rest = embed.shape[2:]
    x = embed.reshape(embed.shape[1], -1).T[None]  # [1, prod(rest), T0]
    x = F.interpolate(x, size=T, mode="linear", align_corners=False)[0].T  # [T, prod(rest)]
    return x.reshape(1, T, *rest)


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


def moment_weights(T: int, K: int) -> torch.Tensor:
    """[K, T] weights of the first K temporal moments at T frames: orthogonal polynomials in time over the
    frame centres t_i = (2i + 1) / T - 1 in [-1, 1] (Gram polynomials, the discrete Legendre), scaled so
    row 0 is the mean over frames. Row 1 is a centred linear ramp (late frames minus early ones), row 2
    a parabola, ... Rows are exactly orthogonal at every T, so every row k >= 1 sums to 0: a static clip
    has zero moments. Rows k >= T (more moments than frames; an image has T = 1) are zero."""
    t = (torch.arange(T, dtype=torch.float64) + 0.5) / T * 2 - 1
    k = min(K, T)
    q, r = torch.linalg.qr(torch.stack([t**j for j in range(k)], dim=1))  # [T, k], orthonormal columns
    q = q * torch.sign(torch.diagonal(r))  # leading coefficient > 0: row 1 rises with time
    w = torch.zeros(K, T, dtype=torch.float64)
    w[:k] = q.T / math.sqrt(T)
    return w.float()


def spatial_moments(patches: torch.Tensor, ids: torch.Tensor, grid: int) -> torch.Tensor:
    """Where things are in each frame, linearly: patches [B, T, n, D] (output tokens), ids [B, T, n] their
    patch index on the grid x grid layout (-1 = an EViT fused token, left out) -> [B, T, 2, D]

        s_x = sum_p x_p (h_p - mean h) / n,  s_y likewise,  (x_p, y_p) in [-1, 1] the patch centre

    An object whose tokens differ from the background adds (its position) x (its features); the
    background, near the mean token, adds ~0. Moment 1 over time of s is then (velocity) x
    (object features): a direction a linear projection can read, without the frame [CLS] having
    to learn where the object is first."""
    valid = (ids >= 0).to(patches.dtype)[..., None]  # [B, T, n, 1]
    n = valid.sum(2, keepdim=True).clamp_min(1.0)
    centred = (patches - (patches * valid).sum(2, keepdim=True) / n) * valid
    idx = ids.clamp_min(0)
    xy = [((2 * i + 1).to(patches.dtype) / grid - 1)[..., None] for i in (idx % grid, idx // grid)]  # [B, T, n, 1]
    return torch.stack([(c * centred).sum(2) / n[:, :, 0] for c in xy], dim=2)


def saliency_centroid(patches: torch.Tensor, ids: torch.Tensor, grid: int) -> torch.Tensor:
    """Where the salient part of each frame is, free of what it looks like: patches [B, T, n, D], ids [B, T, n]
    as in `spatial_moments` -> [B, T, 2], the patch centres (x, y) in [-1, 1] weighted by each token's distance
    from the frame's mean token. An object far from the background weighs most; the background, near the mean
    but not at it, pulls the centroid toward the frame centre by a factor set by the object's share of the
    frame, not by its look. Moment 1 over time is then the object's velocity alone (scaled), where the spatial
    moments give (velocity) x (object features), which a readout trained on some colour-shape pairs need not
    read apart for unseen ones."""
    valid = (ids >= 0).to(patches.dtype)[..., None]  # [B, T, n, 1]
    n = valid.sum(2, keepdim=True).clamp_min(1.0)
    w = ((patches - (patches * valid).sum(2, keepdim=True) / n) * valid).norm(dim=-1)  # [B, T, n]
    w = w / w.sum(2, keepdim=True).clamp_min(1e-6)
    idx = ids.clamp_min(0)
    xy = [(2 * i + 1).to(patches.dtype) / grid - 1 for i in (idx % grid, idx // grid)]  # [B, T, n]
    return torch.stack([(c * w).sum(2) for c in xy], dim=2)


class TemporalMoments(nn.Module):
    """The order-aware part of the video embedding: moments 1..K-1 of the frame features over time.

        m_k = sum_t w_k[t] * x_t   (x: [B, T, Dv] frame [CLS] tokens, w = moment_weights(T, K))
        out = proj([LN(m_1), ..., LN(m_{K-1})])  [B, E], added to the mean-pooled embedding (moment 0)

    The mean of frame features is the same for a motion and its reverse (same frames, other order),
    so a mean-pooled embedding is blind to direction unless every frame encodes its position times
    the sign of its time offset by itself. Moment 1 is "late frames minus early ones": a linear read
    of it tells where things went. It costs one [B, (K-1) Dv] x [(K-1) Dv, E] matmul, works at any
    frame count (an image, T = 1, has zero moments), and leaves the per-frame features (frame
    selection, fusion) untouched.
    """

    def __init__(self, width: int, embed_dim: int, moments: int, spatial: bool = False, centroid: bool = False):
        super().__init__()
        self.moments = moments
        self.spatial = spatial  # also the moments of `spatial_moments` (where things go, read from the patch tokens)
        self.centroid = centroid  # also the moments of `saliency_centroid` (where the salient part goes)
        self.proj = nn.Linear((moments - 1) * (width * (3 if spatial else 1) + (2 if centroid else 0)), embed_dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)  # as vision_proj, the moment-0 projection
        nn.init.zeros_(self.proj.bias)

    def forward(self, cls: torch.Tensor, xy: torch.Tensor | None = None, centre: torch.Tensor | None = None):
        """cls: [B, T, Dv] frame [CLS] tokens, xy: [B, T, 2, Dv] spatial moments (when `spatial`) -> [B, E]."""
        x = cls[:, :, None] if xy is None else torch.cat([cls[:, :, None], xy], dim=2)  # [B, T, S, Dv]
        w = moment_weights(x.shape[1], self.moments)[1:].to(device=x.device, dtype=x.dtype)  # [K-1, T]
        m = torch.einsum("kt,btsd->bksd", w, x)  # [B, K-1, S, Dv]
        # each moment on the scale of the features it came from: frame-to-frame changes are a small part of
        # a [CLS] and an object a small part of a frame's tokens (~1/n), so raw moments start 10-50x below
        # the mean and the arrow-of-time signal with them. No affine: -m still maps to -LN(m), 0 to 0
        m = F.layer_norm(m, m.shape[-1:]).flatten(1)
        if centre is not None:  # [B, T, 2]: x4, a motion across half the frame moves moment 1 by ~1
            m = torch.cat([m, 4.0 * torch.einsum("kt,btc->bkc", w, centre).flatten(1)], dim=1)
        return self.proj(m)
