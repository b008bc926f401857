"""torch.distributed helpers shared by the library, the trainer and the tools (one home for each).

Nothing here imports DeepSpeed. Every helper is a no-op (or the trivial answer) without an
initialised process group, so library code calls them unconditionally.

    rank, world_size = world()          # (0, 1) without a process group
    parts = gather_object(obj)          # [obj of rank 0, obj of rank 1, ...]; [obj] at world size 1
    barrier()
    rank, world_size, device = init_distributed("cpu" | "cuda")   # torchrun env -> process group
    port = free_port()
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

# the variables torchrun / the DeepSpeed launcher set; a single-process run sets them itself
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_object(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; `[obj]` without a process group or at world size 1."""
    _, ws = world()
    if ws == 1:
        return [obj]
    out = [None] * ws
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for MASTER_PORT of a single-node run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device_kind: str, *, always: bool = False, timeout=None) -> tuple[int, int, torch.device]:
    """torchrun's env -> (rank, world_size, device), the process group initialised once.

    Without torchrun's variables a plain run is world size 1: with `always` (the trainer, whose
    DeepSpeed engine needs a process group) the variables are set for a 1-process group, otherwise
    no group is made. On CUDA the process binds to its LOCAL_RANK GPU, and the NCCL group gets
    `device_id` (so NCCL does not guess the device at its first collective).
    """
    if "RANK" not in os.environ and always:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if device_kind == "cuda" else torch.device("cpu")
    if device_kind == "cuda":
        torch.cuda.set_device(device)
    if (ws > 1 or always) and not dist.is_initialized():
        bind = {"device_id": device} if device_kind == "cuda" else {}
        extra = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo", **extra, **bind)
    rank, ws = world()
    return rank, ws, device
