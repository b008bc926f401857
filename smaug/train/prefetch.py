"""Host-to-device prefetch of training batches, one batch ahead of the step that uses it.

The loader hands out pinned CPU batches (`pin_memory` on CUDA). While step i runs, batch i+1
is already being copied on a side CUDA stream, so the copy (~40 MB of uint8 video for 64 clips
at 224 px) never stalls the GPU. On CPU the same one-ahead logic runs with plain copies, so the
CPU tests exercise it.

Exact resume: the batch in flight has been pulled from the loader but not trained on.
`state_dict()` and `skip_counts()` therefore report the loader as it was right after the last
batch handed to the trainer, not after the one in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of `batch` on `device` (asynchronous from pinned memory); other values as they are."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class DevicePrefetcher:
    """Iterate `loader` (a `TrainLoader`) with batch i+1's copy to `device` in flight during step i."""

    def __init__(self, loader, device: torch.device):
        self.loader = loader
        self.device = device
        self.stream: Optional[torch.cuda.Stream] = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._state = loader.state_dict()
        self._skips = loader.skip_counts()

    def _copy(self, batch: dict):
        """Start `batch`'s copy; returns (device batch, event marking the copy's end, or None on CPU)."""
        if self.stream is None:
            return to_device(batch, self.device), None
        with torch.cuda.stream(self.stream):
            out = to_device(batch, self.device)
            done = torch.cuda.Event()
            done.record(self.stream)
        return out, done

    def _ready(self, batch: dict, done) -> dict:
        """Make the compute stream wait for this batch's copy only (not for the one started after it),
        and keep its memory alive until the compute stream is done with it."""
        if done is not None:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(done)
            for v in batch.values():
                if torch.is_tensor(v) and v.device.type == "cuda":
                    v.record_stream(cur)
        return batch

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        raw = next(it, None)
        nxt = None if raw is None else self._copy(raw)
        while nxt is not None:
            batch, done = nxt
            # the loader's position now: right after `batch`, before the one we pull next
            self._state, self._skips = self.loader.state_dict(), self.loader.skip_counts()
            raw = next(it, None)
            nxt = None if raw is None else self._copy(raw)
            yield self._ready(batch, done)

    def state_dict(self) -> dict:
        """The loader's position after the batches handed out (the one in flight excluded)."""
        return self._state

    def skip_counts(self) -> dict[str, int]:
        """Corrupt samples skipped up to the last batch handed out, by reason."""
        return dict(self._skips)
