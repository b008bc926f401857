"""SIGTERM / SIGUSR1 (a scheduler's preemption, Slurm's `--signal` warning): checkpoint at the next step
boundary and exit 0.

`python -m smaug.train` (and `smaug-train`) call `catch_early()` first, before importing torch, DeepSpeed
and the model (~5-10 s per rank): a signal that comes during those imports is kept, and the trainer's
`Preemption` takes it over, so it checkpoints at its first step. Slurm may send `--signal`'s warning up to
a minute before the time it was asked for, which on a short job can fall in a rank's start-up.
Standard library only, so that importing it costs nothing.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_early: list[str] = []  # names of the signals that came before a Preemption was made


def _record(signum, frame) -> None:
    _early.append(signal.Signals(signum).name)


def catch_early() -> None:
    """Keep SIGTERM / SIGUSR1 from now on until the trainer's Preemption takes over."""
    for sig in SIGNALS:
        signal.signal(sig, _record)


class Preemption:
    """SIGTERM / SIGUSR1 set a flag (`requested`, `signal`: the first one's name); the training loop
    checkpoints at the next step boundary and exits 0. A signal kept by `catch_early` counts as one."""

    def __init__(self):
        self.requested = bool(_early)
        self.signal = _early[0] if _early else None
        _early.clear()
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}

    def restore(self) -> None:
        """Put back the handlers that were there before (an in-process caller keeps its own)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal = self.signal or signal.Signals(signum).name
