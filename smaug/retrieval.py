"""Zero-shot retrieval: feature extraction over an eval loader, VTM reranking, R@K / rank metrics.

Shared by the trainer's periodic eval (`zero_shot`, VTC only) and `tools/eval_retrieval.py`
(`evaluate`, VTC then VTM reranking), so both report the same VTC numbers by the same protocol.

Works on one process or many:
- Features. Each rank encodes its share of the eval clips (and their captions); the
  embeddings are all-gathered (on CPU), sorted by clip key, duplicates dropped. Every caption
  of a clip is a separate text query (MSRVTT-style multi-caption sets).
- VTC. Every rank computes the full text x video cosine matrix from the gathered embeddings.
- VTM reranking (Singularity's protocol). For each text the top-k videos by VTC, for each video
  the top-k texts, are rescored by the VTM head (cross-attention fusion). The reranked order is:
  the k candidates by VTM logit, then everything else in VTC order. A (text, video) pair is
  scored once even when both directions ask for it. Video tokens stay on the rank that encoded
  the clip (on the device, or on CPU with `offload="cpu"`); text states are gathered. Each rank
  scores the candidate pairs whose video it holds, so the rerank work of all queries is split
  over the ranks, and the scores are all-gathered.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass
class Features:
    """Embeddings of an eval set. Captions are flattened: text i belongs to video `txt2vid[i]`.

    With `keep_tokens`, also what VTM needs: this rank's video tokens (`frame_tokens`,
    `frame_feat`, rows given by `local_rows[key]`) and every text's BERT states (`text_hidden`,
    `text_mask`, aligned with `text`).
    """

    keys: list[str]
    video: torch.Tensor  # [Nv, D] normalised
    text: torch.Tensor  # [Nt, D] normalised
    txt2vid: torch.Tensor  # [Nt] long
    captions: list[str] = field(default_factory=list)
    local_rows: Optional[dict] = None  # key -> row of frame_tokens / frame_feat (this rank's clips)
    frame_tokens: Optional[torch.Tensor] = None  # [Nv_local, T, 1 + n, Dv]
    frame_feat: Optional[torch.Tensor] = None  # [Nv_local, T, E]
    text_hidden: Optional[torch.Tensor] = None  # [Nt, L, Dt] (zero-padded)
    text_mask: Optional[torch.Tensor] = None  # [Nt, L]


def _batch_captions(batch) -> list[list[str]]:
    if "captions" in batch:
        return [list(c) if isinstance(c, (list, tuple)) else [c] for c in batch["captions"]]
    return [[c] for c in batch["caption"]]


@torch.no_grad()
def extract_features(model, loader, tokenizer, device, max_samples: int = 0, max_text_len: int = 32,
                     autocast_dtype=None, keep_tokens: bool = False, offload: str = "none") -> Features:
    """Run the encoders over `loader` (this rank's share); gather all ranks' results on every rank.

    `keep_tokens`: keep the video tokens and text states for VTM reranking; video tokens on
    `device`, or on CPU with `offload="cpu"`.
    """
    was_training = model.training
    model.eval()
    keys, vfeats, tfeats, t2v, caps = [], [], [], [], []
    tokens, ffeats, hiddens = [], [], []  # keep_tokens only; hiddens: one [len_i, Dt] per text
    store = torch.device("cpu") if offload == "cpu" else device
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    for batch in loader:
        video = batch["video"].to(device, non_blocking=True)
        with ctx:
            if keep_tokens:
                ft, v, ff = model.encode_video(video)
                tokens.append(ft.to(store))
                ffeats.append(ff.to(store))
            else:
                v = model.get_video_features(video)
        vfeats.append(v.float().cpu())
        keys.extend(batch["key"])
        clip_caps = _batch_captions(batch)
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
    local = Features(keys, _cat(vfeats), _cat(tfeats), torch.tensor(t2v, dtype=torch.long), caps)
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


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_gather_object(obj) -> list:
    if _world() == 1:
        return [obj]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def gather_features(local: Features, hiddens: Optional[list] = None) -> Features:
    """Concatenate every rank's features (object all-gather on CPU), sorted by key, duplicate clips dropped.

    Texts with the same caption share the features of its first occurrence (in key order): they are
    equal up to float noise of batch composition, which would otherwise break ties differently with
    different batch sizes or world sizes.

    `hiddens`: this rank's per-text BERT states (list aligned with `local.text`); when given they are
    gathered too and returned as zero-padded `text_hidden` / `text_mask`.
    """
    parts = _all_gather_object((local, hiddens))
    rows = []  # (key, video_feat, [(text_feat, caption, hidden)])
    for p, hs in parts:
        for i, k in enumerate(p.keys):
            sel = (p.txt2vid == i).nonzero().flatten().tolist()
            rows.append((k, p.video[i], [(p.text[j], p.captions[j] if p.captions else "", hs[j] if hs else None)
                                         for j in sel]))
    rows.sort(key=lambda r: r[0])
    seen, keys, vids, texts, t2v, caps, hid = set(), [], [], [], [], [], []
    by_caption: dict[str, tuple] = {}
    for k, v, ts in rows:
        if k in seen:
            continue
        seen.add(k)
        keys.append(k)
        vids.append(v)
        for t, c, h in ts:
            if c:  # the same caption gets the same (first-encoded) features: no tie-breaks by float noise
                t, h = by_caption.setdefault(c, (t, h))
            texts.append(t)
            t2v.append(len(keys) - 1)
            caps.append(c)
            hid.append(h)
    out = Features(keys, torch.stack(vids) if vids else torch.zeros(0, 0),
                   torch.stack(texts) if texts else torch.zeros(0, 0), torch.tensor(t2v, dtype=torch.long), caps)
    if hiddens is not None and hid:
        L = max(h.shape[0] for h in hid)
        out.text_hidden = torch.stack([F.pad(h, (0, 0, 0, L - h.shape[0])) for h in hid])
        out.text_mask = torch.stack([torch.arange(L) < h.shape[0] for h in hid]).long()
    return out


# ---------------------------------------------------------------------------- metrics
def ranks_t2v(sim: torch.Tensor, txt2vid: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of the right video for each text. sim: [Nt, Nv]."""
    target = sim.gather(1, txt2vid[:, None])
    return (sim > target).sum(1)


def ranks_v2t(sim: torch.Tensor, txt2vid: torch.Tensor) -> torch.Tensor:
    """Rank of the best-ranked right caption for each video. sim: [Nt, Nv]."""
    s = sim.t()  # [Nv, Nt]
    nv = s.shape[0]
    own = txt2vid[None, :] == torch.arange(nv)[:, None]  # [Nv, Nt]
    best = s.masked_fill(~own, float("-inf")).max(1, keepdim=True).values
    return (s > best).sum(1)


def rank_metrics(ranks: torch.Tensor, prefix: str) -> dict:
    r = ranks.float()
    out = {f"{prefix}_r{k}": 100.0 * (r < k).float().mean().item() for k in (1, 5, 10)}
    out[f"{prefix}_medr"] = (r.median() + 1).item()
    out[f"{prefix}_meanr"] = (r.mean() + 1).item()
    return out


def chance_levels(nv: int) -> dict:
    return dict(chance_r1=100.0 / max(nv, 1), chance_r5=100.0 * min(5, nv) / max(nv, 1),
                chance_r10=100.0 * min(10, nv) / max(nv, 1))


def retrieval_metrics(sim: torch.Tensor, txt2vid: torch.Tensor) -> dict:
    """R@1/5/10 (percent), median and mean rank (1-based), both directions, plus chance levels."""
    nt, nv = sim.shape
    out = {**rank_metrics(ranks_t2v(sim, txt2vid), "t2v"), **rank_metrics(ranks_v2t(sim, txt2vid), "v2t")}
    out.update(num_videos=nv, num_texts=nt, **chance_levels(nv))
    return out


def zero_shot(model, loader, tokenizer, device, max_samples: int = 0, max_text_len: int = 32) -> dict:
    """Extract features and compute VTC-similarity retrieval metrics (no VTM reranking)."""
    f = extract_features(model, loader, tokenizer, device, max_samples, max_text_len)
    if len(f.keys) == 0:
        raise RuntimeError("zero-shot eval: the eval loader produced no samples")
    return retrieval_metrics(f.text @ f.video.t(), f.txt2vid)


# ---------------------------------------------------------------------------- VTM reranking
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


@torch.no_grad()
def vtm_pair_scores(model, feats: Features, pairs: torch.Tensor, device, batch_size: int = 64,
                    autocast_dtype=None) -> dict[tuple[int, int], float]:
    """VTM logits of the (text, video) `pairs` [P, 2]; gathered from all ranks.

    Each rank scores the pairs whose video it holds. Texts with the same caption are scored once
    (so duplicate captions get bit-identical logits, as they get identical VTC similarities, and
    never tie-break differently by floating-point noise of batch composition).
    """
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
        chunk = todo[s:s + batch_size]
        t = torch.tensor([c[0] for c in chunk], dtype=torch.long)
        r = torch.tensor([feats.local_rows[feats.keys[c[1]]] for c in chunk], dtype=torch.long)
        am = feats.text_mask[t]
        L = int(am.sum(1).max())  # trim the batch to its longest text
        with ctx:
            logits = model.vtm_logits(feats.frame_tokens[r.to(feats.frame_tokens.device)].to(device),
                                      feats.frame_feat[r.to(feats.frame_feat.device)].to(device),
                                      feats.text_hidden[t, :L].to(device),
                                      feats.text[t].to(device, feats.frame_feat.dtype), am[:, :L].to(device))
        for c, x in zip(chunk, logits.float().cpu().tolist()):
            for pair in want[c]:
                local[pair] = x
    out: dict[tuple[int, int], float] = {}
    for part in _all_gather_object(local):
        out.update(part)
    return out


def evaluate(model, loader, tokenizer, device, k: int = 128, max_text_len: int = 32, max_samples: int = 0,
             autocast_dtype=None, offload: str = "none", batch_size: int = 64) -> dict:
    """Full protocol: VTC for all pairs, then VTM reranking of the top `k` (k = 0: VTC only).

    Returns {"vtc": metrics, "reranked": metrics or None, "num_pairs_scored": int, "keys": [...]};
    metrics as `retrieval_metrics` (both directions, chance levels). Collective with world > 1.
    """
    feats = extract_features(model, loader, tokenizer, device, max_samples, max_text_len, autocast_dtype,
                             keep_tokens=k > 0, offload=offload)
    if len(feats.keys) == 0:
        raise RuntimeError("retrieval eval: the eval loader produced no samples")
    sim = feats.text @ feats.video.t()  # [Nt, Nv]
    out = {"vtc": retrieval_metrics(sim, feats.txt2vid), "reranked": None, "num_pairs_scored": 0,
           "keys": feats.keys}
    if k <= 0:
        return out
    top_t2v, top_v2t = candidate_pairs(sim, k)
    nt, nv = sim.shape
    pairs_t2v = torch.stack([torch.arange(nt)[:, None].expand_as(top_t2v), top_t2v], -1).reshape(-1, 2)
    pairs_v2t = torch.stack([top_v2t, torch.arange(nv)[:, None].expand_as(top_v2t)], -1).reshape(-1, 2)
    pairs = torch.unique(torch.cat([pairs_t2v, pairs_v2t]), dim=0)
    scores = vtm_pair_scores(model, feats, pairs, device, batch_size, autocast_dtype)
    missing = [tuple(p) for p in pairs.tolist() if tuple(p) not in scores]
    if missing:
        raise RuntimeError(f"VTM rerank: {len(missing)} candidate pairs were scored by no rank (e.g. {missing[:3]})")
    s_t2v = torch.tensor([[scores[(t, v)] for v in row] for t, row in enumerate(top_t2v.tolist())])
    s_v2t = torch.tensor([[scores[(t, v)] for t in row] for v, row in enumerate(top_v2t.tolist())])
    final_t2v = rerank_scores(sim, top_t2v, s_t2v)  # [Nt, Nv]
    final_v2t = rerank_scores(sim.t(), top_v2t, s_v2t)  # [Nv, Nt]
    rr = {**rank_metrics(ranks_t2v(final_t2v, feats.txt2vid), "t2v"),
          **rank_metrics(ranks_v2t(final_v2t.t(), feats.txt2vid), "v2t")}
    rr.update(num_videos=nv, num_texts=nt, **chance_levels(nv))
    out.update(reranked=rr, num_pairs_scored=len(pairs))
    return out
