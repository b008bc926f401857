"""Order-aware video embedding: temporal moments of the frame features (smaug/models/moments.py),
the patch tokens' spatial moments, and the reversed-clip VTC negative (issue 11: motion)."""

import pytest
import torch
import torch.nn.functional as F

from smaug.models import SmaugConfig, SmaugModel
from smaug.models.losses import vtc_loss
from smaug.models.moments import moment_weights, saliency_centroid, spatial_moments

from model_helpers import make_batch


@pytest.mark.parametrize("T", [1, 2, 3, 4, 8, 16])
def test_moment_weights_are_orthogonal_polynomials_in_time(T):
    K = 3
    w = moment_weights(T, K).double()
    k = min(K, T)
    torch.testing.assert_close(w[0], torch.full((T,), 1.0 / T, dtype=torch.float64))  # moment 0 = the mean
    torch.testing.assert_close(w[:k] @ w[:k].T * T, torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (w[k:] == 0).all()  # more moments than frames: zero rows (an image has no motion)
    if T > 1:
        torch.testing.assert_close(w[1:k].sum(1), torch.zeros(k - 1, dtype=torch.float64), atol=1e-7, rtol=0)
        assert (w[1].diff() > 0).all()  # moment 1 rises with time: late frames minus early ones
        torch.testing.assert_close(w[1].flip(0), -w[1])  # ...so reversing a clip negates it
        if k > 2:
            torch.testing.assert_close(w[2].flip(0), w[2])  # and keeps the even ones


def test_spatial_moments_read_where_an_object_is_and_skip_fused_tokens():
    grid, D = 7, 3
    ids = torch.arange(grid * grid).expand(1, 4, -1).clone()  # [B, T, n]
    patches = torch.zeros(1, 4, grid * grid, D)
    for t in range(4):  # one "object" token moving right along row 3, feature e0; background 0
        patches[0, t, 3 * grid + 1 + t, 0] = 1.0
    s = spatial_moments(patches, ids, grid)  # [B, T, 2, D]
    x, y = s[0, :, 0, 0], s[0, :, 1, 0]
    assert (x.diff() > 0).all() and torch.allclose(y, torch.zeros(4), atol=1e-6)  # moves in x, row 3 = centre in y
    assert torch.allclose(s[..., 1:], torch.zeros(()), atol=1e-7)  # features the object lacks: nothing
    m1 = moment_weights(4, 2)[1] @ x
    assert m1 > 0  # moment 1 of the x position: moving right
    # an EViT fused token (id -1) has no position: whatever it holds is left out
    fused = torch.cat([patches, torch.full((1, 4, 1, D), 9.0)], dim=2)
    fused_ids = torch.cat([ids, torch.full((1, 4, 1), -1)], dim=2)
    torch.testing.assert_close(spatial_moments(fused, fused_ids, grid), s)


def test_saliency_centroid_follows_the_object_whatever_it_looks_like():
    """The centroid is where the tokens far from the frame's mean token are: the same path gives the same
    centroid for two objects that share no feature, on any background; fused tokens have no position."""
    grid, D, T = 7, 4, 4
    ids = torch.arange(grid * grid).expand(1, T, -1).clone()
    background = torch.randn(D)
    paths = []
    for feature in (torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0, -3.0, 2.0])):  # two looks, no shared feature
        patches = background.expand(1, T, grid * grid, D).clone()
        for t in range(T):  # a 2-token object moving right along rows 1-2 (above the centre)
            for row in (1, 2):
                patches[0, t, row * grid + 1 + t] = background + feature
        paths.append(saliency_centroid(patches, ids, grid)[0])  # [T, 2]
    torch.testing.assert_close(paths[0], paths[1])
    x, y = paths[0].unbind(-1)
    # the background (near the mean token, but not at it) pulls the centroid toward the frame centre, by a factor
    # set by the object's share of the frame, not by its look: constant velocity in, constant velocity out
    torch.testing.assert_close(x.diff(), x.diff()[:1].expand(T - 1))
    assert x.diff()[0] > 0 and (y < 0).all() and torch.allclose(y, y[:1].expand(T))  # right, above the centre
    assert moment_weights(T, 2)[1] @ x > 0 and abs(moment_weights(T, 2)[1] @ y) < 1e-6  # moment 1: moving right
    fused = torch.cat([patches, torch.full((1, T, 1, D), 9.0)], dim=2)
    fused_ids = torch.cat([ids, torch.full((1, T, 1), -1)], dim=2)
    torch.testing.assert_close(saliency_centroid(fused, fused_ids, grid)[0], paths[1])


def _model(**kw):
    torch.manual_seed(0)
    return SmaugModel(SmaugConfig.preset("tiny", vocab_size=6000, **kw)).eval()


@pytest.mark.parametrize("xy, centroid", [(False, False), (True, False), (True, True)])
def test_moments_make_the_embedding_see_frame_order_and_vanish_on_a_static_clip(xy, centroid):
    plain, m = _model(), _model(temporal_moments=2, moments_xy=xy, moments_centroid=centroid)
    missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing == ["video_pooling.proj.weight", "video_pooling.proj.bias"]
    video = torch.randint(0, 256, (2, 4, 3, 112, 112), dtype=torch.uint8)
    static = video[:, :1].expand(-1, 4, -1, -1, -1).contiguous()
    with torch.no_grad():
        # the encoder's temporal embedding starts at 0: identical frames -> identical features -> zero moments
        torch.testing.assert_close(m.get_video_features(static), plain.get_video_features(static))
        f, r = m.get_video_features(video), m.get_video_features(video.flip(1))
        p, pr = plain.get_video_features(video), plain.get_video_features(video.flip(1))
        torch.testing.assert_close(p, pr)  # the mean of frames is blind to their order...
        assert (F.cosine_similarity(f, r) < 0.999).all()  # ...the moments are not
        for T in (1, 2, 6):  # any frame count, an image included
            batch = make_batch(m.config, batch_size=2, num_frames=T)
            tokens, feat, _ = m.encode_video(batch["video"])
            assert feat.shape == (2, 128) and torch.isfinite(feat).all()
        one = make_batch(m.config, batch_size=2, num_frames=1)["video"]
        torch.testing.assert_close(m.get_video_features(one), plain.get_video_features(one))


def test_reversed_clip_adds_a_two_way_arrow_of_time_term():
    from smaug.models.losses import reversed_vtc_term

    torch.manual_seed(0)
    v, t, rev = (F.normalize(torch.randn(5, 16), dim=-1) for _ in range(3))
    temp = torch.tensor(0.1)
    pair = torch.stack([(t * v).sum(-1), (t * rev).sum(-1)], dim=1) / temp  # [texts, {its clip, reversed}]
    torch.testing.assert_close(
        reversed_vtc_term(v, t, rev, temp), F.cross_entropy(pair, torch.zeros(5, dtype=torch.long))
    )
    # a clip that reads the same both ways (no motion) costs log 2 and nothing can lower it
    torch.testing.assert_close(reversed_vtc_term(v, t, v, temp), torch.log(torch.tensor(2.0)))


def test_temporal_hook_adds_its_terms_to_the_papers_vtc():
    """The model's VTC loss is the paper's plus the temporal extensions' terms, each with its weight."""
    from smaug.models.losses import reversed_vtc_term

    m = _model(temporal_moments=2, vtc_reversed=0.1, vtc_static=0.5).train()
    batch = make_batch(m.config, batch_size=4)
    torch.manual_seed(0)
    out = m(batch, mask_ratio=0.0)
    with torch.no_grad():
        enc, tokens, video_feat, _ = m.forward_video(batch["video"], 0.0)
        _, text_feat = m.encode_text(batch["input_ids"], batch["attention_mask"])
        paper, _ = vtc_loss(video_feat, text_feat, m.temp)
        rev = m.temporal.reversed_embedding(m, m.normalize_video(batch["video"]), 0.0)
        static = F.normalize(m.vision_proj(tokens[:, :, 0]).mean(1), dim=-1)
        want = paper + 0.1 * reversed_vtc_term(video_feat, text_feat, rev, m.temp)
        want = want + 0.5 * vtc_loss(static, text_feat, m.temp)[0]
    torch.testing.assert_close(out.losses["vtc"].detach(), want)
    assert _model().temporal is None  # the paper's model builds no temporal extension


def test_vtc_reversed_trains_the_readout_and_reports_rev_acc():
    m = _model(temporal_moments=2, moments_xy=True, moments_centroid=True, vtc_reversed=0.1).train()
    batch = make_batch(m.config, batch_size=4)
    out = m(batch)
    assert 0.0 <= out.metrics["rev_acc"].item() <= 1.0
    out.loss.backward()
    assert m.video_pooling.proj.weight.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    # the reversed clip goes through the encoder without gradient (the moments read its tokens detached): only
    # the readout learns from it
    m.temporal.reversed_embedding(m, m.normalize_video(batch["video"]), 0.75).sum().backward()
    assert all(p.grad is None for p in m.video_encoder.parameters())
    assert m.video_pooling.proj.weight.grad.abs().sum() > 0 and m.vision_proj.weight.grad.abs().sum() > 0
    image = make_batch(m.config, batch_size=4, num_frames=1)  # an image batch has no reversal: no metric, no error
    assert "rev_acc" not in m(image).metrics


def test_order_blind_part_gets_its_own_vtc_term():
    batch = None
    vtc = {}
    for w in (0.0, 1.0):
        m = _model(temporal_moments=2, vtc_static=w, w_vtm=0.0, w_mlm=0.0, w_mvm=0.0)
        batch = batch or make_batch(m.config, batch_size=4)
        out = m(batch)  # eval mode: no masking, the same forward for both weights
        vtc[w] = out.losses["vtc"]
        assert ("vtc_static" in out.metrics) == (w > 0)
    frame_tokens, video_feat, _ = m.encode_video(batch["video"])
    text_feat = m.get_text_features(batch["input_ids"], batch["attention_mask"])
    static = F.normalize(m.vision_proj(frame_tokens[:, :, 0]).mean(1), dim=-1)
    assert not torch.allclose(static, video_feat)  # the moments are part of the retrieval embedding...
    # ...and the order-blind part alone is scored against the captions as well
    torch.testing.assert_close(vtc[1.0] - vtc[0.0], vtc_loss(static, text_feat, m.temp)[0])
    plain = _model(vtc_static=1.0, w_vtm=0.0, w_mlm=0.0, w_mvm=0.0)  # without moments there is nothing to add
    out = plain(batch)
    assert "vtc_static" not in out.metrics
    v, t = (
        plain.get_video_features(batch["video"]),
        plain.get_text_features(batch["input_ids"], batch["attention_mask"]),
    )
    torch.testing.assert_close(out.losses["vtc"], vtc_loss(v, t, plain.temp)[0])


def test_reversed_negative_needs_an_order_aware_embedding():
    with pytest.raises(ValueError, match="vtc_reversed"):
        SmaugConfig.preset("tiny", vtc_reversed=0.1)
    with pytest.raises(ValueError, match="vtc_reversed"):
        SmaugConfig.preset("tiny", vtc_reversed=-0.1, temporal_moments=2)
    SmaugConfig.preset("tiny", vtc_reversed=0.1, temporal_layers=1)
    with pytest.raises(ValueError, match="temporal_moments"):
        SmaugConfig.preset("tiny", temporal_moments=0)
    for knob in ("moments_xy", "moments_centroid"):  # readouts of moments that would not exist
        with pytest.raises(ValueError, match=knob):
            SmaugConfig.preset("tiny", **{knob: True})


def test_moments_take_the_configs_weight_and_grid():
    """`moments_weight` and the patch grid reach the module from the config (the weight used to stay at its
    default 0.5 in training while the HF export read the config's)."""
    from smaug.models import SmaugModel

    cfg = SmaugConfig.preset("tiny", temporal_moments=2, moments_centroid=True, moments_weight=0.25)
    tm = SmaugModel(cfg).video_pooling
    assert tm.weight == 0.25 and tm.grid == cfg.image_size // cfg.patch_size
    with pytest.raises(ValueError, match="grid"):
        type(tm)(8, 8, 2, centroid=True)


def test_checkpoints_with_the_moments_under_their_old_name_load():
    """Checkpoints written before the pooling component held the moments under `temporal_moments.`: they load
    strictly (the engine's resume) and through the checkpoint reader (evaluation, export, fine-tuning)."""
    from smaug.checkpoint import adapt_state_dict

    new = _model(temporal_moments=2)
    old = {
        ("temporal_moments." + k[len("video_pooling.") :] if k.startswith("video_pooling.") else k): v + 1.0
        for k, v in new.state_dict().items()
    }
    assert any(k.startswith("temporal_moments.") for k in old)
    fresh = _model(temporal_moments=2)
    fresh.load_state_dict(old)  # strict
    torch.testing.assert_close(fresh.video_pooling.proj.weight, old["temporal_moments.proj.weight"])
    read, _ = adapt_state_dict(old, new.state_dict(), "old checkpoint")
    assert set(read) == set(new.state_dict())


@pytest.mark.parametrize("qa", [False, True])
def test_fusion_clip_token_lets_fusion_tell_a_clip_from_its_reverse(qa):
    """Fusion cross-attends over a set of frame tokens: at init (temporal embedding 0) a clip and its reverse give
    the same set, so VTM (and the QA model, which fuses the same way) cannot tell the direction of motion. With
    `fusion_clip_token` the clip's embedding (with the moments) goes in with every frame and the two differ."""
    from smaug.models.answer_decoder import QAModel

    torch.manual_seed(0)
    video = torch.randint(0, 256, (2, 4, 3, 112, 112), dtype=torch.uint8)
    ids = torch.tensor([[101, 5, 6, 7, 102]] * 2)
    am = torch.ones_like(ids)
    out, width = {}, {}
    for on in (False, True):
        kw = dict(vocab_size=6000, temporal_moments=2, moments_centroid=True, fusion_clip_token=on, select_frames=4)
        torch.manual_seed(0)
        cfg = SmaugConfig.preset("tiny", num_frames=4, **kw)
        m = (QAModel(cfg, 0, False) if qa else SmaugModel(cfg)).eval()
        with torch.no_grad():
            if qa:
                out[on] = [m.encode_question(v, ids, am)[:, 0] for v in (video, video.flip(1))]
            else:
                hidden, tf = m.encode_text(ids, am)
                out[on] = []
                for v in (video, video.flip(1)):
                    ft, _, ff = m.encode_video(v)
                    width[on] = ft.shape[2]
                    out[on].append(m.vtm_logits(ft, ff, hidden, tf, am))
    if not qa:
        assert width[True] == width[False] + 1  # [CLS], the kept tokens, the motion token
    torch.testing.assert_close(out[False][0], out[False][1])  # order-blind without it
    assert not torch.allclose(out[True][0], out[True][1], atol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_fusion_time_embed_lets_fusion_tell_a_clip_from_its_reverse(dense):
    """The encoder's temporal embedding starts at zero, so the tokens fusion reads do not say which frame comes first:
    a clip played backwards gives fusion the same tokens with the frames in the other order, which cross-attention
    cannot see (the same VTM logit when every frame goes to fusion). The fusion time embedding marks every token with
    its frame's place in time, whatever frames the selector keeps; a new parameter, it leaves the other weights'
    initialisation unchanged."""
    kw = dict(dense=True) if dense else {}
    plain, m = _model(**kw), _model(fusion_time_embed=True, **kw)
    own = m.state_dict()  # same seed: every other weight initialised as without the embedding
    assert all(torch.equal(v, own[k]) for k, v in plain.state_dict().items())
    missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing == ["fusion_time"]
    torch.testing.assert_close(m.fusion_time.norm(dim=-1), torch.full((1, 4, 1), (192 / 2) ** 0.5))
    batch = make_batch(m.config, batch_size=2)
    video, ids, am = batch["video"], batch["input_ids"], batch["attention_mask"]
    k = 4 if dense else 2

    def fusion(model, clip):  # -> fusion tokens [B, k, N, Dt] (frames in time order), VTM logits [B]
        tokens, _, frames = model.encode_video(clip)
        hidden, text = model.encode_text(ids, am)
        fused = model.select_frames(tokens, frames, text)
        return fused.view(2, k, -1, fused.shape[-1]), model.vtm_logits(tokens, frames, hidden, text, am)

    with torch.no_grad():
        (tp, lp), (tpr, lpr) = fusion(plain, video), fusion(plain, video.flip(1))
        torch.testing.assert_close(tpr.flip(1), tp)  # the same frames' tokens, in the other order
        (tm, lm), (tmr, lmr) = fusion(m, video), fusion(m, video.flip(1))
        assert (tmr.flip(1) - tm).abs().amax() > 1.0  # each token says which frame it comes from
        if dense:  # the same set of keys: the same logit without the embedding, another one with it
            torch.testing.assert_close(lpr, lp)
            assert ((lmr - lm).abs() > 1e-6).all()
        for T in (1, 6):  # other frame counts: the embedding is resized over time
            clip = make_batch(m.config, batch_size=2, num_frames=T)["video"]
            tokens, _, frames = m.encode_video(clip)
            hidden, text = m.encode_text(ids, am)
            assert torch.isfinite(m.vtm_logits(tokens, frames, hidden, text, am)).all()
    assert "fusion_time" in m.no_weight_decay()
