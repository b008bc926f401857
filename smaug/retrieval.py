"""Zero-shot retrieval: feature extraction over an eval loader and R@K / rank metrics.

Shared by the trainer's periodic eval and `tools/eval_retrieval.py`, so both report the
same numbers by the same protocol. Works on one process or many: each rank extracts the
features of its share of the eval set, rank 0 gathers them (on CPU) and computes metrics.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Features:
    """Embeddings of an eval set. Captions are flattened: text i belongs to video `txt2vid[i]`."""

    keys: list[str]
    video: torch.Tensor  # [Nv, D] normalised
    text: torch.Tensor  # [Nt, D] normalised
    txt2vid: torch.Tensor  # [Nt] long
    captions: list[str] = field(default_factory=list)


def _batch_captions(batch) -> list[list[str]]:
    if "captions" in batch:
        return [list(c) if isinstance(c, (list, tuple)) else [c] for c in batch["captions"]]
    return [[c] for c in batch["caption"]]


@torch.no_grad()
def extract_features(model, loader, tokenizer, device, max_samples: int = 0, max_text_len: int = 32,
                     autocast_dtype=None) -> Features:
    """Run the encoders over `loader` (this rank's share); gather all ranks' results on every rank.

    Every caption of a video is a separate text query (MSRVTT-style multi-caption sets).
    """
    was_training = model.training
    model.eval()
    keys, vfeats, tfeats, t2v, caps = [], [], [], [], []
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    for batch in loader:
        with ctx:
            v = model.get_video_features(batch["video"].to(device, non_blocking=True))
        vfeats.append(v.float().cpu())
        keys.extend(batch["key"])
        clip_caps = _batch_captions(batch)
        flat = [c for cs in clip_caps for c in cs]
        owner = [len(keys) - len(clip_caps) + i for i, cs in enumerate(clip_caps) for _ in cs]
        tok = tokenizer(flat, padding=True, truncation=True, max_length=max_text_len, return_tensors="pt")
        with ctx:
            t = model.get_text_features(tok["input_ids"].to(device), tok["attention_mask"].to(device))
        tfeats.append(t.float().cpu())
        t2v.extend(owner)
        caps.extend(flat)
        if max_samples and len(keys) >= max_samples:
            break
    model.train(was_training)
    local = Features(keys, _cat(vfeats), _cat(tfeats), torch.tensor(t2v, dtype=torch.long), caps)
    return gather_features(local)


def _cat(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(xs) if xs else torch.zeros(0, 0)


def gather_features(local: Features) -> Features:
    """Concatenate every rank's features (object all-gather on CPU), sorted by key, duplicates dropped."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        parts = [local]
    else:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
    rows = []  # (key, video_feat, [(text_feat, caption)])
    for p in parts:
        for i, k in enumerate(p.keys):
            sel = (p.txt2vid == i).nonzero().flatten().tolist()
            rows.append((k, p.video[i], [(p.text[j], p.captions[j] if p.captions else "") for j in sel]))
    rows.sort(key=lambda r: r[0])
    seen, keys, vids, texts, t2v, caps = set(), [], [], [], [], []
    for k, v, ts in rows:
        if k in seen:
            continue
        seen.add(k)
        keys.append(k)
        vids.append(v)
        for t, c in ts:
            texts.append(t)
            t2v.append(len(keys) - 1)
            caps.append(c)
    return Features(keys, torch.stack(vids) if vids else torch.zeros(0, 0),
                    torch.stack(texts) if texts else torch.zeros(0, 0), torch.tensor(t2v, dtype=torch.long), caps)


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


def retrieval_metrics(sim: torch.Tensor, txt2vid: torch.Tensor) -> dict:
    """R@1/5/10 (percent), median and mean rank (1-based), both directions, plus chance levels."""
    nt, nv = sim.shape
    out = {**rank_metrics(ranks_t2v(sim, txt2vid), "t2v"), **rank_metrics(ranks_v2t(sim, txt2vid), "v2t")}
    out.update(num_videos=nv, num_texts=nt,
               chance_r1=100.0 / max(nv, 1), chance_r5=100.0 * min(5, nv) / max(nv, 1),
               chance_r10=100.0 * min(10, nv) / max(nv, 1))
    return out


def zero_shot(model, loader, tokenizer, device, max_samples: int = 0, max_text_len: int = 32) -> dict:
    """Extract features and compute VTC-similarity retrieval metrics (no VTM reranking)."""
    f = extract_features(model, loader, tokenizer, device, max_samples, max_text_len)
    if len(f.keys) == 0:
        raise RuntimeError("zero-shot eval: the eval loader produced no samples")
    return retrieval_metrics(f.text @ f.video.t(), f.txt2vid)
