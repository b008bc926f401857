"""Loss functions on small hand-checkable inputs, and hard-negative mining."""
import math

import torch

from smaug.models.losses import mvm_loss, sample_hard_negatives, vtc_loss, vtm_loss


def test_vtc_equals_hand_computed_value():
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    temp = 0.5
    s = [[sum(a * b for a, b in zip(vi, tj)) / temp for tj in t.tolist()] for vi in v.tolist()]
    # s = [[1.6, 0.0], [1.92, 1.6]]
    v2t = [-math.log(math.exp(s[i][i]) / sum(math.exp(x) for x in s[i])) for i in range(2)]
    t2v = [-math.log(math.exp(s[j][j]) / sum(math.exp(s[i][j]) for i in range(2))) for j in range(2)]
    expect = (sum(v2t) / 2 + sum(t2v) / 2) / 2
    loss, sim = vtc_loss(v, t, torch.tensor(temp))
    assert abs(loss.item() - expect) < 1e-6
    torch.testing.assert_close(sim, torch.tensor(s))


def test_vtc_gradient_reaches_the_temperature():
    temp = torch.tensor(0.07, requires_grad=True)
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    vtc_loss(v, v.flip(0), temp)[0].backward()
    assert temp.grad is not None and temp.grad != 0


def test_hard_negatives_never_sample_the_positive():
    torch.manual_seed(0)
    B = 6
    # positives far more similar than anything else: a sampler ignoring the diagonal would pick them
    sim = torch.randn(B, B) + torch.eye(B) * 50
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        neg_t, neg_v = sample_hard_negatives(sim, None, g)
        assert (neg_t != torch.arange(B)).all() and (neg_v != torch.arange(B)).all()
    # identical captions (0 and 1) are never each other's negative either
    same = torch.eye(B, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    for _ in range(200):
        neg_t, neg_v = sample_hard_negatives(sim, same, g)
        assert neg_t[0] not in (0, 1) and neg_t[1] not in (0, 1) and neg_v[0] not in (0, 1)
    # hard: the sampler follows the similarities
    sim = torch.zeros(B, B)
    sim[0, 3] = 10.0
    counts = torch.bincount(torch.stack([sample_hard_negatives(sim, None, g)[0][0] for _ in range(100)]), minlength=B)
    assert counts[3] > 90
    # a row with only banned candidates falls back to uniform over the others, still not the positive
    neg_t, _ = sample_hard_negatives(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), g)
    assert neg_t.tolist() == [1, 0]


def test_vtm_is_binary_cross_entropy():
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    expect = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 - 1 / (1 + math.exp(1))) + math.log(1 - 1 / (1 + math.exp(-0.5)))) / 3
    assert abs(vtm_loss(logits, labels).item() - expect) < 1e-6


def test_mvm_uses_masked_patches_only():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 9, 12), torch.randn(2, 9, 12)
    mask = torch.zeros(2, 9)
    mask[:, :4] = 1
    base = mvm_loss(pred, target, mask, norm_pix=False)
    pred2 = pred.clone()
    pred2[:, 4:] += 5.0  # visible patches: no effect
    assert mvm_loss(pred2, target, mask, norm_pix=False) == base
    expect = ((pred[:, :4] - target[:, :4]) ** 2).mean()
    torch.testing.assert_close(base, expect)
    t = target[:, :4]
    tn = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(mvm_loss(pred, target, mask, norm_pix=True), ((pred[:, :4] - tn) ** 2).mean())


def test_hard_negatives_survive_non_finite_similarities():
    """A diverged step (NaN/inf logits) yields a NaN loss to skip, not a sampler crash."""
    sim = torch.randn(4, 4)
    sim[1, 2] = float("nan")
    sim[3] = float("inf")
    neg_t, neg_v = sample_hard_negatives(sim)
    idx = torch.arange(4)
    assert (neg_t != idx).all() and (neg_v != idx).all()


def test_model_never_mines_an_identical_caption_as_negative():
    """forward_vtm bans pairs whose padded token ids are equal (a caption repeated in the batch)."""
    from model_helpers import make_batch

    from smaug.models import SmaugConfig, SmaugModel

    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny")
    model = SmaugModel(cfg)
    batch = make_batch(cfg, batch_size=4)
    for a, b in ((0, 1), (2, 3)):  # two pairs of identical captions: each row's only allowed negatives are the other pair
        batch["input_ids"][b], batch["attention_mask"][b] = batch["input_ids"][a], batch["attention_mask"][a]
    partner = {0: {0, 1}, 1: {0, 1}, 2: {2, 3}, 3: {2, 3}}
    for _ in range(5):
        model(batch)
        neg_text, neg_video = model._last_negatives
        for i in range(4):
            assert int(neg_text[i]) not in partner[i] and int(neg_video[i]) not in partner[i]
