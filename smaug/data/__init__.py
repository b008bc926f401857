"""smaug.data: shard specs, the streaming clip loader, decoding/augmentation and the tokenizer.

Public API (see ARCHITECTURE.md, "Data contract")::

    from smaug.data import DataConfig, build_train_loader, build_eval_loader
    from smaug.data import load_tokenizer, build_wordpiece_tokenizer

Names are imported lazily so that the ingest tools (`tools/make_shards.py`), which only need
`smaug.data.sources` / `transcode` / `shardwriter`, do not pay for importing torch.

Submodules, one job each: `config` (DataConfig), `specs` (shard specs, manifests, corpus YAML),
`sources` (raw listings -> rows), `transcode` (ingest-side media), `shardwriter` (resumable
shard writing), `decode` (loader-side decoding and augmentation), `collate` (batching and
tokenisation), `stream` (train/eval pipelines, resumable state, error budget), `tokenizer`,
`json_clips` (eval clips straight from an MSRVTT-style JSON, decoded as shards would be).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "config",
    "default_shards_root": "config",
    "build_train_loader": "stream",
    "build_eval_loader": "stream",
    "TrainLoader": "stream",
    "EvalLoader": "stream",
    "DataErrorBudgetExceeded": "stream",
    "load_tokenizer": "tokenizer",
    "build_wordpiece_tokenizer": "tokenizer",
    "tokenizer_fields": "tokenizer",
    "resolve_spec": "specs",
    "resolve_mixture": "specs",
    "read_manifest": "specs",
    "collate": "collate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'smaug.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
