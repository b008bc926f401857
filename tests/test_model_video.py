"""Video side: token counts (masking, sparsification, frame selection), EViT fusion, the single
attention pass of sparsify blocks (pretrained weights: test_model_pretrained.py)."""

import pytest
import torch

from smaug.models import SmaugConfig, SmaugModel
from smaug.models.video_encoder import attention_with_cls_row, random_masking, sparsify_tokens, token_schedule

from model_helpers import make_batch


def _model(dense=False, **kw):
    torch.manual_seed(0)
    return SmaugModel(SmaugConfig.preset("tiny", dense=dense, **kw))


def test_token_counts_smaug_and_dense():
    # tiny: 112 / 16 = 7 -> 49 patches per frame, 4 frames, keep 0.7 at blocks 1 and 2, 2 of 4 frames
    batch = make_batch(SmaugConfig.preset("tiny"), batch_size=2)
    m = _model()
    m.train()
    out = m(batch)
    # masking: int(49 * 0.25) = 12 visible; block 1: ceil(0.7*12)=9 kept + 1 fused = 10;
    # block 2: ceil(0.7*10)=7 + 1 = 8 per frame
    assert out.stats["visible_tokens"] == 4 * 12
    assert out.stats["kept_tokens"] == 4 * 8
    assert out.stats["selected_frames"] == 2 and out.stats["fusion_tokens"] == 2 * (1 + 8)
    frame_tokens, video_feat, frame_feat = m.encode_video(batch["video"])  # train mode: masked
    assert frame_tokens.shape == (2, 4, 1 + 8, 192) and frame_feat.shape == (2, 4, 128) and video_feat.shape == (2, 128)
    fusion = m.select_frames(frame_tokens, frame_feat, frame_feat[:, 0])
    assert fusion.shape == (2, 2 * 9, 192)
    m.eval()  # no masking at eval: 49 -> ceil(34.3)=35+1=36 -> ceil(25.2)=26+1=27
    assert m.encode_video(batch["video"])[0].shape == (2, 4, 1 + 27, 192)
    assert token_schedule(49, 4, (1, 2), 0.7, "fuse") == [(49, 49), (49, 36), (36, 27), (27, 27)]

    d = _model(dense=True)
    out = d(batch)
    assert (out.stats["visible_tokens"], out.stats["kept_tokens"], out.stats["selected_frames"]) == (196, 196, 4)
    assert out.stats["fusion_tokens"] == 4 * 50
    assert float(out.losses["mvm"]) == 0 and d.mae_decoder is None and d.frame_selector is None

    drop = _model(sparsify_mode="drop")
    out = drop(batch)  # 12 -> 9 -> ceil(6.3) = 7
    assert out.stats["kept_tokens"] == 4 * 7


def test_random_masking_is_per_frame_and_exact():
    torch.manual_seed(0)
    x = torch.randn(6, 49, 8)
    x_vis, mask, ids = random_masking(x, 0.75)
    assert x_vis.shape == (6, 12, 8) and (mask.sum(1) == 37).all()
    assert torch.equal(x_vis, x.gather(1, ids[..., None].expand(-1, -1, 8)))
    assert torch.equal(mask.gather(1, ids), torch.zeros(6, 12))
    assert len({tuple(r.tolist()) for r in ids}) > 1  # frames draw different masks


def test_fused_token_is_attention_weighted_mean_of_dropped_tokens():
    torch.manual_seed(0)
    x = torch.randn(3, 1 + 10, 5)
    attn = torch.rand(3, 10).softmax(-1)
    ids = torch.arange(10).expand(3, -1)
    y, new_ids = sparsify_tokens(x, attn, ids, keep=4, mode="fuse")
    assert y.shape == (3, 1 + 4 + 1, 5) and torch.equal(y[:, 0], x[:, 0])
    for f in range(3):
        top = attn[f].topk(4).indices.sort().values
        dropped = [i for i in range(10) if i not in top.tolist()]
        assert torch.equal(new_ids[f], torch.cat([top, torch.tensor([-1])]))
        torch.testing.assert_close(y[f, 1:5], x[f, 1 + top])
        a = attn[f, dropped]
        expect = (a[:, None] * x[f, 1 + torch.tensor(dropped)]).sum(0) / a.sum()
        torch.testing.assert_close(y[f, -1], expect)
    y, new_ids = sparsify_tokens(x, attn, ids, keep=4, mode="drop")
    assert y.shape == (3, 5, 5) and (new_ids >= 0).all()


def test_cls_attention_comes_from_the_blocks_own_pass():
    torch.manual_seed(0)
    m = _model()
    enc = m.video_encoder.eval()
    blk = enc.blocks[1]
    x = torch.randn(4, 13, 192)
    out, cls_attn = attention_with_cls_row(blk.attn, blk.norm1(x))
    # same output as timm's own attention, and the row of the explicit attention matrix
    torch.testing.assert_close(out, blk.attn(blk.norm1(x)), rtol=1e-5, atol=1e-5)
    a = blk.attn
    qkv = a.qkv(blk.norm1(x)).reshape(4, 13, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    full = (qkv[0] @ qkv[1].transpose(-2, -1) * a.scale).softmax(-1)  # [M, H, n, n]
    torch.testing.assert_close(cls_attn, full[:, :, 0, 1:].mean(1))
    # one qkv projection per block for the whole encoder forward (no second attention pass)
    calls = []
    hooks = [b.attn.qkv.register_forward_hook(lambda *_: calls.append(1)) for b in enc.blocks]
    enc(torch.randn(2, 4, 3, 112, 112), mask_ratio=0.75)
    for h in hooks:
        h.remove()
    assert len(calls) == len(enc.blocks)


def test_other_frame_counts_interpolate_temporal_embeddings():
    m = _model().eval()
    batch = make_batch(m.config, batch_size=2, num_frames=6)
    with torch.no_grad():
        tokens, video_feat, _ = m.encode_video(batch["video"])
        assert tokens.shape[:2] == (2, 6) and video_feat.shape == (2, 128)
        assert torch.isfinite(m(batch).loss)


@pytest.mark.parametrize("scope", ["cls", "all"])
def test_temporal_blocks_start_as_the_identity_and_then_see_frame_order(scope):
    """temporal_layers: at init the video features equal the model without them (so image-pretrained
    towers start as the image model); once trained, reversing the frames changes the clip feature
    through them, and the fusion layers get the temporal [CLS]."""
    from smaug.models import SmaugConfig, SmaugModel

    torch.manual_seed(0)
    plain = SmaugModel(SmaugConfig.preset("tiny", vocab_size=6000)).eval()
    torch.manual_seed(0)
    temporal = SmaugModel(SmaugConfig.preset("tiny", vocab_size=6000, temporal_layers=2, temporal_scope=scope)).eval()
    missing, unexpected = temporal.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("temporal.") for k in missing)
    video = torch.randint(0, 256, (2, 4, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(temporal.get_video_features(video), plain.get_video_features(video))
        for p in temporal.temporal.parameters():  # as after training: non-zero residual branches
            p.add_(torch.randn_like(p) * 0.2)
        tokens, feat, _ = temporal.encode_video(video)
        enc = temporal.video_encoder(temporal.normalize_video(video))
        if scope == "cls":
            torch.testing.assert_close(tokens[:, :, 1:], enc.tokens[:, :, 1:])  # patch tokens: per frame
        else:
            assert not torch.allclose(tokens[:, :, 1:], enc.tokens[:, :, 1:])  # patch tokens see other frames too
        assert not torch.allclose(tokens[:, :, 0], enc.tokens[:, :, 0])  # [CLS]: the temporal blocks' output
        # frame order: the per-frame encoder outputs in reverse order -> a different clip feature
        x = enc.tokens[:, :, :1] if scope == "cls" else enc.tokens
        fwd, rev = temporal.temporal(x)[:, :, 0].mean(1), temporal.temporal(x.flip(1))[:, :, 0].mean(1)
        assert not torch.allclose(fwd, rev, atol=1e-4)
