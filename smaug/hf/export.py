"""Write a Hugging Face folder (or a timm state dict of the video tower) from a smaug checkpoint.

Full export (`export_hf`):
  config.json            SmaugHFConfig: `smaug_config` (every SmaugConfig field), preprocessing, the run's
                         config and provenance (`run`), with `auto_map` pointing at the code files below
  model.safetensors      the SmaugModel state dict under `smaug.`, fp32 (MAE decoder and MLM head included,
                         so pre-training can continue from it)
  *.py                   byte copies of the single source: smaug/hf/{configuration,modeling,processing}_smaug.py
                         and the library's model code they run (smaug/models/smaug.py and every module it
                         imports, smaug/dist.py, smaug/data/frames.py): `smaug.hf.CODE_FILES`
  processor_config.json  the AutoProcessor (`SmaugProcessor`): frames, size, decode size, mean/std
  tokenizer files        `save_pretrained` of the run's tokenizer (loads with plain AutoTokenizer)
  README.md              model card: what the run was, usage, preprocessing, evaluation (model-index
                         metadata, so the Hub shows the results), how to upload

Vision-only export (`export_vision_timm`): the video tower as a per-frame timm model of its family (ViT,
CLIP, BEiT): `model.safetensors` with timm key names + a timm `config.json` (architecture, model_args), so
`timm.create_model("local-dir:PATH", pretrained=True)` loads it strictly.

Nothing is pickled: weights are safetensors, configs JSON, tokenizer files JSON/text. No local path or user
name is written: paths in the run configuration are reduced to their last component. Every file gets the
mode an ordinary `open()` gives config.json, so another user can read the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
import yaml

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
UPLOAD = "hf upload YOUR_ORG/YOUR_MODEL {out} .  # or: huggingface_hub.upload_folder(repo_id=..., folder_path={out!r})"


def _save_safetensors(sd: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()},
        str(path),
        metadata={k: str(v) for k, v in metadata.items()},
    )


def local_paths_reduced(value):
    """`value` (a config tree) with every local path (absolute, or starting with ~) reduced to its last
    component: the exporting machine's folders and user name stay out of a folder meant for publishing.
    Hub names (`org/name`) are kept."""
    if isinstance(value, dict):
        return {k: local_paths_reduced(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [local_paths_reduced(v) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return Path(value.rstrip("/")).name or value
    return value


def publishable(folder: Path) -> None:
    """Every file of `folder` readable as config.json is (safetensors writes its file 0600); refuse a pickle."""
    mode = (folder / "config.json").stat().st_mode & 0o777
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(mode)
    bad = find_pickles(folder)
    if bad:
        raise RuntimeError(f"export {folder}: pickle files written: {bad}")


def run_info(ref, run_config: dict, step: Optional[int]) -> dict:
    """Where the weights come from, for config.json's `run` and the model card."""
    model, data = run_config.get("model") or {}, run_config.get("data") or {}
    return local_paths_reduced(
        {
            "name": (run_config.get("run") or {}).get("name"),
            "preset": model.get("preset"),
            "dense": model.get("dense"),
            "vision_init": model.get("vision_init"),
            "text_init": model.get("text_init"),
            "init_from": model.get("init_from"),
            "step": step,
            "steps_planned": (run_config.get("train") or {}).get("steps"),
            "num_frames": data.get("num_frames"),
            "image_size": data.get("image_size"),
            "checkpoint": ref.path.name,
        }
    )


@torch.no_grad()
def verify_export(model, folder: Path, seed: int = 0) -> float:
    """Max |difference| between `model` (a SmaugModel) and the exported folder loaded as `SmaugHFModel` in
    this process, over the video and text embeddings and the VTM logits of random inputs."""
    from smaug.data import load_tokenizer
    from smaug.hf import SmaugHFModel

    hf = SmaugHFModel.from_pretrained(str(folder)).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(
        0, 256, (2, cfg.num_frames, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g
    )
    tok = load_tokenizer(folder)  # the library's reader of a custom-code folder's tokenizer
    enc = tok(["a red circle moves to the left", "a square"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    model.eval()
    frame_tokens, video_feat, frame_feat = model.encode_video(video)
    text_hidden, text_feat = model.encode_text(ids, mask)
    pairs = (
        (video_feat, hf.get_video_features(video)),
        (text_feat, hf.get_text_features(ids, mask)),
        (model.vtm_logits(frame_tokens, frame_feat, text_hidden, text_feat, mask), hf.get_vtm_logits(video, ids, mask)),
    )
    return max((a - b).abs().max().item() for a, b in pairs)


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


def eval_results(model_name: str, reports: list[tuple[str, dict]]) -> list:
    """Hugging Face model-index entries (`huggingface_hub.EvalResult`) of retrieval reports: R@1/5/10 and
    MdR of each ranking and direction, on the report's split."""
    from huggingface_hub import EvalResult

    from smaug.eval.retrieval import ranking_rows

    out = []
    for title, rep in reports:
        split = rep["protocol"]["split"]
        for name, d, r1, r5, r10, medr, _ in ranking_rows(rep["results"]):
            task = "text-to-video-retrieval" if d == "t2v" else "video-to-text-retrieval"
            for metric, value in (("recall@1", r1), ("recall@5", r5), ("recall@10", r10), ("median_rank", medr)):
                out.append(
                    EvalResult(
                        task_type=task,
                        task_name=f"{'Text-to-video' if d == 't2v' else 'Video-to-text'} retrieval ({title})",
                        dataset_type=split,
                        dataset_name=split,
                        dataset_split=split,
                        metric_type=metric,
                        metric_name=f"{metric} ({name})",
                        metric_value=round(float(value), 2),
                    )
                )
    return out


def model_card(cfg, run_config: dict, run: dict, eval_reports: list[tuple[str, dict]], max_diff, out: Path) -> str:
    from huggingface_hub import ModelCardData

    name = run.get("name") or "smaug"
    meta = ModelCardData(
        library_name="transformers",
        tags=["video-text-retrieval", "video-language", "smaug"],
        model_name=name,
        eval_results=eval_results(name, eval_reports) or None,
    )
    towers = ", ".join(
        f"{side} tower from `{run[key]}`" if run.get(key) else f"{side} tower from scratch"
        for side, key in (("vision", "vision_init"), ("text", "text_init"))
    )
    kind = "dense baseline (no masking, no sparsification, every frame to fusion)" if cfg.dense else "SMAUG"
    steps = f"{run['step']} steps" if run.get("step") is not None else "an unknown number of steps"
    if run.get("steps_planned"):
        steps += f" (of {run['steps_planned']} planned)"
    pre = f"{cfg.num_frames} frames x {cfg.image_size}x{cfg.image_size}, mean {list(cfg.mean)}, std {list(cfg.std)}"
    lines = [
        "---",
        meta.to_yaml(),
        "---",
        "",
        f"# {name}: a SMAUG video-language model",
        "",
        f"Pre-trained with [smaug](https://arxiv.org/abs/2211.11446) ({kind}): run `{name}` (config preset "
        f"`{run.get('preset')}`, {cfg.vision_family} video tower {cfg.vision_width} wide x {cfg.vision_depth} "
        f"blocks, BERT {cfg.fusion_layer} text + {cfg.text_layers - cfg.fusion_layer} fusion layers), {towers}; "
        f"{steps} on clips of {cfg.num_frames} frames at {cfg.image_size} px (checkpoint `{run.get('checkpoint')}`).",
        "",
        "## Use",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoProcessor",
        "model = AutoModel.from_pretrained(PATH, trust_remote_code=True).eval()  # or `import smaug.hf` first",
        "processor = AutoProcessor.from_pretrained(PATH, trust_remote_code=True)  # tokenizer + evaluation's frames",
        'texts = ["a red circle moves left", "a blue square goes up"]',
        'inputs = processor(text=texts, videos=["clip1.mp4", "clip2.mp4"], return_tensors="pt", padding=True)',
        "with torch.no_grad():",
        "    out = model(**inputs)",
        "    match = model.get_vtm_logits(**inputs)  # video-text matching of row-aligned pairs (rerank)",
        "print(out.logits_per_text.softmax(dim=-1))  # [texts, videos]: cosine / temperature",
        "print(out.text_embeds.shape, out.video_embeds.shape, match.shape)  # L2-normalised [B, E]; [B]",
        "```",
        "The code is the smaug library's own model code, copied into this folder (`smaug.py` and the modules "
        "it imports); it needs `torch`, `transformers` and `timm`, and `decord` to decode video files. "
        "Without the processor: `AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)` (transformers reads "
        "config.json before the tokenizer's files, and without the flag asks whether to run this folder's "
        "config code) and `pixel_values` "
        f"uint8 RGB `[B, {cfg.num_frames}, 3, {cfg.image_size}, {cfg.image_size}]`: "
        '`model(**tok(texts, return_tensors="pt", padding=True), pixel_values=video)`.',
        "",
        "## Preprocessing",
        f"{pre}. Frames: the clip is cut into T equal segments and the centre frame of each is taken; "
        "the short side is resized to the frame size, then centre-cropped (the processor does exactly this, "
        "with the toolkit's own code: `frames.py`). Pass uint8 RGB "
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
            f"Export check: video/text embeddings and VTM logits of this folder vs the training model, "
            f"max |diff| = {max_diff:.3g}.",
            "",
        ]
    lines += [
        "## Training configuration",
        "Local paths are reduced to their last component.",
        "```yaml",
        yaml.safe_dump(run_config, sort_keys=False).rstrip(),
        "```",
        "",
        "## Publish",
        "```bash",
        UPLOAD.format(out=out.name),
        "```",
        "",
    ]
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


def _step(ref) -> Optional[int]:
    """The optimizer step of a checkpoint: its step_XXXXXXXX tag, or an export's own `run.step`."""
    if ref.kind == "hf":
        return (json.loads((ref.path / "config.json").read_text()).get("run") or {}).get("step")
    return int(ref.tag.split("_")[1]) if ref.tag.startswith("step_") else None


def export_hf(
    checkpoint: str,
    out: str | Path,
    tokenizer: Optional[str] = None,
    eval_report: Optional[str] = None,
    verify: bool = True,
) -> dict:
    """Export a checkpoint (DeepSpeed dir or an earlier export) to a Hugging Face folder. Returns a summary."""
    from smaug.checkpoint import model_from_checkpoint, resolve_checkpoint

    ref = resolve_checkpoint(checkpoint)
    model, cfg, run_config, tok_path = model_from_checkpoint(checkpoint, tokenizer)
    reports = []
    if eval_report:
        reports.append(("Zero-shot retrieval (tools/eval_retrieval.py)", json.loads(Path(eval_report).read_text())))
    if ref.run_dir is not None and (ref.run_dir / "eval.json").is_file():
        trainer_eval = json.loads((ref.run_dir / "eval.json").read_text())
        if "results" in trainer_eval:  # the report schema (runs older than it wrote flat VTC metrics)
            reports.append(("Trainer eval", trainer_eval))
    run_config = local_paths_reduced(run_config)
    max_diff = write_hf_folder(model, out, tok_path, run_config, run_info(ref, run_config, _step(ref)), reports, verify)
    return {
        "out": str(out),
        "checkpoint": str(ref.path),
        "run": json.loads((Path(out) / "config.json").read_text())["run"],
        "max_abs_diff": max_diff,
        "files": sorted(p.name for p in Path(out).iterdir()),
    }


def write_hf_folder(
    model,
    out: str | Path,
    tokenizer: str,
    run_config: Optional[dict] = None,
    run: Optional[dict] = None,
    reports: list[tuple[str, dict]] = (),
    verify: bool = True,
) -> Optional[float]:
    """Write `model` (a SmaugModel) with its tokenizer (a folder or name) as a Hugging Face folder (see the module
    docstring); `reports`: (title, retrieval report) for the model card. Returns `verify_export`'s max |diff|."""
    from transformers import AutoTokenizer

    from smaug.checkpoint import HF_PREFIX
    from smaug.hf import AUTO_MAP, MODEL_CODE_FILES, SmaugHFModel
    from smaug.hf.convert import hf_config_from_smaug

    cfg, out = model.config, Path(out)
    run_config = local_paths_reduced(run_config or {})
    run = local_paths_reduced(run or {})
    reports = [(title, local_paths_reduced(rep)) for title, rep in reports]
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = hf_config_from_smaug(cfg, run_config=run_config, run=run)
    hf_cfg.auto_map = dict(AUTO_MAP)
    hf_cfg.architectures = [SmaugHFModel.__name__]
    hf_cfg.save_pretrained(str(out))
    weights = {HF_PREFIX + k: v for k, v in model.state_dict().items()}
    _save_safetensors(weights, out / "model.safetensors", {"format": "pt", "checkpoint": run.get("checkpoint") or ""})
    for f in MODEL_CODE_FILES:
        shutil.copyfile(f, out / f.name)
    # + the tokenizer, processor_config.json and the processor's code (PROCESSOR_CODE_FILES)
    processor_for(cfg, run_config, AutoTokenizer.from_pretrained(tokenizer)).save_pretrained(out)
    max_diff = verify_export(model, out) if verify else None
    (out / "README.md").write_text(model_card(cfg, run_config, run, reports, max_diff, out))
    publishable(out)
    return max_diff


def export_vision_timm(checkpoint: str, out: str | Path, tokenizer: Optional[str] = None) -> dict:
    """Export the video tower as a per-frame timm model of its family (see `smaug.hf.convert.timm_state_dict`)."""
    from smaug.checkpoint import load_smaug_checkpoint, resolve_checkpoint
    from smaug.hf.convert import timm_export_config, timm_state_dict

    ref = resolve_checkpoint(checkpoint)
    cfg, sd, _, _ = load_smaug_checkpoint(checkpoint, tokenizer)
    arch, model_args = timm_export_config(cfg)  # before anything is written: refuses what timm cannot build
    weights, not_in_timm = timm_state_dict(sd, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timm_cfg = {
        "architecture": arch,  # model_args fix every size
        "num_classes": 0,
        "num_features": cfg.vision_width,
        "global_pool": "token",
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, cfg.image_size, cfg.image_size],
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "num_classes": 0,
        },
        "smaug_not_in_timm": not_in_timm,  # SmaugModel weights a per-frame timm model has no slot for, and why
    }
    (out / "config.json").write_text(json.dumps(timm_cfg, indent=2) + "\n")
    _save_safetensors(weights, out / "model.safetensors", {"format": "pt", "checkpoint": ref.path.name})
    args = ", ".join(f"{k}={v!r}" for k, v in model_args.items())
    sparsify = (
        f"smaug's EViT token sparsification (sparsify_layers={list(cfg.sparsify_layers)}) is not part of timm's "
        "model, so its per-frame outputs equal smaug's only without it (as here)."
        if not cfg.sparsify_layers
        else f"This model was trained with EViT token sparsification at blocks {list(cfg.sparsify_layers)}, which "
        "timm's model does not do: timm runs every token through every block (a denser forward than training's)."
    )
    (out / "README.md").write_text(
        f"# SMAUG video tower as a timm {cfg.vision_family} model (per frame)\n\n"
        "```python\nimport timm\nmodel = timm.create_model('local-dir:PATH', pretrained=True)  # config.json + "
        "model.safetensors\n# or, explicitly:\nfrom safetensors.torch import load_file\n"
        f"model = timm.create_model({arch!r}, pretrained=False, num_classes=0, {args})\n"
        "model.load_state_dict(load_file('PATH/model.safetensors'))\n```\n\n"
        f"{sparsify}\n\nWhat timm has no slot for (`smaug_not_in_timm` in config.json):\n"
        + "".join(f"- `{k}`: {why}\n" for k, why in not_in_timm.items())
    )
    publishable(out)
    return {
        "out": str(out),
        "checkpoint": str(ref.path),
        "architecture": arch,
        "timm_kwargs": model_args,
        "num_tensors": len(weights),
        "not_in_timm": sorted(not_in_timm),
    }


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
