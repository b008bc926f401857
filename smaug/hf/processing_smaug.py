"""Hugging Face processor of an exported SMAUG model: videos and texts in, model inputs out.

Copied as it is into every exported folder (`tools/export_hf.py`), with `frames.py` (a byte copy of
`smaug/data/frames.py`), so that with plain `transformers`:

    processor = AutoProcessor.from_pretrained(PATH, trust_remote_code=True)
    inputs = processor(text=["a red circle moves left"], videos=["clip.mp4"], return_tensors="pt")
    out = model(**inputs)             # input_ids, attention_mask, token_type_ids, pixel_values

Videos are prepared exactly as evaluation prepares them (`smaug.data.decode.decode_sample` without an
rng, as `tools/eval_retrieval.py --json` runs it): decoded with decord from the file's bytes, scaled by
the decoder so the short side is `short_side` (never up), the clip cut into `num_frames` equal segments
and the centre frame of each taken, the largest centred square cropped and resized (bilinear,
antialiased, uint8) to `image_size`. The functions that do it are the library's own (`frames.py`).

A video is a path (str / Path), the encoded bytes, or its decoded frames: a uint8 array or tensor
`[N, H, W, 3]` RGB holding every frame of the clip (the same segment rule picks `num_frames` of them; no
decoder scaling then, so frames larger than `short_side` are only resized by the crop step).
`pixel_values` are uint8 `[B, T, 3, S, S]`, normalised inside the model with `config.preprocessing`
mean/std; `do_normalize=True` returns them normalised here instead (float32, the same formula).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, PretrainedConfig

try:  # an exported folder: frames.py, a byte copy of smaug/data/frames.py, lies next to this file
    from .frames import center_crop_box, crop_resize, scaled_size, segment_indices
except ModuleNotFoundError as e:  # inside the smaug package
    if e.name != f"{__package__}.frames":
        raise
    from smaug.data.frames import center_crop_box, crop_resize, scaled_size, segment_indices

PROCESSOR_CONFIG = "processor_config.json"
AUTO_MAP = {"AutoProcessor": "processing_smaug.SmaugProcessor"}
FIELDS = ("num_frames", "image_size", "short_side", "mean", "std", "max_text_len")
VideoInput = Union[str, Path, bytes, np.ndarray, torch.Tensor]


def _decord():
    try:
        import decord
    except ImportError as e:
        raise ImportError(
            "SmaugProcessor: decoding a video file or bytes needs decord (`pip install decord2`); "
            "or pass decoded uint8 frames [N, H, W, 3]"
        ) from e
    decord.logging.set_level(decord.logging.QUIET)
    return decord


def read_frames(data: bytes, num_frames: int, short_side: int) -> np.ndarray:
    """`num_frames` segment-centre frames [T, H, W, 3] uint8 RGB of an encoded video, decoded with the short
    side scaled to `short_side` (0 = full size), as evaluation decodes them."""
    decord = _decord()
    vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
    h, w = vr[0].shape[:2]
    if short_side > 0 and min(w, h) > short_side:
        sw, sh = scaled_size(w, h, short_side)
        vr = decord.VideoReader(io.BytesIO(data), width=sw, height=sh, num_threads=1)
    return vr.get_batch(segment_indices(len(vr), num_frames)).asnumpy()


class SmaugProcessor:
    """The exported model's tokenizer plus its evaluation video preprocessing (see the module docstring)."""

    model_input_names = ["input_ids", "attention_mask", "token_type_ids", "pixel_values"]

    def __init__(
        self,
        tokenizer,
        num_frames: int = 4,
        image_size: int = 224,
        short_side: Optional[int] = None,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        max_text_len: int = 32,
    ):
        self.tokenizer = tokenizer
        self.num_frames, self.image_size = int(num_frames), int(image_size)
        self.short_side = self.image_size if short_side is None else int(short_side)  # 0: decode at full size
        self.mean, self.std = [float(x) for x in mean], [float(x) for x in std]
        self.max_text_len = int(max_text_len)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Called by `AutoProcessor.from_pretrained` on remote-code classes (as transformers' mixins have it)."""
        cls._auto_class = auto_class

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> SmaugProcessor:
        """From an exported folder: `processor_config.json` (else `config.json`'s preprocessing) + its tokenizer.
        Keyword arguments named as the constructor's override the saved values."""
        path = Path(path)
        saved: dict = {}
        if (path / PROCESSOR_CONFIG).is_file():
            saved = json.loads((path / PROCESSOR_CONFIG).read_text(encoding="utf-8"))
        elif (path / "config.json").is_file():
            saved = json.loads((path / "config.json").read_text(encoding="utf-8")).get("preprocessing", {})
        values = {k: saved[k] for k in FIELDS if saved.get(k) is not None}
        values.update({k: kwargs[k] for k in FIELDS if k in kwargs})
        # transformers' AutoTokenizer reads config.json first, and this folder's names custom code, which it would
        # ask to run (in a terminal) or warn about; the tokenizer is all in tokenizer_config.json, so a blank
        # model config stands in
        return cls(AutoTokenizer.from_pretrained(str(path), config=PretrainedConfig()), **values)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS}

    def save_pretrained(self, out) -> None:
        """Tokenizer files, `processor_config.json` (with `auto_map`) and the processor code (this file and
        frames.py), so `AutoProcessor.from_pretrained(out, trust_remote_code=True)` loads it back."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(out))
        cfg = {"processor_class": type(self).__name__, "auto_map": dict(AUTO_MAP), **self.to_dict()}
        (out / PROCESSOR_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        for src in (Path(__file__), Path(sys.modules[segment_indices.__module__].__file__)):
            dst = out / ("frames.py" if src.name == "frames.py" else "processing_smaug.py")
            if src.resolve() != dst.resolve():
                shutil.copyfile(src, dst)

    # ------------------------------------------------------------------ videos
    def clip(self, video: VideoInput) -> torch.Tensor:
        """One video (path, bytes or uint8 frames [N, H, W, 3]) -> uint8 [T, 3, S, S]."""
        if isinstance(video, (str, Path)):
            video = Path(video).read_bytes()
        if isinstance(video, (bytes, bytearray, memoryview)):
            frames = read_frames(bytes(video), self.num_frames, self.short_side)
        else:
            frames = video.numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"SmaugProcessor: decoded frames must be uint8 [N, H, W, 3] RGB, got {frames.dtype} "
                    f"{tuple(frames.shape)}"
                )
            frames = frames[segment_indices(frames.shape[0], self.num_frames)]
        return crop_resize(frames, center_crop_box(*frames.shape[1:3]), self.image_size)

    def videos(self, videos, do_normalize: bool = False) -> torch.Tensor:
        """A video or a list of videos -> pixel_values [B, T, 3, S, S] (uint8, or normalised float32)."""
        single = isinstance(videos, (str, Path, bytes, bytearray, memoryview)) or (
            isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 4
        )
        clips = [self.clip(v) for v in ([videos] if single else videos)]
        pixels = torch.stack([c.contiguous() for c in clips])
        if do_normalize:
            mean = torch.tensor(self.mean).view(1, 1, 3, 1, 1)
            std = torch.tensor(self.std).view(1, 1, 3, 1, 1)
            pixels = (pixels.float() / 255.0 - mean) / std
        return pixels

    # ------------------------------------------------------------------ both
    def __call__(
        self, text=None, videos=None, return_tensors: Optional[str] = "pt", do_normalize: bool = False, **text_kwargs
    ) -> BatchFeature:
        """Texts -> input_ids, attention_mask, token_type_ids (padded to the longest, truncated to
        `max_text_len` as in evaluation); videos -> pixel_values. Either or both."""
        if text is None and videos is None:
            raise ValueError("SmaugProcessor: give `text`, `videos` or both")
        data: dict = {}
        if text is not None:
            # evaluation's tokenisation by default; the transformers processor keywords (padding, truncation,
            # max_length, ...) override it
            kw = {"padding": "longest", "truncation": True, "max_length": self.max_text_len, **text_kwargs}
            data.update(self.tokenizer([text] if isinstance(text, str) else list(text), **kw))
        if videos is not None:
            data["pixel_values"] = self.videos(videos, do_normalize)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"
