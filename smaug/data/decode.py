"""Decoding and augmentation of one shard sample into a uint8 clip `[T, 3, S, S]`.

- Videos decode in memory with the backend of `data.decoder` (decord, pyav or torchcodec:
  `decoders.py`), at reduced size (the decoder scales so the short side is
  `decode_short_side`; sizes come from the sample's `.json`, written by `make_shards`).
- Frame choice is by segments: the clip's frames are cut into T equal segments; training takes
  a random frame in each segment, evaluation the segment centres. Clips shorter than T frames
  repeat frames.
- `--frames K` shards (`{key}.f000.jpg` ...) use the same rule over their K stored frames;
  JPEGs decode at reduced size through PIL's draft mode.
- Images (`{key}.jpg`) become 1-frame clips whose frame is repeated T times, so every batch has
  one shape; the caller flags them with `is_image=True`.
- Training crops with random-resized-crop (one box for all frames of a clip), evaluation resizes
  the short side and centre-crops. There is deliberately no horizontal flip: captions speak of
  left and right. Pixels stay uint8 RGB: normalisation (mean/std) happens in the model, on device.

All randomness comes from the `numpy.random.Generator` passed in, so a sample's augmentation is a
pure function of its seed (this is what makes loader resume exact).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from .decoders import import_decord, open_reader
from .frames import center_crop_box, crop_resize, scaled_size, segment_indices

if TYPE_CHECKING:
    import torch

VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "ogv", "flv", "3gp", "wmv")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
FRAME_MEMBER = re.compile(r"^f(\d+)\.(jpg|jpeg)$")


def decode_errors() -> tuple[type[BaseException], ...]:
    """Exceptions the decoders (decord, PyAV, torchcodec: RuntimeError/ValueError) and PIL raise on bad bytes."""
    decord = import_decord()
    import av
    from PIL import UnidentifiedImageError

    return (
        RuntimeError,
        decord.DECORDError,
        decord.DECORDLimitReachedError,
        AssertionError,
        ValueError,
        IndexError,
        OSError,
        UnidentifiedImageError,
        SyntaxError,
        av.error.FFmpegError,
    )


def printable(text: str, limit: int = 200) -> str:
    """ASCII-safe text for logs and JSON, on one line: escapes undecodable bytes and control characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)[:limit]


class CorruptSample(Exception):
    """A sample that cannot be used; `reason` is the counter it is skipped under, `detail` one printable line."""

    def __init__(self, reason: str, detail: str = ""):
        detail = printable(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_video(
    data: bytes,
    t: int,
    short_side: int,
    rng: Optional[np.random.Generator],
    size_hint: Optional[tuple[int, int]] = None,
    decoder: str = "decord",
) -> np.ndarray:
    """T frames `[T, H, W, 3]` uint8 of an encoded video, decoded at reduced size when possible."""
    w, h = -1, -1
    if size_hint and short_side > 0 and min(size_hint) > short_side:
        w, h = scaled_size(size_hint[0], size_hint[1], short_side)
    reader = open_reader(data, decoder, w, h)
    idx = segment_indices(reader.num_frames, t, rng)
    frames = reader.get(idx)
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3:
        raise ValueError(f"decoder returned shape {frames.shape}")
    return frames


def decode_jpeg(data: bytes, short_side: int) -> np.ndarray:
    """One image `[H, W, 3]` uint8; JPEGs are decoded at reduced scale via PIL draft mode."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if short_side > 0 and img.format == "JPEG":
        w, h = img.size
        if min(w, h) > short_side:
            img.draft("RGB", (max(1, w * short_side // min(w, h)), max(1, h * short_side // min(w, h))))
    if img.mode != "RGB":
        img = img.convert("RGB")
    img.load()
    return np.asarray(img)  # read-only; callers stack or copy it before torch.from_numpy


def random_resized_crop_box(
    h: int, w: int, scale: tuple, ratio: tuple, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(top, left, height, width) like torchvision's RandomResizedCrop (10 tries, then centre)."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass
class Decoded:
    """A decoded sample, ready for collation."""

    key: str
    video: torch.Tensor  # uint8 [T, 3, S, S]
    caption: str
    captions: list[str] = field(default_factory=list)
    is_image: bool = False


@dataclass
class Cropped:
    """A sample decoded and cropped but not yet resized: numpy only, so an isolated decode process
    (`isolation.py`) makes it without importing torch and the loader worker resizes it."""

    key: str
    frames: np.ndarray  # uint8 [T, h, w, 3], the crop box's pixels (T = 1 for an image)
    caption: str
    captions: list[str]
    is_image: bool


def _caption(sample: dict, meta: dict) -> tuple[str, list[str]]:
    raw = sample.get("txt")
    if raw is None:
        raise CorruptSample("missing_caption", "no .txt member")
    try:
        cap = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exn:
        raise CorruptSample("bad_caption", f"caption is not UTF-8: {exn}") from None
    if not cap:
        raise CorruptSample("bad_caption", "empty caption")
    caps = meta.get("captions") if isinstance(meta.get("captions"), list) else None
    return cap, [str(c) for c in caps] if caps else [cap]


def decode_sample(
    sample: dict,
    num_frames: int,
    image_size: int,
    short_side: int,
    rng: Optional[np.random.Generator],
    crop_scale: tuple = (0.5, 1.0),
    crop_ratio: tuple = (3 / 4, 4 / 3),
    decoder: str = "decord",
) -> Decoded:
    """Decode one raw WebDataset sample (dict of member bytes). `rng=None` means eval mode;
    `decoder`: the video backend (`decoders.DECODERS`).

    Raises `CorruptSample` with a reason when the sample cannot be used.
    """
    cropped = decode_crop(sample, num_frames, short_side, rng, crop_scale, crop_ratio, decoder)
    return resize_crop(cropped, num_frames, image_size)


def resize_crop(c: Cropped, num_frames: int, image_size: int) -> Decoded:
    """The cropped frames resized to `[T, 3, image_size, image_size]` uint8 (an image repeated T times)."""
    video = crop_resize(c.frames, (0, 0, *c.frames.shape[1:3]), image_size)
    if c.is_image:  # one frame, repeated T times (a view; collation copies it)
        video = video.expand(num_frames, -1, -1, -1)
    return Decoded(key=c.key, video=video, caption=c.caption, captions=c.captions, is_image=c.is_image)


def decode_crop(
    sample: dict,
    num_frames: int,
    short_side: int,
    rng: Optional[np.random.Generator],
    crop_scale: tuple,
    crop_ratio: tuple,
    decoder: str,
) -> Cropped:
    """decode_sample up to the resize: member bytes -> frames -> the crop box's pixels; needs no torch."""
    key = str(sample.get("__key__"))
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exn:
            raise CorruptSample("bad_json", str(exn)) from None
        if not isinstance(meta, dict):
            raise CorruptSample("bad_json", "metadata is not an object")
    caption, captions = _caption(sample, meta)
    errors = decode_errors()
    frame_members = sorted((int(m.group(1)), k) for k in sample if (m := FRAME_MEMBER.match(k)))
    video_ext = next((e for e in VIDEO_EXTS if e in sample), None)
    image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
    is_image = False
    try:
        if video_ext is not None:
            hint = (int(meta["width"]), int(meta["height"])) if "width" in meta and "height" in meta else None
            frames = decode_video(sample[video_ext], num_frames, short_side, rng, hint, decoder)
        elif frame_members:
            idx = segment_indices(len(frame_members), num_frames, rng)
            decoded = {i: decode_jpeg(sample[frame_members[i][1]], short_side) for i in sorted(set(idx))}
            frames = np.stack([decoded[i] for i in idx])
        elif image_ext is not None:
            img = decode_jpeg(sample[image_ext], short_side)
            frames, is_image = img[None].copy(), True
        else:
            raise CorruptSample(
                "missing_media", f"no video/image member among {sorted(k for k in sample if not k.startswith('__'))}"
            )
    except CorruptSample:
        raise
    except errors as exn:
        raise CorruptSample("decode_error", f"{type(exn).__name__}: {str(exn)[:200]}") from None
    if frames.ndim != 4 or min(frames.shape[1:3]) < 1:
        raise CorruptSample("decode_error", f"bad frame shape {frames.shape}")
    h, w = frames.shape[1:3]
    top, left, ch, cw = (
        random_resized_crop_box(h, w, crop_scale, crop_ratio, rng) if rng is not None else center_crop_box(h, w)
    )
    crop = frames[:, top : top + ch, left : left + cw]
    return Cropped(key=key, frames=crop, caption=caption, captions=captions, is_image=is_image)
