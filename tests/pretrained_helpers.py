"""Helpers for the pretrained-tower tests: small timm / BERT models at random init, saved as a hub
download leaves them in the Hugging Face cache (`models--org--name/snapshots/<rev>/...` + `refs/main`)."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

TINY = dict(img_size=112, embed_dim=192, depth=4, num_heads=3)  # the `tiny` SmaugConfig preset's ViT
# family -> (timm hub name, architecture, model_args beyond TINY, pretrained mean/std)
FAMILIES = {
    "vit": ("vit_base_patch16_224.augreg_in21k", "vit_base_patch16_224", {}, ((0.5,) * 3, (0.5,) * 3)),
    "clip": (
        "vit_base_patch16_clip_quickgelu_224.openai",
        "vit_base_patch16_clip_quickgelu_224",
        {},
        (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ),
    "beit": ("beit_base_patch16_224.in22k_ft_in22k", "beit_base_patch16_224", {}, ((0.5,) * 3, (0.5,) * 3)),
}
REV = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of `repo` in a hub cache, with refs/main pointing at it."""
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / REV
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(REV)
    return snap


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (timm zero-inits BEiT's bias tables and q/v biases: they must matter here)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def hub_repo(name: str) -> str:
    """The hub repo timm downloads `name` from (the quickgelu CLIP shares the plain CLIP's repo)."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name).hf_hub_id


def timm_reference(family: str, seed: int = 0, num_classes: int = 10, **extra):
    """A small timm model of `family` at random init + its config.json (timm's hub layout: the
    repo's architecture, which for the quickgelu CLIP is the plain one)."""
    name, arch, args, (mean, std) = FAMILIES[family]
    model_args = {**TINY, **args, **extra}
    model = perturb(timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_args), seed)
    config = {
        "architecture": hub_repo(name).split("/")[1].split(".")[0],
        "num_classes": num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": name.split(".", 1)[1],
            "input_size": [3, 112, 112],
            "mean": list(mean),
            "std": list(std),
            "num_classes": num_classes,
        },
    }
    return name, model, config


def save_timm(folder: Path, model: torch.nn.Module, config: dict, sd: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in (sd if sd is not None else model.state_dict()).items()},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def tiny_bert_config(vocab_size: int = 30522):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=192,
        num_hidden_layers=6,
        num_attention_heads=3,
        intermediate_size=768,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
