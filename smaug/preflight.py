"""Every path a training run will need, checked before the first step.

A run that cannot read its eval corpus used to train until its first evaluation (hours into a cluster job) and
then die on every rank; this lists each such problem at the start instead, a line each, so that one fix-and-rerun
cycle clears them all. `smaug.config.validate(cfg, check_paths=True)` adds these lines to the config's own
problems; `Trainer.setup_run` calls `check_paths` for runs built without it.

What is checked: the training and eval shard specs resolve (corpus YAML, manifest, every local shard file) and
each shard file is readable (unless the config class reads no shards: `RunConfig.SHARDS_READ`); the files its
class names in `data_paths()` (VideoQA's JSONs and video folder) exist; the tokenizer is a local folder or, offline, a hub name in the local cache;
`model.init_from` and an explicit `ckpt.resume` exist; the output directory is (or can be created as) a writable
folder. The pretrained towers (`model.vision_init` / `model.text_init`) are resolved by the config's own model
check (`smaug.models.pretrained.init_config`).
"""

from __future__ import annotations

import os
from pathlib import Path

from smaug.schema import raise_all

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def _shard_problems(key: str, spec, root: str) -> list[str]:
    """Each corpus of a spec or mixture on its own, so that every missing one is named."""
    from smaug.data.specs import _is_local, resolve_mixture

    problems = []
    for item in spec if isinstance(spec, list) else [spec]:
        name = str(item.get("spec")) if isinstance(item, dict) else str(item)
        plain = not name.startswith("corpus:") and not any(c in name for c in "{:")
        if plain and not (Path(name).exists() or (Path(root) / name).exists()):
            problems.append(f"{key}: {name}: no such shard folder, manifest or tar (here or under {root})")
            continue
        try:
            sets = resolve_mixture([item], root)
        except (OSError, ValueError) as e:
            problems.append(f"{key}: {e}")
            continue
        unreadable = [u for s in sets for u in s.urls if _is_local(u) and not os.access(u, os.R_OK)]
        if unreadable:
            problems.append(f"{key}: {len(unreadable)} shard(s) not readable, e.g. {unreadable[0]}")
    return problems


def _is_hub_name(name: str) -> bool:
    """`org/name` or `name` (a hub repo id); a path with more parts, absolute or relative to '.', is local."""
    return not (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1)


def _tokenizer_problem(name: str, key: str) -> str | None:
    path = Path(name).expanduser()
    if path.is_dir():
        if any((path / f).is_file() for f in TOKENIZER_FILES):
            return None
        return f"{key}: {path} has none of {', '.join(TOKENIZER_FILES)}"
    if path.exists():
        return f"{key}: {path} is a file; pass the tokenizer's folder"
    if not _is_hub_name(name):
        return f"{key}: {path} does not exist (a tiny or from-scratch run builds one with tools/build_tokenizer.py)"
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
        return None  # online: transformers downloads it
    from huggingface_hub import constants, try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(name, f), str) for f in TOKENIZER_FILES):
        return None
    return (
        f"{key}: {name!r} is not a local folder and HF_HUB_OFFLINE=1, but the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) has no tokenizer for it (download it once: `hf download {name}`)"
    )


def _output_problem(out: str) -> str | None:
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        return f"run.output_dir: {path} exists and is not a folder"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"run.output_dir: {path} cannot be created: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"run.output_dir: {existing} is not writable (checkpoints and logs go to {path})"
    return None


def path_problems(cfg) -> list[str]:
    """One line per missing or unusable path of run config `cfg` (a smaug.config.RunConfig)."""
    problems: list[str] = []
    d, m = cfg.data, cfg.model
    if d.train_shards and cfg.SHARDS_READ:
        problems += _shard_problems("data.train_shards", d.train_shards, d.shards_root)
    if d.eval_shards and cfg.SHARDS_READ:
        problems += _shard_problems("data.eval_shards", d.eval_shards, d.shards_root)
    for key, path in cfg.data_paths().items():
        if not Path(path).expanduser().exists():
            problems.append(f"{key}: {path} does not exist")
    if m.tokenizer or m.text_init:
        key = "model.tokenizer" if m.tokenizer else "model.text_init (its tokenizer)"
        problems.append(_tokenizer_problem(m.tokenizer or m.text_init, key))
    if m.init_from and not Path(m.init_from).expanduser().exists():
        problems.append(f"model.init_from: {m.init_from} does not exist")
    if cfg.ckpt.resume not in ("auto", "none") and not Path(cfg.ckpt.resume).expanduser().exists():
        problems.append(f"ckpt.resume: {cfg.ckpt.resume} does not exist")
    if cfg.run.output_dir:
        problems.append(_output_problem(cfg.run.output_dir))
    return [p for p in problems if p]


def check_paths(cfg) -> None:
    """Raise one ConfigError listing every path problem of `cfg` (nothing when all are fine)."""
    raise_all(path_problems(cfg))
