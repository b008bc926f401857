"""Conversions between smaug's `SmaugConfig` / state dict and the exported formats.

- `hf_config_from_smaug`: the `SmaugHFConfig` of `config.json`. The config holds every SmaugConfig field under
  its own name (`smaug_config`), so nothing is mapped by hand; the checkpoint reader reads it back
  (`smaug.checkpoint.smaug_config_from_export`).
- `timm_export_config` / `timm_state_dict`: the video tower as a per-frame timm model of its family (timm
  ViT, CLIP ViT, BEiT) for the `--vision-only` export, loading into `timm.create_model` with strict=True.
"""

from __future__ import annotations

import dataclasses

import torch

from .configuration_smaug import SmaugHFConfig


class ExportError(ValueError):
    """A model the export cannot represent; the message names the field."""


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def hf_config_from_smaug(cfg, **extra) -> SmaugHFConfig:
    """The exported `config.json` content of a `smaug.models.SmaugConfig` (`extra`: run_config, run)."""
    return SmaugHFConfig(smaug_config={k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}, **extra)


# ---------------------------------------------------------------------------- timm export
# family -> (a timm architecture with the family's block, norm and layout; its LayerNorm eps). model_args
# set every size, so one architecture per family serves every width and depth.
TIMM_ARCH = {
    "vit": ("vit_base_patch16_224", 1e-6),
    "clip": ("vit_base_patch16_clip_224", 1e-5),  # pre_norm (norm_pre), bias-free patch embedding
    "beit": ("beit_base_patch16_224", 1e-6),
}
# What the per-frame timm model has no slot for (SmaugModel state dict prefix -> what happens to it).
NOT_IN_TIMM = {
    "video_encoder.temporal_embed": "folded in: the temporal embedding of a 1-frame clip is added to pos_embed "
    "(BEiT without one: to the [CLS] token and the patch embedding's bias), so timm on one frame computes "
    "what smaug's encoder computes on a 1-frame clip",
    "temporal.": "temporal blocks across frames (temporal_layers): a per-frame model has no time axis; not exported",
    "video_pooling.": "the clip embedding's moments over time: a readout on top of the frames; not exported",
    "vision_proj.": "the VTC projection of the frame [CLS] into the joint space; not exported (no timm head)",
}


def timm_export_config(cfg) -> tuple[str, dict]:
    """(architecture, model_args): `timm.create_model(architecture, pretrained=False, num_classes=0,
    **model_args)` builds the per-frame model whose state dict is `timm_state_dict`'s."""
    arch, eps = TIMM_ARCH[cfg.vision_family]
    if cfg.vision_norm_eps != eps:
        raise ExportError(
            f"export --vision-only: vision_norm_eps={cfg.vision_norm_eps} has no timm {cfg.vision_family} "
            f"architecture (its LayerNorm eps is {eps})"
        )
    args = dict(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.vision_width,
        depth=cfg.vision_depth,
        num_heads=cfg.vision_heads,
        mlp_ratio=cfg.vision_mlp_ratio,
        qkv_bias=cfg.vision_qkv_bias,
        init_values=cfg.vision_layer_scale or None,  # layer scale (gamma / ls) where the model has it
        global_pool="token",  # the frame's [CLS], as smaug's frame feature
    )
    if cfg.vision_family == "beit":
        if cfg.vision_act != "gelu":
            raise ExportError(f"export --vision-only: timm's BEiT has no vision_act={cfg.vision_act!r}")
        args.update(use_abs_pos_emb=cfg.vision_abs_pos, use_rel_pos_bias=True, use_fc_norm=False)
        return arch, args
    if not cfg.vision_abs_pos:
        raise ExportError("export --vision-only: a timm ViT needs vision_abs_pos=True")
    args["class_token"] = True
    if cfg.vision_act != "gelu":
        args["act_layer"] = cfg.vision_act
    if args["init_values"] is None:
        del args["init_values"]
    return arch, args


@torch.no_grad()
def timm_state_dict(state_dict: dict, cfg) -> tuple[dict, dict]:
    """The video tower as a per-frame timm state dict (`timm_export_config`'s model), and what timm has no
    slot for ({SmaugModel key prefix: what happened to it}, only those the model has; `NOT_IN_TIMM`).

    Keys are timm's already (the encoder is built from timm's modules); timm has no time axis, so the
    temporal embedding smaug uses for a single-frame clip (an image: `temporal_embed` interpolated to
    T=1) is folded into the first place every token passes through.
    """
    from smaug.models.frame_tokens import resize_time

    prefix = "video_encoder."
    out = {k[len(prefix) :]: v.float().clone() for k, v in state_dict.items() if k.startswith(prefix)}
    if "temporal_embed" not in out:
        raise KeyError("state dict has no video_encoder.temporal_embed: not a SmaugModel checkpoint")
    te = resize_time(out.pop("temporal_embed"), 1)[0, 0]  # [1, D]: what every token of a 1-frame clip gets
    if "pos_embed" in out:
        out["pos_embed"] = out["pos_embed"] + te[None]  # [1, 1 + N, D]
    else:  # BEiT without an absolute position embedding: the [CLS] token and every patch token
        out["cls_token"] = out["cls_token"] + te[None]
        out["patch_embed.proj.bias"] = out["patch_embed.proj.bias"] + te[0]
    dropped = {p: why for p, why in NOT_IN_TIMM.items() if any(k.startswith(p) for k in state_dict)}
    return {k: v.contiguous() for k, v in out.items()}, dropped
