"""Derive the DeepSpeed config from the run config (VideoMAE's lesson: one source of truth).

The JSON in `ds_configs/` holds what only DeepSpeed knows about (ZeRO stage, buckets,
optimizer implementation). Batch sizes, LR, betas, eps, weight decay, precision and
gradient clipping come from the run config: a field left `"auto"` (or absent) is filled in,
an explicit field that disagrees is an error naming both keys. Nothing is ignored silently.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from smaug.config import ConfigError, RunConfig

DS_DIR = Path(__file__).resolve().parents[1] / "ds_configs"  # package data (ds_configs/ at the top is a link)

# ds key path -> (run-config key, getter)
_DERIVED = {
    ("train_micro_batch_size_per_gpu",): ("data.batch_size", lambda c, w: c.data.batch_size),
    ("gradient_accumulation_steps",): ("train.grad_accum", lambda c, w: c.train.grad_accum),
    ("train_batch_size",): (
        "data.batch_size*train.grad_accum*world_size",
        lambda c, w: c.data.batch_size * c.train.grad_accum * w,
    ),
    ("gradient_clipping",): ("optim.grad_clip", lambda c, w: c.optim.grad_clip),
    ("bf16", "enabled"): ("train.precision", lambda c, w: c.train.precision == "bf16"),
    ("optimizer", "params", "lr"): ("optim.lr", lambda c, w: c.optim.lr),
    ("optimizer", "params", "betas"): ("optim.betas", lambda c, w: list(c.optim.betas)),
    ("optimizer", "params", "eps"): ("optim.eps", lambda c, w: c.optim.eps),
    ("optimizer", "params", "weight_decay"): ("optim.weight_decay", lambda c, w: c.optim.weight_decay),
}
_REFUSED = {
    "scheduler": "the LR schedule is smaug's (optim.warmup_steps, optim.min_lr); remove the scheduler block",
    "fp16": "smaug trains in bf16 or fp32 (train.precision); remove the fp16 block",
    "amp": "use train.precision; remove the amp block",
}


def default_ds_path(device: str) -> Path:
    return DS_DIR / ("zero2_gpu.json" if device == "cuda" else "zero2_cpu.json")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def build_ds_config(cfg: RunConfig, world_size: int, device: str) -> dict:
    """Load the JSON named by `train.ds_config` and fill/check the derived fields."""
    path = default_ds_path(device) if cfg.train.ds_config == "auto" else Path(cfg.train.ds_config)
    if not path.is_file():
        raise ConfigError(f"train.ds_config: file not found: {path}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"train.ds_config: {path} is not valid JSON: {e}") from e
    ds = {k: v for k, v in ds.items() if not k.startswith("_")}
    for key, why in _REFUSED.items():
        if key in ds:
            raise ConfigError(f"{path}: '{key}' is not allowed: {why}")
    if device != "cuda":
        params = ds.get("optimizer", {}).get("params", {})
        if params.get("torch_adam") is False:
            raise ConfigError(
                f"{path}: optimizer.params.torch_adam=false (FusedAdam) needs CUDA; use ds_configs/zero2_cpu.json"
            )
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2):
        raise ConfigError(
            f"{path}: zero_optimization.stage={stage}: smaug supports ZeRO 0-2 (stage 3 is untested here)"
        )

    if (
        ds.get("zero_optimization", {}).get("compute_grad_norm", True) is False
        and ds.get("bf16", {}).get("check_grad_overflow", True) is False
    ):
        raise ConfigError(
            f"{path}: zero_optimization.compute_grad_norm=false with bf16.check_grad_overflow=false: "
            f"nothing would detect non-finite gradients (the trainer's guard reads the grad norm)"
        )

    out = copy.deepcopy(ds)
    for ds_key, (run_key, get) in _DERIVED.items():
        want = get(cfg, world_size)
        node = out
        for k in ds_key[:-1]:
            node = node.setdefault(k, {})
        have = node.get(ds_key[-1], "auto")
        if have == "auto":
            node[ds_key[-1]] = want
        elif not _same(have, want):
            raise ConfigError(
                f"{path}: {'.'.join(ds_key)}={have!r} disagrees with {run_key}={want!r}; "
                f'set it in the run config and leave the JSON field "auto"'
            )
    return out


def save_ds_config(ds: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ds, indent=2) + "\n")
