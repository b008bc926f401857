"""Decoding in a child process of each loader worker (`data.isolate_decode`).

A decoder bug on one video (a segfault in FFmpeg, an endless loop in a demuxer) would otherwise
kill or stall the DataLoader worker that met it, and with it the run. With isolation each worker
sends its samples' bytes to its own decode process and waits at most `data.decode_timeout`
seconds per sample:

    worker --(key, member bytes, rng, sizes)--> decode process --(frames or a CorruptSample)--> worker

- the decode process dies (any signal, any exit): the sample is skipped as `decoder_crash`;
- no answer within the time limit: the process is killed, the sample skipped as `decode_timeout`;
- either way the key is logged and the next sample starts a fresh process, so the worker, its
  stream position and the run go on; the decode itself is the same pure function of the sample and
  its seed, so exact resume still holds.

The decode process is a fresh interpreter (`python -m smaug.data.isolation`), not a fork: DataLoader
workers are daemonic (they cannot own multiprocessing children) and decoders that are not fork-safe
(decord is reported to deadlock after fork) start clean. Its start-up (importing torch and the
decoder, ~1-3 s) is not counted against a sample's time limit. Frames come back as raw uint8 bytes
over a pipe (4 x 3 x 224 x 224 = 0.6 MB per clip).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time

import numpy as np

from .decode import CorruptSample, Decoded, decode_sample

LOG = logging.getLogger("smaug.data")
_HDR = struct.Struct("<Q")
READY = b"smaug-decode-ready"


def _write_frame(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HDR.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None):
    (n,) = _HDR.unpack(_read_exact(fd, _HDR.size, deadline))
    return pickle.loads(_read_exact(fd, n, deadline))


class DecodeServer:
    """One decode process for one loader worker; `decode(...)` has decode_sample's signature."""

    def __init__(self, timeout: float, startup_timeout: float = 300.0):
        self.timeout, self.startup_timeout = timeout, startup_timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smaug.data.isolation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        try:
            if _read_frame(self.proc.stdout.fileno(), time.monotonic() + self.startup_timeout) != READY:
                raise RuntimeError("decode process sent a bad greeting")
        except (EOFError, TimeoutError) as exn:
            code = self._kill()
            raise RuntimeError(f"the decode process did not start ({type(exn).__name__}, exit {code})") from None

    def _kill(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            f.close()
        return proc.returncode

    def decode(self, sample: dict, *args, **kwargs) -> Decoded:
        if self.proc is None:
            self._start()
        key = sample.get("__key__")
        try:
            _write_frame(self.proc.stdin.fileno(), (sample, args, kwargs))
            ok, payload = _read_frame(self.proc.stdout.fileno(), time.monotonic() + self.timeout)
        except TimeoutError:
            self._kill()
            self.restarts += 1
            detail = f"key {key}: no result after {self.timeout:g}s; decode process killed"
            LOG.warning("skip sample %s (%s): decode_timeout: %s", key, sample.get("__url__", "?"), detail)
            raise CorruptSample("decode_timeout", detail) from None
        except (EOFError, BrokenPipeError):
            code = self._kill()
            self.restarts += 1
            detail = f"key {key}: decode process died (exit {code})"
            LOG.warning("skip sample %s (%s): decoder_crash: %s", key, sample.get("__url__", "?"), detail)
            raise CorruptSample("decoder_crash", detail) from None
        if not ok:
            raise CorruptSample(*payload)
        import torch

        payload["video"] = torch.from_numpy(payload["video"])
        return Decoded(**payload)

    def close(self) -> None:
        self._kill()

    def __del__(self):
        try:
            self._kill()
        except (OSError, ValueError):
            pass


def make_decoder(cfg):
    """decode_sample itself, or a DecodeServer's decode when `cfg.isolate_decode`; -> (fn, close)."""
    if not cfg.isolate_decode:
        return decode_sample, lambda: None
    server = DecodeServer(cfg.decode_timeout)
    return server.decode, server.close


def serve() -> None:
    """The decode process: frames in on stdin, results out on stdout, until stdin closes."""
    import torch

    torch.set_num_threads(1)
    rd, wr = sys.stdin.fileno(), sys.stdout.fileno()
    _write_frame(wr, READY)
    while True:
        try:
            sample, args, kwargs = _read_frame(rd, None)
        except EOFError:
            return
        try:
            d = decode_sample(sample, *args, **kwargs)
            out = (
                True,
                {
                    "key": d.key,
                    "video": np.ascontiguousarray(d.video.contiguous().numpy()),
                    "caption": d.caption,
                    "captions": d.captions,
                    "is_image": d.is_image,
                },
            )
        except CorruptSample as exn:
            out = (False, (exn.reason, exn.detail))
        _write_frame(wr, out)


if __name__ == "__main__":
    serve()
