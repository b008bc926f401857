"""Conversions between smaug's `SmaugConfig` / state dict and the exported formats.

- `hf_config_from_smaug` / `smaug_config_from_hf`: the `SmaugHFConfig` of `config.json` and back
  (lossless: every SmaugConfig field lands in a sub-config, a top-level field, `preprocessing`
  or `pretraining`).
- `timm_vit_state_dict`: the video tower as a timm `VisionTransformer` state dict (per-frame,
  `--vision-only` export), and `timm_vit_kwargs` for `timm.create_model`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .configuration_smaug import SmaugHFConfig

if TYPE_CHECKING:  # smaug.models imports timm; the export's own code must not need it
    from smaug.models import SmaugConfig

# SmaugConfig field -> SmaugVisionConfig attribute
VISION_FIELDS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_frames": "num_frames",
    "vision_width": "hidden_size",
    "vision_depth": "num_hidden_layers",
    "vision_heads": "num_attention_heads",
    "vision_mlp_ratio": "mlp_ratio",
    "vision_qkv_bias": "qkv_bias",
    "sparsify_layers": "sparsify_layers",
    "keep_ratio": "keep_ratio",
    "sparsify_mode": "sparsify_mode",
    "drop_path_rate": "drop_path_rate",
    "temporal_moments": "temporal_moments",
    "moments_weight": "moments_weight",
    "moments_xy": "moments_xy",
    "moments_centroid": "moments_centroid",
}
# SmaugConfig field -> SmaugTextConfig attribute
TEXT_FIELDS = {
    "vocab_size": "vocab_size",
    "text_width": "hidden_size",
    "text_layers": "num_hidden_layers",
    "fusion_layer": "fusion_layer",
    "text_heads": "num_attention_heads",
    "text_intermediate": "intermediate_size",
    "text_dropout": "hidden_dropout_prob",
    "text_max_positions": "max_position_embeddings",
    "pad_token_id": "pad_token_id",
    "mask_token_id": "mask_token_id",
    "cls_token_id": "cls_token_id",
    "sep_token_id": "sep_token_id",
}
# SmaugConfig field -> SmaugHFConfig top-level attribute
TOP_FIELDS = {
    "embed_dim": "projection_dim",
    "temp_min": "temp_min",
    "temp_max": "temp_max",
    "select_frames": "select_frames",
    "select_temp": "select_temp",
}
PREPROCESSING_FIELDS = ("num_frames", "image_size", "mean", "std")


class ExportError(ValueError):
    """A model the export cannot represent (yet)."""


def check_exportable(cfg) -> None:
    """The export's hand-written video tower (modeling_smaug.py) and the timm ViT export are the plain
    timm ViT block (GELU, LayerNorm eps 1e-6, no layer scale, absolute position embedding) without
    temporal blocks. A CLIP or BEiT tower (model.vision_init) or temporal blocks (temporal_layers) are
    refused rather than exported wrong. Temporal moments export (moments.py is copied verbatim)."""
    plain = dict(
        vision_family="vit",
        vision_act="gelu",
        vision_norm_eps=1e-6,
        vision_layer_scale=0.0,
        vision_abs_pos=True,
        temporal_layers=0,
    )
    bad = {k: getattr(cfg, k) for k, v in plain.items() if getattr(cfg, k) != v}
    if bad:
        raise ExportError(
            f"export: this model's video tower ({', '.join(f'{k}={v!r}' for k, v in bad.items())}) cannot "
            f"be exported yet: the exported code only has the plain timm ViT block, no temporal blocks "
            f"({', '.join(f'{k}={v!r}' for k, v in plain.items())})"
        )


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def hf_config_from_smaug(cfg, **extra) -> SmaugHFConfig:
    """The exported `config.json` content of a `smaug.models.SmaugConfig`."""
    check_exportable(cfg)
    d = dataclasses.asdict(cfg)
    vision = {VISION_FIELDS[k]: _plain(d[k]) for k in VISION_FIELDS}
    text = {TEXT_FIELDS[k]: d[k] for k in TEXT_FIELDS}
    top = {TOP_FIELDS[k]: d[k] for k in TOP_FIELDS}
    pre = {k: _plain(d[k]) for k in PREPROCESSING_FIELDS}
    used = set(VISION_FIELDS) | set(TEXT_FIELDS) | set(TOP_FIELDS) | set(PREPROCESSING_FIELDS)
    rest = {k: _plain(v) for k, v in d.items() if k not in used}
    return SmaugHFConfig(vision_config=vision, text_config=text, preprocessing=pre, pretraining=rest, **top, **extra)


def smaug_config_from_hf(hf) -> SmaugConfig:
    """Rebuild the `SmaugConfig` an exported folder was made from (inverse of `hf_config_from_smaug`)."""
    from smaug.models import SmaugConfig

    known = {f.name for f in dataclasses.fields(SmaugConfig)}
    vals = {k: getattr(hf.vision_config, a) for k, a in VISION_FIELDS.items()}
    vals.update({k: getattr(hf.text_config, a) for k, a in TEXT_FIELDS.items()})
    vals.update({k: getattr(hf, a) for k, a in TOP_FIELDS.items()})
    vals.update({k: hf.preprocessing[k] for k in ("mean", "std")})
    vals.update({k: v for k, v in (hf.pretraining or {}).items() if k in known})
    for k in ("sparsify_layers", "mean", "std"):
        vals[k] = tuple(vals[k])
    return SmaugConfig(**vals)


# ---------------------------------------------------------------------------- timm export
def timm_vit_kwargs(cfg) -> dict:
    """`timm.create_model(<any vit_*>, pretrained=False, num_classes=0, **kwargs)` arguments that
    build a `VisionTransformer` with the key layout and shapes of `timm_vit_state_dict`."""
    check_exportable(cfg)
    return dict(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.vision_width,
        depth=cfg.vision_depth,
        num_heads=cfg.vision_heads,
        mlp_ratio=cfg.vision_mlp_ratio,
        qkv_bias=cfg.vision_qkv_bias,
        class_token=True,
        global_pool="token",
        num_classes=0,
    )


@torch.no_grad()
def timm_vit_state_dict(state_dict: dict, cfg) -> dict:
    """The video tower as a per-frame timm ViT state dict.

    Key names are timm's (`patch_embed.proj.*`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm.*`).
    timm has no time axis: the temporal embedding smaug uses for a single-frame clip (an image,
    `temporal_embed` interpolated to T=1) is folded into `pos_embed`, for the [CLS] slot and every
    patch, so a timm ViT on one frame computes what smaug's encoder computes on a 1-frame clip
    (without token sparsification, which timm does not do).
    """
    prefix = "video_encoder."
    out = {k[len(prefix) :]: v.float().clone() for k, v in state_dict.items() if k.startswith(prefix)}
    if "pos_embed" not in out or "temporal_embed" not in out:
        raise KeyError("state dict has no video_encoder.pos_embed / temporal_embed: not a SmaugModel checkpoint")
    te = out.pop("temporal_embed")  # [1, T, 1, D]
    te1 = (
        te
        if te.shape[1] == 1
        else F.interpolate(te[0, :, 0].T[None], size=1, mode="linear", align_corners=False)[0].T[None, :, None]
    )
    out["pos_embed"] = out["pos_embed"] + te1[0, 0][None]  # [1, 1 + N, D] + [1, 1, D]
    return {k: v.contiguous() for k, v in out.items()}
