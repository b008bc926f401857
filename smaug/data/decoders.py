"""Video decoder backends behind one interface: decord, PyAV or torchcodec (`data.decoder`).

Every backend decodes from the sample's in-memory bytes, single-threaded, optionally scaled by
FFmpeg's scaler to (width, height) while decoding, and returns the frames at the requested
indices (presentation order, 0-based) as `[len(idx), H, W, 3]` uint8 RGB. The caller
(`decode.decode_video`) chooses the indices with the same segment rule for every backend, so the
backends differ only within codec/scaler tolerance (tests/test_decoders.py).

    reader = open_reader(data, "pyav", width, height)
    n = reader.num_frames
    frames = reader.get(idx)            # np.ndarray [len(idx), H, W, 3] uint8

- decord (decord2): the default; its own FFmpeg build. Unmaintained upstream; reported to hang
  under fork-started DataLoader workers in some set-ups.
- pyav: FFmpeg through PyAV (bundled libraries). The frame count comes from the container header,
  else from counting packets (no decoding); frames are decoded in order up to the last one asked.
- torchcodec: PyTorch's decoder; needs the system FFmpeg shared libraries (libavcodec 4-7,
  installed by `launch/setup_env.sh` where apt-get is available).
- "package.module:Class": your own reader class, constructed as `Class(data, width, height)`
  (the tests use one that hangs or kills its process on marked bytes).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from typing import IO, Protocol

import numpy as np

DECODERS = ("decord", "pyav", "torchcodec")


class Reader(Protocol):
    num_frames: int

    def get(self, idx: list[int]) -> np.ndarray: ...


def import_decord():
    """decord, with FFmpeg's own log messages off (they would repeat every bad sample's error)."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


# decord reports an input it cannot open from C++, on fd 2 and whatever decord.logging's level (that is
# FFmpeg's): "[12:00:00] .../video_reader.cc:86: ERROR opening: <the input>, <FFmpeg's reason>", and for
# in-memory bytes the input is the bytes themselves, up to their first NUL.
_DECORD_OPEN_ERROR = b": ERROR opening: "
_FD2 = threading.Lock()  # one capture of fd 2 at a time in a process
_CAPTURE: dict[int, IO[bytes]] = {}  # pid -> the file fd 2 goes to while captured (a fork makes its own)


@contextlib.contextmanager
def _captured_fd2():
    """fd 2 into a temporary file for the block (one per process, reused: creating one costs more than the
    capture); yields a list that holds what was written to fd 2 afterwards."""
    caught: list[bytes] = []
    with _FD2:
        tmp = _CAPTURE.get(os.getpid())
        if tmp is None:
            tmp = _CAPTURE[os.getpid()] = tempfile.TemporaryFile()
        tmp.seek(0)
        tmp.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            caught.append(tmp.read())


def _drop_open_error(log: bytes, data: bytes) -> tuple[bytes, str]:
    """`log` without decord's "ERROR opening" message about `data`, and FFmpeg's reason from it ("" if none).
    The message is found by its exact text, so bytes of `data` that look like a line break do not end it early;
    a message that does not quote `data` as expected is dropped with all that follows it."""
    at = log.find(_DECORD_OPEN_ERROR)
    if at < 0:
        return log, ""
    start = log.rfind(b"\n", 0, at) + 1
    quoted = at + len(_DECORD_OPEN_ERROR) + len(data.split(b"\0", 1)[0])
    if log[quoted : quoted + 2] != b", ":
        return log[:start], ""
    end = log.find(b"\n", quoted)
    end = len(log) if end < 0 else end + 1
    return log[:start] + log[end:], log[quoted + 2 : end].decode("utf-8", "replace").strip()


def open_video(data: bytes, width: int = -1, height: int = -1):
    """A decord VideoReader over in-memory bytes (single decode thread), optionally rescaled.

    fd 2 is captured while decord opens the bytes: its message about bytes it cannot open quotes them, so it
    never reaches the terminal; the failure is a RuntimeError naming FFmpeg's reason on one line instead.
    Anything else written to fd 2 meanwhile (another thread's output) is passed on when the open returns."""
    decord = import_decord()
    with _captured_fd2() as caught:
        try:
            reader, failure = decord.VideoReader(io.BytesIO(data), width=width, height=height, num_threads=1), None
        # ValueError: an exception text of decord's that quotes bytes which are not UTF-8 fails to decode
        except (RuntimeError, ValueError, AssertionError, decord.DECORDError) as exn:
            reader, failure = None, exn
    log, reason = _drop_open_error(caught[0], data)
    if log:
        os.write(2, log)
    if failure is not None:
        reason = reason or f"{type(failure).__name__}: {(str(failure).splitlines() or [''])[0]}"
        raise RuntimeError(f"decord cannot open the video: {reason}") from None
    return reader


class DecordReader:
    def __init__(self, data: bytes, width: int, height: int):
        self._vr = open_video(data, width, height)
        self.num_frames = len(self._vr)

    def get(self, idx: list[int]) -> np.ndarray:
        return self._vr.get_batch(idx).asnumpy()


class PyAVReader:
    def __init__(self, data: bytes, width: int, height: int):
        import av

        self._av, self._data, self._size = av, data, (width, height)
        with self._open() as c:
            s = c.streams.video[0]
            n = int(s.frames or 0)
            if n <= 0:  # no count in the header (WebM, some MKV): count packets, no decoding
                n = sum(1 for p in c.demux(s) if p.size)
        self.num_frames = n

    def _open(self):
        c = self._av.open(io.BytesIO(self._data), mode="r")
        if not c.streams.video:
            c.close()
            raise ValueError("no video stream")
        c.streams.video[0].thread_type = "SLICE"
        c.streams.video[0].codec_context.thread_count = 1
        return c

    def get(self, idx: list[int]) -> np.ndarray:
        w, h = self._size
        want = sorted(set(idx))
        out, last = {}, want[-1]
        with self._open() as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i in want:
                    out[i] = (
                        frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC")
                        if w > 0
                        else frame.to_ndarray(format="rgb24")
                    )
                if i >= last:
                    break
        if len(out) < len(want):  # the header over-counted: repeat the last decoded frame, as decord clamps
            if not out:
                raise ValueError("no frame decoded")
            top = max(out)
            out.update({i: out[top] for i in want if i not in out})
        return np.stack([out[i] for i in idx])


class TorchCodecReader:
    def __init__(self, data: bytes, width: int, height: int):
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        tf = [Resize((height, width))] if width > 0 else None
        self._dec = VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact", transforms=tf)
        self.num_frames = len(self._dec)

    def get(self, idx: list[int]) -> np.ndarray:
        return self._dec.get_frames_at(idx).data.numpy()


_READERS = {"decord": DecordReader, "pyav": PyAVReader, "torchcodec": TorchCodecReader}


def reader_class(decoder: str):
    """The reader class of a built-in name or of "package.module:Class"."""
    if decoder in _READERS:
        return _READERS[decoder]
    if ":" in decoder:
        import importlib

        mod, _, cls = decoder.partition(":")
        return getattr(importlib.import_module(mod), cls)
    raise ValueError(
        f"data.decoder: unknown decoder {decoder!r} (choose from {', '.join(DECODERS)} or give package.module:Class)"
    )


def open_reader(data: bytes, decoder: str = "decord", width: int = -1, height: int = -1) -> Reader:
    """A reader over encoded video bytes; width/height > 0 scale while decoding."""
    return reader_class(decoder)(data, width, height)


_BACKENDS = {  # a built-in reader -> the import it makes on its first video
    DecordReader: import_decord,
    PyAVReader: lambda: __import__("av"),
    TorchCodecReader: lambda: __import__("torchcodec.decoders"),
}


def preload_decoder(decoder: str) -> None:
    """Import `decoder`'s reader class and the backend under it (that of the built-in reader it is or
    derives from) now, so the first video does not pay for them (isolation.py's decode process)."""
    cls = reader_class(decoder)
    for base, load in _BACKENDS.items():
        if issubclass(cls, base):
            load()


def check_decoder(decoder: str) -> None:
    """Fail fast (at config time, not in a worker) when the chosen backend cannot load."""
    try:
        if decoder not in DECODERS:
            reader_class(decoder)
        elif decoder == "decord":
            import decord  # noqa: F401  (imported to check it loads)
        elif decoder == "pyav":
            import av  # noqa: F401  (imported to check it loads)
        else:
            from torchcodec._core import ops

            # `import torchcodec` swallows a missing FFmpeg; VideoDecoder would raise it later, in a
            # worker. load_core_libraries (torchcodec >= 0.8) raises it now.
            getattr(ops, "load_core_libraries", lambda: None)()
    except (ImportError, OSError, RuntimeError, AttributeError) as exn:
        hint = (
            " (torchcodec needs the system FFmpeg libraries: run `bash launch/setup_env.sh` as root,"
            " or apt-get install libavcodec-dev libavformat-dev libavutil-dev libswscale-dev)"
            if decoder == "torchcodec"
            else ""
        )
        raise ValueError(f"data.decoder={decoder!r} cannot load: {type(exn).__name__}: {exn}{hint}") from None
