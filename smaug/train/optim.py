"""Parameter groups (weight decay or not) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Trainable parameters that must not decay: the model's own `no_weight_decay()` (the rule lives
    in one place, `SmaugModel.no_weight_decay`: every parameter with <= 1 dimension, embeddings,
    tokens, the temperature)."""
    skip = model.no_weight_decay()
    return {n for n, p in model.named_parameters() if p.requires_grad and n in skip}


ALIGN = 16  # elements: 32 bytes in bf16, 64 in fp32


def aligned_order(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """`params` with those whose size is not a multiple of ALIGN elements moved to the end.

    DeepSpeed ZeRO packs each group's bf16 parameters back to back in one flat buffer and makes
    every parameter a view into it. One odd-sized tensor early in a group (the 1-element VTC
    temperature, the 30,522-element MLM bias) shifts every later parameter off 16-byte alignment,
    and cuBLAS then runs those layers' GEMMs (bias epilogues included) with slow unaligned kernels:
    on an H100 the dense step's ViT forward took 3.4x longer (`cutlass_75` kernels in place of
    the sm90 ones). With the odd ones last, largest first, every parameter but the tiny trailing
    ones (the temperature, the VTM bias) starts on an aligned offset."""
    odd = sorted((p for p in params if p.numel() % ALIGN), key=lambda p: -p.numel())  # the largest still aligned
    return [p for p in params if p.numel() % ALIGN == 0] + odd


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and `no_decay_names(model)` with weight_decay 0; in each,
    the parameters keep model order except that odd-sized ones go last (`aligned_order`)."""
    skip = no_decay_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": aligned_order([p for n, p in named if n not in skip]), "weight_decay": weight_decay},
        {"params": aligned_order([p for n, p in named if n in skip]), "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def lr_factor(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float, tail_steps: int = 0, tail_ratio: float = 0.0
) -> float:
    """Multiplier of the peak LR after `step` optimizer steps: linear warmup, then cosine to `min_ratio`.

    With `tail_ratio` > 0 the last `tail_steps` (the unmasked tail) are a schedule of their own, as FLIP runs
    unmasked tuning: the main cosine ends at step total - tail, then the tail warms up over its first tenth to
    `tail_ratio` and decays by cosine to `min_ratio` again."""
    if tail_ratio > 0 and tail_steps > 0:
        start = total_steps - tail_steps
        if step >= start:
            return lr_factor(step - start, max(1, tail_steps // 10), tail_steps, min_ratio / tail_ratio) * tail_ratio
        total_steps = start
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    warmup_steps: int, total_steps: int, lr: float, min_lr: float, tail_steps: int = 0, tail_lr: float = 0.0
):
    """A callable DeepSpeed accepts as `lr_scheduler`: optimizer -> LambdaLR.

    DeepSpeed steps it once per optimizer step (at gradient-accumulation boundaries) and
    saves/restores its state with the checkpoint. `tail_lr` > 0: the last `tail_steps` restart at that
    peak (`lr_factor`).
    """
    ratio, tail_ratio = min_lr / lr, tail_lr / lr

    def build(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, ratio, tail_steps, tail_ratio)
        )

    return build
