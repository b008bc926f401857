"""`DataConfig`: every knob of the streaming loader, built from a run config's `data:` section.

The trainer does `DataConfig(**yaml["data"])`; this is a plain dataclass, so an unknown key
raises `TypeError` naturally (a typo in a config never passes silently).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

# The default caption length in tokens ([CLS] and [SEP] included): DataConfig.max_text_len and the
# default of every evaluation entry point that tokenizes captions without a DataConfig.
MAX_TEXT_LEN = 32

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_shards_root() -> str:
    """`$SMAUG_SHARDS` when set, else `<repo>/shards` in a checkout (where the corpus YAML files live), else
    `./shards` (smaug installed with `pip install .`: no repository around it)."""
    if os.environ.get("SMAUG_SHARDS"):
        return os.environ["SMAUG_SHARDS"]
    return str(REPO_ROOT / "shards") if (REPO_ROOT / "pyproject.toml").is_file() else os.path.abspath("shards")


# A shard spec: a brace pattern, a directory, a manifest.json, `corpus:NAME`, or for mixing a
# list of {"spec": ..., "weight": ...} dicts (weight defaults to the corpus YAML's weight, else 1).
ShardSpec = Union[str, list]


@dataclass
class DataConfig:
    """Loader configuration (one per run; the same on every rank)."""

    # Training corpora: a spec string or a list of {"spec": ..., "weight": ...} to mix corpora
    # (e.g. [{"spec": "corpus:webvid2m", "weight": 0.7}, {"spec": "corpus:cc3m", "weight": 0.3}]).
    train_shards: Optional[ShardSpec] = None
    # Evaluation shards (one spec, read once in order, no mixing); None disables eval.
    eval_shards: Optional[ShardSpec] = None
    # Where relative specs and `corpus:NAME` YAML files are resolved.
    shards_root: str = field(default_factory=default_shards_root)
    # T: frames per clip. Images become 1-frame clips repeated T times (`is_image=True`).
    num_frames: int = 4
    # Output frame side H=W in pixels (random-resized-crop in train, centre crop in eval).
    image_size: int = 224
    # Short side videos/JPEGs are decoded at (the decoder scales, cheaper than full size);
    # None -> image_size; 0 -> decode at full resolution.
    decode_short_side: Optional[int] = None
    # Video decoder backend: "decord" (decord2), "pyav" (PyAV's bundled FFmpeg) or "torchcodec"
    # (PyTorch's decoder, system FFmpeg libraries). Same frames within codec tolerance (smaug/data/decoders.py).
    decoder: str = "decord"
    # Decode each sample in a child process of the worker (smaug/data/isolation.py): a decoder
    # crash or hang costs that sample (decoder_crash / decode_timeout, logged with its key), not the run.
    isolate_decode: bool = False
    # Seconds one sample may take to decode when isolate_decode is on.
    decode_timeout: float = 60.0
    # Per-GPU micro-batch size; each dataloader worker assembles whole batches.
    batch_size: int = 8
    # Dataloader worker processes per rank (0 = decode in the training process).
    num_workers: int = 2
    # Eval batch size per rank; None -> batch_size.
    eval_batch_size: Optional[int] = None
    # Raw samples held by each worker's shuffle buffer (train only); 0/1 disables shuffling.
    # Memory: buffer x mean sample size x workers (raw WebVid mp4 ~1-2 MB each).
    shuffle_buffer: int = 200
    # Batches per "round": at each round start a worker re-seeds its shard draws and shuffle
    # buffer, so resuming replays at most one round of tar reading (no decoding).
    round_batches: int = 100
    # Captions are truncated to this many tokens ([CLS] and [SEP] included).
    max_text_len: int = MAX_TEXT_LEN
    # Area fraction range of random-resized-crop (train).
    crop_scale: tuple = (0.5, 1.0)
    # Aspect ratio range of random-resized-crop (train).
    crop_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    # A worker raises (naming the shard) when more than this fraction of the last
    # `error_window` samples it tried to decode were corrupt.
    error_budget: float = 0.1
    # Window (samples per worker) for the error budget; the check starts once it is full.
    error_window: int = 200
    # DataLoader prefetch_factor (batches per worker kept in flight).
    prefetch_factor: int = 2
    # Steps per epoch: 0 -> ceil(train samples / (batch_size * world_size)) from the manifests.
    steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(x) for x in self.crop_scale)
        self.crop_ratio = tuple(float(x) for x in self.crop_ratio)
        if self.num_frames < 1 or self.image_size < 8 or self.batch_size < 1:
            raise ValueError(f"bad DataConfig sizes: {self}")
        if self.num_workers < 0 or self.round_batches < 1:
            raise ValueError("num_workers must be >= 0 and round_batches >= 1")
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("error_budget is a fraction in [0, 1]")
        if self.decode_timeout <= 0:
            raise ValueError("decode_timeout must be > 0 seconds")
        from .decoders import check_decoder

        check_decoder(self.decoder)

    @property
    def short_side(self) -> int:
        """Decode short side actually used (0 = full size)."""
        return self.image_size if self.decode_short_side is None else int(self.decode_short_side)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (for logs and loader state fingerprints)."""
        from dataclasses import asdict

        d = asdict(self)
        d["crop_scale"], d["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return d
