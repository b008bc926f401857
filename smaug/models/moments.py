"""The order-aware part of the video embedding: temporal moments of the frame features, of where things
are in each frame, and of where the salient part of each frame is: the temporal moments pooling (temporal.py).

Like every model file, it is copied byte for byte into HF exports (`smaug.hf.MODEL_CODE_FILES`).

    m_k = sum_t w_k[t] * x_t            moment k over time (`moment_weights`: orthogonal polynomials)
    embedding = unit(mean of frames) + weight * unit(proj([LN(m_1 of the frame [CLS], ...), centroid moments]))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def centred_tokens(patches: torch.Tensor, ids: torch.Tensor, grid: int):
    """patches [B, T, n, D], ids [B, T, n] (patch index on the grid x grid layout, -1 = an EViT fused token)
    -> each token minus its frame's mean token [B, T, n, D] (0 for fused tokens, left out of the mean too),
    the count of positioned tokens [B, T, 1, 1], and the patch centres (x, y), each [B, T, n] in [-1, 1]."""
    valid = (ids >= 0).to(patches.dtype)[..., None]  # [B, T, n, 1]
    n = valid.sum(2, keepdim=True).clamp_min(1.0)
    centred = (patches - (patches * valid).sum(2, keepdim=True) / n) * valid
    idx = ids.clamp_min(0)
    return centred, n, [(2 * i + 1).to(patches.dtype) / grid - 1 for i in (idx % grid, idx // grid)]


def spatial_moments(patches: torch.Tensor, ids: torch.Tensor, grid: int) -> torch.Tensor:
    """Where things are in each frame, linearly: patches [B, T, n, D] (output tokens), ids [B, T, n] their
    patch index on the grid x grid layout (-1 = an EViT fused token, left out) -> [B, T, 2, D]

        s_x = sum_p x_p (h_p - mean h) / n,  s_y likewise,  (x_p, y_p) in [-1, 1] the patch centre

    An object whose tokens differ from the background adds (its position) x (its features); the
    background, near the mean token, adds ~0. Moment 1 over time of s is then (velocity) x
    (object features): a direction a linear projection can read, without the frame [CLS] having
    to learn where the object is first."""
    centred, n, xy = centred_tokens(patches, ids, grid)
    return torch.stack([(c[..., None] * centred).sum(2) / n[:, :, 0] for c in xy], dim=2)


def saliency_centroid(patches: torch.Tensor, ids: torch.Tensor, grid: int) -> torch.Tensor:
    """Where the salient part of each frame is, free of what it looks like: patches [B, T, n, D], ids [B, T, n]
    as in `spatial_moments` -> [B, T, 2], the patch centres (x, y) in [-1, 1] weighted by each token's distance
    from the frame's mean token. An object far from the background weighs most; the background, near the mean
    but not at it, pulls the centroid toward the frame centre by a factor set by the object's share of the
    frame, not by its look. Moment 1 over time is then the object's velocity alone (scaled), where the spatial
    moments give (velocity) x (object features), which a readout trained on some colour-shape pairs need not
    read apart for unseen ones."""
    centred, _, xy = centred_tokens(patches, ids, grid)
    w = centred.norm(dim=-1)  # [B, T, n]
    w = w / w.sum(2, keepdim=True).clamp_min(1e-6)
    return torch.stack([(c * w).sum(2) for c in xy], dim=2)


class TemporalMoments(nn.Module):
    """The order-aware part of the video embedding: moments 1..K-1 of the frame features over time.

        m_k = sum_t w_k[t] * x_t   (x: [B, T, Dv] frame [CLS] tokens, w = moment_weights(T, K))
        out = proj([LN(m_1), ..., LN(m_{K-1}), 4 c_1, ..., 4 c_{K-1}])  [B, E], added to the mean-pooled
              embedding (moment 0); with `spatial` each m_k also holds the spatial moments' moment k, with
              `centroid` the c_k (moment k of the saliency centroid, 2 numbers) are there

    The mean of frame features is the same for a motion and its reverse (same frames, other order),
    so a mean-pooled embedding is blind to direction unless every frame encodes its position times
    the sign of its time offset by itself. Moment 1 is "late frames minus early ones": a linear read
    of it tells where things went. It costs one [B, (K-1) Dv] x [(K-1) Dv, E] matmul, works at any
    frame count (an image, T = 1, has zero moments), and leaves the per-frame features (frame
    selection, fusion) untouched.
    """

    def __init__(
        self,
        width: int,
        embed_dim: int,
        moments: int,
        spatial: bool = False,
        centroid: bool = False,
        weight: float = 0.5,
        grid: int = 0,
    ):
        super().__init__()
        if (spatial or centroid) and grid < 1:
            raise ValueError(
                "TemporalMoments: spatial moments and the saliency centroid need `grid` (patches per side)"
            )
        self.moments = moments
        self.grid = grid  # patches per side of a frame (image_size // patch_size): where each patch token sits
        self.weight = weight  # the moments' share of the embedding: unit(mean) + at most weight * unit(moments)
        self.spatial = spatial  # also the moments of `spatial_moments` (where things go, read from the patch tokens)
        self.centroid = centroid  # also the moments of `saliency_centroid` (where the salient part goes)
        self.proj = nn.Linear((moments - 1) * (width * (3 if spatial else 1) + (2 if centroid else 0)), embed_dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)  # as vision_proj, the moment-0 projection
        nn.init.zeros_(self.proj.bias)

    def forward(self, cls: torch.Tensor, xy: torch.Tensor | None = None, centre: torch.Tensor | None = None):
        """cls: [B, T, Dv] frame [CLS] tokens, xy: [B, T, 2, Dv] spatial moments (when `spatial`), centre:
        [B, T, 2] saliency centroids (when `centroid`) -> [B, E]."""
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

    def embed(self, frame_feat: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The unnormalised clip embedding [B, E]: frame_feat [B, T, E] the projected frame [CLS], tokens
        [B, T, 1 + n, Dv] the encoder's output tokens, ids [B, T, n] their patch index (-1 = fused) on the
        `grid` x `grid` patch layout.

        The mean on the unit sphere, the moments at most `weight` long (eps=1: x / max(|x|, 1), so a static
        clip's ~0 moments stay ~0): appearance keeps most of the embedding (added raw, an arrow-of-time term can
        grow the moments until they drown it). The moments read the encoder's tokens without gradient: a linear
        readout of what the frames hold, so an arrow-of-time term cannot reshape the per-frame features at the
        expense of appearance (docs/experiments.md has the ablations)."""
        patches = tokens[:, :, 1:].detach()
        xy = spatial_moments(patches, ids, self.grid) if self.spatial else None
        centre = saliency_centroid(patches, ids, self.grid) if self.centroid else None
        motion = self(tokens[:, :, 0].detach(), xy, centre)
        return F.normalize(frame_feat.mean(1), dim=-1) + self.weight * F.normalize(motion, dim=-1, eps=1.0)
