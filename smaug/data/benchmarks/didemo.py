"""DiDeMo from its release's files (LisaAnne/LocalizingMoments): paragraph-to-video retrieval.

    {train,val,test}_data.json   [{"video": "<Flickr id>_<secret>.<ext>", "description": "...", "times": [[s, e],
                                 ...], "annotation_id": ..., ...}]: one entry per moment description, several
                                 per video; the video names carry their upload's extension (.mov, .mp4, .avi,
                                 .3gp, .m4v, ...; some none), which a download may have changed (found by stem)

Protocol (Singularity's, CLIP4Clip's): one query per video, its descriptions joined by spaces in file order; the
moments' times are not used.
"""

from __future__ import annotations

from collections import Counter

from .common import AnnotationError, RetrievalSet, VideoFinder, clean, group_clips, load_json


def read_didemo(path: str, finder: VideoFinder, split: str = "test") -> RetrievalSet:
    data = load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected DiDeMo's list of {{'video', 'description', 'times'}}")
    pairs, bad = [], Counter()
    for ent in data:
        video = ent.get("video") if isinstance(ent, dict) else None
        desc = clean(ent.get("description")) if isinstance(ent, dict) else ""
        if not isinstance(video, str) or not video.strip():
            bad["malformed_row"] += 1
        elif not desc:
            bad["empty_caption"] += 1
        else:
            pairs.append((video.strip(), desc))
    return RetrievalSet(
        "didemo",
        split,
        group_clips(pairs, finder, lambda v: (v,)),
        paragraph=True,
        protocol="DiDeMo paragraph-to-video: a video's descriptions joined in file order (as Singularity, CLIP4Clip)",
        sources=[path],
        bad_rows=bad,
    )
