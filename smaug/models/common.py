"""Small helpers shared by the model files: gradient checkpointing and torch.distributed gathers.

Nothing here imports DeepSpeed. The gathers are no-ops (return the input) unless
`torch.distributed` is initialised with world size > 1.

The model files import nothing of smaug outside smaug/models/ but `smaug/dist.py`, which the HF export
copies beside them (`smaug.hf.MODEL_CODE_FILES`), so an exported folder runs this code without smaug.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

try:  # an exported folder: the byte copy of smaug/dist.py beside this file
    from .dist import world
except ModuleNotFoundError as e:  # the library (smaug/models/ has no dist.py)
    if e.name != f"{__package__}.dist":
        raise
    from smaug.dist import world


def maybe_checkpoint(enabled: bool, fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, recomputed in backward when `enabled` (non-reentrant, RNG state preserved).

    Non-reentrant checkpointing keeps a single autograd graph, so a parameter used inside and
    outside the checkpointed region (the tied word embeddings, the twice-run text encoder) gets
    exactly one gradient-accumulation hook call per backward, which DeepSpeed ZeRO-2 requires.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` [b, ...] of every rank along dim 0 -> [world * b, ...], in rank order.

    Gradient flows back to each rank's own `x` (summed over the ranks that used it), so
    features of other ranks act as negatives and the local encoder still learns from them.
    All ranks must pass the same shape.
    """
    _, ws = world()
    if ws == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like `all_gather_with_grad` for tensors that need no gradient (ids, masks)."""
    _, ws = world()
    if ws == 1:
        return x
    out = [torch.empty_like(x) for _ in range(ws)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def pad_text_to_global_length(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int, length: int | None = None
):
    """Right-pad `[b, L]` text to the longest L over all ranks (the loader pads per batch), so
    text tensors can be all-gathered; or to `length` when given (static shapes for a compiled step:
    no collective, no host sync). Padding is masked out, so outputs do not change."""
    if length is not None:
        if input_ids.shape[1] > length:
            raise ValueError(f"captions of {input_ids.shape[1]} tokens exceed the static text length {length}")
        extra = length - input_ids.shape[1]
    else:
        _, ws = world()
        if ws == 1:
            return input_ids, attention_mask
        n = torch.tensor([input_ids.shape[1]], device=input_ids.device)
        dist.all_reduce(n, op=dist.ReduceOp.MAX)
        extra = int(n.item()) - input_ids.shape[1]
    if extra > 0:
        input_ids = F.pad(input_ids, (0, extra), value=pad_id)
        attention_mask = F.pad(attention_mask, (0, extra), value=0)
    return input_ids, attention_mask


def draw_seed() -> int:
    """A seed from torch's global CPU generator (so torch.manual_seed makes a run repeatable). A CPU
    tensor: reading it is no device sync."""
    return int(torch.randint(0, 2**62, (1,)).item())


def sincos_pos_embed_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding of positions `pos` [n] (float64): [n, dim], sines then cosines."""
    if dim % 2:
        raise ValueError(f"sin-cos position embeddings need an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embeddings: [grid * grid, dim] (row-major patches)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    # MAE order: first half encodes w, second half h
    return torch.cat([sincos_pos_embed_1d(dim // 2, xs.flatten()), sincos_pos_embed_1d(dim // 2, ys.flatten())], dim=1)
