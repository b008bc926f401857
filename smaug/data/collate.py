"""Batch assembly: decoded samples -> the batch dict of ARCHITECTURE.md, tokenising captions.

Tokenisation happens here, inside the dataloader worker, with a Hugging Face fast tokenizer:
`[CLS] caption [SEP]`, padded to the longest caption of the batch, truncated to `max_text_len`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from .decode import Decoded


def sample_id(key: str) -> int:
    """A signed 64-bit id of a sample key (blake2b): rows of one clip share it in a batch, across ranks."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def tokenize(tokenizer, captions: Sequence[str], max_text_len: int) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` (both int64 `[B, L]`)."""
    enc = tokenizer(
        list(captions),
        padding="longest",
        truncation=True,
        max_length=max_text_len,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}


def collate(samples: Sequence[Decoded], tokenizer, max_text_len: int, with_captions: bool = False) -> dict[str, Any]:
    """Stack clips (`video` uint8 `[B, T, 3, H, W]`, not normalised) and tokenise captions.

    `with_captions` adds `captions` (list of lists: every reference caption, for retrieval eval).
    """
    if not samples:
        raise ValueError("empty batch")
    video = torch.empty((len(samples), *samples[0].video.shape), dtype=samples[0].video.dtype)
    for i, s in enumerate(samples):  # one copy per clip, whatever its layout (HWC view, expanded image)
        if s.video.shape != video.shape[1:]:  # copy_ would broadcast silently
            raise ValueError(f"clip {s.key} has shape {tuple(s.video.shape)}, the batch {tuple(video.shape[1:])}")
        video[i].copy_(s.video)
    batch: dict[str, Any] = {
        "video": video,
        "is_image": torch.tensor([s.is_image for s in samples], dtype=torch.bool),
        "sample_id": torch.tensor([sample_id(s.key) for s in samples], dtype=torch.long),
        "key": [s.key for s in samples],
        "caption": [s.caption for s in samples],
    }
    batch.update(tokenize(tokenizer, batch["caption"], max_text_len))
    if with_captions:
        batch["captions"] = [list(s.captions) for s in samples]
    return batch
