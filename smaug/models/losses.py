"""The four pre-training losses and hard-negative mining.

VTC  symmetric InfoNCE over the global batch (features all-gathered with gradient); rows of the
     same sample (a clip seen with two of its captions) are each other's positives.
VTM  binary match/no-match on the fusion [CLS]; negatives drawn uniformly or mined from the VTC
     similarities (hard), never the same sample or an identical caption.
MLM  masked language modelling through the fusion layers (masking: `text_encoder.mask_tokens`).
MVM  MAE normalised-pixel regression on masked patches only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import all_gather_with_grad


def vtc_loss(
    video_feat: torch.Tensor, text_feat: torch.Tensor, temp: torch.Tensor, positives: torch.Tensor | None = None
):
    """Symmetric InfoNCE. video_feat, text_feat: [b, E] L2-normalised, this rank's rows.

    Features of all ranks are gathered with gradient, and every rank computes the loss of the
    whole global batch [Bg, Bg] (the same value on every rank; data-parallel gradient averaging
    then gives exactly the gradient of the global loss). `positives` [Bg, Bg] bool (diagonal
    set) marks further positive pairs, e.g. two rows of the same clip with different captions:
    the target of each row is then uniform over its positives (ALBEF's retrieval fine-tuning),
    which equals plain InfoNCE when only the diagonal is set.
    Returns (loss, sim) with sim the detached [Bg, Bg] video-to-text logits (row = video, column =
    text), for negative mining.
    """
    v = all_gather_with_grad(video_feat).float()
    t = all_gather_with_grad(text_feat).float()
    sim = v @ t.T / temp.float()
    if positives is None:
        labels = torch.arange(sim.shape[0], device=sim.device)
        loss = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2
    else:
        target = positives.float() / positives.float().sum(1, keepdim=True)  # symmetric: same for sim.T
        loss = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
    return loss, sim.detach()


def reversed_vtc_term(
    video_feat: torch.Tensor, text_feat: torch.Tensor, reversed_feat: torch.Tensor, temp: torch.Tensor
) -> torch.Tensor:
    """The arrow-of-time term (temporal.py): the 2-way cross-entropy of each text choosing its clip over the
    same clip played backwards, over the global batch. video_feat, text_feat, reversed_feat: [b, E] normalised.
    A term of its own: as one more InfoNCE column among Bg it would get ~1/Bg of the gradient."""
    v = all_gather_with_grad(video_feat).float()
    t = all_gather_with_grad(text_feat).float()
    r = all_gather_with_grad(reversed_feat).float()
    margin = ((t * v).sum(-1) - (t * r).sum(-1)) / temp.float()
    return F.softplus(-margin).mean()


@torch.no_grad()
def sample_negatives(
    sim: torch.Tensor,
    same: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    hard: bool | torch.Tensor = True,
):
    """VTM negatives over the global batch: ALBEF/BLIP hard negatives, or uniform ones.

    sim: [Bg, Bg] video-to-text logits (positives on the diagonal); same: optional [Bg, Bg] bool,
    True where two samples must not be each other's negative (the same sample, identical captions).
    `hard`: each video draws one text with prob softmax(sim[v]) and each text one video with prob
    softmax(sim[:, t]); otherwise each draws uniformly; a [Bg] bool tensor decides per sample (both
    negatives of sample i, its text's and its video's, are mined where hard[i]). The positive (diagonal) and `same` pairs
    have probability 0; a row left with no candidate, or with non-finite weights, falls back to
    uniform over the other indices. The positive is never drawn.
    Returns (neg_text_for_video [Bg], neg_video_for_text [Bg]) global indices.
    """
    Bg = sim.shape[0]
    if Bg < 2:
        raise ValueError("VTM negatives need a global batch of at least 2")
    eye = torch.eye(Bg, dtype=torch.bool, device=sim.device)
    banned = eye if same is None else (eye | same)
    out = []
    for logits in (sim.float(), sim.float().T):
        if isinstance(hard, torch.Tensor):
            w = torch.where(hard[:, None], logits.softmax(dim=1), torch.ones_like(logits))
        else:
            w = logits.softmax(dim=1) if hard else torch.ones_like(logits)
        w = w.masked_fill(banned, 0.0)
        # non-finite similarities (a diverged step) must not crash the sampler: such a row falls
        # back to uniform and the non-finite loss is then skipped by the trainer.
        dead = ~torch.isfinite(w).all(1) | (w.sum(1) <= 0)
        w = torch.where(dead[:, None], (~eye).float(), w)
        out.append(torch.multinomial(w, 1, generator=generator).squeeze(1))
    return out[0], out[1]


def token_overlap(ids: torch.Tensor, vocab_size: int, ignore: tuple[int, ...]) -> torch.Tensor:
    """ids: [B, L] padded token ids -> [B, B] |A & B| / |A | B| of the rows' token sets, the `ignore` ids (padding,
    [CLS], [SEP], ...) left out; 0 between two empty sets. Word order and repeats do not count, so a caption and its
    re-wording with a word added, dropped or moved score high. Device ops only (a bag of tokens [B, vocab] and one
    matmul): no host sync."""
    keep = torch.ones_like(ids, dtype=torch.bool)
    for t in ignore:  # scalar compares: no tensor built from host values (an upload each step on a GPU)
        keep &= ids != t
    bag = torch.zeros(ids.shape[0], vocab_size, device=ids.device).scatter_add_(1, ids, keep.float())
    bag = (bag > 0).float()  # a set: repeats count once (and the sum's order cannot change it)
    inter = bag @ bag.T
    size = bag.sum(1)
    return inter / (size[:, None] + size[None, :] - inter).clamp_min(1.0)


def vtm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits: [P] match logits, labels: [P] 1 = matched pair -> mean binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits: [K, vocab] at the masked positions, labels: [K] -> mean cross-entropy."""
    return F.cross_entropy(logits.float(), labels)


def mvm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE loss. pred, target: [M, N, p*p*3] (target = patchified normalised frames),
    mask: [M, N] 1 = masked. Mean squared error per patch, averaged over masked patches only;
    with `norm_pix` each target patch is normalised by its own mean and variance."""
    target = target.float()
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
