"""Write a Hugging Face folder (or a timm ViT state dict) from a smaug checkpoint.

Full export (`export_hf`):
  config.json            SmaugHFConfig (vision/text sub-configs, preprocessing, pretraining knobs,
                         `run_config`), with `auto_map` pointing at the two code files below
  model.safetensors      the SmaugModel state dict, fp32 (MAE decoder and MLM head included, so
                         pre-training can continue from it; the HF model ignores them)
  configuration_smaug.py, modeling_smaug.py, processing_smaug.py   copies of `smaug/hf/` (plain torch
                         + transformers), and byte copies of the library's plain-torch modules they run:
                         `smaug/models/{frame_tokens,frame_selection,moments}.py`, `smaug/data/frames.py`
  processor_config.json  the AutoProcessor (`SmaugProcessor`): frames, size, decode size, mean/std
  tokenizer files        `AutoTokenizer.save_pretrained` of the run's tokenizer
  README.md              model card: usage, preprocessing, eval numbers, the training config

Vision-only export (`export_vision_timm`): the video tower as a per-frame timm ViT
(`model.safetensors` with timm key names + a timm-style `config.json` holding `model_args`).

Nothing is pickled: weights are safetensors, configs JSON, tokenizer files JSON/text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
import yaml

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _save_safetensors(sd: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()},
        str(path),
        metadata={k: str(v) for k, v in metadata.items()},
    )


@torch.no_grad()
def verify_export(model, folder: Path, seed: int = 0) -> float:
    """Max |difference| between `model` (a SmaugModel) and the exported folder loaded as
    `SmaugHFModel` in this process, over the video and text embeddings of random inputs."""
    from transformers import AutoTokenizer

    from smaug.hf import SmaugHFModel

    hf = SmaugHFModel.from_pretrained(str(folder)).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(
        0, 256, (2, cfg.num_frames, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g
    )
    tok = AutoTokenizer.from_pretrained(str(folder))  # model_type "smaug" is registered here: no remote code
    enc = tok(["a red circle moves to the left", "a square"], padding=True, return_tensors="pt")
    model.eval()
    dv = (model.get_video_features(video) - hf.get_video_features(video)).abs().max().item()
    dt = (
        (
            model.get_text_features(enc["input_ids"], enc["attention_mask"])
            - hf.get_text_features(enc["input_ids"], enc["attention_mask"])
        )
        .abs()
        .max()
        .item()
    )
    return max(dv, dt)


def _fmt_metrics(title: str, report: dict) -> list[str]:
    """Markdown table of a retrieval report (`smaug.eval.retrieval.retrieval_report`: eval_retrieval's JSON or
    the trainer's eval.json)."""
    from smaug.eval.retrieval import ranking_rows

    proto, res = report["protocol"], report["results"]
    rows = [
        f"{title}: {proto['num_videos']} clips, {proto['num_texts']} queries, {proto['frames']} frames per clip, "
        f"split `{proto['split']}`, step {proto['step']}, VTM rerank top-k = {proto['k']} (vtm: by VTM logit; "
        f"combined: by VTC log-softmax + VTM log-sigmoid).\n"
    ]
    rows.append("| method | direction | R@1 | R@5 | R@10 | MedR | MeanR |")
    rows.append("|---|---|---|---|---|---|---|")
    for name, d, *values in ranking_rows(res):
        rows.append(f"| {name} | {d} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    if res.get("vtm_acc") is not None:
        rows.append(
            f"\nVTM pair accuracy on the scored pairs: {res['vtm_acc']:.3f} "
            f"(an always-'no' head: {1 - res['vtm_pos_frac']:.3f})."
        )
    rows += [f"\n**Warning**: {w}." for w in report["warnings"]]
    return rows


def model_card(
    cfg, run_config: dict, source: str, eval_reports: list[tuple[str, dict]], max_diff: Optional[float]
) -> str:
    pre = f"{cfg.num_frames} frames x {cfg.image_size}x{cfg.image_size}, mean {list(cfg.mean)}, std {list(cfg.std)}"
    lines = [
        "---",
        "library_name: transformers",
        "tags: [video-text-retrieval, smaug, video-language]",
        "---",
        "",
        "# SMAUG video-language model",
        "",
        "Pre-trained with [smaug](https://arxiv.org/abs/2211.11446)-style sparse masked video-language pre-training "
        f"(exported from `{source}`).",
        "",
        "## Use",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoProcessor",
        "model = AutoModel.from_pretrained(PATH, trust_remote_code=True).eval()  # or `import smaug.hf` first",
        "processor = AutoProcessor.from_pretrained(PATH, trust_remote_code=True)  # tokenizer + evaluation's frames",
        'texts = ["a red circle moves left", "a blue square goes up"]',
        'inputs = processor(text=texts, videos=["clip1.mp4", "clip2.mp4"])  # paths, bytes or uint8 [N, H, W, 3]',
        "with torch.no_grad():",
        "    out = model(**inputs)",
        "    match = model.get_vtm_logits(**inputs)  # video-text matching of row-aligned pairs (rerank)",
        "print(out.logits_per_text.softmax(dim=-1))  # [texts, videos]: cosine / temperature",
        "print(out.text_embeds.shape, out.video_embeds.shape, match.shape)  # L2-normalised [B, E]; [B]",
        "```",
        "Without the processor: `AutoTokenizer.from_pretrained(PATH)` (no remote code) and `pixel_values` "
        f"uint8 RGB `[B, {cfg.num_frames}, 3, {cfg.image_size}, {cfg.image_size}]`: "
        '`model(**tok(texts, return_tensors="pt", padding=True), pixel_values=video)`.',
        "",
        "## Preprocessing",
        f"{pre}. Frames: the clip is cut into T equal segments and the centre frame of each is taken; "
        "the short side is resized to the frame size, then centre-cropped (the processor does exactly this, "
        "with the toolkit's own code: `frames.py`; decoding files needs `decord`). Pass uint8 RGB "
        "`[B, T, 3, H, W]` (normalised inside the model) or already-normalised floats. "
        "Token sparsification (EViT) runs at inference too, as in training.",
        "",
        "## Evaluation",
    ]
    if eval_reports:
        for title, rep in eval_reports:
            lines += _fmt_metrics(title, rep) + [""]
    else:
        lines += ["No evaluation report was given at export time.", ""]
    if max_diff is not None:
        lines += [
            f"Export check: video/text embeddings of this folder vs the training model, max |diff| = {max_diff:.3g}.",
            "",
        ]
    lines += ["## Training configuration", "```yaml", yaml.safe_dump(run_config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def processor_for(cfg, run_config: dict, tokenizer):
    """The `SmaugProcessor` of a model: its frames, size and mean/std, the run's decode size and caption
    length (`data.decode_short_side`, null = the frame size; `data.max_text_len`)."""
    from smaug.hf import SmaugProcessor

    data = (run_config or {}).get("data") or {}
    return SmaugProcessor(
        tokenizer,
        num_frames=cfg.num_frames,
        image_size=cfg.image_size,
        short_side=data.get("decode_short_side"),
        mean=list(cfg.mean),
        std=list(cfg.std),
        max_text_len=int(data.get("max_text_len") or 32),
    )


def export_hf(
    checkpoint: str,
    out: str | Path,
    tokenizer: Optional[str] = None,
    eval_report: Optional[str] = None,
    verify: bool = True,
) -> dict:
    """Export a checkpoint (DeepSpeed dir) to a Hugging Face folder. Returns a summary dict."""
    from transformers import AutoTokenizer

    from smaug.checkpoint import model_from_checkpoint, resolve_checkpoint
    from smaug.hf import AUTO_MAP, MODEL_CODE_FILES
    from smaug.hf.convert import check_exportable, hf_config_from_smaug

    ref = resolve_checkpoint(checkpoint)
    model, cfg, run_config, tok_path = model_from_checkpoint(checkpoint, tokenizer)
    check_exportable(cfg)  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = hf_config_from_smaug(cfg, run_config=run_config)
    hf_cfg.auto_map = dict(AUTO_MAP)
    hf_cfg.architectures = ["SmaugHFModel"]
    hf_cfg.save_pretrained(str(out))
    _save_safetensors(model.state_dict(), out / "model.safetensors", {"format": "pt", "source": ref.path})
    for f in MODEL_CODE_FILES:
        shutil.copyfile(f, out / f.name)
    # + the tokenizer, processor_config.json and the processor's code (PROCESSOR_CODE_FILES)
    processor_for(cfg, run_config, AutoTokenizer.from_pretrained(tok_path)).save_pretrained(out)
    reports = []
    if eval_report:
        reports.append(("Zero-shot retrieval (tools/eval_retrieval.py)", json.loads(Path(eval_report).read_text())))
    if ref.run_dir is not None and (ref.run_dir / "eval.json").is_file():
        trainer_eval = json.loads((ref.run_dir / "eval.json").read_text())
        if "results" in trainer_eval:  # the report schema (runs older than it wrote flat VTC metrics)
            reports.append(("Trainer eval", trainer_eval))
    max_diff = verify_export(model, out) if verify else None
    (out / "README.md").write_text(model_card(cfg, run_config, str(ref.path), reports, max_diff))
    bad = find_pickles(out)
    if bad:
        raise RuntimeError(f"export {out}: pickle files written: {bad}")
    return {
        "out": str(out),
        "checkpoint": str(ref.path),
        "max_abs_diff": max_diff,
        "files": sorted(p.name for p in out.iterdir()),
    }


def export_vision_timm(checkpoint: str, out: str | Path, tokenizer: Optional[str] = None) -> dict:
    """Export the video tower as a per-frame timm ViT (see `smaug.hf.convert.timm_vit_state_dict`)."""
    from smaug.checkpoint import load_smaug_checkpoint, resolve_checkpoint
    from smaug.hf.convert import check_exportable, timm_vit_kwargs, timm_vit_state_dict

    ref = resolve_checkpoint(checkpoint)
    cfg, sd, run_config, _ = load_smaug_checkpoint(checkpoint, tokenizer)
    check_exportable(cfg)  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vit = timm_vit_state_dict(sd, cfg)
    _save_safetensors(vit, out / "model.safetensors", {"format": "pt", "source": ref.path})
    kwargs = timm_vit_kwargs(cfg)
    timm_cfg = {
        "architecture": "vit_base_patch16_224",  # any vit_* name: model_args fix every size
        "num_classes": 0,
        "num_features": cfg.vision_width,
        "global_pool": "token",
        "model_args": {k: v for k, v in kwargs.items() if k != "num_classes"},
        "pretrained_cfg": {
            "input_size": [3, cfg.image_size, cfg.image_size],
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "num_classes": 0,
            "source": str(ref.path),
        },
    }
    (out / "config.json").write_text(json.dumps(timm_cfg, indent=2) + "\n")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    (out / "README.md").write_text(
        "# SMAUG video tower as a timm ViT (per frame)\n\n"
        "```python\nimport timm\nmodel = timm.create_model('local-dir:PATH', pretrained=True)  # config.json + model.safetensors\n"
        "# or, explicitly:\nfrom safetensors.torch import load_file\n"
        f"model = timm.create_model('vit_base_patch16_224', pretrained=False, {args})\n"
        "model.load_state_dict(load_file('PATH/model.safetensors'))\n```\n\n"
        "The temporal embedding of a one-frame clip is folded into `pos_embed`; smaug's EViT token "
        "sparsification is not part of timm's ViT, so per-frame outputs equal smaug's only for a model "
        f"trained without it (this one: sparsify_layers={list(cfg.sparsify_layers)}).\n"
    )
    bad = find_pickles(out)
    if bad:
        raise RuntimeError(f"export {out}: pickle files written: {bad}")
    return {"out": str(out), "checkpoint": str(ref.path), "timm_kwargs": kwargs, "num_tensors": len(vit)}


def find_pickles(folder: str | Path) -> list[str]:
    """Files under `folder` that are pickles: by suffix, or by content (pickle protocol 2+ opcode
    `\\x80`, or a torch zip archive holding `data.pkl`)."""
    bad = []
    for p in Path(folder).rglob("*"):
        if not p.is_file():
            continue
        head = p.read_bytes()[:4096]
        if p.suffix in PICKLE_SUFFIXES or head[:1] == b"\x80" or (head[:2] == b"PK" and b"data.pkl" in head):
            bad.append(str(p))
    return bad
