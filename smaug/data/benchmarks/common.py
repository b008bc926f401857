"""What every benchmark reader returns, and how it finds a release's videos on disk.

    finder = VideoFinder("msrvtt/videos/all")           # one walk of the folder
    finder.find("video7010")                            # -> "video7010.mp4" (relative to the root) or None
    s = RetrievalSet(...); s.rows(); s.coverage()       # the eval-JSON rows of the clips found; found / listed

A release names its videos its own way: an id without extension (MSR-VTT `video7010`, MSVD `-4wsuPCjDBc_5_15`,
LSMDC clip ids with dots in them), a file name whose extension may differ from the one on disk (DiDeMo's Flickr
names: `.mov`, `.3gp`, `.m4v`, ... re-encoded to `.mp4` by most downloads), a `v_` prefix that a download may
or may not keep (ActivityNet), or a per-movie folder (LSMDC). `VideoFinder.find(*candidates)` tries each
candidate (a relative path, with or without an extension) as written, then with any video extension, then its
bare name anywhere under the root (the first in sorted order when several folders hold it). A listed video that
is not found is kept in the set with `video=None`: it is counted in the coverage (found / listed) and named in
`missing`, never dropped silently and never an error.

Rows that cannot be used at all (malformed, empty caption) are counted by reason in `bad_rows`. Only an
annotation file that cannot be read raises (`AnnotationError`), so a bad configuration fails before any compute.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from smaug.data.decode import VIDEO_EXTS as _DECODABLE

# what the releases' downloads hold besides the loader's own list (DiDeMo's Flickr uploads: camera formats)
VIDEO_EXTS = tuple(dict.fromkeys((*_DECODABLE, "mts", "m2ts", "ts", "qt", "3g2", "dv", "asf", "vob", "divx")))


class AnnotationError(Exception):
    """An annotation file that is missing or not in its release's layout."""


def known_ext(name: str) -> str:
    """The video extension of a file name, lower case without the dot, or "" (`x_00.41.32.072` has none)."""
    ext = os.path.splitext(name)[1].lstrip(".").lower()
    return ext if ext in VIDEO_EXTS else ""


def strip_ext(name: str) -> str:
    """`name` without a video extension (other dots stay: LSMDC clip ids hold timestamps)."""
    return name[: -len(known_ext(name)) - 1] if known_ext(name) else name


class VideoFinder:
    """The video files under `root`, indexed once: by relative path, by relative path without extension, and by
    bare name without extension."""

    def __init__(self, root: str):
        self.root = str(root)
        if not os.path.isdir(self.root):
            raise AnnotationError(f"video folder {self.root} does not exist")
        self.by_path: dict[str, str] = {}
        self.by_stem: dict[str, list[str]] = {}
        self.by_name: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for f in sorted(filenames):
                if not known_ext(f):
                    continue
                rel = f if rel_dir == "." else f"{rel_dir}/{f}"
                self.by_path[rel] = rel
                self.by_stem.setdefault(strip_ext(rel), []).append(rel)
                self.by_name.setdefault(strip_ext(f), []).append(rel)

    def __len__(self) -> int:
        return len(self.by_path)

    def find(self, *candidates: str) -> Optional[str]:
        """The first candidate found (see the module docstring), as a '/'-separated path relative to the root."""
        for c in candidates:
            c = c.strip().replace("\\", "/").lstrip("./") if c else ""
            if not c:
                continue
            if c in self.by_path:
                return c
            same = self.by_stem.get(strip_ext(c))
            if same:
                return _prefer(same, known_ext(c))
        for c in candidates:
            c = (c or "").strip().replace("\\", "/")
            same = self.by_name.get(strip_ext(c.rsplit("/", 1)[-1])) if c else None
            if same:
                return _prefer(same, known_ext(c))
        return None


def _prefer(paths: list[str], ext: str) -> str:
    """The path with the extension the release named, else the first in sorted order."""
    return next((p for p in paths if known_ext(p) == ext), paths[0])


def load_json(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{path}: not a JSON file ({e})") from None


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {path} does not exist") from None


def clean(text) -> str:
    """A caption / question / answer with runs of white space made one space; "" for a non-string."""
    return " ".join(text.split()) if isinstance(text, str) else ""


@dataclass
class Clip:
    id: str  # the release's id of the video
    captions: list[str]  # in file order
    video: Optional[str]  # path relative to the video root; None when the video is not there


@dataclass
class Coverage:
    """What a release lists and what this download has of it. `items` are the queries of a retrieval set, the
    questions of a QA or MC set."""

    clips_listed: int
    clips_found: int
    items_listed: int
    items_found: int
    missing: list[str]  # ids of the listed videos not found, in file order
    bad_rows: dict[str, int]  # rows that could not be used at all, by reason

    def to_json(self) -> dict:
        return {
            "clips_found": self.clips_found,
            "clips_listed": self.clips_listed,
            "items_found": self.items_found,
            "items_listed": self.items_listed,
            "missing": len(self.missing),
            "missing_ids": self.missing[:20],
            "bad_rows": dict(self.bad_rows),
        }


@dataclass
class RetrievalSet:
    """Clips and their text queries. `paragraph`: each clip's sentences, joined by spaces in file order, are one
    query (its only caption here), else every caption is a query."""

    benchmark: str
    split: str
    clips: list[Clip]
    paragraph: bool
    protocol: str
    sources: list[str]
    bad_rows: Counter = field(default_factory=Counter)

    def queries(self, clip: Clip) -> list[str]:
        return [paragraph(clip.captions)] if self.paragraph else list(clip.captions)

    def rows(self) -> list[dict]:
        """The clips found, as eval-JSON rows ([{"video", "caption": [queries]}]: tools/eval_retrieval.py --json,
        tools/make_shards.py --json, tools/finetune_retrieval.py --train-json / --eval-json)."""
        return [{"video": c.video, "caption": self.queries(c)} for c in self.clips if c.video]

    def coverage(self) -> Coverage:
        found = [c for c in self.clips if c.video]
        return Coverage(
            clips_listed=len(self.clips),
            clips_found=len(found),
            items_listed=sum(len(self.queries(c)) for c in self.clips),
            items_found=sum(len(self.queries(c)) for c in found),
            missing=[c.id for c in self.clips if not c.video],
            bad_rows=dict(self.bad_rows),
        )


@dataclass
class QuestionSet:
    """QA rows ({"video_id", "video", "question", "answer", "type"}) or MC rows ({"video_id", "video", "caption":
    [options], "answer": index}); `video_id` is the release's id, `video` None when the video is not there."""

    benchmark: str
    split: str
    items: list[dict]
    protocol: str
    sources: list[str]
    bad_rows: Counter = field(default_factory=Counter)

    def rows(self) -> list[dict]:
        """The items whose video was found, in the eval layout of tools/eval_mc.py / tools/finetune_qa.py."""
        return [{k: v for k, v in it.items() if k != "video_id"} for it in self.items if it["video"]]

    def coverage(self) -> Coverage:
        videos: dict[str, bool] = {}
        for it in self.items:
            videos[it["video_id"]] = bool(it["video"])
        return Coverage(
            clips_listed=len(videos),
            clips_found=sum(videos.values()),
            items_listed=len(self.items),
            items_found=sum(bool(it["video"]) for it in self.items),
            missing=[v for v, ok in videos.items() if not ok],
            bad_rows=dict(self.bad_rows),
        )


def qa_item(bad: Counter, finder: VideoFinder, video_id: str, question, answer, qtype, candidates=()) -> Optional[dict]:
    """A QA item ({"video_id", "video", "question", "answer", "type"}; the video found by `candidates`, default the
    id), or None after counting why not in `bad` (empty_question, empty_answer)."""
    q, a = clean(question), clean(answer)
    if not q:
        bad["empty_question"] += 1
    elif not a:
        bad["empty_answer"] += 1
    else:
        video = finder.find(*(candidates or (video_id,)))
        return {"video_id": video_id, "video": video, "question": q, "answer": a, "type": qtype}
    return None


def paragraph(sentences: list[str]) -> str:
    """DiDeMo / ActivityNet paragraph query: the sentences joined by spaces, in file order."""
    return " ".join(s for s in sentences if s)


def group_clips(pairs, finder: VideoFinder, candidates) -> list[Clip]:
    """(video id, caption) pairs in file order -> one Clip per id (first-appearance order, captions in file
    order), its video found by `finder.find(*candidates(id))`."""
    caps: dict[str, list[str]] = {}
    for vid, cap in pairs:
        caps.setdefault(vid, []).append(cap)
    return [Clip(v, cs, finder.find(*candidates(v))) for v, cs in caps.items()]
