"""Decoding in a child process of each loader worker (`data.isolate_decode`).

A decoder bug on one video (a segfault in FFmpeg, an endless loop in a demuxer) would otherwise
kill or stall the DataLoader worker that met it, and with it the run. With isolation each worker
sends its samples' bytes to its own decode process and waits at most `data.decode_timeout`
seconds per sample:

    worker --(key, member bytes, rng, sizes)--> decode process --(frames or a CorruptSample)--> worker

- the decode process dies (any signal, any exit): the sample is skipped as `decoder_crash`;
- no answer within the time limit: the process is killed, the sample skipped as `decode_timeout`;
- either way the loader logs the sample's key and reason (as for every sample it skips) and the next sample
  starts a fresh process, so the worker, its stream position and the run go on; the decode itself is the
  same pure function of the sample and its seed, so exact resume still holds.

The decode process is a fresh interpreter (`python -m smaug.data.isolation`), not a fork: DataLoader
workers are daemonic (they cannot own multiprocessing children) and decoders that are not fork-safe
(decord is reported to deadlock after fork) start clean. It runs `decode.decode_crop` (bytes -> frames
-> the crop box's pixels, numpy only) and never imports torch, so a start or a restart after a bad
sample costs the decoder's imports (~0.5 s), not torch's (~2 s more). The process imports the decoder
(`data.decoder`, a "module:Class" one and its backend included) before it reports ready, so start-up,
imports and all, is never counted against a sample's time limit: the first sample after a (re)start
gets the same `decode_timeout` as any other (it once paid the decoder's imports and, on 2 busy cores,
timed out). The cropped frames come back over a pipe as a uint8 array (4 x 256 x 256 x 3 = 0.8 MB for
a 256 px crop) and the worker resizes them (`decode.resize_crop`), so the result is decode_sample's,
pixel for pixel.
"""

from __future__ import annotations

import inspect
import os
import pickle
import select
import struct
import subprocess
import sys
import time

import numpy as np

from .decode import CorruptSample, Cropped, Decoded, decode_crop, decode_sample, resize_crop
from .decoders import check_decoder, preload_decoder

_DECODE_SAMPLE = inspect.signature(decode_sample)  # DecodeServer.decode takes its arguments
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

    def __init__(self, timeout: float, decoder: str = "decord", startup_timeout: float = 300.0):
        self.timeout, self.decoder, self.startup_timeout = timeout, decoder, startup_timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smaug.data.isolation", self.decoder],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        try:
            greeting = _read_frame(self.proc.stdout.fileno(), time.monotonic() + self.startup_timeout)
        except (EOFError, TimeoutError) as exn:
            code = self._kill()
            raise RuntimeError(f"the decode process did not start ({type(exn).__name__}, exit {code})") from None
        if greeting != READY:
            self._kill()
            raise RuntimeError(f"the decode process did not start: {greeting}")

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
        call = _DECODE_SAMPLE.bind(sample, *args, **kwargs)
        call.apply_defaults()
        crop_args = dict(call.arguments)
        image_size = crop_args.pop("image_size")
        if self.proc is None:
            self._start()
        try:
            _write_frame(self.proc.stdin.fileno(), crop_args)
            ok, payload = _read_frame(self.proc.stdout.fileno(), time.monotonic() + self.timeout)
        except TimeoutError:
            self._kill()
            self.restarts += 1
            raise CorruptSample("decode_timeout", f"no result after {self.timeout:g}s; decode process killed") from None
        except (EOFError, BrokenPipeError):
            code = self._kill()
            self.restarts += 1
            raise CorruptSample("decoder_crash", f"decode process died (exit {code})") from None
        if not ok:
            raise CorruptSample(*payload)
        return resize_crop(Cropped(**payload), crop_args["num_frames"], image_size)

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
    server = DecodeServer(cfg.decode_timeout, cfg.decoder)
    return server.decode, server.close


def serve(decoder: str) -> None:
    """The decode process: imports `decoder`, then decode_crop's arguments in on stdin, its results out
    on stdout, until stdin closes. Imports no torch (the decoder's own imports aside)."""
    rd, wr = sys.stdin.fileno(), sys.stdout.fileno()
    try:  # the imports happen here, before READY, not in the first sample's time
        check_decoder(decoder)
        preload_decoder(decoder)
    except (ImportError, OSError, RuntimeError, ValueError) as exn:
        _write_frame(wr, f"{type(exn).__name__}: {exn}")
        return
    _write_frame(wr, READY)
    while True:
        try:
            kwargs = _read_frame(rd, None)
        except EOFError:
            return
        try:
            c = decode_crop(**kwargs)
            out = (True, dict(vars(c), frames=np.ascontiguousarray(c.frames)))
        except CorruptSample as exn:
            out = (False, (exn.reason, exn.detail))
        _write_frame(wr, out)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "decord")
