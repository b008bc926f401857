"""Pretrained image and text towers: resolve, describe, check, load strictly, report.

    cfg = init_config(SmaugConfig.preset("base"), vision_init, text_init)  # family, block options, mean/std
    model = SmaugModel(cfg)
    report = init_towers(model, vision_init, text_init)                     # strict load, JSON-able report

Sources. A hub name, resolved through the Hugging Face cache (offline works when the cache holds
it: `HF_HUB_OFFLINE=1`); a local folder (`config.json` + `model.safetensors` or
`pytorch_model.bin`, as a hub snapshot, `save_pretrained` or timm's `local-dir:` leaves it); or, for
the vision tower, a weights file (.safetensors / .pth / .bin; MAE's {"model": ...} wrapper is fine).
Vision hub names are timm's tagged names (`beit_base_patch16_224.in22k_ft_in22k` is the repo
`timm/beit_base_patch16_224.in22k_ft_in22k`) or `org/name`; text names are repos (`bert-base-uncased`).

Vision family, from the checkpoint keys: `relative_position_bias_table` -> beit, `norm_pre` ->
clip, else vit (see vit_blocks.py). What keys cannot tell (heads of a ViT, LayerNorm eps,
quick-GELU, layer-scale init) comes from timm's `config.json`: its `architecture` (+ `model_args`)
is built on the meta device and its first block is read. Mean/std come from its `pretrained_cfg`;
a bare weights file has none, so the config's mean/std stay and the report says so.

Strict loading. Every checkpoint key is loaded or on an ignore list below (with its reason);
every tower parameter is loaded or on an allowed-new list below; any other key, or a wrong shape,
raises `InitError` naming the keys. `init_config` checks the dimensions (width, depth, heads, MLP,
patch; BERT's sizes) against the model config, naming the field, before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# checkpoint keys that are not used (prefix or suffix match) -> why
VISION_IGNORED = {
    "head.": "classifier head (CLIP: projection to its joint space); smaug has its own vision_proj",
    "fc_norm.": "norm of the average-pooled feature (avg-pool models such as BEiT); smaug uses per-token outputs",
    "relative_position_index": "buffer, recomputed from the patch grid",
}
TEXT_IGNORED = {
    "bert.pooler.": "pooler (next-sentence head input); unused",
    "cls.seq_relationship.": "next-sentence prediction head; unused",
    "cls.predictions.decoder.": "MLM decoder: tied to the word embeddings (its bias is cls.predictions.bias)",
    "bert.embeddings.position_ids": "buffer",
    "bert.embeddings.token_type_ids": "buffer",
}
NEW_TEMPORAL = "per-frame temporal embedding, zero-init: the initial model is the image model"
NEW_NORM = "final LayerNorm, fresh (the checkpoint's final norm is fc_norm on the pooled feature; Singularity's vision_layernorm)"
NEW_CROSS = "fusion cross-attention, new (Singularity: self-attention + FFN from BERT's top layers)"
NEW_MLM = "MLM head, fresh (the checkpoint has none: a BertModel)"


# The SmaugConfig fields a vision checkpoint fixes (`describe_vision(...).derived`): family, block options and
# the pixel mean/std. A model that already holds such weights (fine-tuning from a checkpoint) is rebuilt from them.
VISION_DERIVED = (
    "vision_family",
    "vision_act",
    "vision_norm_eps",
    "vision_layer_scale",
    "vision_abs_pos",
    "mean",
    "std",
)


class InitError(ValueError):
    """A pretrained tower that cannot be used as asked; the message names the source and the keys."""


@dataclass(frozen=True)
class Resolved:
    source: str  # as given
    weights: Path  # the weights file
    config: Path | None  # config.json (timm or transformers), None for a bare file
    where: str  # "file", "folder" or "hub cache (<repo>)"
    timm_cfg: object = None  # timm's registered PretrainedCfg of a timm hub name (architecture, mean/std)


def _ignore_reason(key: str, table: dict) -> str | None:
    return next((why for pat, why in table.items() if key.startswith(pat) or key.endswith(pat)), None)


def resolve(source: str, hub_prefix: str, label: str) -> Resolved:
    """A local file or folder, or a hub repo in the HF cache (downloaded when online)."""
    p = Path(source).expanduser()
    if p.is_file():
        return Resolved(source, p, None, "file")
    if p.is_dir():
        weights = next((p / f for f in WEIGHT_FILES if (p / f).is_file()), None)
        if weights is None:
            raise InitError(f"{label}={source!r}: folder without {' or '.join(WEIGHT_FILES)}")
        return Resolved(source, weights, p / "config.json" if (p / "config.json").is_file() else None, "folder")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    name = source.removeprefix("hf-hub:")
    repo, timm_cfg = name if "/" in name else hub_prefix + name, None
    if hub_prefix == "timm/" and "/" not in name:  # timm's registry knows the repo (several names share one)
        from timm.models import get_pretrained_cfg

        timm_cfg = get_pretrained_cfg(name)
        hub_id = getattr(timm_cfg, "hf_hub_id", None)
        if hub_id:
            repo = hub_id + name if hub_id.endswith("/") else hub_id

    def fetch(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo, filename))
        except (EntryNotFoundError, HfHubHTTPError, HFValidationError, FileNotFoundError, ConnectionError):
            return None

    weights = next((w for w in map(fetch, WEIGHT_FILES) if w is not None), None)
    if weights is None:
        hint = "" if timm_cfg is not None or hub_prefix != "timm/" else "; timm does not know this name either"
        raise InitError(
            f"{label}={source!r}: not a local file or folder, and the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) has no {repo} with {' or '.join(WEIGHT_FILES)} "
            f"(HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}){hint}. Download it once "
            f"(`hf download {repo}`) or pass a local path"
        )
    return Resolved(source, weights, fetch("config.json"), f"hub cache ({repo})", timm_cfg)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors or torch; {"model"|"state_dict"|"module": ...} unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def checkpoint_shapes(path: Path) -> dict[str, tuple]:
    """{key: shape} without reading the tensors of a safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


# ---------------------------------------------------------------------------- describe (no weights built)
@dataclass(frozen=True)
class TowerSource:
    resolved: Resolved
    dims: dict  # SmaugConfig field -> the checkpoint's value (checked against the config)
    derived: dict  # SmaugConfig field -> value the model must be built with (set from the checkpoint)
    architecture: str | None  # timm architecture / transformers model_type
    norm_source: str = ""  # where mean/std come from (vision)


def _meta_block(arch: str, model_args: dict, label: str):
    """First block of timm `arch` built on the meta device (no memory, no weights)."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, num_classes=0, **model_args)
    except (RuntimeError, TypeError) as e:  # unknown architecture / argument
        raise InitError(f"{label}: timm cannot build its architecture {arch!r} ({e})") from e
    if not hasattr(model, "blocks"):
        raise InitError(f"{label}: architecture {arch!r} is not a ViT / CLIP / BEiT")
    return model.blocks[0]


def _act_name(act, label: str) -> str:
    name = type(act).__name__
    if name == "GELU" and getattr(act, "approximate", "none") == "none":
        return "gelu"
    if name == "QuickGELU":
        return "quick_gelu"
    raise InitError(f"{label}: MLP activation {name} is not supported (gelu, quick_gelu)")


@lru_cache(maxsize=8)
def describe_vision(source: str) -> TowerSource:
    """Family, dimensions, block options and mean/std of a vision checkpoint (reads shapes and config only)."""
    label = f"vision_init={source!r}"
    r = resolve(source, "timm/", "vision_init")
    shapes = checkpoint_shapes(r.weights)
    if "patch_embed.proj.weight" not in shapes or "blocks.0.mlp.fc1.weight" not in shapes:
        raise InitError(
            f"{label}: {r.weights} is not a timm ViT / CLIP / BEiT state dict "
            f"(no patch_embed.proj.weight / blocks.0.mlp.fc1.weight; keys {list(shapes)[:5]})"
        )
    family = (
        "beit"
        if any(k.endswith("relative_position_bias_table") for k in shapes)
        else "clip"
        if "norm_pre.weight" in shapes
        else "vit"
    )
    width, patch = shapes["patch_embed.proj.weight"][0], shapes["patch_embed.proj.weight"][-1]
    dims = dict(
        vision_width=width,
        patch_size=patch,
        vision_depth=1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")),
        vision_mlp_ratio=shapes["blocks.0.mlp.fc1.weight"][0] / width,
        vision_qkv_bias="blocks.0.attn.qkv.bias" in shapes or "blocks.0.attn.q_bias" in shapes,
    )
    if family == "beit":
        dims["vision_heads"] = shapes["blocks.0.attn.relative_position_bias_table"][1]
    scaled = "blocks.0.gamma_1" in shapes or "blocks.0.ls1.gamma" in shapes
    derived = dict(
        vision_family=family,
        vision_act="gelu",
        vision_norm_eps=1e-5 if family == "clip" else 1e-6,
        vision_layer_scale=0.1 if scaled else 0.0,
        vision_abs_pos="pos_embed" in shapes,
    )
    meta = json.loads(r.config.read_text()) if r.config else {}
    pcfg = meta.get("pretrained_cfg", meta)  # timm's legacy config.json is flat
    arch = meta.get("architecture")
    if r.timm_cfg is not None:  # a timm name: its own architecture (e.g. the quickgelu variant of a CLIP repo)
        arch, pcfg = r.timm_cfg.architecture, {"mean": r.timm_cfg.mean, "std": r.timm_cfg.std}
    if arch:
        blk = _meta_block(arch, meta.get("model_args") or {}, label)
        dims["vision_heads"] = blk.attn.num_heads
        derived.update(vision_norm_eps=float(blk.norm1.eps), vision_act=_act_name(blk.mlp.act, label))
        if scaled:
            derived["vision_layer_scale"] = float(
                getattr(blk, "init_values", None) or getattr(getattr(blk, "ls1", None), "init_values", 0.1)
            )
    norm_source = "the model config (the checkpoint has no pretrained_cfg mean/std)"
    if "mean" in pcfg and "std" in pcfg:
        derived.update(mean=tuple(float(x) for x in pcfg["mean"]), std=tuple(float(x) for x in pcfg["std"]))
        norm_source = (
            f"timm's pretrained_cfg of {source}" if r.timm_cfg is not None else f"pretrained_cfg of {r.config}"
        )
    return TowerSource(r, dims, derived, arch, norm_source)


@lru_cache(maxsize=8)
def describe_text(source: str) -> TowerSource:
    """BERT sizes of a text checkpoint (its config.json); anything but plain BERT is refused."""
    label = f"text_init={source!r}"
    r = resolve(source, "", "text_init")
    if r.config is None:
        raise InitError(f"{label}: no config.json with the weights (a BERT folder or hub name is needed)")
    c = json.loads(r.config.read_text())
    for key, want in (
        ("model_type", "bert"),
        ("hidden_act", "gelu"),
        ("type_vocab_size", 2),
        ("layer_norm_eps", 1e-12),
        ("position_embedding_type", "absolute"),
    ):
        if key in c and c[key] != want:
            raise InitError(f"{label}: {key}={c[key]!r}, smaug's text tower is BERT with {key}={want!r}")
    dims = dict(
        text_width=c["hidden_size"],
        text_layers=c["num_hidden_layers"],
        text_heads=c["num_attention_heads"],
        text_intermediate=c["intermediate_size"],
        text_max_positions=c["max_position_embeddings"],
    )
    return TowerSource(r, dims, {}, c.get("model_type", "bert"))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(math.isclose(float(x), float(y)) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b))
    return a == b


def init_config(cfg, vision_init: str | None, text_init: str | None, explicit: dict | None = None):
    """`cfg` (a SmaugConfig) with the vision checkpoint's family, block options and mean/std, after
    checking both checkpoints' dimensions against it. `explicit`: fields the user set (overrides);
    one that contradicts the checkpoint is refused."""
    explicit = explicit or {}
    updates = {}
    for src, describe in ((vision_init, describe_vision), (text_init, describe_text)):
        if not src:
            continue
        t = describe(src)
        label = f"{'vision' if describe is describe_vision else 'text'}_init={src!r}"
        for field, theirs in t.dims.items():
            if not _same(theirs, getattr(cfg, field)):
                raise InitError(
                    f"{label}: the checkpoint has {field}={theirs}, the model config has "
                    f"{field}={getattr(cfg, field)}; choose the matching model.preset or set "
                    f"model.{field}"
                )
        for field, value in t.derived.items():
            if field in explicit and not _same(explicit[field], value):
                raise InitError(
                    f"model.{field}={explicit[field]!r} contradicts {label}, which needs "
                    f"{field}={value!r}; remove the override"
                )
        updates.update(t.derived)
    return dataclasses.replace(cfg, **updates) if updates else cfg


# ---------------------------------------------------------------------------- load
def strict_load(module: torch.nn.Module, sd: dict, new_reason, label: str) -> tuple[list, dict]:
    """Load `sd` into `module`: every key used, shapes equal, every parameter left out allowed by
    `new_reason(key) -> reason | None`. Returns (loaded keys, {new key: reason})."""
    own = module.state_dict()
    unexpected = sorted(set(sd) - set(own))
    if unexpected:
        raise InitError(f"{label}: {len(unexpected)} checkpoint key(s) the model has no place for: {unexpected[:8]}")
    bad = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise InitError(f"{label}: wrong shape for {len(bad)} key(s): {bad[:4]}")
    new = {k: new_reason(k) for k in sorted(set(own) - set(sd))}
    missing = [k for k, why in new.items() if why is None]
    if missing:
        raise InitError(f"{label}: the checkpoint lacks {len(missing)} key(s) the model needs: {missing[:8]}")
    module.load_state_dict(sd, strict=False)
    return sorted(sd), new


def _report(t: TowerSource, sd: dict, loaded, ignored, new, **extra) -> dict:
    r = t.resolved
    return {
        "source": r.source,
        "resolved": str(r.weights),
        "config": str(r.config) if r.config else None,
        "where": r.where,
        "architecture": t.architecture,
        **extra,
        "checkpoint_dtype": str(next(iter(sd.values())).dtype) if sd else None,
        "loaded": loaded,
        "ignored": ignored,
        "new": new,
    }


@torch.no_grad()
def load_vision(encoder, source: str) -> dict:
    """Load a vision checkpoint into a VideoEncoder built from `init_config`; returns its report."""
    from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table

    label, cfg = f"vision_init={source!r}", encoder.cfg
    t = describe_vision(source)
    for field, value in t.derived.items():
        if not _same(getattr(cfg, field), value):
            raise InitError(
                f"{label}: the model was built with {field}={getattr(cfg, field)!r}, the checkpoint "
                f"needs {value!r}; build the config with smaug.models.pretrained.init_config"
            )
    sd = read_state_dict(t.resolved.weights)
    ignored = {k: why for k in sd if (why := _ignore_reason(k, VISION_IGNORED))}
    sd = {k: v for k, v in sd.items() if k not in ignored}
    own, grid, resampled = encoder.state_dict(), list(encoder.patch_embed.grid_size), []
    for k, v in list(sd.items()):
        if k not in own or v.shape == own[k].shape:
            continue
        if k == "pos_embed":  # another image size: resample the grid ([CLS] slot kept)
            old = math.isqrt(v.shape[1] - 1)
            sd[k] = resample_abs_pos_embed(v, grid, old_size=[old, old], num_prefix_tokens=1)
            resampled.append(k)
        elif k.endswith("relative_position_bias_table"):
            sd[k] = resize_rel_pos_bias_table(v, new_window_size=tuple(grid), new_bias_shape=tuple(own[k].shape))
            resampled.append(k)
    pooled_norm = "fc_norm.weight" in ignored and "norm.weight" not in sd

    def new_reason(k: str):
        if k == "temporal_embed":
            return NEW_TEMPORAL
        return NEW_NORM if pooled_norm and k.startswith("norm.") else None

    loaded, new = strict_load(encoder, sd, new_reason, label)
    return _report(
        t,
        sd,
        loaded,
        ignored,
        new,
        family=cfg.vision_family,
        act=cfg.vision_act,
        norm_eps=cfg.vision_norm_eps,
        layer_scale=cfg.vision_layer_scale,
        resampled=resampled,
        mean=list(cfg.mean),
        std=list(cfg.std),
        mean_std_from=t.norm_source,
    )


def bert_key(k: str, fusion_layer: int) -> str:
    """A BERT checkpoint key (BertForPreTraining / BertForMaskedLM / BertModel layout, old gamma/beta
    LayerNorm names) -> the TextEncoder key (layers >= fusion_layer go to `fusion`)."""
    if k.endswith(".gamma") or k.endswith(".beta"):
        k = k[:-6] + ".weight" if k.endswith(".gamma") else k[:-5] + ".bias"
    if k.split(".")[0] in ("embeddings", "encoder", "pooler"):
        k = "bert." + k
    if k.startswith("bert.encoder.layer."):
        i, rest = k[len("bert.encoder.layer.") :].split(".", 1)
        i = int(i)
        return f"bert.encoder.layer.{i}.{rest}" if i < fusion_layer else f"fusion.{i - fusion_layer}.{rest}"
    if k.startswith("cls.predictions.transform."):
        return "mlm_head." + k[len("cls.predictions.") :]
    return "mlm_head.bias" if k == "cls.predictions.bias" else k


@torch.no_grad()
def load_text(text_encoder, source: str) -> dict:
    """Load a BERT checkpoint into the TextEncoder: layers [0, fusion_layer) -> text layers, the rest
    -> fusion layers (self-attention + FFN; cross-attention stays new), MLM head when present."""
    label, cfg = f"text_init={source!r}", text_encoder.cfg
    t = describe_text(source)
    sd, ignored = {}, {}
    for k, v in read_state_dict(t.resolved.weights).items():
        name = bert_key(k, cfg.fusion_layer)
        why = _ignore_reason(name, TEXT_IGNORED)
        if why:
            ignored[k] = why
        else:
            sd[name] = v
    emb = sd.get("bert.embeddings.word_embeddings.weight")
    if emb is not None and emb.shape[0] != cfg.vocab_size:
        raise InitError(
            f"{label}: the checkpoint's vocabulary has {emb.shape[0]} tokens, the tokenizer "
            f"{cfg.vocab_size}; use its tokenizer (leave model.tokenizer unset to take it from text_init)"
        )
    has_mlm = any(k.startswith("mlm_head.") for k in sd)

    def new_reason(k: str):
        if ".crossattention." in k:
            return NEW_CROSS
        return NEW_MLM if k.startswith("mlm_head.") and not has_mlm else None

    loaded, new = strict_load(text_encoder, sd, new_reason, label)
    return _report(t, sd, loaded, ignored, new, fusion_layer=cfg.fusion_layer)


def init_towers(model, vision_init: str | None, text_init: str | None) -> dict:
    """Load the towers of a SmaugModel (built from `init_config`) -> the run's init report."""
    report = {
        "vision": load_vision(model.video_encoder, vision_init) if vision_init else None,
        "text": load_text(model.text_encoder, text_init) if text_init else None,
    }
    report["random_init"] = [k for k, src in (("vision", vision_init), ("text", text_init)) if not src]
    report["mean"], report["std"] = list(model.config.mean), list(model.config.std)
    # always new: everything outside the two towers (projections, VTM head, MAE decoder, frame selector)
    report["new_modules"] = sorted(
        {n.split(".")[0] for n, _ in model.named_parameters()} - {"video_encoder", "text_encoder"}
    )
    return report


def summary_lines(report: dict) -> list[str]:
    """The init report in a few log lines."""
    lines = []
    for tower in ("vision", "text"):
        r = report[tower]
        if r is None:
            lines.append(f"init {tower}: RANDOM weights (no model.{tower}_init; model.allow_random_init)")
            continue
        kind = f"{r['family']} " if tower == "vision" else ""
        lines.append(
            f"init {tower}: {kind}{r['source']} from {r['where']}: {len(r['loaded'])} tensors loaded, "
            f"{len(r['ignored'])} ignored, {len(r['new'])} new ({', '.join(sorted(set(r['new'].values())))[:160]})"
        )
    lines.append(
        f"init pixel mean {report['mean']} std {report['std']}"
        + (f" (from {report['vision']['mean_std_from']})" if report["vision"] else "")
        + f"; always new: {', '.join(report['new_modules'])}"
    )
    return lines
