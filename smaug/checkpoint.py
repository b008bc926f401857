"""The smaug checkpoint format, written by the trainer and read by the tools: one module for both.

Layout of a training run `<out>`:
    <out>/checkpoints/
        step_00001000/            engine.save_checkpoint(tag="step_00001000")
            mp_rank_00_model_states.pt, *_optim_states.pt   (DeepSpeed ZeRO; client state in the first)
            COMPLETE              written by rank 0 after every rank finished saving
        latest                    text file with the newest COMPLETE tag, replaced atomically
    <out>/config.yaml             the resolved run config

A kill during a save leaves a directory without COMPLETE; `latest` still names the previous
complete checkpoint, and the half-written directory is removed on the next resume.

Writing (the trainer; `engine` is a DeepSpeed engine, but this module never imports DeepSpeed
for it): `save`, `load`, `find_resume`, `clean_incomplete`, `rng_state` / `set_rng_state`.

Reading (tools, fine-tuning, export). Accepted `path`s:
  run dir                    `<out>` of a training run (uses `<out>/checkpoints`)
  checkpoint root            `<out>/checkpoints` (the tag `latest` names, else the newest complete one)
  checkpoint tag dir         `<out>/checkpoints/step_XXXXXXXX` (must carry the `COMPLETE` marker)
  exported HF folder         `config.json` + `model.safetensors` (`tools/export_hf.py`)

DeepSpeed ZeRO shards from any world size are consolidated with DeepSpeed's own
`zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint` (fp32 master weights; DeepSpeed is
imported only then). Every problem (missing, incomplete, truncated or mismatched checkpoint)
raises `CheckpointError` naming the path and what is wrong.

    missing, unexpected = load_weights(model, path)      # into an existing SmaugModel
    cfg, state_dict, run_config, tokenizer = load_smaug_checkpoint(path)   # for tools
    model, cfg, run_config, tokenizer = model_from_checkpoint(path)
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import sys
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from smaug.dist import barrier, gather_object

# ---------------------------------------------------------------------------- layout and writing
MARKER = "COMPLETE"  # written by rank 0 after every rank finished saving a tag
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def ckpt_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def complete_tags(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and is_complete(p))


def read_latest(root: Path) -> Optional[str]:
    """The tag `latest` names if it is complete; else the newest complete tag; else None."""
    f = root / LATEST
    if f.is_file():
        tag = f.read_text().strip()
        if tag and is_complete(root / tag):
            return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, file-size limit, I/O error); `latest` is intact."""


def _write_failure(path: Path, exc: BaseException) -> str:
    """What went wrong writing under `path`, with the likely cause: torch.save reports a full disk as
    'unexpected pos N vs M' (the errno is lost), so a short probe write and the free space say it."""
    cause = f"{type(exc).__name__}: {exc}"
    errno_ = getattr(exc, "errno", None)
    if not errno_:
        probe = path.parent / f".write_probe.{os.getpid()}"
        try:
            with open(probe, "wb") as f:  # 8 MiB: past a small file-size limit, more than a nearly full disk
                for _ in range(8):
                    f.write(b"\0" * (1 << 20))
                    f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            errno_ = e.errno
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
    if errno_:
        cause += f" [errno {errno_}: {os.strerror(errno_)}]"
    try:
        cause += f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free on that filesystem"
    except OSError:
        pass
    try:
        import resource

        fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if fsize != resource.RLIM_INFINITY:
            cause += f"; file-size limit (ulimit -f) {fsize} bytes"
    except (ImportError, OSError, ValueError):
        pass
    return cause


def _raise_if_failed(errors: list, root: Path, tag: str, previous: Optional[str], rank0: bool) -> None:
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if not failed:
        return
    if rank0:
        shutil.rmtree(root / tag, ignore_errors=True)  # frees the space; a resume would remove it anyway
    where = "; ".join(f"rank {r}: {e}" for r, e in failed)
    kept = (
        f"`latest` still names {previous} ({root / previous}), which is complete and intact: free space "
        f"(or raise the quota / file-size limit) and rerun the same command to resume from it"
        if previous
        else "there is no earlier complete checkpoint (`latest` was not written)"
    )
    raise CheckpointWriteError(
        f"checkpoint {tag} could not be written to {root}: {where}. The incomplete {tag} was removed; {kept}."
    )


def save(engine, output_dir: str | Path, step: int, client_state: dict, per_rank_state: dict, keep: int) -> Path:
    """Save a checkpoint from every rank; mark it complete, point `latest` at it, prune old ones.

    `per_rank_state` (loader position, RNG) is gathered so each rank restores its own.
    A write that fails on any rank (disk full, quota, ...) raises CheckpointWriteError on every rank,
    naming the cause, the directory and the complete checkpoint `latest` still names.
    """
    root = ckpt_root(output_dir)
    tag = tag_for(step)
    ranks = gather_object(per_rank_state)
    state = dict(client_state, ranks=ranks, world_size=len(ranks))
    rank0 = engine.global_rank == 0
    previous = read_latest(root)
    if rank0 and (root / tag).exists() and not is_complete(root / tag):
        shutil.rmtree(root / tag)  # leftover of a killed save of the same step
    barrier()
    error = None
    try:
        engine.save_checkpoint(str(root), tag=tag, client_state=state, save_latest=False)
    except (OSError, RuntimeError) as e:
        error = _write_failure(root / tag, e)
        barrier()  # the barrier DeepSpeed's save ends with, where the ranks that wrote their part wait
    _raise_if_failed(gather_object(error), root, tag, previous, rank0)
    if rank0:
        try:
            (root / tag / MARKER).write_text(f"{step}\n")
            _write_atomic(root / LATEST, tag + "\n")
        except OSError as e:
            error = _write_failure(root / tag, e)
    _raise_if_failed(gather_object(error), root, tag, previous, rank0)
    if rank0:
        for old in complete_tags(root)[:-keep]:
            shutil.rmtree(root / old, ignore_errors=True)
    barrier()
    return root / tag


def find_resume(output_dir: str | Path, resume: str) -> Optional[tuple[Path, str]]:
    """(load_dir, tag) to resume from, or None. `resume`: auto | none | <checkpoint dir>."""
    if resume == "none":
        return None
    if resume == "auto":
        root = ckpt_root(output_dir)
        tag = read_latest(root)
        return (root, tag) if tag else None
    try:  # the readers' rules: a run dir, its checkpoints/ dir or a complete tag dir
        ref = resolve_checkpoint(resume)
    except CheckpointError as e:
        raise FileNotFoundError(f"ckpt.resume: {e}") from e
    if ref.kind != "deepspeed":
        raise FileNotFoundError(
            f"ckpt.resume: {resume!r} is an exported HF folder; resume needs a DeepSpeed "
            f"checkpoint (use model.init_from to start from its weights)"
        )
    return ref.load_dir, ref.tag


def clean_incomplete(output_dir: str | Path) -> list[str]:
    """Remove half-written checkpoint directories (rank 0, before training starts)."""
    root = ckpt_root(output_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def load(engine, load_dir: Path, tag: str) -> dict:
    """Load engine + optimizer + LR scheduler state; return smaug's client state."""
    path, client = engine.load_checkpoint(
        str(load_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {load_dir}/{tag}")
    return client


# ---------------------------------------------------------------------------- reading
HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
HF_PREFIX = "smaug."  # SmaugHFModel.base_model_prefix: the exported weights are the SmaugModel's under it
# Parameters a retrieval model cannot do without: a checkpoint missing any of them is the wrong file.
CORE_PREFIXES = ("video_encoder.", "text_encoder.bert.", "vision_proj.", "text_proj.")
# Errors torch.load / DeepSpeed raise on truncated or foreign files.
READ_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    KeyError,
    EOFError,
    IndexError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the path and the problem."""


@dataclass
class CheckpointRef:
    kind: str  # "deepspeed" | "hf"
    path: Path  # the folder holding the weights: the tag dir, or the HF folder
    run_dir: Optional[Path] = None  # training output dir, when known (has config.yaml)

    @property
    def load_dir(self) -> Path:
        return self.path.parent

    @property
    def tag(self) -> str:
        return self.path.name


def _has_model_states(p: Path) -> bool:
    return any(p.glob("*_model_states.pt"))


def resolve_checkpoint(path: str | os.PathLike) -> CheckpointRef:
    """Find the weights `path` points at (see the module docstring), or raise `CheckpointError`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint {p}: does not exist")
    if p.is_file():
        if p.name == HF_WEIGHTS:
            return resolve_checkpoint(p.parent)
        raise CheckpointError(f"checkpoint {p}: is a file; pass the checkpoint directory or the exported HF folder")
    if (p / HF_CONFIG).is_file() and not _has_model_states(p):
        if not (p / HF_WEIGHTS).is_file():
            raise CheckpointError(f"checkpoint {p}: HF folder without {HF_WEIGHTS} (only safetensors weights are read)")
        return CheckpointRef("hf", p)
    if _has_model_states(p):
        if not is_complete(p):
            raise CheckpointError(
                f"checkpoint {p}: incomplete, no {MARKER} marker (the save was interrupted; "
                f"use an earlier step or the checkpoints root)"
            )
        run = p.parent.parent if p.parent.name == "checkpoints" else None
        return CheckpointRef("deepspeed", p, run)
    root, run = p, None
    if (p / "checkpoints").is_dir():
        root, run = p / "checkpoints", p
    elif p.name == "checkpoints":
        run = p.parent
    if (root / LATEST).is_file() or any(root.glob("step_*")):
        tag = read_latest(root)
        if tag is None:
            raise CheckpointError(f"checkpoint {root}: no complete checkpoint ({MARKER} marker) in it")
        if not _has_model_states(root / tag):
            raise CheckpointError(f"checkpoint {root / tag}: marked complete but has no *_model_states.pt file")
        return CheckpointRef("deepspeed", root / tag, run)
    raise CheckpointError(
        f"checkpoint {p}: not a smaug checkpoint (expected a run dir, its checkpoints/ dir, a "
        f"step_XXXXXXXX dir, or an exported HF folder with {HF_CONFIG} + {HF_WEIGHTS})"
    )


def read_state_dict(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    """fp32 state dict of the checkpoint (DeepSpeed: consolidated over all ZeRO shards)."""
    if ref.kind == "hf":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(ref.path / HF_WEIGHTS))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {ref.path / HF_WEIGHTS}: unreadable ({e})") from e
        # SmaugHFModel holds the SmaugModel as `smaug` (exports before it wrote the SmaugModel's keys as they are)
        if sd and all(k.startswith(HF_PREFIX) for k in sd):
            sd = {k[len(HF_PREFIX) :]: v for k, v in sd.items()}
        return sd
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints progress; keep stdout for reports
            sd = get_fp32_state_dict_from_zero_checkpoint(str(ref.load_dir), tag=ref.tag)
    except READ_ERRORS as e:
        raise CheckpointError(
            f"checkpoint {ref.path}: cannot be consolidated by DeepSpeed zero_to_fp32 "
            f"(truncated or missing shard files?): {type(e).__name__}: {e}"
        ) from e
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def read_client_state(ref: CheckpointRef) -> dict:
    """smaug's client state saved with a DeepSpeed checkpoint (step, run config, ...)."""
    f = ref.path / "mp_rank_00_model_states.pt"
    try:
        st = torch.load(f, map_location="cpu", mmap=True, weights_only=False)
    except READ_ERRORS as e:
        raise CheckpointError(f"checkpoint {f}: unreadable (truncated?): {type(e).__name__}: {e}") from e
    return {k: st[k] for k in ("step", "samples_seen", "config", "model_config") if k in st}


def adapt_state_dict(sd: dict, own: dict, source: str) -> tuple[dict, list[str]]:
    """Make `sd` fit a model whose state dict is `own`: interpolate `temporal_embed` over time when the
    frame counts differ; refuse any other shape mismatch. Returns (state dict, notes)."""
    from smaug.models.smaug import SmaugModel

    notes, bad = [], []
    out = SmaugModel.upgrade_state_dict(dict(sd))  # parameter names of checkpoints written before a rename
    if "vtc_temp" in out and "vtc_log_temp" in own and "vtc_log_temp" not in out:  # before the log-space temperature
        out["vtc_log_temp"] = out.pop("vtc_temp").float().clamp_min(1e-8).log()
        notes.append("vtc_temp: converted to vtc_log_temp")
    for k, v in out.items():
        if k not in own or own[k].shape == v.shape:
            continue
        if k.endswith("temporal_embed") and v.ndim == 4 and v.shape[0::2] == own[k].shape[0::2]:
            T = own[k].shape[1]
            out[k] = (
                F.interpolate(v[0, :, 0].T[None].float(), size=T, mode="linear", align_corners=False)[0]
                .T[None, :, None]
                .to(v.dtype)
            )
            notes.append(f"{k}: interpolated from {v.shape[1]} to {T} frames")
        else:
            bad.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    if bad:
        raise CheckpointError(
            f"checkpoint {source}: does not fit this model ({len(bad)} shape mismatches, a "
            f"different preset or vocabulary?): " + "; ".join(bad[:8])
        )
    return out, notes


@torch.no_grad()
def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Load checkpoint weights into `model` (a SmaugModel) in place. Returns (missing, unexpected) keys.

    Keys the model does not have (e.g. the MAE decoder when fine-tuning without MVM) are skipped and
    reported as unexpected; a checkpoint without the encoders or with mismatched shapes raises.
    """
    ref = resolve_checkpoint(path)
    sd = read_state_dict(ref)
    own = model.state_dict()
    sd, _ = adapt_state_dict(sd, own, str(ref.path))
    core_missing = [k for k in own if k.startswith(CORE_PREFIXES) and k not in sd]
    if core_missing:
        raise CheckpointError(
            f"checkpoint {ref.path}: not weights of this model, {len(core_missing)} encoder "
            f"parameters missing (e.g. {', '.join(core_missing[:4])})"
        )
    res = model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return list(res.missing_keys), sorted(k for k in sd if k not in own)


# ---------------------------------------------------------------------------- tools' entry point
def resolve_tokenizer(name: str, run_dir: Optional[Path]) -> str:
    """A run config's `model.tokenizer`: absolute as is; relative tried against the working dir, the
    run dir and the repository; otherwise returned unchanged (a hub name)."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return str(p)
    repo = Path(__file__).resolve().parents[1]  # smaug/checkpoint.py -> the repository
    for base in (Path.cwd(), run_dir, repo):
        if base is not None and (base / p).is_dir():
            return str((base / p).resolve())
    return name


def _run_config_of(ref: CheckpointRef, client: dict) -> dict:
    if isinstance(client.get("config"), dict):
        return client["config"]
    if ref.run_dir is not None and (ref.run_dir / "config.yaml").is_file():
        import yaml

        return yaml.safe_load((ref.run_dir / "config.yaml").read_text()) or {}
    raise CheckpointError(
        f"checkpoint {ref.path}: no run configuration (neither in the checkpoint's client state "
        f"nor a config.yaml in the run dir)"
    )


def _smaug_config_from_run(run_config: dict, tokenizer_path: str, source: Path):
    """The SmaugConfig a run trained: the trainer's own `model_config` on the saved run config."""
    from types import SimpleNamespace

    from smaug.config import ConfigError, build_section, flat_model_knobs, model_config, model_section
    from smaug.data import DataConfig, load_tokenizer, tokenizer_fields

    try:
        run_config = flat_model_knobs(run_config, f"checkpoint {source}")
        ns = SimpleNamespace(
            model=model_section(run_config.get("model") or {}),
            data=build_section("data", DataConfig, run_config.get("data") or {}),
        )
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {source}: its run configuration is invalid: {e}") from e
    try:
        tok = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {source}: cannot load its tokenizer {tokenizer_path!r} ({e}); "
            f"pass the tokenizer directory explicitly"
        ) from e
    return model_config(ns, **tokenizer_fields(tok))


# Exports written before `smaug_config` (config.json with vision_config / text_config sub-configs) are a
# format on disk that fine-tuning (`--init`) and evaluation still read: SmaugConfig field -> where it was.
_LEGACY_EXPORT = {
    "vision_config": {
        **{k: k for k in ("image_size", "patch_size", "num_frames", "sparsify_layers", "keep_ratio")},
        **{k: k for k in ("sparsify_mode", "drop_path_rate", "temporal_moments", "moments_weight")},
        **{k: k for k in ("moments_xy", "moments_centroid")},
        "vision_width": "hidden_size",
        "vision_depth": "num_hidden_layers",
        "vision_heads": "num_attention_heads",
        "vision_mlp_ratio": "mlp_ratio",
        "vision_qkv_bias": "qkv_bias",
    },
    "text_config": {
        **{k: k for k in ("vocab_size", "fusion_layer", "pad_token_id", "mask_token_id", "cls_token_id")},
        "sep_token_id": "sep_token_id",
        "text_width": "hidden_size",
        "text_layers": "num_hidden_layers",
        "text_heads": "num_attention_heads",
        "text_intermediate": "intermediate_size",
        "text_dropout": "hidden_dropout_prob",
        "text_max_positions": "max_position_embeddings",
    },
    "": {"embed_dim": "projection_dim", **{k: k for k in ("temp_min", "temp_max", "select_frames", "select_temp")}},
}


def smaug_config_from_export(config: dict):
    """The `SmaugConfig` an exported folder was made from, given its `config.json` content (written by
    `smaug.hf.convert.hf_config_from_smaug`; read here as plain JSON, so reading needs no transformers)."""
    from smaug.models import SmaugConfig

    if config.get("smaug_config"):
        return SmaugConfig(**config["smaug_config"])
    if "vision_config" not in config:
        raise KeyError("config.json has neither smaug_config nor vision_config: not a smaug export")
    known = {f.name for f in fields(SmaugConfig)}
    vals = {k: v for k, v in (config.get("pretraining") or {}).items() if k in known}
    for section, names in _LEGACY_EXPORT.items():
        src = config[section] if section else config
        vals.update({k: src[a] for k, a in names.items()})
    vals.update({k: config["preprocessing"][k] for k in ("mean", "std")})
    return SmaugConfig(**vals)


def load_smaug_checkpoint(path: str | os.PathLike, tokenizer: Optional[str] = None):
    """-> (SmaugConfig, fp32 state dict, run config dict, tokenizer path) of a checkpoint or HF folder.

    `tokenizer` overrides the tokenizer the run config names (e.g. when the run's relative path
    does not resolve from here).
    """
    from smaug.models import SmaugConfig

    ref = resolve_checkpoint(path)
    if ref.kind == "hf":
        try:
            exported = json.loads((ref.path / HF_CONFIG).read_text())
            cfg = smaug_config_from_export(exported)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {ref.path / HF_CONFIG}: not a smaug export config ({e})") from e
        run_config = dict(exported.get("run_config") or {})
        tok = tokenizer or str(ref.path)
    else:
        client = read_client_state(ref)
        run_config = _run_config_of(ref, client)
        m = run_config.get("model") or {}
        tok = tokenizer or resolve_tokenizer(m.get("tokenizer") or m.get("text_init") or "", ref.run_dir)
        if isinstance(client.get("model_config"), dict):
            mc = dict(client["model_config"])
            for k in ("vision_pretrained", "text_pretrained"):  # checkpoints before model.vision_init/text_init
                mc.pop(k, None)
            for k in ("sparsify_layers", "mean", "std"):
                if k in mc:
                    mc[k] = tuple(mc[k])
            cfg = SmaugConfig(**mc)
        else:
            cfg = _smaug_config_from_run(run_config, tok, ref.path)
    return cfg, read_state_dict(ref), run_config, tok


def model_from_checkpoint(path: str | os.PathLike, tokenizer: Optional[str] = None):
    """-> (SmaugModel in eval mode with the checkpoint's weights, SmaugConfig, run config, tokenizer path).

    The model is built from the checkpoint's own configuration (its architecture fields: no
    pretrained tower is read); every parameter must be in the checkpoint.
    """
    from smaug.models import SmaugModel

    cfg, sd, run_config, tok = load_smaug_checkpoint(path, tokenizer)
    model = SmaugModel(cfg)
    own = model.state_dict()
    sd, _ = adapt_state_dict(sd, own, str(path))
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: {len(missing)} parameters of its own model configuration are "
            f"missing (e.g. {', '.join(missing[:4])})"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own})
    return model.eval(), cfg, run_config, tok
