"""Text side: bidirectional attention (text layers, fusion layers, MLM), MLM masking (BERT checkpoints:
test_model_pretrained.py)."""

import torch

from smaug.models import SmaugConfig, SmaugModel
from smaug.models.text_encoder import mask_tokens


def _model(**kw):
    torch.manual_seed(0)
    return SmaugModel(SmaugConfig.preset("tiny", **kw)).eval()


def test_last_token_changes_first_token_output_everywhere():
    """Fusion layers are BertLayers with is_decoder=True: they must still not be causal."""
    m = _model()
    te = m.text_encoder
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 102]])
    ids2 = ids.clone()
    ids2[0, -2] = 3000  # last real word
    am = torch.ones_like(ids)
    video = torch.randn(1, 18, 192)
    with torch.no_grad():
        h1, h2 = te.forward_text(ids, am), te.forward_text(ids2, am)
        assert not torch.allclose(h1[:, 0], h2[:, 0])
        # fusion layers alone: same first-token input, different last token
        h2b = h1.clone()
        h2b[0, -2] += 1.0
        f1, f2 = te.forward_fusion(h1, am, video), te.forward_fusion(h2b, am, video)
        assert not torch.allclose(f1[:, 0], f2[:, 0])
        l1, l2 = te.mlm_logits(f1[0, :1]), te.mlm_logits(f2[0, :1])
        assert not torch.allclose(l1, l2)
        # padding is ignored: changing a padded position changes nothing
        am_pad = am.clone()
        am_pad[0, -1] = 0
        ids3 = ids.clone()
        ids3[0, -1] = 999
        torch.testing.assert_close(te.forward_text(ids, am_pad)[:, :-1], te.forward_text(ids3, am_pad)[:, :-1])
    layer = te.fusion[0]
    assert layer.is_decoder and hasattr(layer, "crossattention") and not layer.attention.self.is_causal


def test_mlm_head_is_tied_to_word_embeddings():
    m = _model()
    te = m.text_encoder
    names = [n for n, _ in m.named_parameters()]
    assert not any("decoder" in n for n in names if n.startswith("text_encoder.mlm_head"))
    h = torch.randn(3, 192)
    with torch.no_grad():
        before = te.mlm_logits(h)
        te.bert.embeddings.word_embeddings.weight[7] += torch.randn(
            192
        )  # (a constant shift is cancelled by the LayerNorm)
        after = te.mlm_logits(h)
    assert not torch.allclose(before[:, 7], after[:, 7]) and torch.equal(before[:, 8], after[:, 8])


def test_mlm_masking_never_touches_specials_and_always_masks_something():
    torch.manual_seed(0)
    B, L = 64, 16
    ids = torch.randint(1000, 5000, (B, L))
    ids[:, 0] = 101
    lengths = torch.randint(3, L + 1, (B,))
    am = (torch.arange(L)[None] < lengths[:, None]).long()
    ids[torch.arange(B), lengths - 1] = 102
    ids[am == 0] = 0
    masked, labels = mask_tokens(ids, am, 0.5, 103, 30522, [0, 101, 102])
    chosen = labels != -100
    assert not chosen[(ids == 0) | (ids == 101) | (ids == 102)].any()
    assert chosen.any(1).all()  # every caption has >= 1 masked token
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    frac_mask = (masked[chosen] == 103).float().mean()
    assert 0.7 < frac_mask < 0.9
    maskable = am.bool() & (ids != 101) & (ids != 102)
    assert 0.4 < chosen.sum() / maskable.sum() < 0.6
    # a very low probability still masks one token per caption
    _, labels = mask_tokens(ids, am, 1e-6, 103, 30522, [0, 101, 102])
    assert ((labels != -100).sum(1) == 1).all()
