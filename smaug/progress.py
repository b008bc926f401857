"""Progress for output that is not a terminal: a plain line every so often instead of a carriage-return bar.

A tqdm bar redraws itself with '\\r'. In a terminal that is one line updated in place; in a file (a Slurm log,
`python -m smaug.train ... > run.log 2>&1`) every refresh stays, so the log is one endless line of bars with the
run's messages glued to them. `make_progress` returns a tqdm bar on a terminal and a `PlainProgress` elsewhere;
both take `update(n)`, `set_postfix(...)`, `close()` and have `n`. Used by the trainer (`smaug.train.monitor`) and
`tools/make_shards.py`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Optional

EVERY_S = 30.0  # seconds between two plain progress lines (tests set 0: a line per update)


def on_terminal() -> bool:
    """stdout and stderr are both terminals (a bar on stderr would otherwise interleave with a file's lines)."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PlainProgress:
    """tqdm's interface, printing `desc: 120/400 step (30%), 2.10 step/s, 0m57s elapsed, 2m10s left, key=value`
    through `write` at most every `every_s` seconds (`EVERY_S` by default), and once more at `close()`. The
    key=values are the last `set_postfix`'s (the trainer's last logged record)."""

    def __init__(
        self,
        total: Optional[int],
        unit: str,
        desc: str = "",
        initial: int = 0,
        write: Callable[[str], None] = _stderr_line,
        every_s: Optional[float] = None,
    ):
        self.total, self.unit, self.desc, self.write = total, unit, desc, write
        self.every_s = EVERY_S if every_s is None else every_s
        self.n = self.start = self.shown = initial
        self.t0 = self.last = time.monotonic()
        self.postfix: dict = {}
        self.shown_postfix: dict = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n != self.shown and time.monotonic() - self.last >= self.every_s:
            self.show()

    def set_postfix(self, refresh: bool = False, **kw) -> None:
        self.postfix = kw

    def show(self) -> None:
        now = time.monotonic()
        self.last, self.shown, self.shown_postfix = now, self.n, dict(self.postfix)
        elapsed = now - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total}" if self.total else str(self.n)]
        parts[0] += f" {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        parts += [f"{rate:.2f} {self.unit}/s", f"{_duration(elapsed)} elapsed"]
        if self.total and rate > 0:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        self.write((f"{self.desc}: " if self.desc else "") + ", ".join(parts))

    def close(self) -> None:
        """The end: a last line unless the last one already said it (a postfix set after it, e.g. the final
        record's loss, is news)."""
        if self.n != self.shown or self.postfix != self.shown_postfix:
            self.show()


def make_progress(total: Optional[int], unit: str, desc: str = "", initial: int = 0, write=None, **tqdm_kw):
    """A tqdm bar on a terminal, else a `PlainProgress` writing through `write` (default: a line on stderr)."""
    if not on_terminal():
        return PlainProgress(total, unit, desc, initial, **({"write": write} if write else {}))
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc or None, initial=initial, dynamic_ncols=True, **tqdm_kw)
