"""Text side: bidirectional attention (text layers, fusion layers, MLM), BERT checkpoints, MLM masking."""
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

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


def _tiny_bert_config():
    return BertConfig(vocab_size=30522, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                      intermediate_size=768, max_position_embeddings=128, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def test_saved_bert_checkpoints_reproduce_their_outputs(tmp_path):
    torch.manual_seed(3)
    mlm = BertForMaskedLM(_tiny_bert_config()).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    bert = BertModel(_tiny_bert_config(), add_pooling_layer=False).eval()
    bert.save_pretrained(tmp_path / "bert")
    ids = torch.tensor([[101, 2000, 2001, 2002, 102, 0], [101, 3000, 3001, 102, 0, 0]])
    am = (ids != 0).long()

    for path, ref_model in ((tmp_path / "mlm", mlm), (tmp_path / "bert", bert)):
        m = _model(text_pretrained=str(path))
        with torch.no_grad():
            ref = ref_model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
            h, _ = m.encode_text(ids, am)
        # the text encoder = the first fusion_layer=4 BERT layers
        torch.testing.assert_close(h * am[..., None], ref[4] * am[..., None], rtol=1e-4, atol=1e-4)
        # fusion layers carry the checkpoint's layers 4, 5 (self-attention + FFN)
        src = ref_model.bert if hasattr(ref_model, "bert") else ref_model
        torch.testing.assert_close(m.text_encoder.fusion[1].output.dense.weight, src.encoder.layer[5].output.dense.weight)
        missing = m.pretrained_info["text"]["missing"]
        assert missing and all(".crossattention." in k for k in missing)

    # the MLM head (transform + bias, decoder tied) reproduces BertForMaskedLM's logits
    m = _model(text_pretrained=str(tmp_path / "mlm"))
    with torch.no_grad():
        last = mlm.bert(input_ids=ids, attention_mask=am).last_hidden_state
        torch.testing.assert_close(m.text_encoder.mlm_logits(last[0]), mlm(input_ids=ids, attention_mask=am).logits[0],
                                   rtol=1e-4, atol=1e-4)


def test_mlm_head_is_tied_to_word_embeddings():
    m = _model()
    te = m.text_encoder
    names = [n for n, _ in m.named_parameters()]
    assert not any("decoder" in n for n in names if n.startswith("text_encoder.mlm_head"))
    h = torch.randn(3, 192)
    with torch.no_grad():
        before = te.mlm_logits(h)
        te.bert.embeddings.word_embeddings.weight[7] += torch.randn(192)  # (a constant shift is cancelled by the LayerNorm)
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
