"""MSVD (YouTube2Text) from its release's files.

    AllVideoDescriptions.txt     `#` comment lines, then `<YouTube id>_<start>_<end> <description>` per line, many
                                 descriptions per clip; the clips are YouTubeClips/<clip id>.avi
    {train,val,test}_list.txt    the clip ids of each split, one per line (the standard 1,200 / 100 / 670 split, as
                                 collaborative-experts and CLIP4Clip distribute it)

Protocol (CLIP4Clip's multi-sentence): every description of a test clip is a text query.
"""

from __future__ import annotations

from collections import Counter

from .common import RetrievalSet, VideoFinder, clean, group_clips, read_lines


def read_split_list(path: str) -> list[str]:
    """Clip ids, one per line (blank lines and surrounding white space ignored; file order; duplicates once)."""
    return list(dict.fromkeys(line.strip() for line in read_lines(path) if line.strip()))


def read_msvd(descriptions: str, split_list: str, finder: VideoFinder, split: str = "test") -> RetrievalSet:
    ids = read_split_list(split_list)
    wanted = set(ids)
    caps: dict[str, list[str]] = {}
    bad: Counter = Counter()
    for line in read_lines(descriptions):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vid, _, text = line.strip().partition(" ")
        text = clean(text)
        if not text:
            bad["empty_caption"] += 1
        elif vid in wanted:
            caps.setdefault(vid, []).append(text)
    pairs = [(v, c) for v in ids for c in caps.get(v, [])]
    bad["listed_without_description"] += sum(v not in caps for v in ids)
    return RetrievalSet(
        "msvd",
        split,
        group_clips(pairs, finder, lambda v: (f"YouTubeClips/{v}.avi", v)),
        paragraph=False,
        protocol="MSVD multi-sentence: every description a query (as CLIP4Clip)",
        sources=[descriptions, split_list],
        bad_rows=+bad,
    )
