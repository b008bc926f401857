"""Optimizer parameter groups: which parameters decay, and their order in ZeRO's flat bf16 buffer."""

import torch

from smaug.models import SmaugConfig, SmaugModel
from smaug.train.optim import ALIGN, param_groups

from conftest import QS


def test_groups_split_decay_and_keep_every_parameter_once():
    model = SmaugModel(SmaugConfig.preset("tiny"))
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    assert {
        "vtc_log_temp",
        "video_encoder.pos_embed",
        "video_encoder.cls_token",
        "text_encoder.mlm_head.bias",
    } <= no_decay
    assert all(n.endswith("weight") for n in decay)
    assert not any(n.endswith(".bias") for n in decay)


def test_zero2_bf16_buffer_keeps_parameters_aligned(single_process_env):
    """ZeRO packs each group's bf16 parameters back to back and makes them views into that buffer.
    With the odd-sized ones last, every parameter of ALIGN or more elements starts 16-byte aligned
    (cuBLAS falls back to slow kernels on unaligned weights and biases: 3.4x on an H100's dense
    ViT forward); without that order the 1-element temperature shifted every bias."""
    import deepspeed

    from smaug.config import load_config, model_config
    from smaug.train.ds_config import build_ds_config

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo")
    cfg = load_config([QS], ["data.train_shards=unused", "train.precision=bf16", "train.device=cpu"], "/tmp/unused")
    model = SmaugModel(model_config(cfg))
    odd = [n for n, p in model.named_parameters() if p.numel() % ALIGN]
    assert "vtc_log_temp" in odd and "text_encoder.mlm_head.bias" in odd  # the case this guards
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=build_ds_config(cfg, 1, "cpu")
    )
    try:
        assert engine.module.vtc_log_temp.dtype == torch.bfloat16  # the views into the flat buffer
        misaligned = {n: p.numel() for n, p in engine.module.named_parameters() if p.data_ptr() % 16}
        assert all(size < ALIGN for size in misaligned.values()), misaligned
    finally:
        engine.destroy()


def test_lr_schedule_unmasked_tail_restarts_as_its_own_phase():
    """`train.unmasked_tail_lr` > 0: the main cosine reaches its floor where the tail starts, the tail warms up
    over a tenth of its steps to its own peak and decays to the same floor; 0 leaves the one cosine unchanged."""
    import math

    from smaug.train.optim import lr_factor

    warm, total, tail, floor = 50, 400, 150, 1e-3
    old = [lr_factor(s, warm, total, floor) for s in range(total)]
    assert old == [lr_factor(s, warm, total, floor, tail, 0.0) for s in range(total)]
    assert old[250] > 0.3  # without a phase of its own the tail starts at a third of the peak and decays from there
    new = [lr_factor(s, warm, total, floor, tail, 0.5) for s in range(total + 1)]
    assert new[:warm] == old[:warm] and max(new[:250]) == 1.0
    assert floor < new[249] < floor + 1e-4  # the main phase ends at the floor ...
    assert new[250] == 0.5 / 15 and max(new[250:]) == new[264] == 0.5  # ... the tail warms up over 15 steps
    assert all(a > b for a, b in zip(new[265:400], new[266:401]))  # then a cosine down
    assert math.isclose(new[400], floor)
