"""Multiple-choice video-text evaluation (MSRVTT-MC style): pick the option caption that matches the clip.

Every option of a row is scored against the row's clip with the retrieval model, three ways (all reported):
  vtc       cosine of the VTC embeddings;
  vtm       the VTM match logit (the frames selected for that caption, fusion layers, vtm_head);
  combined  log softmax over the row's options of (VTC cosine / the model's temperature) + log sigmoid(VTM):
            the retrieval's "combined" ranking (smaug.eval.retrieval) restricted to the row's options.
The highest score wins. Ties are counted at their expectation (a right option tied with m others at the top
scores 1 / (m + 1)), so scores that carry no information give chance level, never 100%.

Rows may carry a "type" (accuracy is also reported per type) and "differs": for each option, the attribute in
which it differs from the right one ("" for the right one). Then the report adds, per attribute, the pairwise
win rate of the right option over the distractors differing in that attribute (ties 0.5; chance 50%).

No training: pre-trained and fine-tuned retrieval checkpoints work alike. Collective with world > 1: each
rank scores its share of the rows (`shard_indices`), results are merged by row index, each row exactly once.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
import torch.nn.functional as F

from smaug.data.config import MAX_TEXT_LEN
from smaug.eval.qa import gather_by_index, gather_counts

METHODS = ("vtc", "vtm", "combined")


def tie_aware_hit(scores: torch.Tensor, answer: int) -> float:
    """1 / (number of options at the top score) if the right option is among them, else 0."""
    top = scores == scores.max()
    return float(top[answer]) / float(top.sum())


@torch.no_grad()
def score_options(model, video: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, n_opts: list[int]) -> dict:
    """video uint8 [B, T, 3, H, W]; every option of the B rows tokenised, flattened in row order (ids/mask
    [sum n_opts, L]) -> {method: list of B score tensors [n_opts[i]]}."""
    frame_tokens, video_feat, frame_feat = model.encode_video(video)
    hidden, text_feat = model.encode_text(ids, mask)
    owner = torch.repeat_interleave(
        torch.arange(len(n_opts), device=video.device), torch.tensor(n_opts, device=video.device)
    )
    vtc = (video_feat[owner].float() * text_feat.float()).sum(-1)
    vtm = model.vtm_logits(frame_tokens[owner], frame_feat[owner], hidden, text_feat, mask).float()
    out = {m: [] for m in METHODS}
    for s, v in zip(vtc.split(n_opts), vtm.split(n_opts)):
        out["vtc"].append(s.cpu())
        out["vtm"].append(v.cpu())
        out["combined"].append((F.log_softmax(s / model.temp.float(), 0) + F.logsigmoid(v)).cpu())
    return out


@torch.no_grad()
def evaluate_mc(
    model,
    rows: list[dict],
    clips,
    tokenizer,
    device,
    batch_size: int = 16,
    num_workers: int = 0,
    max_text_len: int = MAX_TEXT_LEN,
    rank: int = 0,
    world: int = 1,
) -> dict:
    """-> {"rows": per-row results (index, video, type, answer, differs, scores and hit per method) in index order
    over all ranks, "skipped": {reason: n}}."""
    from smaug.data.collate import tokenize
    from smaug.data.qa_data import eval_batches, shard_indices

    was_training = model.training
    model.eval()
    mine = [rows[i] for i in shard_indices(len(rows), rank, world)]
    skipped: Counter = Counter()
    local = []
    for batch in eval_batches(mine, clips, tokenizer, batch_size, num_workers, max_text_len, None, skipped):
        opts = [r["caption"] for r in batch["rows"]]
        tok = tokenize(tokenizer, [c for o in opts for c in o], max_text_len)
        scores = score_options(
            model,
            batch["video"].to(device),
            tok["input_ids"].to(device),
            tok["attention_mask"].to(device),
            [len(o) for o in opts],
        )
        for i, r in enumerate(batch["rows"]):
            res = {
                "index": r["index"],
                "video": r["video"],
                "type": r.get("type"),
                "answer": r["answer"],
                "differs": r.get("differs"),
            }
            for m in METHODS:
                res[m] = scores[m][i].tolist()
                res[f"{m}_hit"] = tie_aware_hit(scores[m][i], r["answer"])
            local.append(res)
    model.train(was_training)
    answered = {x["index"] for x in local}
    local += [{"index": r["index"], "skipped": True} for r in mine if r["index"] not in answered]
    merged = [x for x in gather_by_index(local, [r["index"] for r in rows]) if not x.get("skipped")]
    return {"rows": merged, "skipped": dict(gather_counts(skipped))}


def mc_metrics(results: list[dict]) -> dict:
    """Accuracy (percent) per method overall and per row type; pairwise win rates per distractor attribute."""

    def acc(rs, m):
        return 100.0 * sum(r[f"{m}_hit"] for r in rs) / max(len(rs), 1)

    out = {m: {"accuracy": acc(results, m)} for m in METHODS}
    n_opts = Counter(len(r["vtc"]) for r in results)
    out["chance"] = 100.0 * sum(c / n for n, c in n_opts.items()) / max(len(results), 1)
    types = sorted({r["type"] for r in results if r.get("type")})
    out["per_type"] = {
        t: {
            "num_rows": sum(r.get("type") == t for r in results),
            **{m: acc([r for r in results if r.get("type") == t], m) for m in METHODS},
        }
        for t in types
    }
    wins = {m: defaultdict(list) for m in METHODS}
    for r in results:
        for j, d in enumerate(r.get("differs") or []):
            if not d or j == r["answer"]:
                continue
            for m in METHODS:
                s, t = r[m][r["answer"]], r[m][j]
                wins[m][d].append(1.0 if s > t else 0.5 if s == t else 0.0)
    attrs = sorted({d for m in METHODS for d in wins[m]})
    out["pairwise"] = {
        d: {"num_pairs": len(wins["vtc"][d]), **{m: 100.0 * sum(wins[m][d]) / max(len(wins[m][d]), 1) for m in METHODS}}
        for d in attrs
    }
    return out


def mc_report(res: dict, **protocol) -> dict:
    rows = res["rows"]
    protocol.update(
        num_rows=len(rows),
        options=sorted({len(r["vtc"]) for r in rows}),
        methods={
            "vtc": "VTC cosine",
            "vtm": "VTM logit",
            "combined": "log softmax over options of VTC/temp + log sigmoid VTM",
        },
        ties="a right option tied at the top with m others counts 1/(m+1)",
    )
    warnings = [f"skipped rows: {res['skipped']}"] if res["skipped"] else []
    return {
        "protocol": protocol,
        "results": mc_metrics(rows),
        "skipped": res["skipped"],
        "warnings": warnings,
        "rows": rows,
    }


def format_mc(report: dict, primary: str = "combined") -> str:
    pr, res = report["protocol"], report["results"]
    lines = [
        f"MC split={pr['split']} rows={pr['num_rows']} options={pr['options']} frames={pr['frames']} "
        f"checkpoint={pr['checkpoint']} (headline: {primary})",
        f"{'':<16}" + "".join(f"{m:>10}" for m in METHODS),
        f"{'all':<16}" + "".join(f"{res[m]['accuracy']:>10.2f}" for m in METHODS) + f"   chance {res['chance']:.2f}",
    ]
    for t, v in res["per_type"].items():
        lines.append(f"{'type ' + t:<16}" + "".join(f"{v[m]:>10.2f}" for m in METHODS) + f"   (n={v['num_rows']})")
    for d, v in res["pairwise"].items():
        lines.append(
            f"{'vs ' + d + '-only':<16}"
            + "".join(f"{v[m]:>10.2f}" for m in METHODS)
            + f"   pairwise win %, chance 50 (n={v['num_pairs']})"
        )
    lines += [f"WARNING: {w}" for w in report["warnings"]]
    return "\n".join(lines)
