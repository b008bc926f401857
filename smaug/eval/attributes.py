"""What a text-to-video top-1 gets right, attribute by attribute, on a labelled synthetic split.

The built-in synthetic corpus (`tools/make_synthetic.py`) writes `labels.json`: colour, shape and
motion of every clip. Its held-out split holds out whole (colour, shape) pairs with all four
motions, so clips of one pair differ only in motion. For each text query (every caption of every
held-out clip), the top-1 video by similarity is compared with the query's own clip on each
attribute and on all three at once ("combination"):

    accuracy = mean over queries of P(top-1 video has the query clip's attribute value)

Ties at the top are broken uniformly at random in expectation (the fraction of tied videos that
match), as the retrieval metrics do, so collapsed features score chance, not 100%. Chance is the
same expectation for a video drawn uniformly from the split.

The frozen-frame control (`frozen_frames`) evaluates the same checkpoint with every frame replaced
by the middle one: any single frame has the same position distribution for opposite motions, so
what stays above chance on motion without time is not motion. A model that uses time is well above
its control on motion.

The VTM head's pair accuracy on the reranked candidates (`vtm_content_accuracy`) is read the same way: a
candidate clip with the query clip's colour, shape and motion is a right answer, since nothing in the caption
tells such clips apart. The retrieval report's own `vtm_acc` counts only the query's own clip as a match, so the
other clips of its content (about 7 of a held-out query's top 16 here) are "no" pairs that a VTM head reading
the caption right must call "yes": by that count a perfect head scores below the always-"no" prior.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import torch

ATTRIBUTES = ("colour", "shape", "motion")


def load_clip_labels(labels_json: str | Path) -> dict[str, dict]:
    """Shard key -> {"colour", "shape", "motion"} for every single-object clip of a `labels.json`.

    Keys are derived from the clip's path as `tools/make_shards.py` derives them from a JSON row
    (`smaug.data.sources.make_key` of the path without extension), and the clip's videoid, its key from the
    WebVid CSV (the training shards)."""
    from smaug.data.sources import make_key

    lab = json.loads(Path(labels_json).read_text(encoding="utf-8"))
    out = {}
    for clip in lab["clips"]:
        if len(clip["objects"]) == 1:
            obj = {a: clip["objects"][0][a] for a in ATTRIBUTES}
            out[make_key(posixpath.splitext(clip["relpath"])[0])] = obj
            if "videoid" in clip:  # the key of its row in the WebVid CSV (the training shards)
                out[str(clip["videoid"])] = obj
    return out


def frozen_frames(video: torch.Tensor) -> torch.Tensor:
    """video: [B, T, 3, H, W] -> every frame replaced by the middle one (frame T // 2)."""
    T = video.shape[1]
    return video[:, T // 2 : T // 2 + 1].expand_as(video).contiguous()


@torch.no_grad()
def attribute_accuracy(sim: torch.Tensor, txt2vid: torch.Tensor, keys: list[str], labels: dict[str, dict]) -> dict:
    """sim: [Nt, Nv] text-video scores, txt2vid: [Nt] the query's own video, keys: [Nv] shard keys.

    Returns {attribute: {"acc": %, "chance": %}} for colour, shape, motion and "combination", plus
    "num_queries". Every video must have labels (single-object clips), else ValueError."""
    missing = [k for k in keys if k not in labels]
    if missing:
        raise ValueError(f"attribute accuracy: {len(missing)} clips have no single-object labels (e.g. {missing[:3]})")
    nt, nv = sim.shape
    top = sim == sim.max(dim=1, keepdim=True).values  # [Nt, Nv] the tied top-1 set
    top = top.double() / top.sum(1, keepdim=True).double()  # uniform over ties
    out: dict = {"num_queries": nt}
    match_all = torch.ones(nt, nv, dtype=torch.bool)
    for a in ATTRIBUTES:
        values = {}
        code = torch.tensor([values.setdefault(labels[k][a], len(values)) for k in keys])  # [Nv]
        match = code[txt2vid][:, None] == code[None, :]  # [Nt, Nv] video shares the query clip's value
        match_all &= match
        out[a] = _acc(top, match)
    out["combination"] = _acc(top, match_all)
    return out


def r1_ceiling(txt2vid: torch.Tensor, keys: list[str], labels: dict[str, dict]) -> float:
    """Best expected t2v R@1 (%) of a model that gets every attribute right: clips sharing the query clip's
    colour, shape and motion are indistinguishable to it, so a query's chance is 1 / (their number)."""
    combo = [tuple(labels[k][a] for a in ATTRIBUTES) for k in keys]
    count: dict = {}
    for c in combo:
        count[c] = count.get(c, 0) + 1
    return 100.0 * sum(1.0 / count[combo[v]] for v in txt2vid.tolist()) / max(len(txt2vid), 1)


def content_difference(a: tuple, b: tuple) -> str:
    """How two clips' (colour, shape, motion) differ: "same", the one attribute ("colour", "shape", "motion"), or
    "multi" (two or more)."""
    diff = [name for name, x, y in zip(ATTRIBUTES, a, b) if x != y]
    return "same" if not diff else diff[0] if len(diff) == 1 else "multi"


def vtm_content_accuracy(
    pairs: torch.Tensor, logits: torch.Tensor, txt2vid: torch.Tensor, keys: list[str], labels: dict[str, dict]
) -> dict:
    """The VTM head on its scored (text, video) `pairs` [P, 2] (logits [P], `logit > 0` = "match"), with every
    clip of the query clip's content (colour, shape and motion) counted as a match. Returns, in %:
    `acc` and the constant heads' `always_no` (share of non-matching pairs) and `always_yes`; `yes_on_match`, how many
    matching pairs it calls a match; `no_on_motion`, how many pairs that differ from the query in motion alone
    (the hard negatives: same colour and shape) it calls no match, against the 0 of an always-"yes" head; and
    the pair counts."""
    combo = [tuple(labels[k][a] for a in ATTRIBUTES) for k in keys]
    q = [combo[v] for v in txt2vid[pairs[:, 0]].tolist()]  # the query's content, per pair
    c = [combo[v] for v in pairs[:, 1].tolist()]  # the candidate's
    kind = [content_difference(a, b) for a, b in zip(q, c)]
    match = torch.tensor([k == "same" for k in kind])
    motion_only = torch.tensor([k == "motion" for k in kind])
    yes = logits > 0

    def pct(x: torch.Tensor) -> float | None:
        return 100.0 * x.double().mean().item() if x.numel() else None

    return {
        "acc": pct(yes == match),
        "always_no": pct(~match),
        "always_yes": pct(match),
        "yes_on_match": pct(yes[match]),
        "no_on_motion": pct(~yes[motion_only]),
        "num_pairs": len(match),
        "num_match": int(match.sum()),
        "num_motion": int(motion_only.sum()),
    }


def attribute_report(
    rankings: dict,
    control: dict,
    txt2vid: torch.Tensor,
    keys: list[str],
    labels: dict,
    source: str,
    vtm_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """The `attributes` block of a retrieval report. rankings / control: {name: [Nt, Nv] t2v scores}, of the
    model and of its frozen-frame control (the same checkpoint, every frame the middle one); `vtm_pairs`: the
    VTM head's scored (pairs [P, 2], logits [P]), read by content (`vtm_content_accuracy`)."""
    model = {name: attribute_accuracy(s, txt2vid, keys, labels) for name, s in rankings.items()}
    vtm = None if vtm_pairs is None else vtm_content_accuracy(*vtm_pairs, txt2vid, keys, labels)
    return {
        "labels": source,
        "num_queries": len(txt2vid),
        "r1_ceiling": r1_ceiling(txt2vid, keys, labels),
        "rule": "top-1 video of each text query vs the query clip's labels; ties in expectation; chance = a "
        "uniformly drawn video; control = every frame replaced by the middle one",
        "chance": {a: v["chance"] for a, v in model["vtc"].items() if isinstance(v, dict)},
        "rankings": {name: _accs(res) for name, res in model.items()},
        "frozen_frame_control": {
            name: _accs(attribute_accuracy(s, txt2vid, keys, labels)) for name, s in control.items()
        },
        **({"vtm_pairs": vtm} if vtm is not None else {}),
    }


def _accs(res: dict) -> dict:
    return {a: v["acc"] for a, v in res.items() if isinstance(v, dict)}


def format_attributes(block: dict) -> list[str]:
    """Readable lines: accuracy per ranking, its frozen-frame control and chance, per attribute."""
    names = (*ATTRIBUTES, "combination")
    lines = [
        f"attributes (t2v top-1, %; {block['num_queries']} queries; R@1 ceiling {block['r1_ceiling']:.1f})",
        f"{'ranking':<22}" + "".join(f"{n:>13}" for n in names),
    ]
    for name, accs in block["rankings"].items():
        lines.append(f"{name:<22}" + "".join(f"{accs[n]:>13.1f}" for n in names))
        ctl = block["frozen_frame_control"].get(name)
        if ctl:
            lines.append(f"{name + ' frozen frames':<22}" + "".join(f"{ctl[n]:>13.1f}" for n in names))
    lines.append(f"{'chance':<22}" + "".join(f"{block['chance'][n]:>13.1f}" for n in names))
    vp = block.get("vtm_pairs")
    if vp:
        f = lambda x: "-" if x is None else f"{x:.1f}"
        lines.append(
            f"VTM on {vp['num_pairs']} reranked pairs, a clip of the query's content = match: accuracy {f(vp['acc'])}% "
            f"(always-no {f(vp['always_no'])}%, always-yes {f(vp['always_yes'])}%); says match on {f(vp['yes_on_match'])}% of the {vp['num_match']} "
            f"matches, no match on {f(vp['no_on_motion'])}% of the {vp['num_motion']} motion-only negatives"
        )
    return lines


def _acc(top: torch.Tensor, match: torch.Tensor) -> dict:
    """Expected top-1 accuracy (top: [Nt, Nv] tie weights) and its chance level (a uniform video), in %."""
    acc = (top * match.double()).sum(1).mean().item()
    chance = match.double().mean(1).mean().item()
    return {"acc": 100.0 * acc, "chance": 100.0 * chance}
