"""Multi-tensor versions of DeepSpeed's per-parameter host work, installed by the trainer and the
bench before `deepspeed.initialize` (`install()`; `ds_configs/README.md` documents it).

ZeRO-1/2's gradient-clipping norm (`DeepSpeedZeroOptimizer.get_grad_norm_direct`) casts every gradient to
the norm dtype (fp64) and takes its norm, one tensor at a time: two dispatched ops per parameter tensor every
step (424 of the 735 ops the engine adds to a tiny-preset step of 211 tensors), each a kernel launch on a GPU. `grad_norm_direct` below computes the same per-tensor norms in the same dtype with one
`torch._foreach_norm(..., dtype=)`, then the same reduction; everything else of DeepSpeed's method is kept
(the L2 case only: other norm types go to DeepSpeed's own code). The reduced gradient bucket is copied back
into the gradients one tensor at a time (`allreduce_and_copy`: one more op per tensor, 211 of the remaining
303); `allreduce_and_copy` below does it with one `torch._foreach_copy_`. Together: 735 -> 92 ops the engine
adds to a tiny-preset step and 1,449 -> 92 for SMAUG base (449 tensors): no longer growing with the parameter
count (`python bench/train_step.py --device cpu --preset base --skeleton --precision bf16 --count-ops`). Upstream-style patches
of two methods, checked against the DeepSpeed version they were written for: another version keeps
DeepSpeed's methods and says so.
"""

from __future__ import annotations

import logging

import torch

LOG = logging.getLogger("smaug")
WRITTEN_FOR = ("0.19.",)  # DeepSpeed releases whose two methods these replace line for line


def grad_norm_direct(self, gradients, params, norm_type=2):
    """`DeepSpeedZeroOptimizer.get_grad_norm_direct` with one multi-tensor norm for the L2 case: the total
    L2 norm of this rank's gradient partition, reduced over the data- and model-parallel groups."""
    from deepspeed import comm as dist
    from deepspeed.runtime.constants import PIPE_REPLICATED
    from deepspeed.runtime.utils import is_model_parallel_parameter, mask_nan_or_inf_with_val_inplace
    from deepspeed.runtime.zero.utils import get_norm_dtype

    if float(norm_type) != 2.0:
        return _ORIGINAL(self, gradients, params, norm_type)
    grads = [
        g.detach()
        for g, p in zip((g for g in gradients if not getattr(g, "_zero_padding", False)), params)
        if not (hasattr(p, PIPE_REPLICATED) and p.ds_pipe_replicated)  # pipeline replicas: counted once
        and (is_model_parallel_parameter(p) or self.model_parallel_rank == 0)
    ]
    if grads:
        norms = torch._foreach_norm(grads, 2, dtype=get_norm_dtype())  # one op for every tensor
        total_norm = torch.stack(norms).pow(2).sum().float()
    else:
        total_norm = torch.tensor(0.0, dtype=torch.float32).to(self.device)
    dist.all_reduce(total_norm, op=dist.ReduceOp.SUM, group=self.dp_process_group)
    self._model_parallel_all_reduce(tensor=total_norm, op=dist.ReduceOp.SUM)
    total_norm = total_norm.pow(0.5)
    mask_nan_or_inf_with_val_inplace(total_norm, device=self.device)
    return total_norm


def allreduce_and_copy(
    self,
    small_bucket,
    communication_data_type: torch.dtype,
    rank=None,
    log=None,
    divide=True,
    process_group=None,
    output_bucket=None,
):
    """`DeepSpeedZeroOptimizer.allreduce_and_copy` with one multi-tensor copy of the reduced bucket back into
    the gradients (DeepSpeed copies tensor by tensor). With `overlap_comm` or an output bucket to accumulate
    into, DeepSpeed's own method runs (they need per-tensor stream bookkeeping)."""
    from deepspeed import comm as dist

    if self.overlap_comm or (output_bucket is not None and any(o is not None for o in output_bucket)):
        return _ORIGINAL_COPY(
            self, small_bucket, communication_data_type, rank, log, divide, process_group, output_bucket
        )
    process_group = self.dp_process_group if process_group is None else process_group
    allreduced = self.allreduce_bucket(
        small_bucket, communication_data_type, rank=rank, log=log, divide=divide, process_group=process_group
    )
    if rank is None or rank == dist.get_rank(group=process_group):
        torch._foreach_copy_(list(small_bucket), list(self.unflatten(allreduced, small_bucket)))


_ORIGINAL = _ORIGINAL_COPY = None


def install() -> bool:
    """Replace `DeepSpeedZeroOptimizer.get_grad_norm_direct` and `allreduce_and_copy` by the versions above
    (idempotent). -> whether they are installed (False on a DeepSpeed release they were not written for,
    which keeps its own methods)."""
    global _ORIGINAL, _ORIGINAL_COPY
    import deepspeed
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    if DeepSpeedZeroOptimizer.get_grad_norm_direct is grad_norm_direct:
        return True
    if not deepspeed.__version__.startswith(WRITTEN_FOR):
        LOG.warning(
            "smaug.train.engine_ops: DeepSpeed %s is not a release the multi-tensor grad norm was written for %s; "
            "keeping DeepSpeed's per-tensor norm",
            deepspeed.__version__,
            WRITTEN_FOR,
        )
        return False
    _ORIGINAL, _ORIGINAL_COPY = DeepSpeedZeroOptimizer.get_grad_norm_direct, DeepSpeedZeroOptimizer.allreduce_and_copy
    DeepSpeedZeroOptimizer.get_grad_norm_direct = grad_norm_direct
    DeepSpeedZeroOptimizer.allreduce_and_copy = allreduce_and_copy
    return True


def uninstall() -> None:
    """Put DeepSpeed's own methods back (tests compare the two)."""
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    if _ORIGINAL is not None:
        DeepSpeedZeroOptimizer.get_grad_norm_direct = _ORIGINAL
        DeepSpeedZeroOptimizer.allreduce_and_copy = _ORIGINAL_COPY
