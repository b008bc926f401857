"""torch.compile of the pre-training forward, applied to the model from outside (as torchtitan's
`apply_compile`): the model knows nothing of compile.

Each region below is a method the training forward calls, compiled as one graph with no graph break
(fullgraph=True) and static shapes (dynamic=False), forward and backward. Shapes are fixed per config: visible
patches int(N * (1 - mask_ratio)), kept tokens after each sparsify block (`video_encoder.token_schedule`),
`select_frames` frames to fusion, captions padded to the loader's `data.max_text_len` by the trainer
(`pad_captions`). Between the regions the forward runs eager: the all-gathers and the VTC loss over the global
batch, VTM negative sampling (a seeded generator) and the weighted sum. The compiled MLM region runs every caption
position through the head (`forward_mlm(static=True)`), since the masked ones differ per batch.

Evaluation (`model.eval()`) runs the eager methods: its shapes (no masking, any batch) differ. Random draws inside
a region (MAE noise, Gumbel, MLM masking, dropout) come from inductor's generator unless
`torch._inductor.config.fallback_random` is set.
"""

from __future__ import annotations

import functools

import torch

# SmaugModel methods that a training forward calls, each compiled as one graph
MODEL_REGIONS = ("forward_video", "encode_text", "vtm_logits", "forward_mlm", "forward_mvm")
# TemporalExtension methods (when the model has the temporal extensions)
TEMPORAL_REGIONS = ("reversed_embedding",)


def regions(model) -> list[tuple[object, str]]:
    """(owner, method name) of every region `model` runs in training."""
    out = [(model, name) for name in MODEL_REGIONS if name != "forward_mvm" or model.mae_decoder is not None]
    if model.temporal is not None and model.config.vtc_reversed > 0:
        out += [(model.temporal, name) for name in TEMPORAL_REGIONS]
    return out


def apply_compile(model, mode: str = "default", backend: str = "inductor") -> dict:
    """Replace each region of `model` (a SmaugModel) by a compiled version that runs in training mode (the eager
    method in eval mode). mode: torch.compile's ("default", "reduce-overhead" = CUDA graphs, "max-autotune", ...);
    backend: torch.compile's ("inductor"; "aot_eager" / "eager" trace the same graphs without generating kernels,
    to bisect a failure). Returns {region name: its compiled function}."""
    kw = dict(fullgraph=True, dynamic=False, backend=backend)
    if backend == "inductor":  # the other backends take no mode
        kw["mode"] = None if mode == "default" else mode
    compiled = {}
    for owner, name in regions(model):
        eager = getattr(owner, name)
        fn = torch.compile(functools.partial(eager, static=True) if name == "forward_mlm" else eager, **kw)
        setattr(owner, name, _in_training(model, fn, eager))
        compiled[name] = fn
    return compiled


def _in_training(model, compiled, eager):
    """`compiled` while `model` trains, `eager` in eval mode."""

    @functools.wraps(eager)
    def call(*args, **kwargs):
        return (compiled if model.training else eager)(*args, **kwargs)

    return call


def pad_captions(batch: dict, length: int, pad_id: int) -> dict:
    """The batch with its captions right-padded to `length` tokens (static shapes for a compiled step; the
    padding is masked out, so outputs do not change)."""
    from smaug.models.common import pad_text_to_global_length

    ids, am = pad_text_to_global_length(batch["input_ids"], batch["attention_mask"], pad_id, length)
    return {**batch, "input_ids": ids, "attention_mask": am}
