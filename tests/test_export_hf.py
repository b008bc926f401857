"""tools/export_hf.py and smaug.checkpoint: export fidelity in a fresh process without smaug, ZeRO
shards from 2 ranks, no pickle, timm vision export, registration, and clear errors on bad checkpoints.

Checkpoints are real DeepSpeed ZeRO-2 checkpoints in the trainer's layout, written by
`tests/weights_helpers.py` (a few optimizer steps of a tiny SmaugModel on random batches), in this process
for world size 1 and under torchrun for the 2-rank shards.
"""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smaug.checkpoint import CheckpointError, load_smaug_checkpoint, load_weights, resolve_checkpoint
from smaug.hf.export import export_hf, find_pickles

from conftest import REPO, run, run_tool, subprocess_env
from export_helpers import assert_same_outputs, fresh_outputs, in_a_terminal, library_outputs, perturbed
from weights_helpers import write_checkpoint

HELPER = "tests/weights_helpers.py"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from smaug.data import build_wordpiece_tokenizer

    caps = [
        "a red circle moves to the left",
        "the blue square goes up",
        "one green triangle slides down",
        "a yellow circle moving right",
        "white square, heading to the top",
    ]
    out = tmp_path_factory.mktemp("tok")
    build_wordpiece_tokenizer(caps * 3, out, vocab_size=200)
    return str(out)


@pytest.fixture(scope="module")
def ckpt_w1(tokenizer_dir, tmp_path_factory):
    """Run dir of a world-size-1 ZeRO-2 checkpoint (one optimizer step)."""
    out = tmp_path_factory.mktemp("ckpt") / "w1"
    write_checkpoint(str(out), tokenizer_dir, ["run.seed=3"])  # in this process, as the trainer's in-process runs
    return out


@pytest.fixture(scope="module")
def ckpt_w2(tokenizer_dir, tmp_path_factory):
    """Run dir of a ZeRO-2 checkpoint written by 2 gloo ranks (optimizer state sharded in 2 files)."""
    out = tmp_path_factory.mktemp("ckpt") / "w2"
    run_tool(HELPER, out, tokenizer_dir, nproc=2)
    return out


@pytest.fixture(scope="module")
def exported(ckpt_w1, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hf"
    info = export_hf(str(ckpt_w1), out)
    assert info["max_abs_diff"] == pytest.approx(0.0, abs=1e-5)
    return out


def training_model(run_dir: Path):
    """The model as the trainer held it: rank 0's engine module weights from mp_rank_00_model_states.pt."""
    from smaug.models import SmaugModel

    cfg = load_smaug_checkpoint(run_dir)[0]
    tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    states = torch.load(
        run_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )
    model = SmaugModel(cfg)
    model.load_state_dict(states["module"])
    return model.eval(), cfg


CAPTIONS = ["a red circle moves to the left", "blue square", "the green triangle goes down"]


@pytest.mark.slow
def test_export_fidelity_in_fresh_process_without_smaug(ckpt_w1, exported, tokenizer_dir, tmp_path):
    """The export of a real ZeRO-2 checkpoint, loaded by transformers in a process where smaug cannot be
    imported, computes what the training model computes (the engine's own weights)."""
    model, cfg = training_model(ckpt_w1)
    from smaug.data import load_tokenizer

    enc = load_tokenizer(tokenizer_dir)(CAPTIONS, padding=True, return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    video = torch.randint(
        0, 256, (3, cfg.num_frames, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g
    )
    [got] = fresh_outputs([exported], [video], enc["input_ids"], enc["attention_mask"], tmp_path)
    diffs = assert_same_outputs(got, library_outputs(model, video, enc["input_ids"], enc["attention_mask"]), "w1")
    print(f"\nexport fidelity (fresh process, no smaug): max |diff| {diffs}")
    torch.testing.assert_close(got["logits"], got["text"] @ got["video"].t() / float(model.temp.detach()))


@pytest.mark.slow
def test_model_card_example_runs_as_written_without_smaug(exported, tmp_path):
    """The card's Use block, with PATH set to the folder and its two clips in the working directory, in a
    fresh process where smaug cannot be imported: AutoProcessor and AutoModel from the folder's code."""
    card = (exported / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "AutoProcessor" in code and "model(**inputs)" in code and len(code.strip().splitlines()) <= 12
    rows = _write_clips(tmp_path)
    for (name, _), dst in zip(rows, ("clip1.mp4", "clip2.mp4")):
        shutil.copyfile(tmp_path / name, tmp_path / dst)
    # sys.modules["smaug"] = None: any import of smaug raises ImportError, as where it is not installed
    script = f"import sys\nsys.modules['smaug'] = None\nPATH = {str(exported)!r}\n" + code
    script += "print(type(processor).__module__, type(processor).__name__)\n"
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    r = run([sys.executable, "-c", script], cwd=tmp_path, env=env)
    assert "torch.Size([2, " in r.stdout and "torch.Size([2])" in r.stdout
    assert "processing_smaug SmaugProcessor" in r.stdout


@pytest.mark.slow
def test_export_of_two_rank_zero_shards(ckpt_w2, tmp_path):
    """ZeRO-2 optimizer shards of 2 ranks are consolidated by zero_to_fp32 into the engine's weights."""
    ref = resolve_checkpoint(ckpt_w2)
    assert len(list(ref.path.glob("*_optim_states.pt"))) == 2
    model, _ = training_model(ckpt_w2)
    _, sd, _, _ = load_smaug_checkpoint(ckpt_w2)
    own = model.state_dict()
    assert set(sd) == set(own)
    assert max((sd[k] - own[k]).abs().max().item() for k in own) == 0.0  # fp32 training: master == module
    info = export_hf(str(ckpt_w2 / "checkpoints"), tmp_path / "hf")
    assert info["max_abs_diff"] == pytest.approx(0.0, abs=1e-5)


def test_exported_folder_has_no_pickle(exported):
    names = sorted(p.name for p in exported.iterdir())
    for need in (
        "config.json",
        "model.safetensors",
        "configuration_smaug.py",
        "modeling_smaug.py",
        "moments.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert need in names, need
    assert find_pickles(exported) == []
    for p in exported.rglob("*"):
        if p.is_file():
            assert p.suffix not in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"), p
            assert p.read_bytes()[:1] != b"\x80", f"{p} starts with the pickle protocol opcode"
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["model_type"] == "smaug" and cfg["auto_map"]["AutoModel"] == "modeling_smaug.SmaugHFModel"
    assert {"smaug_config", "preprocessing", "run_config", "run"} <= set(cfg)
    assert set(cfg["preprocessing"]) >= {"num_frames", "image_size", "mean", "std"}
    card = (exported / "README.md").read_text()
    assert "## Training configuration" in card and "preset: tiny" in card and "max |diff|" in card
    # the exported code files are byte copies of the single source in smaug/hf/, smaug/models/ and smaug/
    from smaug.hf import CODE_FILES

    assert {f.name for f in CODE_FILES} >= {"smaug.py", "video_encoder.py", "vit_blocks.py", "temporal.py", "dist.py"}
    assert {p.name for p in exported.glob("*.py")} == {f.name for f in CODE_FILES}  # no code file missing or extra
    for f in CODE_FILES:
        assert (exported / f.name).read_bytes() == f.read_bytes(), f.name
    assert cfg["smaug_config"]["temporal_moments"] == 2 and cfg["smaug_config"]["moments_centroid"]
    assert cfg["run"]["step"] == 1 and cfg["run"]["checkpoint"] == "step_00000001"


def test_exported_folder_is_publishable(exported, ckpt_w1, tokenizer_dir):
    """Every file readable as config.json is (safetensors writes 0600), and no file names the exporting
    machine's folders or user: the checkpoint, tokenizer and output paths are reduced to their last component."""
    import getpass

    mode = (exported / "config.json").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044  # group and others can read (the umask of this process permitting)
    for p in exported.iterdir():
        assert p.stat().st_mode & 0o777 == mode, f"{p.name}: {oct(p.stat().st_mode & 0o777)} vs {oct(mode)}"
    local = [str(ckpt_w1), str(Path(tokenizer_dir)), str(Path(tokenizer_dir).parent), str(Path.home())]
    user = getpass.getuser()
    for p in exported.iterdir():
        data = p.read_bytes()
        head = data[: 8 + int.from_bytes(data[:8], "little")] if p.suffix == ".safetensors" else data
        text = head.decode("utf-8", errors="replace")
        for s in local:
            assert s not in text, f"{p.name} names the local path {s}"
        assert f"/{user}/" not in text and f"/home/{user}" not in text, f"{p.name} names the user {user}"
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["run_config"]["model"]["tokenizer"] == Path(tokenizer_dir).name
    assert cfg["run_config"]["run"]["output_dir"] == ckpt_w1.name


def test_exported_code_needs_only_torch_timm_transformers():
    """The code files of an export (the library's model modules, byte for byte) import torch, timm, transformers
    and the standard library; smaug only as the fallback inside the package (a try block, which transformers'
    import check does not count); and every relative import is one transformers copies (`from .x import`)."""
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    from smaug.hf import CODE_FILES, MODEL_CODE_FILES

    allowed = {"torch", "timm", "transformers", "numpy", "__future__", *sys.stdlib_module_names}
    names = {f.stem for f in CODE_FILES}
    for f in CODE_FILES:
        assert set(get_imports(str(f))) <= allowed, f.name
        assert set(get_relative_imports(str(f))) <= names, f.name
    model = [f for f in MODEL_CODE_FILES if f.parent.name == "models"]
    assert {f.name for f in model} >= {"smaug.py", "video_encoder.py", "vit_blocks.py", "temporal.py", "moments.py"}
    for f in model:  # what the model runs needs no numpy either
        assert "numpy" not in get_imports(str(f)), f.name


def test_auto_classes_registered_with_smaug_installed(exported):
    from transformers import AutoConfig, AutoModel

    import smaug.hf

    assert type(AutoConfig.from_pretrained(exported)) is smaug.hf.SmaugHFConfig
    model = AutoModel.from_pretrained(exported)  # no trust_remote_code: the registered local class
    assert type(model) is smaug.hf.SmaugHFModel


def test_hf_folder_loads_back_into_smaug(exported, ckpt_w1):
    """An exported folder is a valid `model.init_from` / eval checkpoint: same config, same weights."""
    from smaug.checkpoint import HF_PREFIX
    from smaug.hf import SmaugHFModel
    from smaug.hf.export import local_paths_reduced

    assert HF_PREFIX == SmaugHFModel.base_model_prefix + "."  # the reader strips what the HF model prefixes
    from smaug.models import SmaugModel

    cfg_a, sd_a, rc_a, _ = load_smaug_checkpoint(ckpt_w1)
    cfg_b, sd_b, rc_b, tok_b = load_smaug_checkpoint(exported)
    assert cfg_a == cfg_b and rc_b == local_paths_reduced(rc_a) and tok_b == str(exported)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    m = SmaugModel(cfg_b)
    missing, unexpected = load_weights(m, exported)
    assert missing == [] and unexpected == []


BEIT = dict(vision_family="beit", vision_abs_pos=False, vision_layer_scale=0.1)
CLIP = dict(vision_family="clip", vision_norm_eps=1e-5, vision_act="quick_gelu")
MOMENTS = dict(temporal_moments=2, moments_xy=True, moments_centroid=True)
VARIANTS = {  # name -> (SmaugConfig fields of the tiny preset, frames per test clip; training's is 4)
    "vit_fuse_moments": ({**MOMENTS}, 4),
    "vit_drop_6_frames_fusion_time": ({"sparsify_mode": "drop", "fusion_time_embed": True}, 6),
    "vit_dense": ({"dense": True}, 4),
    "clip_quickgelu": ({**CLIP}, 4),
    "clip_temporal_all_moments3_drop": (
        {**CLIP, "temporal_layers": 1, "temporal_scope": "all", "temporal_moments": 3, "sparsify_mode": "drop"},
        5,
    ),
    "beit_temporal_cls": ({**BEIT, "temporal_layers": 2}, 4),
    "beit_dense_temporal_all_6_frames": ({**BEIT, "dense": True, "temporal_layers": 1, "temporal_scope": "all"}, 6),
    "beit_fuse_moments_3_frames": ({**BEIT, **MOMENTS}, 3),
}


@pytest.mark.slow
def test_every_tower_family_exports_and_computes_what_smaug_computes(tokenizer_dir, tmp_path):
    """Exports of timm ViT, CLIP and BEiT towers, with temporal blocks (both scopes) and moments, SMAUG (fuse
    and drop) and dense, at frame counts other than training's, loaded by transformers in one fresh process
    where smaug cannot be imported: video and text features, retrieval logits and VTM logits equal the
    library's (1e-5; VTM 1e-4). Weights are perturbed, so every zero-initialised part takes part."""
    from smaug.data import load_tokenizer, tokenizer_fields
    from smaug.hf.export import write_hf_folder
    from smaug.models import SmaugConfig, SmaugModel

    tok = load_tokenizer(tokenizer_dir)
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    folders, videos, want = [], [], []
    for i, (name, (kw, frames)) in enumerate(VARIANTS.items()):
        kw = dict(kw)
        cfg = SmaugConfig.preset("tiny", dense=kw.pop("dense", False), **tokenizer_fields(tok), **kw)
        torch.manual_seed(i)
        model = perturbed(SmaugModel(cfg), seed=i)
        write_hf_folder(model, tmp_path / name, tokenizer_dir, verify=False)
        g = torch.Generator().manual_seed(100 + i)
        videos.append(torch.randint(0, 256, (3, frames, 3, 112, 112), dtype=torch.uint8, generator=g))
        want.append(library_outputs(model, videos[-1], enc["input_ids"], enc["attention_mask"]))
        folders.append(tmp_path / name)
    got = fresh_outputs(folders, videos, enc["input_ids"], enc["attention_mask"], tmp_path)
    for name, g_, w in zip(VARIANTS, got, want):
        diffs = assert_same_outputs(g_, w, name)
        print(f"\n{name}: max |diff| " + ", ".join(f"{k} {d:.2g}" for k, d in diffs.items()))
    # the comparisons are not between constants: the clips and the texts are told apart
    for name, w in zip(VARIANTS, want):
        assert w["video"].std(0).max() > 1e-3 and w["logits"].std() > 1e-3, name


def test_config_roundtrip_all_presets():
    """config.json holds every SmaugConfig field by its own name: nothing mapped by hand, so a new field
    needs no second edit to export."""
    import dataclasses

    from smaug.checkpoint import smaug_config_from_export
    from smaug.hf.convert import hf_config_from_smaug
    from smaug.models import SmaugConfig

    for cfg in (
        SmaugConfig.preset("tiny"),
        SmaugConfig.preset("base"),
        SmaugConfig.preset("tiny", dense=True),
        SmaugConfig.preset("base", num_frames=8, select_frames=3, keep_ratio=0.5, w_mlm=0.0),
        SmaugConfig.preset("tiny", temporal_moments=3, moments_xy=True, moments_centroid=True, moments_weight=0.3),
        SmaugConfig.preset("tiny", **BEIT, temporal_layers=2, temporal_scope="all"),
        SmaugConfig.preset("tiny", **CLIP),
    ):
        hf = hf_config_from_smaug(cfg)
        assert set(hf.smaug_config) == {f.name for f in dataclasses.fields(SmaugConfig)}
        assert smaug_config_from_export(hf.to_dict()) == cfg
        assert smaug_config_from_export(json.loads(hf.to_json_string())) == cfg  # as config.json holds it
        assert hf.projection_dim == cfg.embed_dim and hf.preprocessing["num_frames"] == cfg.num_frames


def test_exports_before_smaug_config_still_load_into_the_library():
    """config.json as exports wrote it before `smaug_config` (vision_config / text_config / pretraining), the
    format fine-tuning and evaluation still read: the same SmaugConfig comes back."""
    from smaug.checkpoint import smaug_config_from_export
    from smaug.models import SmaugConfig

    cfg = SmaugConfig.preset("tiny", temporal_moments=2, moments_centroid=True, vocab_size=300)
    old = {
        "model_type": "smaug",
        "vision_config": {
            "image_size": 112, "patch_size": 16, "num_frames": 4, "hidden_size": 192, "num_hidden_layers": 4,
            "num_attention_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True, "sparsify_layers": [1, 2],
            "keep_ratio": 0.7, "sparsify_mode": "fuse", "drop_path_rate": 0.0, "temporal_moments": 2,
            "moments_weight": 0.5, "moments_xy": False, "moments_centroid": True,
        },  # fmt: skip
        "text_config": {
            "vocab_size": 300, "hidden_size": 192, "num_hidden_layers": 6, "fusion_layer": 4,
            "num_attention_heads": 3, "intermediate_size": 768, "hidden_dropout_prob": 0.0,
            "max_position_embeddings": 128, "pad_token_id": 0, "mask_token_id": 103, "cls_token_id": 101,
            "sep_token_id": 102,
        },  # fmt: skip
        "projection_dim": 128, "temp_min": 0.001, "temp_max": 0.5, "select_frames": 2, "select_temp": 0.1,
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "pretraining": {
            k: getattr(cfg, k)
            for k in ("decoder_width", "decoder_depth", "decoder_heads", "mask_ratio", "vision_family", "temp_init")
        },
    }  # fmt: skip
    assert smaug_config_from_export(old) == cfg


@torch.no_grad()
@pytest.mark.parametrize("family", ["vit", "clip", "beit"])
def test_timm_vision_export_reproduces_the_frame_encoder(family):
    """Dense model (no token sparsification): timm's model of the family, built from the export's
    architecture and model_args and loaded strictly, on one frame == smaug's encoder on a 1-frame clip
    (the temporal embedding folded in). Temporal blocks and moments are listed as having no slot."""
    import timm

    from smaug.hf.convert import timm_export_config, timm_state_dict
    from smaug.models import SmaugConfig, SmaugModel

    kw = {"vit": {"vision_layer_scale": 0.1}, "clip": CLIP, "beit": BEIT}[family]
    cfg = SmaugConfig.preset("tiny", dense=True, temporal_layers=1, **MOMENTS, **kw)
    torch.manual_seed(0)
    model = perturbed(SmaugModel(cfg))  # the temporal embedding non-zero: its folding matters
    arch, args = timm_export_config(cfg)
    theirs_model = timm.create_model(arch, pretrained=False, num_classes=0, **args).eval()
    weights, dropped = timm_state_dict(model.state_dict(), cfg)
    res = theirs_model.load_state_dict(weights, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert set(dropped) == {"video_encoder.temporal_embed", "temporal.", "video_pooling.", "vision_proj."}
    frame = torch.randint(0, 256, (2, 1, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    x = model.normalize_video(frame)
    ours = model.video_encoder(x).tokens[:, 0]  # [2, 1 + N, D]
    theirs = theirs_model.forward_features(x[:, 0])
    diff = (ours - theirs).abs().max().item()
    print(f"\ntimm {arch} vs smaug frame encoder ({family}): max |diff| {diff:.3g}")
    assert diff < 1e-4
    assert (theirs_model.forward_head(theirs, pre_logits=True) - ours[:, 0]).abs().max() < 1e-4  # pooled = [CLS]


@pytest.mark.slow
def test_vision_only_cli_writes_a_strict_timm_state_dict(ckpt_w1, tmp_path):
    import timm

    out = tmp_path / "vit"
    r = run_tool("export_hf.py", "--checkpoint", ckpt_w1, "--out", out, "--vision-only", in_process=True)
    info = json.loads(r.stdout[r.stdout.index("{") :])
    vit = timm.create_model(info["architecture"], pretrained=False, num_classes=0, **info["timm_kwargs"])
    vit.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    same = timm.create_model(f"local-dir:{out}", pretrained=True)  # timm reads config.json's model_args
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), same.state_dict().values()))
    assert find_pickles(out) == []
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_args"]["embed_dim"] == 192 and "video_encoder.temporal_embed" in cfg["smaug_not_in_timm"]
    assert "video_pooling." in info["not_in_timm"] and "video_pooling." in (out / "README.md").read_text()


# ---------------------------------------------------------------------------- bad checkpoints
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tag(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nope'}: does not exist"):
        load_smaug_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a smaug checkpoint"):
        load_smaug_checkpoint(tmp_path)


def test_incomplete_checkpoint(ckpt_w1, tmp_path):
    run = _copy(ckpt_w1, tmp_path / "run")
    (_tag(run) / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="incomplete, no COMPLETE marker"):
        resolve_checkpoint(_tag(run))
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_smaug_checkpoint(run)


def test_truncated_checkpoint(ckpt_w1, tmp_path):
    run = _copy(ckpt_w1, tmp_path / "run")
    shard = next(_tag(run).glob("*_optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot be consolidated .*truncated") as e:
        load_smaug_checkpoint(run)
    assert str(_tag(run)) in str(e.value)


@pytest.mark.slow
def test_missing_zero_shard(ckpt_w2, tmp_path):
    run = _copy(ckpt_w2, tmp_path / "run")
    next(iter(sorted(_tag(run).glob("*rank_1*_optim_states.pt")))).unlink()
    with pytest.raises(CheckpointError, match=r"Expected 2 of '\*_optim_states.pt'"):
        load_smaug_checkpoint(run)


def test_mismatched_checkpoint(ckpt_w1):
    from smaug.models import SmaugModel

    cfg = load_smaug_checkpoint(ckpt_w1)[0]
    import dataclasses

    other = SmaugModel(dataclasses.replace(cfg, vision_width=96, vision_heads=3))
    with pytest.raises(
        CheckpointError, match=r"does not fit this model .*video_encoder.*\(192, 3, 16, 16\) vs model \(96"
    ):
        load_weights(other, ckpt_w1)


def test_temporal_embed_is_interpolated_to_more_frames(ckpt_w1):
    import dataclasses

    from smaug.models import SmaugModel

    cfg = load_smaug_checkpoint(ckpt_w1)[0]
    m = SmaugModel(dataclasses.replace(cfg, num_frames=8))
    assert load_weights(m, ckpt_w1) == ([], [])
    assert m.video_encoder.temporal_embed.shape[1] == 8


def test_bad_hf_folders(exported, tmp_path):
    broken = _copy(exported, tmp_path / "trunc")
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"{w}: unreadable"):
        load_smaug_checkpoint(broken)
    nofile = _copy(exported, tmp_path / "noweights")
    (nofile / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="HF folder without model.safetensors"):
        load_smaug_checkpoint(nofile)


def test_export_cli_reports_bad_checkpoint(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import export_hf as tool
    finally:
        sys.path.remove(str(REPO / "tools"))
    assert tool.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the processor
def _write_clips(folder: Path) -> list[tuple[str, str]]:
    """Two H.264 clips (160x96 and 64x48, 17 and 7 frames; decord cannot decode some odd sizes such as 48x40) + eval.json rows."""
    from smaug.data.transcode import encode_h264

    rng = np.random.default_rng(0)
    rows = []
    for name, (n, w, h) in {"wide.mp4": (17, 160, 96), "small.mp4": (7, 64, 48)}.items():
        # a blocky textured background (not per-pixel noise: x264 then codes every frame as an I-frame, and
        # decord's random access returns wrong frames on such streams) and a square that moves, so a wrong
        # frame choice shows
        bg = rng.integers(20, 200, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        frames = [bg.copy() for _ in range(n)]
        for i, f in enumerate(frames):
            f[h // 3 : h // 3 + 12, 4 * i : 4 * i + 12] = (230, 40 + 10 * i, 60)
        encode_h264(frames, 8, str(folder / name))
        rows.append((name, f"a clip named {name}"))
    (folder / "eval.json").write_text(json.dumps([{"video": v, "caption": c} for v, c in rows]))
    return rows


def test_processor_prepares_clips_and_captions_exactly_as_evaluation(exported, tmp_path):
    """Paths, bytes and decoded frames through `SmaugProcessor` give evaluation's clips bit for bit (the
    `--json` eval loader: decode scaled to the short side, segment centres, centre crop, antialiased resize),
    and evaluation's token ids; `do_normalize` is the model's own normalisation."""
    from smaug.data.json_clips import JsonClips
    from smaug.data.sources import read_rows
    from smaug.hf import SmaugHFModel, SmaugProcessor

    rows = _write_clips(tmp_path)
    proc = SmaugProcessor.from_pretrained(exported)
    cfg = json.loads((exported / "processor_config.json").read_text())
    assert cfg["auto_map"]["AutoProcessor"] == "processing_smaug.SmaugProcessor"
    T, S = proc.num_frames, proc.image_size
    for short_side in (proc.short_side, 64, 0):  # the export's (= image size), a scaled decode, full size
        p = SmaugProcessor.from_pretrained(exported, short_side=short_side)
        ref = JsonClips(read_rows("json", str(tmp_path / "eval.json")), str(tmp_path), T, S, short_side)
        want = torch.stack([ref[i].video.contiguous() for i in range(len(rows))])
        got = p(videos=[str(tmp_path / v) for v, _ in rows])["pixel_values"]
        assert got.dtype == torch.uint8 and got.shape == (2, T, 3, S, S)
        assert torch.equal(got, want), short_side
        assert torch.equal(p(videos=(tmp_path / rows[1][0]).read_bytes())["pixel_values"][0], want[1])
    # decoded frames: the same segment rule and crop, no decoder scaling (= the full-size decode above)
    import decord

    frames = decord.VideoReader(str(tmp_path / rows[0][0])).get_batch(list(range(17))).asnumpy()
    full = SmaugProcessor.from_pretrained(exported, short_side=0)
    assert torch.equal(full(videos=frames)["pixel_values"], full(videos=str(tmp_path / rows[0][0]))["pixel_values"])
    assert torch.equal(full(videos=[torch.from_numpy(frames)])["pixel_values"], full(videos=frames)["pixel_values"])
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        proc(videos=frames.astype(np.float32))
    # captions: evaluation's tokenisation (padded to the longest, truncated at max_text_len)
    from smaug.data import load_tokenizer
    from smaug.data.collate import tokenize

    caps = [c for _, c in rows] + ["word " * 100]
    enc = proc(text=caps)
    want_t = tokenize(load_tokenizer(str(exported)), caps, proc.max_text_len)
    assert torch.equal(enc["input_ids"], want_t["input_ids"]) and enc["input_ids"].shape[1] == proc.max_text_len
    assert torch.equal(enc["attention_mask"], want_t["attention_mask"])
    # normalised here == normalised in the model
    model = SmaugHFModel.from_pretrained(str(exported)).eval()
    px = proc(videos=[str(tmp_path / v) for v, _ in rows])["pixel_values"]
    norm = proc(videos=[str(tmp_path / v) for v, _ in rows], do_normalize=True)["pixel_values"]
    assert torch.equal(model.normalize_video(px), norm)
    # each half of the processor's output goes straight into the CLIP-style feature methods
    with torch.no_grad():
        out = model(**proc(text=caps[:2], videos=[str(tmp_path / v) for v, _ in rows]))
        v = model.get_video_features(**proc(videos=[str(tmp_path / v) for v, _ in rows], do_normalize=True))
        t = model.get_text_features(**proc(text=caps[:2]))
    torch.testing.assert_close(v, out.video_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(t, out.text_embeds, atol=1e-6, rtol=0)
    # save / load round trip
    proc.save_pretrained(tmp_path / "saved")
    back = SmaugProcessor.from_pretrained(tmp_path / "saved")
    assert back.to_dict() == proc.to_dict() and (tmp_path / "saved" / "frames.py").is_file()


# ---------------------------------------------------------------------------- as a transformers user loads it
TERMINAL = textwrap.dedent("""
    import sys
    sys.modules["smaug"] = None  # as on a machine without smaug
    import torch
    from transformers import AutoModel, AutoProcessor, AutoTokenizer
    folder, clip1, clip2 = sys.argv[1:4]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    texts = ["a red circle moves to the left", "the blue square goes up"]
    inputs = processor(text=texts, videos=[clip1, clip2], return_tensors="pt", padding=True)
    assert set(inputs) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values"}, set(inputs)
    assert torch.equal(inputs["input_ids"], tok(texts, return_tensors="pt", padding=True)["input_ids"])
    with torch.no_grad():
        out = model(**inputs)  # the line of every CLIP / X-CLIP model card
        match = model.get_vtm_logits(**inputs)
    print("SHAPES", tuple(out.logits_per_text.shape), tuple(match.shape))
""")
PROMPT = "Do you wish to run the custom code?"


@pytest.mark.slow
def test_export_loads_in_a_terminal_without_a_prompt(exported, tmp_path):
    """Tokenizer, processor and model loaded as the model card says, in a pseudo-terminal (where a prompt
    would show and wait, unlike a child with standard input closed), then the standard call
    `model(**processor(text=..., videos=paths, return_tensors="pt", padding=True))`: no prompt, no
    custom-code warning, exit 0."""
    rows = _write_clips(tmp_path)
    env = subprocess_env(HF_MODULES_CACHE=tmp_path / "hf_modules")
    env.pop("PYTHONPATH", None)
    clips = [tmp_path / name for name, _ in rows]
    text, rc = in_a_terminal([sys.executable, "-c", TERMINAL, exported, *clips], env, tmp_path, stop_at=(PROMPT,))
    assert PROMPT not in text and "custom code" not in text, text[-3000:]
    assert rc == 0 and "SHAPES (2, 2) (2,)" in text, text[-3000:]
    # the harness sees a prompt where there is one: transformers' AutoTokenizer reads config.json through
    # AutoConfig before tokenizer_config.json, so without the flag a model type it does not know asks
    # (README.md, "Export": the tokenizer loads with trust_remote_code=True, or as BertTokenizerFast)
    bare = f"from transformers import AutoTokenizer\nAutoTokenizer.from_pretrained({str(exported)!r})\n"
    text, _ = in_a_terminal([sys.executable, "-c", bare], env, tmp_path, stop_at=(PROMPT,))
    assert PROMPT in text


def test_processor_takes_the_transformers_processor_keywords(exported):
    """The keywords of the transformers processor API: return_tensors, padding, truncation, max_length, text-only
    and video-only calls; padding=True with return_tensors="pt" gives exactly what the model's forward takes."""
    from smaug.hf import SmaugHFModel, SmaugProcessor

    proc = SmaugProcessor.from_pretrained(exported)
    T, S = proc.num_frames, proc.image_size
    frames = torch.randint(0, 256, (9, 64, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    texts = ["a red circle moves to the left", "blue square"]
    both = proc(text=texts, videos=[frames, frames.flip(0)], return_tensors="pt", padding=True)
    assert set(both) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values"}
    assert both["pixel_values"].shape == (2, T, 3, S, S) and both["input_ids"].shape[0] == 2
    assert proc(text=texts, padding="max_length", max_length=20, return_tensors="pt")["input_ids"].shape == (2, 20)
    assert proc(text=["word " * 100], truncation=True, max_length=8)["input_ids"].shape == (1, 8)
    assert proc(text=["word " * 100])["input_ids"].shape == (1, proc.max_text_len)  # evaluation's default
    assert set(proc(videos=frames)) == {"pixel_values"} and proc(videos=frames)["pixel_values"].shape[0] == 1
    assert set(proc(text="one text")) == {"input_ids", "token_type_ids", "attention_mask"}
    assert isinstance(proc(text=texts, return_tensors="np", padding=True)["input_ids"], np.ndarray)
    model = SmaugHFModel.from_pretrained(str(exported)).eval()
    with torch.no_grad():
        out = model(**both)
        ref = model(
            input_ids=both["input_ids"], attention_mask=both["attention_mask"], pixel_values=both["pixel_values"]
        )
    assert torch.equal(out.logits_per_text, ref.logits_per_text)


@pytest.mark.slow
def test_model_card_states_the_run_and_its_results(pretrained_run, tmp_path):
    """The card of a run with an eval.json: what the run was (config name, preset, towers, steps, frames, image
    size) and its retrieval results in the Hugging Face model-index metadata, which the Hub shows."""
    from huggingface_hub import ModelCard

    info = export_hf(str(pretrained_run), tmp_path / "hf", verify=False)
    ev = json.loads((pretrained_run / "eval.json").read_text())
    card = ModelCard.load(tmp_path / "hf" / "README.md")
    run_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())["run"]
    assert run_cfg == info["run"] and run_cfg["name"] == "quickstart" and run_cfg["preset"] == "tiny"
    assert run_cfg["step"] == 8 and run_cfg["num_frames"] == 4 and run_cfg["image_size"] == 112
    assert card.data.model_name == "quickstart" and card.data.library_name == "transformers"
    got = {(r.task_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    res = ev["results"]
    assert got[("text-to-video-retrieval", "recall@1 (vtc)")] == round(res["vtc"]["t2v_r1"], 2)
    assert got[("video-to-text-retrieval", "recall@10 (combined)")] == round(res["combined"]["v2t_r10"], 2)
    assert got[("text-to-video-retrieval", "median_rank (vtm)")] == round(res["vtm"]["t2v_medr"], 2)
    assert {r.dataset_name for r in card.data.eval_results} == {Path(ev["protocol"]["split"]).name}  # a local path
    assert "run `quickstart` (config preset `tiny`" in card.text and "8 steps" in card.text
    assert "vision tower from scratch" in card.text and "4 frames at 112 px" in card.text
    assert "hf upload YOUR_ORG/YOUR_MODEL hf ." in card.text
