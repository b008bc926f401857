"""Loss functions on small hand-checkable inputs, and hard-negative mining."""

import math

import pytest
import torch

from smaug.models.losses import mvm_loss, sample_negatives, token_overlap, vtc_loss, vtm_loss


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
        neg_t, neg_v = sample_negatives(sim, None, g)
        assert (neg_t != torch.arange(B)).all() and (neg_v != torch.arange(B)).all()
    # identical captions (0 and 1) are never each other's negative either
    same = torch.eye(B, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    for _ in range(200):
        neg_t, neg_v = sample_negatives(sim, same, g)
        assert neg_t[0] not in (0, 1) and neg_t[1] not in (0, 1) and neg_v[0] not in (0, 1)
    # hard: the sampler follows the similarities
    sim = torch.zeros(B, B)
    sim[0, 3] = 10.0
    counts = torch.bincount(torch.stack([sample_negatives(sim, None, g)[0][0] for _ in range(100)]), minlength=B)
    assert counts[3] > 90
    # a row with only banned candidates falls back to uniform over the others, still not the positive
    neg_t, _ = sample_negatives(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), g)
    assert neg_t.tolist() == [1, 0]


def test_uniform_negatives_ignore_the_similarities_and_respect_bans():
    B = 6
    sim = torch.zeros(B, B)
    sim[0, 3] = 50.0  # hard mining would take text 3 for video 0 every time
    same = torch.eye(B, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True  # e.g. the same clip with two captions
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_negatives(sim, same, g, hard=False)[0][0] for _ in range(2000)])
    counts = torch.bincount(draws, minlength=B).float()
    assert counts[0] == 0 and counts[1] == 0  # never the positive, never the banned same sample
    assert ((counts[2:] / 2000 - 0.25).abs() < 0.04).all(), counts  # uniform over the 4 others
    hard = torch.stack([sample_negatives(sim, same, g, hard=True)[0][0] for _ in range(200)])
    assert (hard == 3).all()


def test_vtc_with_extra_positives_targets_each_rows_positives_uniformly():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    temp = torch.tensor(0.1)
    plain, _ = vtc_loss(v, t, temp)
    assert torch.allclose(vtc_loss(v, t, temp, torch.eye(4, dtype=torch.bool))[0], plain)
    pos = torch.eye(4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True  # rows 0 and 1: one clip with two captions
    got, _ = vtc_loss(v, t, temp, pos)
    logp_v, logp_t = (v @ t.T / temp).log_softmax(1), (t @ v.T / temp).log_softmax(1)
    target = pos.float() / pos.float().sum(1, keepdim=True)
    expect = (-(target * logp_v).sum(1).mean() - (target * logp_t).sum(1).mean()) / 2
    assert torch.allclose(got, expect) and not torch.allclose(got, plain)


def test_vtm_is_binary_cross_entropy():
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    expect = (
        -(
            math.log(1 / (1 + math.exp(-2)))
            + math.log(1 - 1 / (1 + math.exp(1)))
            + math.log(1 - 1 / (1 + math.exp(-0.5)))
        )
        / 3
    )
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
    neg_t, neg_v = sample_negatives(sim)
    idx = torch.arange(4)
    assert (neg_t != idx).all() and (neg_v != idx).all()


def test_model_never_mines_an_identical_caption_as_negative():
    """forward_vtm bans pairs whose padded token ids are equal (a caption repeated in the batch)."""
    from smaug.models import SmaugConfig, SmaugModel

    from model_helpers import make_batch

    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny")
    model = SmaugModel(cfg)
    batch = make_batch(cfg, batch_size=4)
    for a, b in (
        (0, 1),
        (2, 3),
    ):  # two pairs of identical captions: each row's only allowed negatives are the other pair
        batch["input_ids"][b], batch["attention_mask"][b] = batch["input_ids"][a], batch["attention_mask"][a]
    partner = {0: {0, 1}, 1: {0, 1}, 2: {2, 3}, 3: {2, 3}}
    for _ in range(5):
        model(batch)
        neg_text, neg_video = model._last_negatives
        for i in range(4):
            assert int(neg_text[i]) not in partner[i] and int(neg_video[i]) not in partner[i]


def test_token_overlap_is_the_jaccard_of_token_sets_without_special_ids():
    pad, cls, sep = 0, 1, 2
    ids = torch.tensor(
        [
            [cls, 5, 6, 7, 8, sep, pad, pad],  # {5, 6, 7, 8}
            [cls, 8, 7, 6, 5, 5, sep, pad],  # the same set, reordered, a word repeated
            [cls, 5, 6, 7, 9, sep, pad, pad],  # one word changed: 3 / 5
            [cls, 10, 11, sep, pad, pad, pad, pad],  # disjoint
            [cls, sep, pad, pad, pad, pad, pad, pad],  # empty
        ]
    )
    j = token_overlap(ids, 12, (pad, cls, sep))
    assert j[0, 1] == 1.0 and j[0, 0] == 1.0
    assert abs(j[0, 2].item() - 3 / 5) < 1e-6 and j[0, 3] == 0 and j[4, 4] == 0 and j[0, 4] == 0
    torch.testing.assert_close(j, j.T)


def test_model_never_mines_a_near_identical_caption_as_negative():
    """A re-worded caption (same token set, or nearly) is a false negative: forward_vtm bans pairs whose token
    sets overlap >= vtm_dup_overlap, which the identical-ids ban alone does not catch."""
    from smaug.models import SmaugConfig, SmaugModel

    from model_helpers import make_batch

    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny", vtm_dup_overlap=0.8)
    model = SmaugModel(cfg)
    batch = make_batch(cfg, batch_size=4)
    ids = batch["input_ids"]
    n = int(batch["attention_mask"][0].sum())
    # row 1: row 0's caption with its words in another order (not identical ids, the same token set)
    ids[1] = ids[0]
    ids[1, 1 : n - 1] = ids[0, 1 : n - 1].flip(0)
    batch["attention_mask"][1] = batch["attention_mask"][0]
    assert not torch.equal(ids[0], ids[1])
    for hard in (1.0, 0.0):
        for _ in range(8):
            model(batch, vtm_hard=hard)
            neg_text, neg_video = model._last_negatives
            assert int(neg_text[0]) != 1 and int(neg_video[0]) != 1 and int(neg_text[1]) != 0
    torch.manual_seed(0)
    strict = SmaugModel(SmaugConfig.preset("tiny", vtm_dup_overlap=1.0))  # the bar at 1: same set still banned
    for _ in range(8):
        strict(batch)
        assert int(strict._last_negatives[0][0]) != 1


def test_negative_kind_per_row_mined_or_uniform():
    """A [Bg] mask mines where True and draws uniformly elsewhere: with one text far more similar to every video,
    mined rows always take it, uniform rows spread over the others."""
    B = 8
    sim = torch.zeros(B, B)
    sim[:, 3] = 50.0  # text 3 is every video's hardest negative
    sim[3, :] = 50.0  # video 3 every text's
    mined = torch.tensor([True, True, False, False, True, False, False, False])
    g = torch.Generator().manual_seed(0)
    picks = {i: set() for i in range(B)}
    for _ in range(100):
        neg_t, neg_v = sample_negatives(sim, None, g, hard=mined)
        for i in range(B):
            picks[i].add(int(neg_t[i]))
            if mined[i]:
                assert int(neg_t[i]) == 3 and int(neg_v[i]) == 3
    assert all(len(picks[i]) > 3 for i in range(B) if not mined[i] and i != 3)


# ---------------------------------------------------------------------------- model level
def _tiny_model(**kw):
    from smaug.models import SmaugConfig, SmaugModel

    torch.manual_seed(0)
    return SmaugModel(SmaugConfig.preset("tiny", vocab_size=6000, **kw))


def test_the_same_sample_is_never_its_own_vtm_negative_and_is_a_vtc_positive():
    from model_helpers import make_batch

    model = _tiny_model(vtm_negatives="hard")
    batch = make_batch(model.config, batch_size=6, seed=1)
    batch["video"][1] = batch["video"][0]  # rows 0 and 1: one clip, two different captions
    batch["sample_id"] = torch.tensor([7, 7, 1, 2, 3, 4])
    for seed in range(20):
        torch.manual_seed(seed)
        out = model(batch)
        neg_text, neg_video = model._last_negatives
        assert neg_text[0] != 1 and neg_text[1] != 0 and neg_video[0] != 1 and neg_video[1] != 0
    torch.manual_seed(0)
    with_id = model(batch).losses["vtc"]
    torch.manual_seed(0)
    without = model({k: v for k, v in batch.items() if k != "sample_id"}).losses["vtc"]
    assert not torch.allclose(with_id, without)  # the second caption of clip 0 counts as its positive
    assert out.metrics["vtm_acc"].shape == ()


def test_vtm_negatives_mode_switches_the_sampler():
    from model_helpers import make_batch

    model = _tiny_model(vtm_negatives="auto")
    batch = make_batch(model.config, batch_size=8, seed=2)
    picks = {}
    for hard in (None, False, True):  # None: the config's choice ("auto" starts uniform; the trainer decides)
        torch.manual_seed(0)
        model(batch, vtm_hard=hard)
        picks[hard] = [t.clone() for t in model._last_negatives]
    assert all(torch.equal(a, b) for a, b in zip(picks[None], picks[False]))
    assert any((a != b).any() for a, b in zip(picks[False], picks[True]))
    hard_model = _tiny_model(vtm_negatives="hard")
    torch.manual_seed(0)
    hard_model.load_state_dict(model.state_dict())
    hard_model(batch)
    assert all(torch.equal(a, b) for a, b in zip(hard_model._last_negatives, picks[True]))  # "hard": mined
    with pytest.raises(ValueError, match="vtm_negatives"):
        _tiny_model(vtm_negatives="hardest")
    with pytest.raises(ValueError, match="vtm_switch_acc"):
        _tiny_model(vtm_switch_acc=1.5)


@pytest.mark.parametrize(
    "start, loss_sign, moves",
    [(2.0, +1, True), (2.0, -1, False), (-9.0, -1, True), (-9.0, +1, False), (-2.0, +1, True), (-2.0, -1, True)],
)
def test_temperature_can_never_get_stuck_outside_its_range(start, loss_sign, moves):
    """log temperature pushed out of [log 0.001, log 0.5]: the clamp holds the value in range, and a
    gradient that points back inside always reaches the parameter (a plain clamp would give 0 forever)."""
    model = _tiny_model()
    with torch.no_grad():
        model.vtc_log_temp.fill_(start)
    t = model.temp
    assert model.config.temp_min * (1 - 1e-6) <= t.item() <= model.config.temp_max * (1 + 1e-6)
    (loss_sign * t).backward()  # +1: the loss wants a lower temperature, -1: a higher one
    g = model.vtc_log_temp.grad.item()
    assert (g != 0) == moves
    if moves:
        opt = torch.optim.SGD([model.vtc_log_temp], lr=0.5)
        opt.step()
        assert (model.vtc_log_temp.item() - start) * loss_sign < 0  # moved the way the loss asks


def test_checkpoints_from_before_the_log_temperature_load_their_temperature():
    """An old state dict has `vtc_temp` (the raw value); it loads as `vtc_log_temp` = log of it."""
    from smaug.checkpoint import adapt_state_dict

    model = _tiny_model()
    old = {k: v for k, v in model.state_dict().items() if k != "vtc_log_temp"}
    old["vtc_temp"] = torch.tensor([0.05])
    sd, notes = adapt_state_dict(old, model.state_dict(), "old.ckpt")
    assert "vtc_temp" not in sd and notes == ["vtc_temp: converted to vtc_log_temp"]
    model.load_state_dict(sd)
    assert model.temp.item() == pytest.approx(0.05)


def test_vtm_hard_share_mines_the_first_rows_and_reports_each_kind_against_its_prior(monkeypatch):
    """vtm_hard in (0, 1): the first round(share x b) rows get mined negatives, the rest uniform ones; the pair
    accuracy comes per kind (each row: 1 positive + 2 negatives, prior 2/3), weighted back to vtm_acc."""
    import smaug.models.smaug as smaug_module

    from model_helpers import make_batch

    seen = []

    def spy(sim, same, gen, hard):
        seen.append(hard.clone() if isinstance(hard, torch.Tensor) else hard)
        return sample_negatives(sim, same, gen, hard)

    monkeypatch.setattr(smaug_module, "sample_negatives", spy)
    model = _tiny_model()
    batch = make_batch(model.config, batch_size=8, seed=3)
    for share in (0.0, 0.25, 0.5, 1.0, True, False):
        out = model(batch, vtm_hard=share)
        m = out.metrics
        assert ("vtm_acc_hard" in m) == (share > 0) and ("vtm_acc_uniform" in m) == (share < 1)
        if 0 < share < 1:
            w = float(share)
            torch.testing.assert_close(m["vtm_acc"], w * m["vtm_acc_hard"] + (1 - w) * m["vtm_acc_uniform"])
    assert seen[0] is False and seen[3] is True and seen[4] is True and seen[5] is False  # all or none: plain sampler
    assert seen[1].tolist() == [True, True] + [False] * 6 and seen[2].tolist() == [True] * 4 + [False] * 4
    for bad in ("vtm_hard_share", "vtm_dup_overlap"):
        with pytest.raises(ValueError, match=bad):
            _tiny_model(**{bad: 0.0})
