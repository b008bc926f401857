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
"""
from __future__ import annotations

import io
from typing import Protocol

import numpy as np

DECODERS = ("decord", "pyav", "torchcodec")


class Reader(Protocol):
    num_frames: int

    def get(self, idx: list[int]) -> np.ndarray: ...


class DecordReader:
    def __init__(self, data: bytes, width: int, height: int, quiet: bool):
        from .decode import open_video

        self._vr = open_video(data, width, height, quiet=quiet)
        self.num_frames = len(self._vr)

    def get(self, idx: list[int]) -> np.ndarray:
        return self._vr.get_batch(idx).asnumpy()


class PyAVReader:
    def __init__(self, data: bytes, width: int, height: int, quiet: bool = False):
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
                    out[i] = (frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC")
                              if w > 0 else frame.to_ndarray(format="rgb24"))
                if i >= last:
                    break
        if len(out) < len(want):  # the header over-counted: repeat the last decoded frame, as decord clamps
            if not out:
                raise ValueError("no frame decoded")
            top = max(out)
            out.update({i: out[top] for i in want if i not in out})
        return np.stack([out[i] for i in idx])


class TorchCodecReader:
    def __init__(self, data: bytes, width: int, height: int, quiet: bool = False):
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        tf = [Resize((height, width))] if width > 0 else None
        self._dec = VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact", transforms=tf)
        self.num_frames = len(self._dec)

    def get(self, idx: list[int]) -> np.ndarray:
        return self._dec.get_frames_at(idx).data.numpy()


_READERS = {"decord": DecordReader, "pyav": PyAVReader, "torchcodec": TorchCodecReader}


def open_reader(data: bytes, decoder: str = "decord", width: int = -1, height: int = -1,
                quiet: bool = False) -> Reader:
    """A reader over encoded video bytes; width/height > 0 scale while decoding."""
    if decoder not in _READERS:
        raise ValueError(f"data.decoder: unknown decoder {decoder!r} (choose from {', '.join(DECODERS)})")
    return _READERS[decoder](data, width, height, quiet)


def check_decoder(decoder: str) -> None:
    """Fail fast (at config time, not in a worker) when the chosen backend cannot load."""
    if decoder not in DECODERS:
        raise ValueError(f"data.decoder: unknown decoder {decoder!r} (choose from {', '.join(DECODERS)})")
    try:
        if decoder == "decord":
            import decord  # noqa: F401  (imported to check it loads)
        elif decoder == "pyav":
            import av  # noqa: F401  (imported to check it loads)
        else:
            from torchcodec._core import ops

            # `import torchcodec` swallows a missing FFmpeg; VideoDecoder would raise it later, in a
            # worker. load_core_libraries (torchcodec >= 0.8) raises it now.
            getattr(ops, "load_core_libraries", lambda: None)()
    except (ImportError, OSError, RuntimeError) as exn:
        hint = (" (torchcodec needs the system FFmpeg libraries: run `bash launch/setup_env.sh` as root,"
                " or apt-get install libavcodec-dev libavformat-dev libavutil-dev libswscale-dev)"
                if decoder == "torchcodec" else "")
        raise ValueError(f"data.decoder={decoder!r} cannot load: {type(exn).__name__}: {exn}{hint}") from None
