"""LSMDC (Large Scale Movie Description Challenge, 2016 release) from its files.

    LSMDC16_annos_training.csv, LSMDC16_annos_val.csv, LSMDC16_challenge_1000_publictect.csv
        tab-separated, no header: `clip_id  start_aligned  end_aligned  start_extracted  end_extracted  sentence`;
        a clip id may repeat with another sentence in the training files; the public test has 1,000 clips with
        one sentence each
    videos: <movie>/<clip_id>.avi, the movie folder being the clip id without its last `_` part
        (`1010_TITANIC_00.41.32.072-00.41.40.196` -> `1010_TITANIC/`)

Protocol (CLIP4Clip's, Frozen's): text-to-video retrieval on the 1,000 public test clips, every sentence a query.
"""

from __future__ import annotations

from collections import Counter

from .common import RetrievalSet, VideoFinder, clean, group_clips, read_lines

FIELDS = 6


def movie_folder(clip_id: str) -> str:
    return clip_id.rsplit("_", 1)[0]


def read_lsmdc(path: str, finder: VideoFinder, split: str = "test") -> RetrievalSet:
    pairs, bad = [], Counter()
    for line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < FIELDS or not fields[0].strip():
            bad["malformed_row"] += 1
            continue
        text = clean("\t".join(fields[FIELDS - 1 :]))  # a tab inside a sentence stays part of it
        if text:
            pairs.append((fields[0].strip(), text))
        else:
            bad["empty_caption"] += 1
    return RetrievalSet(
        "lsmdc",
        split,
        group_clips(pairs, finder, lambda v: (f"{movie_folder(v)}/{v}.avi", v)),
        paragraph=False,
        protocol="LSMDC 2016: every sentence a query (the 1,000-clip public test: as CLIP4Clip, Frozen)",
        sources=[path],
        bad_rows=bad,
    )
