"""MSR-VTT from its releases' own files: the 1k-A test split, the official video/caption JSONs, MSRVTT-MC and
MSRVTT-QA. Videos are `video<N>.<ext>` (the release's `.mp4`), found anywhere under the video folder.

    MSRVTT_JSFUSION_test.csv     CSV, header `key,vid_key,video_id,sentence`: 1,000 rows, one sentence per clip
                                 (JSFusion's 1k-A test split, as CLIP4Clip, Frozen and Singularity evaluate it)
    train_val_videodatainfo.json {"videos": [{"video_id": "video0", "split": "train" | "validate", ...}],
    test_videodatainfo.json       "sentences": [{"video_id", "caption", "sen_id"}]}: 20 captions per video;
                                 the test file lists the official test split (2,990 videos)
    MSR_MC_test.csv              tab-separated, header `key vid_key video_id a1 a2 a3 a4 a5 answer`: five
                                 captions, `answer` the 0-based index of the right one
    {train,val,test}_qa.json     MSRVTT-QA: [{"video_id": 7010, "question", "answer", "id", ...}], integer
                                 video ids (video7010)
"""

from __future__ import annotations

import csv
import io
from collections import Counter

from .common import (
    AnnotationError,
    QuestionSet,
    RetrievalSet,
    VideoFinder,
    clean,
    group_clips,
    load_json,
    qa_item,
    read_lines,
)

MC_OPTIONS = ("a1", "a2", "a3", "a4", "a5")
QA_TYPES = ("what", "who", "how", "when", "where")  # MSRVTT-QA's question types (its first word)


def video_name(value) -> str:
    """`7010`, `"7010"`, `"video7010"` or the MC file's `vid_key` `"msr7010"` -> `"video7010"`."""
    v = str(value).strip()
    if v.startswith("msr"):
        v = v[3:]
    return v if v.startswith("video") else f"video{v}"


def _table(path: str, delimiter: str, required: tuple[str, ...]) -> list[dict]:
    """The rows of a CSV/TSV with a header that has every `required` column (AnnotationError otherwise)."""
    reader = csv.DictReader(io.StringIO("\n".join(read_lines(path))), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        raise AnnotationError(f"{path}: header {header} lacks {missing}")
    return list(reader)


def read_1ka(path: str, finder: VideoFinder) -> RetrievalSet:
    """MSRVTT_JSFUSION_test.csv: every row's sentence is a text query of its clip (1,000 queries, 1,000 clips)."""
    bad: Counter = Counter()
    pairs = []
    for row in _table(path, ",", ("sentence",)):
        vid = (row.get("video_id") or "").strip() or (row.get("vid_key") or "").strip()
        cap = clean(row.get("sentence"))
        if not vid:
            bad["malformed_row"] += 1
        elif not cap:
            bad["empty_caption"] += 1
        else:
            pairs.append((video_name(vid), cap))
    return RetrievalSet(
        "msrvtt",
        "1k-A test",
        group_clips(pairs, finder, lambda v: (v,)),
        paragraph=False,
        protocol="MSR-VTT 1k-A (JSFusion's 1,000 test clips, one sentence each; as CLIP4Clip and Singularity)",
        sources=[path],
        bad_rows=bad,
    )


def read_videodatainfo(
    paths: list[str], finder: VideoFinder, splits: tuple[str, ...] = (), exclude=(), split_name: str = ""
) -> RetrievalSet:
    """The official JSONs: the videos of `splits` ("train", "validate", "test"; empty = all) not in `exclude`,
    each with all its captions in file order (every caption a query)."""
    videos, pairs, bad = {}, [], Counter()
    exclude = set(exclude)
    for path in paths:
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
            raise AnnotationError(f"{path}: expected MSR-VTT's {{'videos': [...], 'sentences': [...]}}")
        for v in data["videos"]:
            vid = v.get("video_id") if isinstance(v, dict) else None
            if not isinstance(vid, str) or not vid.strip():
                bad["malformed_row"] += 1
                continue
            if (not splits or v.get("split") in splits) and vid not in exclude:
                videos[vid.strip()] = True
        for s in data.get("sentences") or []:
            vid = s.get("video_id") if isinstance(s, dict) else None
            if not isinstance(vid, str):
                bad["malformed_row"] += 1
            elif vid.strip() in videos:
                cap = clean(s.get("caption"))
                if cap:
                    pairs.append((vid.strip(), cap))
                else:
                    bad["empty_caption"] += 1
    clips = group_clips(pairs, finder, lambda v: (v,))
    bad["video_without_caption"] += len(videos) - len(clips)  # nothing to query it with: counted, not listed
    return RetrievalSet(
        "msrvtt",
        split_name or "+".join(splits) or "all",
        clips,
        paragraph=False,
        protocol="MSR-VTT official split, every caption a query",
        sources=list(paths),
        bad_rows=+bad,
    )


def read_train(paths: list[str], finder: VideoFinder, split: str, test_1ka: str = "") -> RetrievalSet:
    """Training clips from the official JSONs: "7k" = the train + validate videos of train_val_videodatainfo.json
    (7,010), "9k" = every video of the given JSONs except the 1k-A test clips (`test_1ka`: 9,000 with both)."""
    if split == "7k":
        return read_videodatainfo(paths, finder, ("train", "validate"), split_name="train 7k")
    if split != "9k":
        raise AnnotationError(f"MSR-VTT training split {split!r}: one of 7k, 9k")
    if not test_1ka:
        raise AnnotationError("MSR-VTT 9k training split: needs the 1k-A test CSV to leave out")
    test_ids = {c.id for c in read_1ka(test_1ka, finder).clips}
    return read_videodatainfo(paths, finder, (), exclude=test_ids, split_name="train 9k")


def read_mc(path: str, finder: VideoFinder) -> QuestionSet:
    """MSR_MC_test.csv: per row the clip and its five candidate captions; `answer` the 0-based right one."""
    items, bad = [], Counter()
    for row in _table(path, "\t", (*MC_OPTIONS, "answer")):
        vid = (row.get("video_id") or "").strip() or (row.get("vid_key") or "").strip()
        opts = [clean(row.get(a)) for a in MC_OPTIONS]
        try:
            ans = int(str(row.get("answer")).strip())
        except ValueError:
            ans = None
        if not vid or ans is None:
            bad["malformed_row"] += 1
        elif not all(opts):
            bad["empty_option"] += 1
        elif not 0 <= ans < len(opts):
            bad["answer_out_of_range"] += 1
        else:
            v = video_name(vid)
            items.append({"video_id": v, "video": finder.find(v), "caption": opts, "answer": ans})
    return QuestionSet(
        "msrvtt",
        "MC test",
        items,
        protocol="MSRVTT-MC (JSFusion's 2,990 test clips, 5 candidate captions each; accuracy)",
        sources=[path],
        bad_rows=bad,
    )


def question_type(question: str) -> str:
    """MSRVTT-QA's question type: its first word if one of what/who/how/when/where, else "other"."""
    w = question.split(" ", 1)[0].lower()
    return w if w in QA_TYPES else "other"


def read_qa(path: str, finder: VideoFinder, split: str) -> QuestionSet:
    """{train,val,test}_qa.json: one question per entry; the answer is a single word."""
    data = load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected MSRVTT-QA's list of {{'video_id', 'question', 'answer'}}")
    items, bad = [], Counter()
    for ent in data:
        vid = ent.get("video_id") if isinstance(ent, dict) else None
        if vid is None or isinstance(vid, bool) or str(vid).strip() == "":
            bad["malformed_row"] += 1
            continue
        q = clean(ent.get("question"))
        item = qa_item(bad, finder, video_name(vid), q, ent.get("answer"), question_type(q))
        items += [item] if item else []
    return QuestionSet(
        "msrvtt_qa",
        split,
        items,
        protocol="MSRVTT-QA open-ended (answer-list ranking, exact match; as Singularity)",
        sources=[path],
        bad_rows=bad,
    )
