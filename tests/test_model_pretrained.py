"""Pretrained towers (smaug.models.pretrained): the three vision families and BERT, loaded by name
from a Hugging Face cache with HF_HUB_OFFLINE=1, equal to timm's / transformers' own outputs; BEiT's
relative position bias following the kept tokens; strict loading and the init report."""

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open

from smaug.models import SmaugConfig, SmaugModel
from smaug.models import pretrained as P
from smaug.models.vit_blocks import attention, bias_index, gathered_bias

from model_helpers import make_batch
from pretrained_helpers import FAMILIES, hub_repo, hub_snapshot, perturb, save_timm, timm_reference, tiny_bert_config


def build(vision_init=None, text_init=None, **overrides):
    cfg = P.init_config(SmaugConfig.preset("tiny", **overrides), vision_init, text_init, overrides)
    torch.manual_seed(0)
    model = SmaugModel(cfg).eval()
    return model, P.init_towers(model, vision_init, text_init)


@pytest.mark.parametrize("family", ["vit", "clip", "beit"])
def test_vision_family_by_name_equals_timm(family, hf_cache):
    name, ref, config = timm_reference(family)
    save_timm(hub_snapshot(hf_cache, hub_repo(name)), ref, config)
    frames = torch.randn(2, 4, 3, 112, 112)
    with torch.no_grad():
        want = ref.forward_features(frames.flatten(0, 1)).unflatten(0, (2, 4))
        # the cache is laid out as a hub download: timm itself loads it by name, offline
        via_timm = timm.create_model(name, pretrained=True, num_classes=10, **config["model_args"]).eval()
        torch.testing.assert_close(via_timm.forward_features(frames[0]), want[0], rtol=0, atol=0)

    model, report = build(name, dense=True)  # mask ratio 0, no sparsification
    cfg = model.config
    mean, std = FAMILIES[family][3]
    assert cfg.vision_family == family and cfg.mean == pytest.approx(mean) and cfg.std == pytest.approx(std)
    assert cfg.vision_act == ("quick_gelu" if family == "clip" else "gelu")
    assert cfg.vision_norm_eps == (1e-5 if family == "clip" else 1e-6)
    with torch.no_grad():
        tokens = model.video_encoder(frames).tokens
    if family == "beit":  # avg-pool model: no final norm in forward_features; smaug's is fresh (weight 1, bias 0)
        want = F.layer_norm(want, (192,), eps=1e-6)
    torch.testing.assert_close(tokens, want, rtol=0, atol=1e-5)

    v, sd = report["vision"], ref.state_dict()
    assert set(v["ignored"]) == {k for k in sd if k.startswith(("head.", "fc_norm."))}
    assert sorted(v["loaded"]) == sorted(set(sd) - set(v["ignored"]))
    assert set(v["new"]) == {"temporal_embed"} | ({"norm.weight", "norm.bias"} if family == "beit" else set())
    assert v["family"] == family and v["where"] == f"hub cache ({hub_repo(name)})" and v["mean"] == pytest.approx(mean)
    assert report["text"] is None and report["random_init"] == ["text"]

    # MAE masking + EViT sparsification on top: a training step runs and reaches every block
    model, _ = build(name)
    model.train()
    out = model(make_batch(model.config, batch_size=2))
    assert out.stats["kept_tokens"] == 4 * 8 and torch.isfinite(out.loss)
    out.loss.backward()
    for p in model.video_encoder.blocks[-1].parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_beit_bias_follows_the_kept_tokens():
    cfg = SmaugConfig.preset("tiny", dense=True, vision_family="beit", vision_abs_pos=False, vision_layer_scale=0.1)
    torch.manual_seed(0)
    enc = perturb(SmaugModel(cfg).video_encoder, 1)  # random bias tables (timm starts them at zero)
    blk, attn = enc.blocks[1], enc.blocks[1].attn
    R = attn.relative_position_bias_table.shape[0]
    full = attn._get_rel_pos_bias()[0]  # [H, 1 + N, 1 + N]: timm's bias of the unmasked frame
    # frame 0 ends with a fused token (-1): its pairs get zero bias (the stated rule)
    ids = torch.tensor([[3, 7, 8, 20, 48, -1], [0, 1, 2, 30, 31, 47]])
    bias = gathered_bias(attn, bias_index(attn.relative_position_index, ids, R))  # [M, H, 7, 7]
    for m in range(2):
        pos = torch.cat([torch.tensor([0]), ids[m] + 1])
        want = full[:, pos[:, None], pos[None, :]].clone()
        fused = torch.cat([torch.tensor([False]), ids[m] < 0])
        want[:, fused, :] = 0
        want[:, :, fused] = 0
        torch.testing.assert_close(bias[m], want, rtol=0, atol=0)

    # one BEiT block on MAE-kept tokens = timm's own block on the whole frame with the other keys masked out
    torch.manual_seed(1)
    x_full = torch.randn(2, 50, 192)
    kept = torch.tensor([[3, 7, 8, 20, 48], [0, 1, 2, 30, 31]])
    pos = torch.cat([torch.zeros(2, 1, dtype=torch.long), kept + 1], dim=1)  # [M, 6], [CLS] = 0
    x = x_full.gather(1, pos[..., None].expand(-1, -1, 192))
    keys = torch.full((2, 1, 50, 50), float("-inf"))
    for m in range(2):
        keys[m, :, :, pos[m]] = 0.0
    with torch.no_grad():
        ours, _ = enc.block_forward(blk, x, kept, bias_index(attn.relative_position_index, kept, R), sparsify=False)
        ref = blk(x_full, shared_rel_pos_bias=keys)
        torch.testing.assert_close(ours, ref.gather(1, pos[..., None].expand(-1, -1, 192)), rtol=0, atol=1e-5)
        # the sparsify block's [CLS] row includes the bias: softmax over the kept keys of timm's logits
        h = blk.norm1(x_full)
        qkv = F.linear(h, attn.qkv.weight, torch.cat([attn.q_bias, attn.k_bias, attn.v_bias]))
        q, k, _ = qkv.reshape(2, 50, 3, 3, 64).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1) + full[None, :, :1] + keys
        row = logits.softmax(-1).mean(1)[:, 0]  # [M, 50]
        _, cls_attn = attention(
            attn, blk.norm1(x), gathered_bias(attn, bias_index(attn.relative_position_index, kept, R)), cls_row=True
        )
        torch.testing.assert_close(cls_attn, row.gather(1, kept + 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["extra", "missing", "shape"])
def test_strict_loading_names_the_key(case, tmp_path, hf_cache):
    _, ref, config = timm_reference("vit")
    sd = ref.state_dict()
    bad, key = {
        "extra": ({**sd, "blocks.0.attn.extra_scale": torch.ones(3)}, "blocks.0.attn.extra_scale"),
        "missing": ({k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.weight"}, "blocks.1.mlp.fc2.weight"),
        "shape": ({**sd, "blocks.2.norm1.weight": torch.ones(191)}, "blocks.2.norm1.weight"),
    }[case]
    folder = save_timm(tmp_path / case, ref, config, bad)
    with pytest.raises(P.InitError, match=re.escape(key)):
        build(str(folder))


def test_sizes_and_overrides_that_contradict_the_checkpoint_are_refused(tmp_path, hf_cache):
    for field, extra in (("vision_depth", dict(depth=6)), ("vision_heads", dict(num_heads=6))):
        _, ref, config = timm_reference("vit", **extra)
        folder = save_timm(tmp_path / field, ref, config)
        with pytest.raises(P.InitError, match=f"{field}="):
            build(str(folder))
    _, ref, config = timm_reference("beit")
    folder = save_timm(tmp_path / "beit", ref, config)
    with pytest.raises(P.InitError, match=r"model.mean"):
        build(str(folder), mean=(0.485, 0.456, 0.406))
    with pytest.raises(P.InitError, match="beit_nothing_here"):  # not in the cache, offline: names repo and cache
        build("beit_nothing_here.in1k")


def test_bare_weights_file_keeps_config_mean_and_resamples(tmp_path):
    _, big, _ = timm_reference("vit", img_size=224)  # a 224 px checkpoint into the 112 px model
    torch.save({"model": big.state_dict()}, tmp_path / "mae_style.pth")  # MAE's wrapper
    model, report = build(str(tmp_path / "mae_style.pth"))
    v = report["vision"]
    assert v["resampled"] == ["pos_embed"] and model.video_encoder.pos_embed.shape == (1, 50, 192)
    assert model.config.mean == SmaugConfig().mean and "no pretrained_cfg" in v["mean_std_from"]
    torch.testing.assert_close(model.video_encoder.blocks[0].attn.qkv.weight, big.blocks[0].attn.qkv.weight)


def _keys(path):
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def test_bert_by_name_equals_transformers(tmp_path, hf_cache):
    from transformers import BertForPreTraining, BertModel

    torch.manual_seed(3)
    bert = perturb(BertForPreTraining(tiny_bert_config()), 4)
    snap = hub_snapshot(hf_cache, "bert-base-uncased")
    bert.save_pretrained(snap)
    model, report = build(text_init="bert-base-uncased")
    ids = torch.tensor([[101, 2000, 2001, 2002, 102, 0], [101, 3000, 3001, 102, 0, 0]])
    am = (ids != 0).long()
    with torch.no_grad():
        out = bert(input_ids=ids, attention_mask=am, output_hidden_states=True)
        h, _ = model.encode_text(ids, am)
        # text layers = BERT's first fusion_layer=4 layers; the MLM head reproduces BERT's logits
        torch.testing.assert_close(h * am[..., None], out.hidden_states[4] * am[..., None], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            model.text_encoder.mlm_logits(out.hidden_states[-1][0]), out.prediction_logits[0], rtol=0, atol=1e-4
        )
    # fusion layers: BERT's layers 4, 5 (self-attention + FFN), cross-attention new
    fl = model.text_encoder.fusion[1]
    assert torch.equal(fl.attention.self.query.weight, bert.bert.encoder.layer[5].attention.self.query.weight)
    assert torch.equal(fl.output.dense.weight, bert.bert.encoder.layer[5].output.dense.weight)
    t = report["text"]
    keys = _keys(snap / "model.safetensors")
    assert set(t["ignored"]) == {
        k for k in keys if k.startswith(("bert.pooler.", "cls.seq_relationship.", "cls.predictions.decoder."))
    }
    assert len(t["loaded"]) == len(keys) - len(t["ignored"])
    assert t["new"] and all(".crossattention." in k for k in t["new"])

    # a BertModel folder (no MLM head, no `bert.` prefix) with old LayerNorm gamma/beta names
    plain = BertModel(tiny_bert_config(), add_pooling_layer=False).eval()
    sd = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in plain.state_dict().items()
    }
    (tmp_path / "old").mkdir()
    torch.save(sd, tmp_path / "old" / "pytorch_model.bin")
    plain.config.to_json_file(str(tmp_path / "old" / "config.json"))
    model, report = build(text_init=str(tmp_path / "old"))
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_text(ids, am)[0] * am[..., None],
            plain(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states[4] * am[..., None],
            rtol=0,
            atol=1e-5,
        )
    assert any(k.startswith("mlm_head.") for k in report["text"]["new"])
    # sizes that do not fit the model config are refused, naming the field
    big = BertModel(tiny_bert_config(), add_pooling_layer=False)
    big.config.num_hidden_layers = 8
    big.config.to_json_file(str(tmp_path / "old" / "config.json"))
    P.describe_text.cache_clear()
    with pytest.raises(P.InitError, match="text_layers=8"):
        build(text_init=str(tmp_path / "old"))
