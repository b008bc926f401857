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
from safetensors.torch import load_file, save_file

from smaug.checkpoint import CheckpointError, load_smaug_checkpoint, load_weights, resolve_checkpoint
from smaug.hf.export import export_hf, find_pickles

from conftest import REPO, run, run_tool, subprocess_env
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
FRESH = f"CAPTIONS = {CAPTIONS!r}\n" + textwrap.dedent("""
    import sys
    sys.modules["smaug"] = None  # any import of smaug raises ImportError, as where it is not installed
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoTokenizer
    folder, inputs, out = sys.argv[1:4]
    x = load_file(inputs)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder)  # plain: no custom code to trust, no prompt
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    ids = enc["input_ids"]
    with torch.no_grad():
        o = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], pixel_values=x["video"])
        vtm = model.get_vtm_logits(x["video"], x["input_ids"], x["attention_mask"])
        idiom = model.get_text_features(**enc)  # what every model card does (token_type_ids included)
        both = model(**enc, pixel_values=x["video"])
    loaded = sorted(m for m in sys.modules if m.startswith("smaug."))
    assert not loaded, f"smaug was imported: {loaded}"
    save_file({"video": o.video_embeds.contiguous(), "text": o.text_embeds.contiguous(),
               "logits_per_text": o.logits_per_text.contiguous(), "logits_per_video": o.logits_per_video.contiguous(),
               "vtm": vtm.contiguous(), "temp": model.temp.detach().reshape(1), "ids": ids.contiguous(),
               "idiom": idiom.contiguous(), "both": both.logits_per_text.contiguous()}, out)
    print(type(model).__module__, type(model).__name__)
""")


@pytest.mark.slow
def test_export_fidelity_in_fresh_process_without_smaug(ckpt_w1, exported, tokenizer_dir, tmp_path):
    model, cfg = training_model(ckpt_w1)
    from smaug.data import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    video = torch.randint(
        0, 256, (3, cfg.num_frames, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g
    )
    save_file(
        {"video": video, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
        str(tmp_path / "inputs.safetensors"),
    )
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    r = run(
        [
            sys.executable,
            "-c",
            FRESH,
            str(exported),
            str(tmp_path / "inputs.safetensors"),
            str(tmp_path / "out.safetensors"),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert "modeling_smaug SmaugHFModel" in r.stdout
    got = load_file(str(tmp_path / "out.safetensors"))
    assert torch.equal(got["ids"], enc["input_ids"])  # the exported tokenizer, loaded with plain transformers
    with torch.no_grad():
        ref_v = model.get_video_features(video)
        ref_t = model.get_text_features(enc["input_ids"], enc["attention_mask"])
        ft, _, ff = model.encode_video(video)
        th, tf = model.encode_text(enc["input_ids"], enc["attention_mask"])
        ref_vtm = model.vtm_logits(ft, ff, th, tf, enc["attention_mask"])
    dv = (got["video"] - ref_v).abs().max().item()
    dt = (got["text"] - ref_t).abs().max().item()
    dm = (got["vtm"] - ref_vtm).abs().max().item()
    print(f"\nexport fidelity (fresh process, no smaug): max |diff| video {dv:.3g}, text {dt:.3g}, vtm logits {dm:.3g}")
    assert dv <= 1e-5 and dt <= 1e-5 and dm <= 1e-4
    temp = float(got["temp"][0])
    assert temp == pytest.approx(float(model.temp.detach()))
    assert torch.allclose(got["logits_per_text"], got["text"] @ got["video"].t() / temp, atol=1e-5)
    assert torch.equal(got["logits_per_video"], got["logits_per_text"].t())
    # the **tokenizer(...) idiom: the same tokenizer output, token_type_ids and all, gives the same embeddings
    assert (got["idiom"] - ref_t).abs().max().item() <= 1e-5
    torch.testing.assert_close(got["both"], got["logits_per_text"], atol=1e-5, rtol=0)


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
    assert {"vision_config", "text_config", "preprocessing", "run_config"} <= set(cfg)
    assert set(cfg["preprocessing"]) >= {"num_frames", "image_size", "mean", "std"}
    card = (exported / "README.md").read_text()
    assert "## Training configuration" in card and "preset: tiny" in card and "max |diff|" in card
    # the exported code files are byte copies of the single source in smaug/hf/ and smaug/models/
    from smaug.hf import CODE_FILES

    assert {f.name for f in CODE_FILES} >= {"frame_tokens.py", "frame_selection.py", "moments.py"}
    assert {p.name for p in exported.glob("*.py")} == {f.name for f in CODE_FILES}  # no code file missing or extra
    for f in CODE_FILES:
        assert (exported / f.name).read_bytes() == f.read_bytes(), f.name
    assert cfg["vision_config"]["temporal_moments"] == 2 and cfg["vision_config"]["moments_centroid"]


def test_shared_library_modules_import_only_torch_and_the_standard_library():
    """The library modules copied byte for byte into every HF export (frame_tokens, frame_selection,
    moments) must run without smaug, timm or numpy: only torch and the standard library."""
    from transformers.dynamic_module_utils import get_imports

    from smaug.hf import CODE_FILES

    shared = [f for f in CODE_FILES if f.parent.name == "models"]
    assert len(shared) == 3
    for f in shared:
        assert set(get_imports(str(f))) <= {"torch", "__future__", *sys.stdlib_module_names}, f.name


def test_auto_classes_registered_with_smaug_installed(exported):
    from transformers import AutoConfig, AutoModel

    import smaug.hf

    assert type(AutoConfig.from_pretrained(exported)) is smaug.hf.SmaugHFConfig
    model = AutoModel.from_pretrained(exported)  # no trust_remote_code: the registered local class
    assert type(model) is smaug.hf.SmaugHFModel


def test_hf_folder_loads_back_into_smaug(exported, ckpt_w1):
    """An exported folder is a valid `model.init_from` / eval checkpoint: same config, same weights."""
    from smaug.models import SmaugModel

    cfg_a, sd_a, rc_a, _ = load_smaug_checkpoint(ckpt_w1)
    cfg_b, sd_b, rc_b, tok_b = load_smaug_checkpoint(exported)
    assert cfg_a == cfg_b and rc_a == rc_b and tok_b == str(exported)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    m = SmaugModel(cfg_b)
    missing, unexpected = load_weights(m, exported)
    assert missing == [] and unexpected == []


@pytest.mark.parametrize(
    "variant, frames",
    [
        ({}, 4),
        ({"sparsify_mode": "drop"}, 4),
        ({"dense": True}, 4),
        ({}, 6),  # a frame count other than training's: the temporal embedding is interpolated
        ({"temporal_moments": 1, "moments_xy": False, "moments_centroid": False}, 4),
        ({"temporal_moments": 3, "moments_centroid": False}, 5),
        ({"moments_weight": 1.0}, 4),  # the moments' share: the config's, in both models
    ],
)
def test_hf_model_computes_what_smaug_computes(variant, frames):
    """In-process parity of the exported modeling code with SmaugModel, for what the fresh-process test
    above does not cover: EViT drop mode, the dense baseline, other frame counts, with and without the
    temporal moments (spatial moments, saliency centroid, a third moment)."""
    from smaug.hf import SmaugHFModel
    from smaug.hf.convert import hf_config_from_smaug
    from smaug.models import SmaugConfig, SmaugModel

    kw = {"temporal_moments": 2, "moments_xy": True, "moments_centroid": True, **variant}
    dense = kw.pop("dense", False)
    cfg = SmaugConfig.preset("tiny", dense=dense, vocab_size=300, **kw)
    torch.manual_seed(0)
    model = SmaugModel(cfg).eval()
    with torch.no_grad():  # a trained-looking readout: the moments' share of the embedding is not ~0
        if model.temporal_moments is not None:
            model.temporal_moments.proj.weight.normal_(0, 0.5)
    hf = SmaugHFModel(hf_config_from_smaug(cfg)).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and all(k.startswith(("mae_decoder.", "text_encoder.mlm_head.")) for k in unexpected)
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (3, frames, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g)
    ids = torch.randint(5, 300, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        ft, fv, ff = model.encode_video(video)
        th, tf = model.encode_text(ids, mask)
        ref_vtm = model.vtm_logits(ft, ff, th, tf, mask)
        torch.testing.assert_close(hf.get_video_features(video), fv, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf.get_text_features(ids, mask), tf, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf.get_vtm_logits(video, ids, mask), ref_vtm, atol=1e-4, rtol=0)
        if model.temporal_moments is not None:  # the moments are really in it: reversing the clip moves it
            assert (hf.get_video_features(video.flip(1)) - fv).abs().max() > 1e-3


def test_config_roundtrip_all_presets():
    from smaug.hf import SmaugHFConfig
    from smaug.hf.convert import hf_config_from_smaug, smaug_config_from_hf
    from smaug.models import SmaugConfig

    for cfg in (
        SmaugConfig.preset("tiny"),
        SmaugConfig.preset("base"),
        SmaugConfig.preset("tiny", dense=True),
        SmaugConfig.preset("base", num_frames=8, select_frames=3, keep_ratio=0.5, w_mlm=0.0),
        SmaugConfig.preset("tiny", temporal_moments=3, moments_xy=True, moments_centroid=True, moments_weight=0.3),
    ):
        hf = hf_config_from_smaug(cfg)
        assert smaug_config_from_hf(hf) == cfg
        assert smaug_config_from_hf(SmaugHFConfig.from_dict(hf.to_dict())) == cfg


@torch.no_grad()
def test_timm_vision_export_reproduces_the_frame_encoder():
    """Dense model (no token sparsification): timm's ViT on one frame == smaug's encoder on a 1-frame clip."""
    import timm

    from smaug.hf.convert import timm_vit_kwargs, timm_vit_state_dict
    from smaug.models import SmaugConfig, SmaugModel

    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny", dense=True)
    model = SmaugModel(cfg).eval()
    model.video_encoder.temporal_embed.normal_(std=0.1)  # non-zero, so the folding into pos_embed matters
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, **timm_vit_kwargs(cfg)).eval()
    res = vit.load_state_dict(timm_vit_state_dict(model.state_dict(), cfg), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    frame = torch.randint(0, 256, (2, 1, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    x = model.normalize_video(frame)
    ours = model.video_encoder(x).tokens[:, 0]  # [2, 1 + N, D]
    theirs = vit.forward_features(x[:, 0])
    diff = (ours - theirs).abs().max().item()
    print(f"\ntimm ViT vs smaug frame encoder: max |diff| {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.slow
def test_vision_only_cli_writes_a_strict_timm_state_dict(ckpt_w1, tmp_path):
    import timm

    out = tmp_path / "vit"
    r = run_tool("export_hf.py", "--checkpoint", ckpt_w1, "--out", out, "--vision-only", in_process=True)
    info = json.loads(r.stdout[r.stdout.index("{") :])
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, **info["timm_kwargs"])
    vit.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    same = timm.create_model(f"local-dir:{out}", pretrained=True)  # timm reads config.json's model_args
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), same.state_dict().values()))
    assert find_pickles(out) == []
    assert json.loads((out / "config.json").read_text())["model_args"]["embed_dim"] == 192


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
