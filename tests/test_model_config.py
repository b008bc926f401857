"""SmaugConfig presets / validation and FLOPs (importing smaug.models without DeepSpeed: tests/test_layout.py)."""

import dataclasses

import pytest

from smaug.models import SmaugConfig
from smaug.models.flops import train_flops


def test_presets_and_dense_switch():
    base = SmaugConfig.preset("base")
    assert base == SmaugConfig()
    assert (base.vision_width, base.vision_depth, base.image_size, base.patch_size) == (768, 12, 224, 16)
    assert (base.text_width, base.text_layers, base.fusion_layer) == (768, 12, 9)  # BERT-base 9 + 3
    assert base.mask_ratio == 0.75 and not base.dense
    for name in ("tiny", "base"):
        d = SmaugConfig.preset(name, dense=True)
        assert d.dense and d.mask_ratio == 0 and d.sparsify_layers == () and d.select_frames == d.num_frames
        assert d.w_mvm == 0 and d.w_vtc == d.w_vtm == d.w_mlm == 1.0
    d = SmaugConfig.preset("base", dense=True, num_frames=8)
    assert d.select_frames == 8
    tiny = SmaugConfig.preset("tiny", keep_ratio=0.5, sparsify_layers=[2, 1])
    assert tiny.keep_ratio == 0.5 and tiny.sparsify_layers == (1, 2)
    # round-trips through a plain dict (YAML / checkpoint)
    assert SmaugConfig(**dataclasses.asdict(tiny)) == tiny


def test_unknown_and_conflicting_overrides_raise_with_the_name():
    with pytest.raises(ValueError, match="mask_ratoi"):
        SmaugConfig.preset("tiny", mask_ratoi=0.5)
    with pytest.raises(ValueError, match="unknown preset"):
        SmaugConfig.preset("huge")
    with pytest.raises(ValueError, match="select_frames"):
        SmaugConfig.preset("tiny", dense=True, select_frames=2)


@pytest.mark.parametrize(
    "field,value",
    [
        ("select_frames", 5),
        ("keep_ratio", 0.0),
        ("keep_ratio", 1.5),
        ("sparsify_layers", (4,)),
        ("fusion_layer", 6),
        ("image_size", 100),
        ("mask_ratio", 1.0),
        ("sparsify_mode", "merge"),
        ("mlm_prob", 0.0),
        ("mask_token_id", 10**6),
        ("temp_init", 0.9),
    ],
)
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SmaugConfig.{field}"):
        SmaugConfig.preset("tiny", **{field: value})


def test_flops_dense_costs_more_and_scale_with_batch():
    for name in ("tiny", "base"):
        smaug, dense = SmaugConfig.preset(name), SmaugConfig.preset(name, dense=True)
        f1, f2 = train_flops(smaug, 8, 32), train_flops(smaug, 16, 32)
        assert f2 == pytest.approx(2 * f1, rel=1e-9)
        assert train_flops(dense, 8, 32) > 1.5 * f1
    # ViT-B/16 forward on one 224px frame is ~35 GFLOPs (2x the 17.6 GMACs); base dense step is ~3x that per frame
    base_dense = SmaugConfig.preset("base", dense=True)
    per_frame = train_flops(base_dense, 1, 32) / base_dense.num_frames / 3
    assert 35e9 < per_frame < 60e9
