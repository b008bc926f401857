"""Retrieval evaluation: feature extraction over an eval loader, VTM reranking, tie-aware R@K / rank
metrics, and the report (protocol + results) that the trainer's eval.json and the tool share.

One path for both: the trainer's periodic eval and `tools/eval_retrieval.py` call `evaluate` and
`retrieval_report`, so they report the same numbers by the same protocol in the same schema.

Works on one process or many:
- Features. Each rank encodes its share of the eval clips (and their captions); the
  embeddings are all-gathered (on CPU), sorted by clip key, duplicates dropped. Every caption
  of a clip is a separate text query (MSRVTT-style multi-caption sets), or, with `paragraph`,
  all captions of a clip joined into one query (DiDeMo / ActivityNet paragraph retrieval).
- VTC. Every rank computes the full text x video similarity matrix from the gathered
  embeddings: `pooling="embed"` the cosine of the L2-normalised video embedding (the model's pooling
  component: the mean of the frames' [CLS] projections, plus their moments over time when the model has
  them); `"frame_sim"` the mean over frames of the cosine of
  each normalised frame embedding with the text. With `dsl`, dual-softmax results are added
  next to the plain ones (see `dual_softmax`).
- Three rankings of the top-k candidates (for each text the top-k videos by VTC, for each video
  the top-k texts), every other item below them in VTC order:
  `vtm`: by the VTM logit (Singularity's rerank);
  `combined`: by log softmax_j(sim_ij / temp) + log sigmoid(vtm_ij), the softmax over all videos
  (t2v) or all texts (v2t), temp the model's VTC temperature: VTC's retrieval probability times
  VTM's match probability, so a VTM head near its label prior cannot reorder VTC's confident
  candidates on its own.
  A (text, video) pair is scored once even when both directions ask for it. Video tokens stay
  on the rank that encoded the clip (on the device, or on CPU with `offload="cpu"`); text states
  are gathered. Each rank scores the candidate pairs whose video it holds, so the rerank work
  is split over the ranks, and the scores are all-gathered. `vtm_acc` is the VTM pair accuracy
  on the scored pairs (logit > 0 vs "the video is the text's own"), next to the fraction of
  positives among them (an always-"no" head gets 1 - that).
- Metrics (`rank_metrics`). Ties count neither for nor against the model: a query's rank is
  the expected rank under a uniform random order of equally scored items, so collapsed
  features (all similarities equal) score chance level, not 100%. R@K is that expectation of
  P(rank < K); the median rank is `np.median` of the per-query expected ranks (mean of the two
  middle values for an even count) + 1, as CLIP4Clip and ALBEF/Singularity report it; without
  ties all metrics equal ALBEF/Singularity's `itm_eval`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from smaug.data.config import MAX_TEXT_LEN
from smaug.dist import gather_object


@dataclass
class Features:
    """Embeddings of an eval set. Captions are flattened: text i belongs to video `txt2vid[i]`.

    With `frames`, every video's per-frame embeddings (`video_frames`, for `pooling="frame_sim"`).
    With `keep_tokens`, also what VTM needs: this rank's video tokens (`frame_tokens`,
    `frame_feat`, rows given by `local_rows[key]`) and every text's BERT states (`text_hidden`,
    `text_mask`, aligned with `text`).
    """

    keys: list[str]
    video: torch.Tensor  # [Nv, D] normalised
    text: torch.Tensor  # [Nt, D] normalised
    txt2vid: torch.Tensor  # [Nt] long
    captions: list[str] = field(default_factory=list)
    video_frames: Optional[torch.Tensor] = None  # [Nv, T, D] normalised per-frame embeddings (all videos)
    local_rows: Optional[dict] = None  # key -> row of frame_tokens / frame_feat (this rank's clips)
    frame_tokens: Optional[torch.Tensor] = None  # [Nv_local, T, 1 + n, Dv]
    frame_feat: Optional[torch.Tensor] = None  # [Nv_local, T, E]
    text_hidden: Optional[torch.Tensor] = None  # [Nt, L, Dt] (zero-padded)
    text_mask: Optional[torch.Tensor] = None  # [Nt, L]


def _batch_captions(batch, paragraph: bool = False) -> list[list[str]]:
    """Captions of each clip of `batch`; with `paragraph`, one query per clip: its captions joined
    by spaces, in order."""
    if "captions" in batch:
        caps = [list(c) if isinstance(c, (list, tuple)) else [c] for c in batch["captions"]]
    else:
        caps = [[c] for c in batch["caption"]]
    return [[" ".join(cs)] for cs in caps] if paragraph else caps


@torch.no_grad()
def extract_features(
    model,
    loader,
    tokenizer,
    device,
    max_samples: int = 0,
    max_text_len: int = MAX_TEXT_LEN,
    autocast_dtype=None,
    keep_tokens: bool = False,
    offload: str = "none",
    frames: bool = False,
    paragraph: bool = False,
    video_transform=None,
) -> Features:
    """Run the encoders over `loader` (this rank's share); gather all ranks' results on every rank.

    `keep_tokens`: keep the video tokens and text states for VTM reranking; video tokens on
    `device`, or on CPU with `offload="cpu"`. `frames`: also gather every video's per-frame
    embeddings (`video_frames`). `paragraph`: one text query per clip, its captions joined.
    `video_transform`: optional callable applied to each uint8 video batch [B, T, 3, H, W] (on
    `device`) before encoding, returning the same shape and dtype (e.g. a frozen-frame control).
    """
    was_training = model.training
    model.eval()
    keys, vfeats, tfeats, t2v, caps, vframes = [], [], [], [], [], []
    tokens, ffeats, hiddens = [], [], []  # keep_tokens only; hiddens: one [len_i, Dt] per text
    store = torch.device("cpu") if offload == "cpu" else device
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    for batch in loader:
        video = batch["video"].to(device, non_blocking=True)
        if video_transform is not None:
            video = video_transform(video)
        with ctx:
            if keep_tokens or frames:
                ft, v, ff = model.encode_video(video)  # eval mode: no MAE masking
                if keep_tokens:
                    tokens.append(ft.to(store))
                    ffeats.append(ff.to(store))
                if frames:
                    vframes.append(ff.float().cpu())
            else:
                v = model.get_video_features(video)
        vfeats.append(v.float().cpu())
        keys.extend(batch["key"])
        clip_caps = _batch_captions(batch, paragraph)
        flat = [c for cs in clip_caps for c in cs]
        owner = [len(keys) - len(clip_caps) + i for i, cs in enumerate(clip_caps) for _ in cs]
        tok = tokenizer(flat, padding=True, truncation=True, max_length=max_text_len, return_tensors="pt")
        ids, am = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        with ctx:
            if keep_tokens:
                h, t = model.encode_text(ids, am)
                lens = am.sum(1).tolist()
                hiddens.extend(h[i, :n].cpu() for i, n in enumerate(lens))
            else:
                t = model.get_text_features(ids, am)
        tfeats.append(t.float().cpu())
        t2v.extend(owner)
        caps.extend(flat)
        if max_samples and len(keys) >= max_samples:
            break
    model.train(was_training)
    local = Features(
        keys,
        _cat(vfeats),
        _cat(tfeats),
        torch.tensor(t2v, dtype=torch.long),
        caps,
        video_frames=_cat(vframes) if frames else None,
    )
    if not keep_tokens:
        return gather_features(local)
    out = gather_features(local, hiddens)
    out.local_rows = {}
    for i, k in enumerate(keys):
        out.local_rows.setdefault(k, i)
    out.frame_tokens = torch.cat(tokens) if tokens else None
    out.frame_feat = torch.cat(ffeats) if ffeats else None
    return out


def _cat(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(xs) if xs else torch.zeros(0, 0)


def gather_features(local: Features, hiddens: Optional[list] = None) -> Features:
    """Concatenate every rank's features (object all-gather on CPU), sorted by key, duplicate clips dropped.

    Texts with the same caption share the features of its first occurrence (in key order): they are
    equal up to float noise of batch composition, which would otherwise break ties differently with
    different batch sizes or world sizes.

    `hiddens`: this rank's per-text BERT states (list aligned with `local.text`); when given they are
    gathered too and returned as zero-padded `text_hidden` / `text_mask`.
    """
    parts = gather_object((local, hiddens))
    rows = []  # (key, video_feat, frame feats or None, [(text_feat, caption, hidden)])
    for p, hs in parts:
        for i, k in enumerate(p.keys):
            sel = (p.txt2vid == i).nonzero().flatten().tolist()
            rows.append(
                (
                    k,
                    p.video[i],
                    None if p.video_frames is None else p.video_frames[i],
                    [(p.text[j], p.captions[j] if p.captions else "", hs[j] if hs else None) for j in sel],
                )
            )
    rows.sort(key=lambda r: r[0])
    seen, keys, vids, vframes, texts, t2v, caps, hid = set(), [], [], [], [], [], [], []
    by_caption: dict[str, tuple] = {}
    for k, v, fr, ts in rows:
        if k in seen:
            continue
        seen.add(k)
        keys.append(k)
        vids.append(v)
        vframes.append(fr)
        for t, c, h in ts:
            if c:  # the same caption gets the same (first-encoded) features: no tie-breaks by float noise
                t, h = by_caption.setdefault(c, (t, h))
            texts.append(t)
            t2v.append(len(keys) - 1)
            caps.append(c)
            hid.append(h)
    out = Features(
        keys,
        torch.stack(vids) if vids else torch.zeros(0, 0),
        torch.stack(texts) if texts else torch.zeros(0, 0),
        torch.tensor(t2v, dtype=torch.long),
        caps,
        video_frames=torch.stack(vframes) if vframes and local.video_frames is not None else None,
    )
    if hiddens is not None and hid:
        L = max(h.shape[0] for h in hid)
        out.text_hidden = torch.stack([F.pad(h, (0, 0, 0, L - h.shape[0])) for h in hid])
        out.text_mask = torch.stack([torch.arange(L) < h.shape[0] for h in hid]).long()
    return out


# ---------------------------------------------------------------------------- metrics
RECALL_AT = (1, 5, 10)


@dataclass
class TiedRanks:
    """Where each query's right item lands, ties included.

    With the `tied` wrong items and the `right` right items of equal score in a uniformly random
    order, the query's rank (0 = first) is `above + X`, X the number of wrong items before the
    first right one: P(X >= x) = prod_{i<x} (e - i) / (e + m - i) (e = tied, m = right).
    """

    above: torch.Tensor  # [Nq] long: wrong items scored above the query's best right item (g)
    tied: torch.Tensor  # [Nq] long: wrong items scored equal to it (e)
    right: torch.Tensor  # [Nq] long: right items at that score (m >= 1)

    def survival(self, x: torch.Tensor) -> torch.Tensor:
        """[Nq] float64 P(X >= x), x: [Nq] long >= 0 (exact, by the product above)."""
        e, m = self.tied.double(), self.right.double()
        out = torch.ones_like(e)
        for i in range(int(x.max()) if x.numel() else 0):
            factor = (e - i).clamp(min=0) / (e + m - i).clamp(min=1)  # 0 once the wrong ones run out
            out = torch.where(x > i, out * factor, out)
        return out

    def recall_at(self, k: int) -> torch.Tensor:
        """[Nq] float64 P(rank < k) = 1 - P(X >= k - above) (0 when k <= above)."""
        return 1.0 - self.survival((k - self.above).clamp(min=0))

    def expected(self) -> torch.Tensor:
        """[Nq] float64 expected rank (0 = first) = above + E[X], E[X] = sum_{x>=1} P(X >= x) = e / (m + 1):
        each tied wrong item precedes all m right ones with probability 1 / (m + 1)."""
        return self.above.double() + self.tied.double() / (self.right.double() + 1)


def ranks_t2v(sim: torch.Tensor, txt2vid: torch.Tensor) -> TiedRanks:
    """The right video's place for each text. sim: [Nt, Nv] scores ranking each text's videos."""
    target = sim.gather(1, txt2vid[:, None])  # [Nt, 1]
    above = (sim > target).sum(1)
    tied = (sim == target).sum(1) - 1  # the target itself is the one right item
    return TiedRanks(above, tied, torch.ones_like(above))


def ranks_v2t(sim: torch.Tensor, txt2vid: torch.Tensor) -> TiedRanks:
    """The best-ranked right caption's place for each video. sim: [Nt, Nv] scores ranking each video's texts."""
    s = sim.t()  # [Nv, Nt]
    own = txt2vid[None, :] == torch.arange(s.shape[0])[:, None]  # [Nv, Nt]
    best = s.masked_fill(~own, float("-inf")).max(1, keepdim=True).values  # [Nv, 1]
    at_best = s == best
    return TiedRanks((s > best).sum(1), (at_best & ~own).sum(1), (at_best & own).sum(1))


def rank_metrics(ranks: TiedRanks, prefix: str) -> dict:
    """R@1/5/10 (percent, expected over random orders of ties), median rank (np.median of the
    expected ranks: the mean of the two middle values for an even count) and mean rank, 1-based."""
    n = ranks.above.numel()
    out = {f"{prefix}_r{k}": 100.0 * ranks.recall_at(k).sum().item() / n for k in RECALL_AT}
    expected = ranks.expected()  # [Nq], 0-based
    out[f"{prefix}_medr"] = torch.quantile(expected, 0.5).item() + 1  # linear interpolation = np.median
    out[f"{prefix}_meanr"] = expected.mean().item() + 1
    return out


def chance_levels(txt2vid: torch.Tensor, nv: int) -> dict:
    """Expected R@K (percent) of scores that carry no information. text->video: K / Nv
    (`chance_rK`); video->text (`v2t_chance_rK`): a video with m of the Nt captions finds one of
    them in the top K with probability 1 - C(Nt - m, K) / C(Nt, K), averaged over the videos
    (equal to K / Nv at K = 1, or with one caption per video)."""
    nt = txt2vid.numel()
    m = torch.bincount(txt2vid, minlength=nv)  # [Nv] captions per video
    no_info = TiedRanks(torch.zeros_like(m), nt - m, m)  # every text tied
    out = {f"chance_r{k}": 100.0 * min(k, nv) / max(nv, 1) for k in RECALL_AT}
    out.update({f"v2t_chance_r{k}": 100.0 * no_info.recall_at(k).mean().item() for k in RECALL_AT})
    return out


def retrieval_metrics(sim: torch.Tensor, txt2vid: torch.Tensor, sim_v2t: Optional[torch.Tensor] = None) -> dict:
    """R@1/5/10 (percent), median and mean rank (1-based), both directions, tie-aware, plus chance levels.

    sim: [Nt, Nv] scores that rank the videos of each text; sim_v2t: [Nt, Nv] scores that rank the
    texts of each video (default: sim)."""
    nt, nv = sim.shape
    out = {
        **rank_metrics(ranks_t2v(sim, txt2vid), "t2v"),
        **rank_metrics(ranks_v2t(sim if sim_v2t is None else sim_v2t, txt2vid), "v2t"),
    }
    out.update(num_videos=nv, num_texts=nt, **chance_levels(txt2vid, nv))
    return out


# ---------------------------------------------------------------------------- similarity
POOLINGS = {  # --pooling: how a video's frames become its VTC similarity with a text
    "embed": "cosine of L2-normalised VTC embeddings (video: the model's pooling of its frames, then normalised)",
    "frame_sim": "mean over frames of the cosine of each L2-normalised frame [CLS] projection with the text embedding",
}
DSL_SCALE = 100.0  # dual softmax: inverse temperature (CAMoE / CLIP4Clip's 100)


def similarity(feats: Features, pooling: str = "embed") -> torch.Tensor:
    """VTC similarity [Nt, Nv] by `pooling` (see POOLINGS)."""
    if pooling == "embed":
        return feats.text @ feats.video.t()
    if pooling == "frame_sim":  # mean_f <t, f_f> = <t, mean_f f_f>: the frames are normalised, their mean is not
        return feats.text @ feats.video_frames.mean(1).t()
    raise ValueError(f"pooling {pooling!r}: expected one of {sorted(POOLINGS)}")


def dual_softmax(sim: torch.Tensor, dim: int) -> torch.Tensor:
    """Dual-softmax scores (DSL, CAMoE): sim * softmax(sim * DSL_SCALE, dim), float64. sim: [Nt, Nv].

    dim=0 (softmax over the texts of each video) gives the text->video scores; dim=1 (over the
    videos of each text) the video->text scores. A hub video close to every text gets a small
    softmax weight in each row of dim 0, so it stops winning every text query."""
    s = sim.double()
    return s * torch.softmax(s * DSL_SCALE, dim=dim)


# ---------------------------------------------------------------------------- VTM reranking
RANKINGS = ("vtc", "vtm", "combined", "vtc_dsl")  # the report's rankings, in table order


def candidate_pairs(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k videos of each text ([Nt, kt]) and top-k texts of each video ([Nv, kv]) by VTC."""
    nt, nv = sim.shape
    return sim.topk(min(k, nv), dim=1).indices, sim.t().topk(min(k, nt), dim=1).indices


def rerank_scores(sim: torch.Tensor, topk: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Scores that order each row's `topk` columns by `scores` ([rows, k]) and then every other column
    by `sim`, below all of them (sim: [rows, cols])."""
    s = sim.double()
    vtm = scores.double()
    floor = vtm.min() - 1.0 - (s.max() - s.min())
    out = floor + (s - s.min())  # <= vtm.min() - 1 everywhere
    return out.scatter(1, topk, vtm)


def combined_scores(sim: torch.Tensor, topk: torch.Tensor, vtm: torch.Tensor, temp: float) -> torch.Tensor:
    """[rows, k] log softmax over all columns of sim / temp, at the `topk` columns, + log sigmoid(vtm):
    log(VTC retrieval probability x VTM match probability). sim: [rows, cols], vtm: [rows, k] logits."""
    return torch.log_softmax(sim.double() / temp, dim=1).gather(1, topk) + F.logsigmoid(vtm.double())


def vtm_pair_accuracy(pairs: torch.Tensor, logits: torch.Tensor, txt2vid: torch.Tensor) -> tuple[float, float]:
    """(accuracy of `logit > 0` as "the video is the text's own", fraction of such positives) over
    the scored (text, video) `pairs` [P, 2]; logits: [P]. An always-"no" head scores 1 - positives."""
    positive = txt2vid[pairs[:, 0]] == pairs[:, 1]  # [P]
    return ((logits > 0) == positive).double().mean().item(), positive.double().mean().item()


@torch.no_grad()
def vtm_pair_scores(
    model, feats: Features, pairs: torch.Tensor, device, batch_size: int = 64, autocast_dtype=None
) -> dict[tuple[int, int], float]:
    """VTM logits of the (text, video) `pairs` [P, 2]; gathered from all ranks.

    Each rank scores the pairs whose video it holds. Texts with the same caption are scored once
    (so duplicate captions get bit-identical logits, as they get identical VTC similarities, and
    never tie-break differently by floating-point noise of batch composition).
    """
    was_training = model.training
    model.eval()
    first: dict[str, int] = {}
    canon = [first.setdefault(c, i) for i, c in enumerate(feats.captions)] if feats.captions else None
    want: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for t, v in pairs.tolist():
        if feats.keys[v] in feats.local_rows:
            want.setdefault((canon[t] if canon else t, v), []).append((t, v))
    todo = sorted(want)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    local: dict[tuple[int, int], float] = {}
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        t = torch.tensor([c[0] for c in chunk], dtype=torch.long)
        r = torch.tensor([feats.local_rows[feats.keys[c[1]]] for c in chunk], dtype=torch.long)
        am = feats.text_mask[t]
        L = int(am.sum(1).max())  # trim the batch to its longest text
        with ctx:
            logits = model.vtm_logits(
                feats.frame_tokens[r.to(feats.frame_tokens.device)].to(device),
                feats.frame_feat[r.to(feats.frame_feat.device)].to(device),
                feats.text_hidden[t, :L].to(device),
                feats.text[t].to(device, feats.frame_feat.dtype),
                am[:, :L].to(device),
            )
        for c, x in zip(chunk, logits.float().cpu().tolist()):
            for pair in want[c]:
                local[pair] = x
    model.train(was_training)
    out: dict[tuple[int, int], float] = {}
    for part in gather_object(local):
        out.update(part)
    return out


def evaluate(
    model,
    loader,
    tokenizer,
    device,
    k: int = 128,
    max_text_len: int = MAX_TEXT_LEN,
    max_samples: int = 0,
    autocast_dtype=None,
    offload: str = "none",
    batch_size: int = 64,
    pooling: str = "embed",
    dsl: bool = False,
    paragraph: bool = False,
    video_transform=None,
) -> dict:
    """Full protocol: VTC for all pairs, then the `vtm` and `combined` rankings of the top `k` (k = 0: VTC only).

    `pooling`: see POOLINGS; `dsl`: add dual-softmax VTC results (`vtc_dsl`); `paragraph`: one query
    per clip (its captions joined); `video_transform`: see `extract_features`.
    Returns {"vtc", "vtm", "combined", "vtc_dsl": metrics as `retrieval_metrics` or None,
    "vtm_acc", "vtm_pos_frac": VTM pair accuracy and positive fraction of the scored pairs or None,
    "num_pairs_scored": int, "keys": [...], "options": what was evaluated (for `retrieval_report`)},
    and, for callers and not for JSON, "sim": [Nt, Nv] VTC similarity, "features": the Features and
    "t2v_scores": {ranking: [Nt, Nv] final text->video scores} (vtc, and vtm / combined with k > 0) and
    "vtm_pairs": (pairs [P, 2] (text, video), VTM logits [P]) of the scored pairs (k > 0).
    Collective with world > 1.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: expected one of {sorted(POOLINGS)}")
    feats = extract_features(
        model,
        loader,
        tokenizer,
        device,
        max_samples,
        max_text_len,
        autocast_dtype,
        keep_tokens=k > 0,
        offload=offload,
        frames=pooling == "frame_sim",
        paragraph=paragraph,
        video_transform=video_transform,
    )
    if len(feats.keys) == 0:
        raise RuntimeError("retrieval eval: the eval loader produced no samples")
    sim = similarity(feats, pooling)  # [Nt, Nv]
    options = dict(k=k, pooling=pooling, dsl=dsl, paragraph=paragraph, max_text_len=max_text_len, vtc_temp=None)
    out = {
        "vtc": retrieval_metrics(sim, feats.txt2vid),
        "vtm": None,
        "combined": None,
        "vtc_dsl": retrieval_metrics(dual_softmax(sim, 0), feats.txt2vid, dual_softmax(sim, 1)) if dsl else None,
        "vtm_acc": None,
        "vtm_pos_frac": None,
        "num_pairs_scored": 0,
        "keys": feats.keys,
        "options": options,
        "sim": sim,
        "features": feats,
        "t2v_scores": {"vtc": sim},
    }
    if k <= 0:
        return out
    top_t2v, top_v2t = candidate_pairs(sim, k)  # [Nt, kt], [Nv, kv]
    nt, nv = sim.shape
    pairs_t2v = torch.stack([torch.arange(nt)[:, None].expand_as(top_t2v), top_t2v], -1).reshape(-1, 2)
    pairs_v2t = torch.stack([top_v2t, torch.arange(nv)[:, None].expand_as(top_v2t)], -1).reshape(-1, 2)
    pairs = torch.unique(torch.cat([pairs_t2v, pairs_v2t]), dim=0)  # [P, 2] (text, video)
    scores = vtm_pair_scores(model, feats, pairs, device, batch_size, autocast_dtype)
    missing = [tuple(p) for p in pairs.tolist() if tuple(p) not in scores]
    if missing:
        raise RuntimeError(f"VTM rerank: {len(missing)} candidate pairs were scored by no rank (e.g. {missing[:3]})")
    s_t2v = torch.tensor([[scores[(t, v)] for v in row] for t, row in enumerate(top_t2v.tolist())])  # [Nt, kt]
    s_v2t = torch.tensor([[scores[(t, v)] for t in row] for v, row in enumerate(top_v2t.tolist())])  # [Nv, kv]
    temp = float(model.temp.detach())
    for name, st, sv in (
        ("vtm", s_t2v, s_v2t),
        ("combined", combined_scores(sim, top_t2v, s_t2v, temp), combined_scores(sim.t(), top_v2t, s_v2t, temp)),
    ):
        out["t2v_scores"][name] = rerank_scores(sim, top_t2v, st)
        out[name] = retrieval_metrics(out["t2v_scores"][name], feats.txt2vid, rerank_scores(sim.t(), top_v2t, sv).t())
    logits = torch.tensor([scores[p] for p in map(tuple, pairs.tolist())])
    out["vtm_acc"], out["vtm_pos_frac"] = vtm_pair_accuracy(pairs, logits, feats.txt2vid)
    out["vtm_pairs"] = (pairs, logits)
    out["num_pairs_scored"] = len(pairs)
    options["vtc_temp"] = temp
    return out


# ---------------------------------------------------------------------------- the report
_PER_SET = ("num_videos", "num_texts", *(f"{d}r{k}" for d in ("chance_", "v2t_chance_") for k in RECALL_AT))


def retrieval_report(
    res: dict,
    *,
    split: str,
    data: dict,
    frames: int,
    image_size: int,
    decode_short_side,
    precision: str,
    device: str,
    world_size: int,
    skipped: dict,
    step=None,
    checkpoint=None,
    checkpoint_kind=None,
) -> dict:
    """The report of an `evaluate` result: {"protocol": how the numbers were made, "results": {ranking:
    metrics or None, "vtm_acc", "vtm_pos_frac"}, "warnings": `report_warnings`}. One schema for
    `tools/eval_retrieval.py --out` and the trainer's eval.json. Per-set counts and chance levels live
    in the protocol, not in each ranking."""
    opt, vtc = res["options"], res["vtc"]
    k = opt["k"]
    protocol = {
        "checkpoint": checkpoint,
        "checkpoint_kind": checkpoint_kind,
        "step": step,
        "split": split,
        **data,
        "frames": frames,
        "image_size": image_size,
        "decode_short_side": decode_short_side,
        "frame_sampling": "segment centres",
        "crop": "short-side resize + centre crop",
        "queries": (
            "paragraph: one per clip, its captions joined by spaces in order"
            if opt["paragraph"]
            else "one per caption; video->text counts the best-ranked caption"
        ),
        "max_text_len": opt["max_text_len"],
        "pooling": opt["pooling"],
        "similarity": POOLINGS[opt["pooling"]],
        "ties": "expected rank under a uniform random order of equal scores (R@K and ranks are expectations)",
        "median_rank": "np.median of the per-query ranks (mean of the two middle values for an even count) + 1",
        "k": k,
        "rerank": ("vtm: the VTC top-k of each query by VTM logit, then the rest in VTC order" if k else "none"),
        "combine": (
            "combined: the VTC top-k of each query by log softmax(sim / vtc_temp) over all videos (t2v) "
            "or texts (v2t) + log sigmoid(VTM logit), then the rest in VTC order"
            if k
            else "none"
        ),
        "vtc_temp": opt["vtc_temp"],
        "dsl": (
            f"vtc_dsl: sim * softmax({DSL_SCALE:g} * sim) over the texts of each video (t2v) / over the videos "
            "of each text (v2t)"
            if opt["dsl"]
            else "none"
        ),
        **{key: vtc[key] for key in _PER_SET},
        "precision": precision,
        "device": device,
        "world_size": world_size,
        "num_pairs_reranked": res["num_pairs_scored"],
        "skipped": skipped,
    }
    results = {
        name: ({key: v for key, v in res[name].items() if key not in _PER_SET} if res[name] else None)
        for name in RANKINGS
        if name != "vtc_dsl" or opt["dsl"]
    }
    results.update(vtm_acc=res["vtm_acc"], vtm_pos_frac=res["vtm_pos_frac"])
    return {"protocol": protocol, "results": results, "warnings": report_warnings(results)}


def ranking_rows(results: dict):
    """(ranking, direction, R@1, R@5, R@10, MedR, MeanR) for each ranking present in a report's `results`,
    in table order (for the tool's table and the model card)."""
    for name in RANKINGS:
        for d in ("t2v", "v2t") if results.get(name) else ():
            yield (name, d, *(results[name][f"{d}_{key}"] for key in ("r1", "r5", "r10", "medr", "meanr")))


def report_warnings(results: dict) -> list[str]:
    """What in a report's `results` should not pass silently: a VTM head no better than its label
    prior on the scored pairs, and a VTM-based ranking with a lower R@1 than VTC alone."""
    out = []
    if results.get("vtm_acc") is not None and results["vtm_acc"] <= 1 - results["vtm_pos_frac"]:
        out.append(
            f"the VTM head is no better than its label prior: pair accuracy {results['vtm_acc']:.3f}, "
            f"always-'no' {1 - results['vtm_pos_frac']:.3f}"
        )
    for name in ("vtm", "combined"):
        for d in ("t2v", "v2t") if results.get(name) else ():
            if results[name][f"{d}_r1"] < results["vtc"][f"{d}_r1"]:
                out.append(
                    f"{name} {d} R@1 {results[name][f'{d}_r1']:.2f} is below VTC's {results['vtc'][f'{d}_r1']:.2f}"
                )
    return out


def report_scalars(report: dict) -> dict:
    """Flat {"vtc/t2v_r1": ..., "vtm_acc": ..., "num_videos": ..., "chance_r1": ...} of a report (for logs)."""
    res = report["results"]
    out = {f"{name}/{key}": v for name in RANKINGS if res.get(name) for key, v in res[name].items()}
    out.update({key: res[key] for key in ("vtm_acc", "vtm_pos_frac") if res[key] is not None})
    out.update({key: report["protocol"][key] for key in ("num_videos", "num_texts", "chance_r1", "v2t_chance_r1")})
    return out
