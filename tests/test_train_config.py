"""Run-config validation and DeepSpeed-config derivation: fail fast, name the key."""

import dataclasses
import json
import sys

import pytest
import yaml

from smaug.config import SECTIONS, ConfigError, load_config
from smaug.data import DataConfig
from smaug.train.ds_config import build_ds_config

from conftest import CONFIGS, QS, REPO, run


def _load(*overrides, files=(QS,)):
    return load_config(list(files), list(overrides), output_dir="/tmp/unused-out")


def test_base_yaml_documents_every_knob_with_its_default():
    """base.yaml is the documented list of knobs: same keys and defaults as the dataclasses."""
    tree = yaml.safe_load((CONFIGS / "base.yaml").read_text())
    text = (CONFIGS / "base.yaml").read_text()
    for name, cls in {**SECTIONS, "data": DataConfig}.items():
        fields = {f.name: f for f in dataclasses.fields(cls) if (name, f.name) != ("model", "knobs")}
        assert set(tree[name]) == set(fields), f"base.yaml section {name!r} out of sync with {cls.__name__}"
        for k, f in fields.items():
            if f.default is not dataclasses.MISSING:
                want = list(f.default) if isinstance(f.default, tuple) else f.default
                got = tree[name][k]
                if isinstance(want, (float, list)) and not isinstance(want, bool):
                    assert got == pytest.approx(want), f"{name}.{k}"
                else:
                    assert got == want, f"{name}.{k}"
    for line in text.splitlines():  # every knob line carries a comment
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            assert "#" in line, f"undocumented knob in base.yaml: {line!r}"


def test_all_shipped_configs_load():
    no_init = [
        "model.vision_init=null",
        "model.text_init=null",
        "model.allow_random_init=true",
        "model.tokenizer=bert-base-uncased",
    ]  # pretrain_5m's towers are not in the test's HF cache
    for f in ("base.yaml", "pretrain_5m.yaml", "quickstart.yaml"):
        cfg = load_config(
            [str(CONFIGS / f)],
            (["data.train_shards=corpus:x"] if f == "base.yaml" else []) + (no_init if f != "quickstart.yaml" else []),
            output_dir="/tmp/x",
        )
        assert cfg.run.output_dir == "/tmp/x"
    dense = load_config([QS, str(CONFIGS / "dense.yaml")], [], output_dir="/tmp/x")
    assert dense.model.dense and dense.model.preset == "tiny"


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1e-3", "optim.lrr"),
        ("nosuch.x=1", "nosuch"),
        ("data.batchsize=4", "data.batchsize"),
        ("model.not_a_field=1", "model.not_a_field"),
        ("train.steps=ten", "train.steps"),
        ("optim.lr=fast", "optim.lr"),
        ("train.precision=fp16", "train.precision"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("optim.warmup_steps=100000", "optim.warmup_steps"),
        ("model.select_frames=9", "select_frames"),
        ("model.image_size=96", "model.image_size"),
        ("model.vocab_size=96", "model.vocab_size"),
        ("model.decoder_depth=two", "model.decoder_depth"),
        ("model.dense=maybe", "model.dense"),
        ("ckpt.keep=0", "ckpt.keep"),
        ("data.train_shards=null", "data.train_shards"),
    ],
)
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        _load(override)
    assert key in str(e.value)


def test_numeric_strings_and_ints_are_accepted_for_floats():
    cfg = _load("optim.lr=3e-4", "optim.weight_decay=0")
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.weight_decay, float)


def test_output_dir_is_required():
    with pytest.raises(ConfigError, match="run.output_dir"):
        load_config([QS], [], output_dir=None)


def test_ds_config_is_derived_from_the_run_config():
    cfg = _load(
        "data.batch_size=6", "train.grad_accum=3", "optim.lr=2e-4", "optim.betas=[0.8,0.95]", "optim.grad_clip=0.5"
    )
    ds = build_ds_config(cfg, world_size=4, device="cpu")
    assert ds["gradient_clipping"] == 0.5  # the shipped JSONs leave it "auto": optim.grad_clip is the one source
    assert ds["train_micro_batch_size_per_gpu"] == 6
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 6 * 3 * 4
    assert ds["optimizer"]["params"]["lr"] == 2e-4
    assert ds["optimizer"]["params"]["betas"] == [0.8, 0.95]
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["bf16"]["enabled"] is False  # quickstart is fp32
    assert ds["zero_optimization"]["stage"] == 2
    gpu = build_ds_config(cfg, world_size=8, device="cuda")
    assert gpu["optimizer"]["params"]["torch_adam"] is False  # FusedAdam on GPU


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"train_micro_batch_size_per_gpu": 99}, "train_micro_batch_size_per_gpu"),
        ({"train_batch_size": 1000}, "train_batch_size"),
        ({"gradient_clipping": 5.0}, "gradient_clipping"),
        ({"optimizer": {"type": "AdamW", "params": {"lr": 0.5, "torch_adam": True}}}, "optimizer.params.lr"),
        ({"bf16": {"enabled": True}}, "bf16.enabled"),
        ({"scheduler": {"type": "WarmupLR"}}, "scheduler"),
        ({"zero_optimization": {"stage": 2, "compute_grad_norm": False}}, "compute_grad_norm"),  # guard would be blind
    ],
)
def test_ds_json_mismatch_is_refused(tmp_path, patch, key):
    base = json.loads((REPO / "ds_configs" / "zero2_cpu.json").read_text())
    base.update(patch)
    p = tmp_path / "ds.json"
    p.write_text(json.dumps(base))
    cfg = _load(f"train.ds_config={p}")
    with pytest.raises(ConfigError) as e:
        build_ds_config(cfg, world_size=1, device="cpu")
    assert key in str(e.value)


def test_fused_adam_json_refused_on_cpu():
    cfg = _load(f"train.ds_config={REPO / 'ds_configs' / 'zero2_gpu.json'}")
    with pytest.raises(ConfigError, match="torch_adam"):
        build_ds_config(cfg, world_size=1, device="cpu")


def test_cli_rejects_bad_key_before_compute(tmp_path):
    """The CLI exits 2 with the key named, and builds nothing (no output dir, no engine)."""
    out = tmp_path / "run"
    r = run(
        [sys.executable, "-m", "smaug.train", "--config", QS, "--out", out, "optim.lrr=1"], check=False, timeout=120
    )
    assert r.returncode == 2
    assert "optim.lrr" in r.stderr
    assert not out.exists()


def test_base_run_without_pretrained_towers_is_refused(tmp_path, monkeypatch):
    """A base pre-training run with neither init set stops before any compute (exit 2, no output dir)."""
    from huggingface_hub import constants

    from smaug.train.trainer import main

    tree = yaml.safe_load((CONFIGS / "pretrain_5m.yaml").read_text())["model"]
    assert (tree["vision_init"], tree["text_init"]) == ("beit_base_patch16_224.in22k_ft_in22k", "bert-base-uncased")
    out = tmp_path / "run"
    args = [
        "--config",
        str(CONFIGS / "pretrain_5m.yaml"),
        "--out",
        str(out),
        "model.vision_init=null",
        "model.text_init=null",
        "model.tokenizer=bert-base-uncased",
    ]
    assert main(args) == 2 and not out.exists()
    with pytest.raises(ConfigError, match=r"model.vision_init / model.text_init"):
        load_config([str(CONFIGS / "pretrain_5m.yaml")], args[4:], output_dir=str(out))
    cfg = load_config([str(CONFIGS / "pretrain_5m.yaml")], [*args[4:], "model.allow_random_init=true"], str(out))
    assert cfg.model.allow_random_init and cfg.model.preset == "base"
    with pytest.raises(ConfigError, match="model.tokenizer"):  # neither a tokenizer nor a text_init to take it from
        load_config([str(CONFIGS / "pretrain_5m.yaml")], [*args[4:6], "model.allow_random_init=true"], str(out))
    # the shipped recipe as it is, with an empty HF cache offline: refused naming the repo, before compute
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    assert main(args[:4]) == 2 and not out.exists()
    with pytest.raises(ConfigError, match=r"timm/beit_base_patch16_224.in22k_ft_in22k"):
        load_config([str(CONFIGS / "pretrain_5m.yaml")], [], str(out))


def test_cli_takes_overrides_between_config_files():
    """`--config a.yaml key=value --config b.yaml key=value`: argparse's plain parse_args refused the
    overrides before a later --config ("unrecognized arguments")."""
    from smaug.train.trainer import parse_args

    args = parse_args(["--config", QS, "optim.lr=1e-3", "--config", "dense.yaml", "--out", "x", "train.steps=5"])
    assert args.config == [QS, "dense.yaml"] and args.overrides == ["optim.lr=1e-3", "train.steps=5"]


def test_model_knobs_are_exactly_the_dataclass_fields():
    """The run config's model knobs are SmaugConfig's own fields, derived: every field is accepted by its name with
    its type, nothing else is, and a new field needs no second edit."""
    from smaug.config import model_section
    from smaug.models import SmaugConfig

    values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(SmaugConfig()).items()}
    assert model_section(values).knobs.keys() == values.keys()
    own = {f.name for f in dataclasses.fields(SECTIONS["model"])} - {"knobs"}
    assert not own & values.keys()  # the run-level model options and the model's fields never share a name
    with pytest.raises(ConfigError, match=r"model.not_a_field: unknown key"):
        model_section({"not_a_field": 1})
    for field, bad in (("mask_ratio", "lots"), ("sparsify_layers", 3), ("moments_xy", "yes"), ("decoder_depth", 2.5)):
        with pytest.raises(ConfigError, match=f"model.{field}"):
            model_section({field: bad})


def test_model_knobs_are_typed_and_the_saved_spelling_still_loads():
    """Model knobs are written flat (model.mask_ratio, ...): typed, validated, unset = the preset's;
    `model.overrides.<field>`, the spelling of run configs that checkpoints saved before, is read as the same field."""
    from smaug.config import model_config

    cfg = _load("model.mask_ratio=0.9", "model.sparsify_layers=[2]", "model.select_frames=3", "model.mlm_prob=0.3")
    m = model_config(cfg)
    assert (m.mask_ratio, m.sparsify_layers, m.select_frames, m.mlm_prob) == (0.9, (2,), 3, 0.3)
    assert model_config(_load()).sparsify_layers == (1, 2)  # unset: the tiny preset's
    saved = _load("model.overrides={keep_ratio: 0.5, vtm_switch_acc: 0.8}")
    assert saved.model.knobs["keep_ratio"] == 0.5 and saved.model.knobs["vtm_switch_acc"] == 0.8
    assert _load("model.overrides={keep_ratio: 0.5}", "model.keep_ratio=0.6").model.knobs["keep_ratio"] == 0.6
    assert "overrides" not in saved.to_dict()["model"] and saved.to_dict()["model"]["keep_ratio"] == 0.5
    with pytest.raises(ConfigError, match="model.mask_ratio"):
        _load("model.mask_ratio=lots")
    with pytest.raises(ConfigError, match="model.sparsify_mode"):
        _load("model.sparsify_mode=merge")


def test_preset_and_data_frame_size_must_agree():
    """The tiny preset is built for 112 px: a different data.image_size is refused, not silently applied."""
    with pytest.raises(ConfigError, match=r"data.image_size: 224, but model.preset=tiny is built for image_size=112"):
        _load("data.image_size=224")
    assert _load("data.num_frames=6").data.num_frames == 6  # no preset fixes the frame count


def test_saved_config_spells_the_model_knobs_flat_and_loads_back(tmp_path):
    """config.yaml (and the checkpoint's client state) write the model's knobs as YAML spells them, and load back."""
    from smaug.config import save_resolved

    cfg = _load("model.keep_ratio=0.5", "model.vtm_switch_acc=0.8")
    d = cfg.to_dict()
    assert "knobs" not in d["model"] and d["model"]["keep_ratio"] == 0.5 and d["model"]["vtm_switch_acc"] == 0.8
    save_resolved(cfg, tmp_path / "config.yaml")
    again = load_config([str(tmp_path / "config.yaml")], [], output_dir="/tmp/unused-out")
    assert again.model.knobs == cfg.model.knobs and again.to_dict() == d
