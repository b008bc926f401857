"""Run configuration: YAML files + `key=value` overrides -> a validated `RunConfig`.

Library code (the trainer and the tools both read run configs; nothing here imports DeepSpeed).
One source of truth: every knob has its default in a dataclass below (the model and data
sections reuse `SmaugConfig` and `DataConfig`), `smaug/configs/base.yaml` documents them
all (a test keeps the two in sync), and DeepSpeed's JSON is derived from the result
(see `smaug/train/ds_config.py`).

Config files may name a parent with `base: other.yaml` (relative to the file); several
`--config` files apply left to right; CLI overrides are dotted (`optim.lr=3e-4`) and their
values are parsed as YAML. Everything is validated before any compute: an unknown key,
a wrong type or an impossible combination raises `ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from smaug.schema import ConfigError, build_section, check_type, raise_all

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# SmaugConfig fields the tokenizer fixes (smaug.data.tokenizer_fields), never set in a run config
TOKENIZER_FIELDS = ("vocab_size", "pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id")


@dataclass
class RunSection:
    output_dir: Optional[str] = None  # where checkpoints/logs go; from CLI (--out) or $SMAUG_OUTPUT, never YAML paths
    seed: int = 42  # global seed: model init, masking, data order (per rank/worker offsets derived from it)
    name: str = "smaug"  # run name for logs / wandb


@dataclass
class ModelSection:
    preset: Literal["tiny", "base"] = "base"  # SmaugConfig preset
    dense: bool = False  # True = Singularity-style dense baseline (no masking, no sparsify, all frames fused)
    tokenizer: Optional[str] = (
        None  # HF name or local dir of a fast tokenizer; None = the one of text_init (tools/build_tokenizer.py makes one offline)
    )
    vision_init: Optional[str] = None  # pretrained image tower: timm hub name (HF cache), local folder or weights file
    text_init: Optional[str] = (
        None  # pretrained BERT: hub name (HF cache) or local folder; fusion layers from its top layers
    )
    allow_random_init: bool = False  # a `base` run with neither init is refused unless this is true
    init_from: Optional[str] = (
        None  # initialise weights (only) from a DeepSpeed checkpoint dir or an exported HF folder (fine-tuning)
    )
    grad_checkpointing: bool = True  # non-reentrant activation checkpointing of ViT blocks and BERT layers
    # Any SmaugConfig field (smaug/models/smaug.py, each commented there) by its own name, written flat in the
    # section (`model.mask_ratio: 0.5`, `model.vtm_switch_acc=0.8`); checked against the dataclass's fields and
    # types; unset = the preset's value. Built by `model_section`, which fills this from the section's other keys
    knobs: dict = field(default_factory=dict)


@dataclass
class OptimSection:
    lr: float = 1.0e-4  # peak learning rate (after warmup), for the global batch below
    min_lr: float = 1.0e-6  # cosine floor
    betas: tuple = (0.9, 0.999)  # AdamW betas
    eps: float = 1.0e-8  # AdamW eps
    weight_decay: float = 0.02  # AdamW decoupled weight decay (not on norms, biases, pos/cls tokens, temperature)
    warmup_steps: int = 1000  # linear warmup from 0, in optimizer steps
    grad_clip: float = 1.0  # global grad-norm clip (DeepSpeed gradient_clipping is derived from it; 0 = off)


@dataclass
class TrainSection:
    steps: int = 100000  # total optimizer steps
    grad_accum: int = 1  # micro-batches per optimizer step (global batch = data.batch_size * grad_accum * world)
    precision: Literal["bf16", "fp32"] = "bf16"  # engine precision; CPU tests use fp32 for exact resume
    ds_config: str = "auto"  # DeepSpeed JSON: "auto" = ds_configs/zero2_gpu.json on CUDA, zero2_cpu.json on CPU
    device: Literal["auto", "cuda", "cpu"] = "auto"
    max_nonfinite: int = 20  # stop after this many non-finite losses in a row (each is skipped and counted)
    unmasked_tail_steps: int = (
        0  # the last N steps train without MAE masking (FLIP's unmasked tuning; MVM is off there)
    )
    unmasked_tail_lr: float = 0.0  # > 0: the tail is a schedule of its own (FLIP): the main cosine ends where the
    # tail starts, which warms up over a tenth of its steps to this peak LR and decays to optim.min_lr; 0 = the main
    # cosine runs on through the tail (whose LR is then a small fraction of the peak). Acts only with a tail
    compile: Literal["none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "none"
    # torch.compile of the training forward (smaug/train/compile.py: full-graph regions, static shapes, captions
    # padded to data.max_text_len); the value is torch.compile's mode ("reduce-overhead" = CUDA graphs), "none" = eager.
    # Default none: the first step then costs minutes of compilation, and no GPU gain is measured yet


@dataclass
class CkptSection:
    every: int = 1000  # save every N optimizer steps (and always at the end)
    keep: int = 3  # keep the last K checkpoints
    resume: str = "auto"  # "auto" = latest in output_dir if any; "none"; or a checkpoint directory/tag path


@dataclass
class LogSection:
    every: int = 10  # write a JSONL record (and wandb) every N steps
    wandb: Literal["disabled", "offline", "online"] = "disabled"  # $WANDB_MODE overrides
    wandb_project: str = "smaug"
    progress: bool = True  # tqdm bar on rank 0
    peak_tflops: float = 0.0  # device bf16 peak for MFU; 0 = from a built-in table (H100/H200/A100) or measured


@dataclass
class EvalSection:
    every: int = 0  # zero-shot retrieval on data.eval_shards every N steps (0 = only at the end, if eval_shards set)
    num_frames: int = 0  # frames per clip at eval; 0 = same as training (data.num_frames)
    max_samples: int = 0  # cap on eval clips per rank (0 = all)
    rerank_k: int = 16  # VTM reranks each query's top-k VTC candidates (vtm, combined rankings); 0 = VTC only


SECTIONS = {
    "run": RunSection,
    "model": ModelSection,
    "optim": OptimSection,
    "train": TrainSection,
    "ckpt": CkptSection,
    "log": LogSection,
    "eval": EvalSection,
}


@dataclass
class RunConfig:
    run: RunSection
    model: ModelSection
    data: Any  # smaug.data.DataConfig
    optim: OptimSection
    train: TrainSection
    ckpt: CkptSection
    log: LogSection
    eval: EvalSection

    # sections a subclass adds (name -> dataclass), e.g. smaug.train.qa.QARunConfig's `qa`
    EXTRA_SECTIONS: typing.ClassVar[dict] = {}
    TRAIN_SHARDS_REQUIRED: typing.ClassVar[bool] = True  # False: the subclass reads its training data elsewhere
    SHARDS_READ: typing.ClassVar[bool] = True  # False: the run reads neither data.train_shards nor data.eval_shards

    def data_paths(self) -> dict:
        """{dotted key: path} of the files and folders a run of this config reads besides its shards, tokenizer
        and checkpoints (checked before the first step by smaug.preflight); a subclass with data of its own adds
        them (smaug.eval.qa.QARunConfig)."""
        return {}

    def to_dict(self) -> dict:
        """The config as YAML would spell it (model knobs flat in the model section)."""
        out = {f.name: _plain(dataclasses.asdict(getattr(self, f.name))) for f in dataclasses.fields(self)}
        knobs = out["model"].pop("knobs")
        out["model"].update(knobs)
        return out


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---------------------------------------------------------------------------- loading


def _resolve_path(name: str, rel_to: Optional[Path] = None) -> Path:
    p = Path(name)
    cands = (
        [p] if p.is_absolute() else [p, *([rel_to / p] if rel_to else []), CONFIG_DIR / p, CONFIG_DIR / f"{name}.yaml"]
    )
    for c in cands:
        if c.is_file():
            return c
    raise ConfigError(f"config file not found: {name!r} (looked in {', '.join(str(c) for c in cands)})")


def flat_model_knobs(tree: dict, source: str = "config") -> dict:
    """`model.overrides: {field: value}` -> `model.field: value`. Run configs saved before the model's fields were
    written flat spell them so, and checkpoints carry such configs (config.yaml and the client state), which
    evaluation and fine-tuning read. Applied to each source before merging, so a later one still wins."""
    model = tree.get("model")
    if not isinstance(model, dict) or "overrides" not in model:
        return tree
    model, saved = dict(model), model["overrides"] or {}
    del model["overrides"]
    if not isinstance(saved, dict):
        raise ConfigError(f"{source}: model.overrides: expected a mapping, got {saved!r}")
    for k, v in saved.items():
        if model.get(k) is not None and model[k] != v:
            raise ConfigError(f"{source}: model.{k}={model[k]!r} and model.overrides.{k}={v!r}; set model.{k} only")
    return {**tree, "model": {**model, **saved}}


def model_section(values: dict, prefix: str = "model") -> ModelSection:
    """The model section from its mapping: ModelSection's own keys, and every other key a SmaugConfig field,
    type-checked against the dataclass (an unknown key or a wrong type names it)."""
    from smaug.models import SmaugConfig

    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {values!r}")
    own = {f.name for f in dataclasses.fields(ModelSection)} - {"knobs"}
    hints = typing.get_type_hints(SmaugConfig)
    knobs = {}
    for k, v in values.items():
        if k in own:
            continue
        if k not in hints:
            close = sorted(n for n in [*own, *hints] if n.split("_")[0] == str(k).split("_")[0])
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{prefix}.{k}: unknown key: not a model option nor a SmaugConfig field{hint}")
        if v is not None:  # null = the preset's value
            knobs[k] = check_type(f"{prefix}.{k}", v, hints[k])
    return build_section(prefix, ModelSection, {**{k: v for k, v in values.items() if k in own}, "knobs": knobs})


def _load_yaml_tree(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise ConfigError(f"config inheritance loop: {' -> '.join(map(str, seen + (path,)))}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = flat_model_knobs(data, str(path))
    parent = data.pop("base", None)
    if parent is None:
        return data
    merged = _load_yaml_tree(_resolve_path(parent, path.parent), seen + (path,))
    return deep_merge(merged, data)


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": parsed}}}; value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key component")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: dict = {}
    cur = node
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


# ---------------------------------------------------------------------------- validation


def load_config(
    config_files: list[str],
    overrides: list[str] = (),
    output_dir: Optional[str] = None,
    config_cls: type = RunConfig,
    check_paths: bool = False,
) -> RunConfig:
    """`config_cls`: RunConfig or a subclass with EXTRA_SECTIONS (validated like the others). `check_paths`: also
    check every path the run will read or write (the trainer's start). Every problem found is in the one
    ConfigError: each section's first bad key, or else every cross-field and path problem."""
    from smaug.data import DataConfig  # local import keeps `smaug.config` light (no torch until needed)

    sections = {**SECTIONS, **config_cls.EXTRA_SECTIONS}

    tree: dict = {}
    for cf in config_files:
        tree = deep_merge(tree, _load_yaml_tree(_resolve_path(cf)))
    for ov in overrides:
        tree = deep_merge(tree, flat_model_knobs(parse_override(ov), ov))
    if output_dir is not None:
        tree = deep_merge(tree, {"run": {"output_dir": output_dir}})
    elif not (tree.get("run") or {}).get("output_dir") and os.environ.get("SMAUG_OUTPUT"):
        tree = deep_merge(tree, {"run": {"output_dir": os.environ["SMAUG_OUTPUT"]}})

    problems = [
        f"{k}: unknown section (known: {', '.join(['data', *sections])})"
        for k in tree
        if k not in sections and k != "data"
    ]
    secs = {}
    for name, build in (
        *((n, model_section if n == "model" else partial(build_section, n, cls)) for n, cls in sections.items()),
        ("data", partial(build_section, "data", DataConfig)),
    ):
        try:
            secs[name] = build(tree.get(name, {}) or {})
        except ConfigError as e:
            problems.append(str(e))
    raise_all(problems)  # the cross-field checks need every section built
    cfg = config_cls(**secs)
    validate(cfg, check_paths)
    return cfg


def validate(cfg: RunConfig, check_paths: bool = False) -> None:
    """Cross-field checks that a single dataclass cannot do, and with `check_paths` every file and folder the run
    will need (`smaug.preflight.path_problems`). Every problem found is reported: one ConfigError, a line each."""
    problems: list[str] = []
    bad = problems.append

    if not cfg.run.output_dir:
        bad("run.output_dir: required (pass --out DIR or set $SMAUG_OUTPUT)")
    o = cfg.optim
    if o.lr <= 0:
        bad(f"optim.lr: must be > 0, got {o.lr}")
    if not 0 <= o.min_lr <= o.lr:
        bad(f"optim.min_lr: must be in [0, optim.lr], got {o.min_lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        bad(f"optim.betas: need two values in [0, 1), got {list(o.betas)}")
    if o.warmup_steps < 0 or o.warmup_steps > cfg.train.steps:
        bad(f"optim.warmup_steps: must be in [0, train.steps={cfg.train.steps}], got {o.warmup_steps}")
    if o.grad_clip < 0 or o.weight_decay < 0:
        bad("optim.grad_clip / optim.weight_decay: must be >= 0")
    t = cfg.train
    for key, v in (
        ("train.steps", t.steps),
        ("train.grad_accum", t.grad_accum),
        ("ckpt.every", cfg.ckpt.every),
        ("ckpt.keep", cfg.ckpt.keep),
        ("log.every", cfg.log.every),
        ("train.max_nonfinite", t.max_nonfinite),
    ):
        if v < 1:
            bad(f"{key}: must be >= 1, got {v}")
    if not 0 <= t.unmasked_tail_steps <= t.steps:
        bad(f"train.unmasked_tail_steps: must be in [0, train.steps={t.steps}], got {t.unmasked_tail_steps}")
    if t.unmasked_tail_lr < 0:
        bad(f"train.unmasked_tail_lr: must be >= 0, got {t.unmasked_tail_lr}")
    for key, v in (("eval.every", cfg.eval.every), ("eval.rerank_k", cfg.eval.rerank_k)):
        if v < 0:
            bad(f"{key}: must be >= 0, got {v}")
    if cfg.eval.every and not cfg.data.eval_shards:
        bad("data.eval_shards: required when eval.every > 0")
    if not cfg.data.train_shards and cfg.TRAIN_SHARDS_REQUIRED:
        bad("data.train_shards: required (a shard spec, corpus:NAME, or a list of {spec, weight})")
    if t.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            bad("train.device: 'cuda' requested but no CUDA device is visible")
    m = cfg.model
    if m.preset == "base" and not (m.vision_init or m.text_init or m.init_from or m.allow_random_init):
        bad(
            "model.vision_init / model.text_init: neither is set, so this base run would pre-train the "
            "ViT and BERT from random weights; set them (e.g. beit_base_patch16_224.in22k_ft_in22k and "
            "bert-base-uncased, as pretrain_5m.yaml) or model.allow_random_init=true"
        )
    if not (m.tokenizer or m.text_init):
        bad("model.tokenizer: required when model.text_init is not set")
    # the model section must build a valid SmaugConfig (it validates its own fields and the init checkpoints)
    try:
        model_config(cfg)
    except ConfigError as e:
        bad(str(e))
    if check_paths:
        from smaug.preflight import path_problems

        problems.extend(path_problems(cfg))
    raise_all(problems)


def model_config(cfg: RunConfig, **tokenizer_fields):
    """The SmaugConfig this run trains: preset + dense + the section's knobs + the data's frame count and size +
    the tokenizer's fields + the fields the vision checkpoint (model.vision_init) fixes.

    Each field has one source: the frame count and size are the data's, and a preset that fixes the frame size
    (tiny: 112 px) must agree with data.image_size (refused otherwise, never silently replaced); the vocabulary and
    special tokens are the tokenizer's."""
    from smaug.models import PRESETS, SmaugConfig
    from smaug.models.pretrained import init_config

    knobs = dict(cfg.model.knobs)
    for k in ("num_frames", "image_size"):
        if k in knobs:
            raise ConfigError(f"model.{k}: set data.{k} (the frames the loader decodes are the model's)")
        fixed = PRESETS.get(cfg.model.preset, {}).get(k)
        if fixed is not None and fixed != getattr(cfg.data, k):
            raise ConfigError(
                f"data.{k}: {getattr(cfg.data, k)}, but model.preset={cfg.model.preset} is built for "
                f"{k}={fixed}; set data.{k}={fixed} (or use a preset that leaves it to the data)"
            )
    for k in TOKENIZER_FIELDS:
        if k in knobs:
            raise ConfigError(f"model.{k}: comes from the tokenizer (model.tokenizer)")
    explicit = dict(knobs)
    knobs.update(num_frames=cfg.data.num_frames, image_size=cfg.data.image_size, **tokenizer_fields)
    try:
        mc = SmaugConfig.preset(cfg.model.preset, dense=cfg.model.dense, **knobs)
        # the vision checkpoint sets the block family, its options and mean/std; sizes are checked
        return init_config(mc, cfg.model.vision_init, cfg.model.text_init, explicit)
    except (ValueError, TypeError, KeyError) as e:  # SmaugConfig names its field: say it as the run config does
        msg = str(e)
        raise ConfigError(
            f"model.{msg[len('SmaugConfig.') :]}" if msg.startswith("SmaugConfig.") else f"model: {msg}"
        ) from e


def save_resolved(cfg: RunConfig, path: Path) -> None:
    """config.yaml; the model section also holds what model.vision_init fixed (family, block options, mean/std)."""
    d = cfg.to_dict()
    if cfg.model.vision_init:
        no_init = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vision_init=None))
        mc, base = model_config(cfg), model_config(no_init)
        d["model"] = {
            **d["model"],
            **{k: _plain(v) for k, v in dataclasses.asdict(mc).items() if getattr(base, k) != v},
            **{k: _plain(v) for k, v in cfg.model.knobs.items()},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("# Resolved configuration of this run (all defaults filled in).\n")
        yaml.safe_dump(d, f, sort_keys=False)
