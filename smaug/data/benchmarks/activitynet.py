"""ActivityNet Captions (paragraph-to-video retrieval) and ActivityNet-QA from their releases' files.

    train.json, val_1.json       ActivityNet Captions: {"v_<YouTube id>": {"duration": s, "timestamps": [[s, e],
                                 ...], "sentences": ["...", ...]}}; retrieval is evaluated on val_1
    {split}_q.json               ActivityNet-QA: [{"video_name": "<YouTube id>", "question_id": "v_<id>_<n>",
    {split}_a.json                "question": "..."}] and [{"question_id", "answer", "type": int}]

Videos are `v_<YouTube id>.<ext>` in the official download (.mp4, .mkv, .webm); downloads that dropped the `v_`
are found too.

Retrieval protocol (Singularity's, CLIP4Clip's): one query per video, its sentences joined by spaces in file
order; timestamps are not used.
"""

from __future__ import annotations

from collections import Counter

from .common import AnnotationError, QuestionSet, RetrievalSet, VideoFinder, clean, group_clips, load_json, qa_item


def candidates(video_id: str) -> tuple[str, ...]:
    """`v_abc` or `abc` -> both spellings, the release's `v_` form first."""
    bare = video_id[2:] if video_id.startswith("v_") else video_id
    return (f"v_{bare}", bare)


def read_captions(path: str, finder: VideoFinder, split: str = "val_1") -> RetrievalSet:
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected ActivityNet Captions' {{'v_<id>': {{'sentences': [...]}}}}")
    pairs, bad = [], Counter()
    for vid, ent in data.items():
        sents = ent.get("sentences") if isinstance(ent, dict) else None
        if not isinstance(sents, list):
            bad["malformed_row"] += 1
            continue
        sents = [clean(s) for s in sents]
        if not any(sents):
            bad["empty_caption"] += 1
        pairs += [(vid, s) for s in sents if s]
    return RetrievalSet(
        "activitynet",
        split,
        group_clips(pairs, finder, candidates),
        paragraph=True,
        protocol="ActivityNet Captions paragraph-to-video: a video's sentences joined in file order "
        "(as Singularity, CLIP4Clip)",
        sources=[path],
        bad_rows=bad,
    )


def read_qa(q_path: str, a_path: str, finder: VideoFinder, split: str) -> QuestionSet:
    """{split}_q.json + {split}_a.json, joined by question_id (a question without an answer is counted)."""
    qs, ans = load_json(q_path), load_json(a_path)
    if not isinstance(qs, list) or not isinstance(ans, list):
        raise AnnotationError(f"{q_path}, {a_path}: expected ActivityNet-QA's lists of questions and answers")
    answers = {a.get("question_id"): a for a in ans if isinstance(a, dict)}
    items, bad = [], Counter()
    for q in qs:
        if not isinstance(q, dict) or not isinstance(q.get("video_name"), str) or not q["video_name"].strip():
            bad["malformed_row"] += 1
            continue
        a = answers.get(q.get("question_id"))
        if a is None:
            bad["no_answer"] += 1
            continue
        vid = candidates(q["video_name"].strip())[0]
        qtype = str(a["type"]) if a.get("type") is not None else None
        item = qa_item(bad, finder, vid, q.get("question"), a.get("answer"), qtype, candidates(vid))
        items += [item] if item else []
    return QuestionSet(
        "activitynet_qa",
        split,
        items,
        protocol="ActivityNet-QA open-ended (answer-list ranking, exact match; as Singularity)",
        sources=[q_path, a_path],
        bad_rows=bad,
    )
