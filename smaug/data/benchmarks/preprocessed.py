"""The peers' preprocessed JSON layouts (Singularity's `anno_downstream`, this repository's eval JSON), so that a
benchmark already converted by hand sits in the same table as the releases read directly.

    retrieval   [{"video" | "image": "relative/path.mp4", "caption": "..." | ["...", ...]}]   (Singularity's
                configs: "{'image': img_path, 'caption': text or list_of_text}")
    mc          [{"video" | "image", "caption": [options], "answer": index}]
    qa          [{"video" | "image", "question", "answer", "type"?}]

Entries of one video are merged (captions in file order); the video is found as the path is written or by its
name (common.VideoFinder).
"""

from __future__ import annotations

from collections import Counter

from .common import AnnotationError, QuestionSet, RetrievalSet, VideoFinder, clean, group_clips, load_json, qa_item


def _entries(path: str) -> list:
    data = load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{'video', ...}} entries")
    return data


def _video(ent) -> str:
    v = (ent.get("video") or ent.get("image")) if isinstance(ent, dict) else None
    return v.strip() if isinstance(v, str) else ""


def read_retrieval(path: str, finder: VideoFinder, split: str, paragraph: bool) -> RetrievalSet:
    pairs, bad = [], Counter()
    for ent in _entries(path):
        caps = ent.get("caption") if isinstance(ent, dict) else None
        caps = [caps] if isinstance(caps, str) else caps
        if not _video(ent) or not isinstance(caps, list):
            bad["malformed_row"] += 1
            continue
        caps = [clean(c) for c in caps]
        if not any(caps):
            bad["empty_caption"] += 1
        pairs += [(_video(ent), c) for c in caps if c]
    return RetrievalSet(
        "json",
        split,
        group_clips(pairs, finder, lambda v: (v,)),
        paragraph=paragraph,
        protocol="preprocessed JSON: "
        + ("a clip's captions joined in file order, one query" if paragraph else "every caption a query"),
        sources=[path],
        bad_rows=bad,
    )


def read_mc(path: str, finder: VideoFinder, split: str) -> QuestionSet:
    items, bad = [], Counter()
    for ent in _entries(path):
        opts = ent.get("caption") if isinstance(ent, dict) else None
        ans = ent.get("answer") if isinstance(ent, dict) else None
        if not _video(ent) or not isinstance(opts, list) or isinstance(ans, bool) or not isinstance(ans, int):
            bad["malformed_row"] += 1
        elif not all(clean(o) for o in opts):
            bad["empty_option"] += 1
        elif not 0 <= ans < len(opts):
            bad["answer_out_of_range"] += 1
        else:
            v = _video(ent)
            items.append({"video_id": v, "video": finder.find(v), "caption": [clean(o) for o in opts], "answer": ans})
    return QuestionSet("json", split, items, "preprocessed JSON multiple choice (accuracy)", [path], bad)


def read_qa(path: str, finder: VideoFinder, split: str) -> QuestionSet:
    items, bad = [], Counter()
    for ent in _entries(path):
        if not _video(ent):
            bad["malformed_row"] += 1
            continue
        item = qa_item(bad, finder, _video(ent), ent.get("question"), ent.get("answer"), ent.get("type"))
        items += [item] if item else []
    return QuestionSet("json", split, items, "preprocessed JSON open-ended QA (answer-list ranking)", [path], bad)
