"""Checkpoints: DeepSpeed engine state + smaug client state, atomic `latest`, keep-last-K.

Layout under `<output_dir>/checkpoints/`:
    step_00001000/            engine.save_checkpoint(tag="step_00001000")
        mp_rank_00_model_states.pt, *_optim_states.pt   (DeepSpeed)
        COMPLETE              written by rank 0 after every rank finished saving
    latest                    text file with the newest COMPLETE tag, replaced atomically

A kill during a save leaves a directory without COMPLETE; `latest` still names the previous
complete checkpoint, and the half-written directory is removed on the next resume.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

MARKER = "COMPLETE"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def ckpt_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def complete_tags(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and is_complete(p))


def read_latest(root: Path) -> Optional[str]:
    """The tag `latest` names if it is complete; else the newest complete tag; else None."""
    f = root / LATEST
    if f.is_file():
        tag = f.read_text().strip()
        if tag and is_complete(root / tag):
            return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def _gather(obj) -> list:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, file-size limit, I/O error); `latest` is intact."""


def _write_failure(path: Path, exc: BaseException) -> str:
    """What went wrong writing under `path`, with the likely cause: torch.save reports a full disk as
    'unexpected pos N vs M' (the errno is lost), so a short probe write and the free space say it."""
    cause = f"{type(exc).__name__}: {exc}"
    errno_ = getattr(exc, "errno", None)
    if not errno_:
        probe = path.parent / f".write_probe.{os.getpid()}"
        try:
            with open(probe, "wb") as f:  # 8 MiB: past a small file-size limit, more than a nearly full disk
                for _ in range(8):
                    f.write(b"\0" * (1 << 20))
                    f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            errno_ = e.errno
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
    if errno_:
        cause += f" [errno {errno_}: {os.strerror(errno_)}]"
    try:
        cause += f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free on that filesystem"
    except OSError:
        pass
    try:
        import resource

        fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if fsize != resource.RLIM_INFINITY:
            cause += f"; file-size limit (ulimit -f) {fsize} bytes"
    except (ImportError, OSError, ValueError):
        pass
    return cause


def _raise_if_failed(errors: list, root: Path, tag: str, previous: Optional[str], rank0: bool) -> None:
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if not failed:
        return
    if rank0:
        shutil.rmtree(root / tag, ignore_errors=True)  # frees the space; a resume would remove it anyway
    where = "; ".join(f"rank {r}: {e}" for r, e in failed)
    kept = (f"`latest` still names {previous} ({root / previous}), which is complete and intact: free space "
            f"(or raise the quota / file-size limit) and rerun the same command to resume from it"
            if previous else "there is no earlier complete checkpoint (`latest` was not written)")
    raise CheckpointWriteError(f"checkpoint {tag} could not be written to {root}: {where}. The incomplete "
                               f"{tag} was removed; {kept}.")


def save(engine, output_dir: str | Path, step: int, client_state: dict, per_rank_state: dict, keep: int) -> Path:
    """Save a checkpoint from every rank; mark it complete, point `latest` at it, prune old ones.

    `per_rank_state` (loader position, RNG) is gathered so each rank restores its own.
    A write that fails on any rank (disk full, quota, ...) raises CheckpointWriteError on every rank,
    naming the cause, the directory and the complete checkpoint `latest` still names.
    """
    root = ckpt_root(output_dir)
    tag = tag_for(step)
    ranks = _gather(per_rank_state)
    state = dict(client_state, ranks=ranks, world_size=len(ranks))
    rank0 = engine.global_rank == 0
    previous = read_latest(root)
    if rank0 and (root / tag).exists() and not is_complete(root / tag):
        shutil.rmtree(root / tag)  # leftover of a killed save of the same step
    _barrier()
    error = None
    try:
        engine.save_checkpoint(str(root), tag=tag, client_state=state, save_latest=False)
    except (OSError, RuntimeError) as e:
        error = _write_failure(root / tag, e)
        _barrier()  # the barrier DeepSpeed's save ends with, where the ranks that wrote their part wait
    _raise_if_failed(_gather(error), root, tag, previous, rank0)
    if rank0:
        try:
            (root / tag / MARKER).write_text(f"{step}\n")
            _write_atomic(root / LATEST, tag + "\n")
        except OSError as e:
            error = _write_failure(root / tag, e)
    _raise_if_failed(_gather(error), root, tag, previous, rank0)
    if rank0:
        for old in complete_tags(root)[:-keep]:
            shutil.rmtree(root / old, ignore_errors=True)
    _barrier()
    return root / tag


def find_resume(output_dir: str | Path, resume: str) -> Optional[tuple[Path, str]]:
    """(load_dir, tag) to resume from, or None. `resume`: auto | none | <checkpoint dir>."""
    if resume == "none":
        return None
    if resume == "auto":
        root = ckpt_root(output_dir)
        tag = read_latest(root)
        return (root, tag) if tag else None
    p = Path(resume)
    if p.is_dir() and is_complete(p):
        return p.parent, p.name
    if p.is_dir():
        tag = read_latest(p)
        if tag:
            return p, tag
    raise FileNotFoundError(f"ckpt.resume: {resume!r} is not a complete smaug checkpoint (no {MARKER} marker / latest)")


def clean_incomplete(output_dir: str | Path) -> list[str]:
    """Remove half-written checkpoint directories (rank 0, before training starts)."""
    root = ckpt_root(output_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def load(engine, load_dir: Path, tag: str) -> dict:
    """Load engine + optimizer + LR scheduler state; return smaug's client state."""
    path, client = engine.load_checkpoint(str(load_dir), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {load_dir}/{tag}")
    return client
