"""Ingest-side media work for `tools/make_shards.py`: read a row's file safely, validate it by
decoding, and optionally re-encode it (short side / fps), cut it into JPEG frames, or normalise
an image to JPEG.

Validation decodes the first, middle and last frame with decord (the loader's decoder), so a
truncated file, a file that is not a video, or one whose frames do not decode is rejected here
rather than in training. Every failure raises `BadSample(reason, detail)` with a reason from
`smaug.data.sources.REASONS`.

All outputs are deterministic functions of the input bytes and options (x264 runs single
threaded, JPEG encoding is PIL's), which `make_shards`' byte-identical resume relies on.
"""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction

import numpy as np

from .decode import decode_errors, scaled_size
from .decoders import open_video

JPEG_QUALITY = 90


class BadSample(Exception):
    """A row that cannot be turned into a sample; `reason` names the skip counter."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_media(root: str, relpath: str) -> bytes:
    """Bytes of `root/relpath`; rejects symlinks leaving the root, non-files and empty files."""
    path = os.path.join(root, relpath)
    if not os.path.lexists(path):
        raise BadSample("missing_file", f"{relpath} does not exist")
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise BadSample("unsafe_path", f"{relpath} resolves to {real}, outside {real_root}")
    if not os.path.isfile(real):
        raise BadSample("missing_file", f"{relpath} is not a regular file")
    try:
        with open(real, "rb") as f:
            data = f.read()
    except OSError as exn:
        raise BadSample("missing_file", f"{relpath}: {exn.strerror}") from None
    if not data:
        raise BadSample("empty_file", f"{relpath} has zero bytes")
    return data


def probe_video(data: bytes) -> dict:
    """fps, frame count, size and duration of a video; decodes first/middle/last frame."""
    try:
        vr = open_video(data)
        n = len(vr)
        fps = float(vr.get_avg_fps())
        frames = vr.get_batch(sorted({0, n // 2, n - 1})).asnumpy()
    except decode_errors() as exn:
        raise BadSample(
            "undecodable", f"{type(exn).__name__}: {str(exn).splitlines()[0][:160] if str(exn) else ''}"
        ) from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or n < 1:
        raise BadSample("undecodable", f"decoder returned shape {frames.shape}")
    if not math.isfinite(fps) or fps <= 0:
        raise BadSample("undecodable", f"no frame rate ({fps})")
    h, w = int(frames.shape[1]), int(frames.shape[2])
    return {"fps": round(fps, 4), "num_frames": int(n), "width": w, "height": h, "duration": round(n / fps, 4)}


# x264 is only deterministic without its lookahead (mbtree/B-frame decisions read memory that
# varies run to run: measured ~5% of clips differed with the preset defaults, 0 of 600 without).
X264_DETERMINISTIC = "rc-lookahead=0:mbtree=0:bframes=0"


def encode_h264(frames, fps: float, dest, crf: int = 23, gop: int = 0, preset: str = "veryfast") -> None:
    """Encode an iterable of `[H, W, 3]` uint8 RGB frames as H.264 mp4 into `dest` (path or
    binary file object), single-threaded and byte-deterministic."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(dest, "w", format="mp4") as out:
        st = None
        for i, arr in enumerate(frames):
            if st is None:
                st = out.add_stream("libx264", rate=rate)
                st.height, st.width = int(arr.shape[0]), int(arr.shape[1])
                st.pix_fmt = "yuv420p"
                st.options = {
                    "preset": preset,
                    "crf": str(crf),
                    "threads": "1",
                    "x264-params": X264_DETERMINISTIC,
                    **({"g": str(gop)} if gop else {}),
                }
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for pkt in st.encode(frame):
                out.mux(pkt)
        if st is None:
            raise ValueError("no frames to encode")
        for pkt in st.encode():
            out.mux(pkt)


def _batched(vr, indices: list[int], chunk: int = 32):
    for i in range(0, len(indices), chunk):
        yield from vr.get_batch(indices[i : i + chunk]).asnumpy()


def reencode_video(data: bytes, info: dict, short_side: int, fps: float) -> tuple[bytes, dict]:
    """H.264 mp4 with the short side scaled to `short_side` (0: unchanged) at `fps` (0: unchanged,
    never raised). Frames are picked at the centres of the output frame intervals."""
    import av

    n, src_fps = info["num_frames"], info["fps"]
    w, h = scaled_size(info["width"], info["height"], short_side)
    out_fps = src_fps if fps <= 0 or fps >= src_fps else float(fps)
    if out_fps < src_fps:
        m = max(1, int(round(n * out_fps / src_fps)))
        indices = [min(n - 1, int((j + 0.5) * src_fps / out_fps)) for j in range(m)]
    else:
        indices = list(range(n))
    buf = io.BytesIO()
    try:
        vr = open_video(data, w, h)
        encode_h264(_batched(vr, indices), out_fps, buf, crf=23, gop=max(1, int(round(out_fps))))
    except (av.error.FFmpegError, *decode_errors()) as exn:
        raise BadSample("undecodable", f"re-encode: {type(exn).__name__}: {str(exn)[:160]}") from None
    new = buf.getvalue()
    meta = probe_video(new)
    meta.update(orig_fps=src_fps, orig_width=info["width"], orig_height=info["height"], orig_num_frames=n)
    return new, meta


def _jpeg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def extract_frames(data: bytes, info: dict, k: int, short_side: int) -> tuple[list[bytes], dict]:
    """K JPEG frames at the centres of K equal segments (short side scaled to `short_side`)."""
    n = info["num_frames"]
    w, h = scaled_size(info["width"], info["height"], short_side)
    indices = [min(n - 1, int((i + 0.5) * n / k)) for i in range(k)]
    try:
        vr = open_video(data, w, h)
        jpegs = [_jpeg(np.ascontiguousarray(a)) for a in _batched(vr, indices)]
    except decode_errors() as exn:
        raise BadSample("undecodable", f"frames: {type(exn).__name__}: {str(exn)[:160]}") from None
    meta = dict(
        info,
        width=w,
        height=h,
        num_frames=k,
        frame_indices=indices,
        orig_width=info["width"],
        orig_height=info["height"],
        orig_num_frames=n,
    )
    return jpegs, meta


def prepare_image(data: bytes, short_side: int) -> tuple[bytes, dict]:
    """A JPEG of the image (the original bytes when already a plain RGB/grey JPEG needing no
    resize or rotation), plus its size."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        fmt, mode, size = img.format, img.mode, img.size
        rotated = img.getexif().get(0x0112, 1) not in (1, None)
        w, h = scaled_size(*size, short_side) if short_side > 0 else size
        if fmt == "JPEG" and mode in ("RGB", "L") and not rotated and (w, h) == size:
            out = data
        else:
            img = ImageOps.exif_transpose(img).convert("RGB")
            w, h = scaled_size(*img.size, short_side) if short_side > 0 else img.size
            if (w, h) != img.size:
                img = img.resize((w, h), Image.BICUBIC)
            out = _jpeg(np.asarray(img))
    except (Image.DecompressionBombError, *decode_errors()) as exn:
        raise BadSample("undecodable", f"image: {type(exn).__name__}: {str(exn)[:160]}") from None
    return out, {"width": int(w), "height": int(h), "num_frames": 1, "fps": None, "duration": 0.0, "source_format": fmt}


def video_member_ext(relpath: str) -> str:
    """Tar member extension for a stored (not re-encoded) video: its own if known, else mp4."""
    from .decode import VIDEO_EXTS

    ext = os.path.splitext(relpath)[1].lstrip(".").lower()
    return ext if ext in VIDEO_EXTS else "mp4"


def sample_members(
    row, root: str, frames: int = 0, short_side: int = 0, fps: float = 0.0
) -> tuple[dict[str, bytes], dict]:
    """Tar members (extension -> bytes, without json/txt) and metadata for one good row."""
    data = read_media(root, row.relpath)
    if row.kind == "image":
        jpg, meta = prepare_image(data, short_side)
        return {"jpg": jpg}, dict(meta, kind="image")
    info = probe_video(data)
    if frames > 0:
        jpegs, meta = extract_frames(data, info, frames, short_side)
        return {f"f{i:03d}.jpg": b for i, b in enumerate(jpegs)}, dict(meta, kind="frames")
    if short_side > 0 or fps > 0:
        new, meta = reencode_video(data, info, short_side, fps)
        return {"mp4": new}, dict(meta, kind="video", reencoded=True)
    return {video_member_ext(row.relpath): data}, dict(info, kind="video")
