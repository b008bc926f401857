"""Raw corpus listings -> rows for `tools/make_shards.py`, with the checks that need no media.

Three input formats:

- WebVid CSV (`results_2M_train.csv`, `results_10M_train.csv`, ...): header
  `videoid,name,page_idx,page_dir,duration,contentUrl`; `name` is the caption, `duration` ISO-8601
  (`PT00H00M17S`); the video is `{video_root}/{page_dir}/{videoid}.mp4`.
- Image list (CC3M-style TSV): one `caption<TAB>path` per line, path relative to the image
  root; an optional header line `caption<TAB>path` (or `image`/`file`/`filepath`/`url`) is
  skipped, extra columns are ignored, blank lines are ignored.
- Evaluation JSON (MSRVTT/DiDeMo-style): a list of `{"video": relative path, "caption": str or
  [str]}`; several captions are all kept (`captions`), the first is the primary caption.

Row-level problems found here (no file access): `malformed_row`, `invalid_utf8`,
`empty_caption`, `unsafe_path` (absolute or `..`), `duplicate_id` (the first occurrence wins).
File-level problems (`missing_file`, `empty_file`, `undecodable`, a symlink escaping the root)
are found by `smaug.data.transcode` when the shard is built.
"""

from __future__ import annotations

import csv
import hashlib
import json
import posixpath
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

# Every reason a row can be skipped for, in report order.
REASONS = (
    "missing_file",
    "empty_file",
    "undecodable",
    "empty_caption",
    "invalid_utf8",
    "duplicate_id",
    "unsafe_path",
    "malformed_row",
)
WEBVID_COLUMNS = ("videoid", "name", "page_dir")  # required of the header
WEBVID_HEADER = "videoid,name,page_idx,page_dir,duration,contentUrl"
_ISO_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?T?(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_KEY = 64


@dataclass(slots=True)
class Row:
    """One input record. `error` is set when the row is already known to be unusable."""

    index: int  # 0-based record number among data rows; decides the shard (index // per_shard)
    line: int  # 1-based line of the input file where the record starts (CSV header = line 1)
    id: str = ""  # source id (WebVid videoid, else the normalised relative path)
    key: str = ""  # sample key in the shards: [A-Za-z0-9_-], unique, no dots
    captions: list[str] = field(default_factory=list)
    relpath: str = ""  # media path relative to the root, '/'-separated
    kind: str = "video"  # "video" or "image"
    duration_hint: Optional[float] = None  # from the listing (WebVid CSV), seconds
    error: Optional[tuple[str, str]] = None  # (reason, detail)

    def to_json(self) -> dict:
        """Plain dict used in job fingerprints and logs."""
        return {
            "index": self.index,
            "line": self.line,
            "id": self.id,
            "key": self.key,
            "captions": self.captions,
            "relpath": self.relpath,
            "kind": self.kind,
            "duration_hint": self.duration_hint,
            "error": list(self.error) if self.error else None,
        }


def parse_iso_duration(text: str) -> Optional[float]:
    """`PT00H00M17S` -> 17.0 seconds; None when the text is not an ISO-8601 duration."""
    m = _ISO_DURATION.match((text or "").strip())
    if not m or not any(m.groups()):
        return None
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _has_bad_utf8(*texts: Optional[str]) -> bool:
    """Text read with errors='surrogateescape' keeps undecodable bytes as lone surrogates."""
    return any(t is not None and re.search("[\ud800-\udfff]", t) for t in texts)


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def safe_relpath(*parts: str) -> Optional[str]:
    """Join path parts into a normalised relative path; None if it is absolute or uses `..`."""
    for p in parts:
        if not p or p.startswith(("/", "\\")) or "\x00" in p:
            return None
        if ".." in re.split(r"[/\\]", p):
            return None
    joined = posixpath.normpath(posixpath.join(*parts))
    if joined.startswith(("/", "..")) or joined in (".", ""):
        return None
    return joined


def make_key(text: str) -> str:
    """A shard key for `text`: ASCII letters, digits, `_` and `-` only; long ones get a hash."""
    key = _KEY_BAD.sub("_", text).strip("_") or "sample"
    if len(key) > _MAX_KEY:
        digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        key = f"{key[: _MAX_KEY - 13]}_{digest}"
    return key


def _digest64(text: str) -> int:
    """Stable 64-bit digest (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


class Deduper:
    """Stateful pass over rows in order: marks duplicate ids (the first occurrence wins) and
    gives every good row a unique key. Keeps 64-bit digests only (~100 B per row), so a
    10M-row listing can be streamed."""

    def __init__(self) -> None:
        self.seen_ids: dict[int, int] = {}  # digest(id) -> line of its first occurrence
        self.used_keys: set[int] = set()  # digest(key)

    def __call__(self, row: Row) -> Row:
        if row.error is None:
            d = _digest64(row.id)
            if d in self.seen_ids:
                row.error = ("duplicate_id", f"id {row.id!r} already at line {self.seen_ids[d]}")
            else:
                self.seen_ids[d] = row.line
        if row.error is None:
            stem = posixpath.splitext(row.id)[0] if row.id == row.relpath else row.id
            base = make_key(stem)
            key, n = base, 0
            while _digest64(key) in self.used_keys:
                n += 1
                key = f"{base}_{n}"
            self.used_keys.add(_digest64(key))
            row.key = key
        return row


def _check_caption(row: Row, captions: list[str]) -> None:
    if _has_bad_utf8(*captions):
        row.error = ("invalid_utf8", "caption is not valid UTF-8")
        return
    captions = [c for c in (_clean_caption(c) for c in captions) if c]
    if not captions:
        row.error = ("empty_caption", "caption is empty")
    row.captions = captions


def _webvid_row(index: int, line: int, fields: list[str], err: Optional[str], col: dict[str, int]) -> Row:
    row = Row(index=index, line=line)
    if err or len(fields) != len(col):
        row.error = ("malformed_row", err or f"{len(fields)} fields, header has {len(col)}")
        return row
    vid, cap, page_dir = (fields[col[c]] for c in WEBVID_COLUMNS)
    if _has_bad_utf8(vid, page_dir):
        row.error = ("invalid_utf8", "videoid/page_dir is not valid UTF-8")
        return row
    vid, page_dir = vid.strip(), page_dir.strip()
    row.id = vid
    if not vid or not page_dir:
        row.error = ("malformed_row", "empty videoid or page_dir")
        return row
    rel = safe_relpath(page_dir, vid + ".mp4")
    if rel is None or "/" in vid or "\\" in vid:
        row.error = ("unsafe_path", f"page_dir={page_dir!r} videoid={vid!r} escapes the root")
        return row
    row.relpath = rel
    if "duration" in col:
        row.duration_hint = parse_iso_duration(fields[col["duration"]])
    _check_caption(row, [cap])
    return row


def iter_webvid_csv(path: str) -> Iterator[Row]:
    """Rows of a WebVid results CSV, streamed; ValueError (at the first next()) when the header
    is not WebVid's."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty CSV (expected header {WEBVID_HEADER})") from None
        missing = [c for c in WEBVID_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: not a WebVid CSV, header lacks {missing} (expected {WEBVID_HEADER})")
        col = {name: i for i, name in enumerate(header)}
        for index, (line, fields, err) in enumerate(_csv_records(reader)):
            yield _webvid_row(index, line, fields, err, col)


def _csv_records(reader) -> Iterator[tuple[int, list[str], Optional[str]]]:
    """(start line, fields, csv error) per record; a csv.Error costs that record only."""
    prev = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exn:
            yield prev + 1, [], f"csv: {exn}"
            prev = reader.line_num
            continue
        start, prev = prev + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        yield start, fields, None


_IMAGE_HEADERS = {"path", "image", "file", "filepath", "filename", "url", "image_path"}


def _image_row(index: int, line: int, fields: list[str]) -> Row:
    row = Row(index=index, line=line, kind="image")
    if len(fields) < 2:
        row.error = ("malformed_row", "expected caption<TAB>path")
        return row
    _set_path(row, fields[1].strip())
    if row.error is None:
        _check_caption(row, [fields[0]])
    return row


def iter_image_list(path: str) -> Iterator[Row]:
    """Rows of a CC3M-style `caption<TAB>path` list, streamed (see module docstring)."""
    index = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            fields = raw.decode("utf-8", errors="surrogateescape").split("\t")
            if (
                lineno == 1
                and len(fields) >= 2
                and fields[0].strip().lower() == "caption"
                and fields[1].strip().lower() in _IMAGE_HEADERS
            ):
                continue
            yield _image_row(index, lineno, fields)
            index += 1


def _set_path(row: Row, rel: str) -> None:
    if _has_bad_utf8(rel):
        row.id, row.error = rel, ("invalid_utf8", "path is not valid UTF-8")
        return
    norm = safe_relpath(rel) if rel else None
    row.id = norm or rel
    if not rel:
        row.error = ("malformed_row", "empty path")
    elif norm is None:
        row.error = ("unsafe_path", f"path {rel!r} escapes the root")
    else:
        row.relpath = norm
        row.id = norm


def _json_row(index: int, ent) -> Row:
    row = Row(index=index, line=index + 1)
    video = ent.get("video") if isinstance(ent, dict) else None
    caps = ent.get("caption") if isinstance(ent, dict) else None
    if isinstance(caps, str):
        caps = [caps]
    if not isinstance(video, str) or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        row.error = ("malformed_row", "entry needs 'video': str and 'caption': str or [str]")
        return row
    _set_path(row, video.strip())
    if row.error is None:
        _check_caption(row, caps)
    return row


def iter_eval_json(path: str) -> Iterator[Row]:
    """Rows of an MSRVTT/DiDeMo-style JSON list; `line` is the 1-based entry number."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        entries = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise ValueError(f"{path}: not a UTF-8 JSON file: {exn}") from exn
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{'video', 'caption'}} entries")
    for index, ent in enumerate(entries):
        yield _json_row(index, ent)


_READERS = {"webvid": iter_webvid_csv, "images": iter_image_list, "json": iter_eval_json}


def iter_rows(kind: str, path: str) -> Iterator[Row]:
    """Finished rows (duplicates marked, keys assigned), streamed, for 'webvid' | 'images' | 'json'."""
    dedup = Deduper()
    return (dedup(row) for row in _READERS[kind](path))


def read_rows(kind: str, path: str) -> list[Row]:
    """All finished rows as a list (small listings; `make_shards` streams with `iter_rows`)."""
    return list(iter_rows(kind, path))


def count_records(kind: str, path: str) -> Optional[int]:
    """Quick record count for progress bars (None for JSON, whose length comes with parsing)."""
    if kind == "webvid":
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            return max(0, sum(1 for fields in csv.reader(f) if fields) - 1)
    if kind == "images":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None
