"""Parameter groups (weight decay or not) and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Parameters that must not decay: 1-D ones (norm weights, biases, the temperature) and the
    names the model lists in `no_weight_decay()` (position / temporal embeddings, class tokens)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {n for n, p in model.named_parameters()
            if p.requires_grad and (p.ndim < 2 or n in skip or n.endswith(".bias"))}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and `no_decay_names(model)` with weight_decay 0."""
    skip = no_decay_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n not in skip], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in skip], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR after `step` optimizer steps: linear warmup, then cosine to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(warmup_steps: int, total_steps: int, lr: float, min_lr: float):
    """A callable DeepSpeed accepts as `lr_scheduler`: optimizer -> LambdaLR.

    DeepSpeed steps it once per optimizer step (at gradient-accumulation boundaries) and
    saves/restores its state with the checkpoint.
    """
    ratio = min_lr / lr

    def build(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, ratio))

    return build
