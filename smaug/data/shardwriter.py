"""Deterministic, resumable shard writing (the engine behind `tools/make_shards.py`).

- Row `i` of the listing goes to shard `i // samples_per_shard`, whatever happens to other rows,
  so a shard's content depends only on its rows, the media files and the options.
- A shard is written to a temp file and renamed into place; then its stats file
  `stats/{prefix}-{n}.json` is renamed into place. A shard counts as done when its stats file
  carries the job's fingerprint and the tar has the recorded size, so a rerun after a kill skips
  finished shards and rebuilds the rest, byte for byte as an uninterrupted run would.
- Tar members are written in sorted order with fixed mtime/owner/mode (USTAR, plain tar:
  `tar -tf` and `webdataset.WebDataset` read it without smaug).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

from .decode import printable
from .sources import REASONS, Row
from .specs import MANIFEST_FORMAT, write_json_atomic
from .transcode import BadSample, sample_members

LOG = logging.getLogger("smaug.make_shards")
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, so shards are byte-reproducible
SUMMARY_MAX_ROWS = 1000  # bad rows listed in summary.json (all are in the stats files)
_TIMESTAMP = re.compile(r"\[\d\d:\d\d:\d\d\]\s*")


@dataclass
class ShardJob:
    """One shard to build: its rows (good and already-bad) and the build options."""

    index: int
    name: str  # "{prefix}-{index:06d}.tar"
    out_dir: str
    root: str
    rows: list[Row] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # frames, short_side, fps

    @property
    def tar_path(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def stats_path(self) -> Path:
        return Path(self.out_dir) / "stats" / (self.name[:-4] + ".json")

    def fingerprint(self) -> str:
        """Hash of everything that decides this shard's bytes."""
        from smaug import __version__

        blob = json.dumps(
            {
                "rows": [r.to_json() for r in self.rows],
                "options": self.options,
                "root": os.path.realpath(self.root),
                "version": __version__,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()


def check_layout(prefix: str, per_shard: int) -> None:
    """ValueError unless the shard names and size are usable."""
    if per_shard < 1:
        raise ValueError("--samples-per-shard must be >= 1")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise ValueError(f"--prefix {prefix!r}: use letters, digits, '_' or '-'")


def shard_index(name: str, prefix: str) -> Optional[int]:
    """The shard number in a shard or stats file name (`{prefix}-000012.tar` / `.json`), else None."""
    m = re.fullmatch(rf"{re.escape(prefix)}-(\d{{6,}})\.(?:tar|json)", name)
    return int(m[1]) if m else None


def plan_jobs(
    rows: Iterable[Row], out_dir: str, prefix: str, per_shard: int, root: str, options: dict
) -> Iterator[ShardJob]:
    """Group a stream of rows (consecutive indices from 0) into shard jobs by row index."""
    check_layout(prefix, per_shard)
    job: Optional[ShardJob] = None
    for row in rows:
        n = row.index // per_shard
        if job is not None and job.index != n:
            yield job
            job = None
        if job is None:
            job = ShardJob(n, f"{prefix}-{n:06d}.tar", out_dir, root, options=options)
        job.rows.append(row)
    if job is not None:
        yield job


def compact_stats(stats: dict) -> dict:
    """Shard stats without the full bad-row list (kept: the first SUMMARY_MAX_ROWS)."""
    out = {k: v for k, v in stats.items() if k != "bad_rows"}
    out["bad_rows_head"] = stats["bad_rows"][:SUMMARY_MAX_ROWS]
    out["bad_rows_count"] = len(stats["bad_rows"])
    return out


def done_stats(stats_path: Path, tar_path: Path, fingerprint: str) -> Optional[dict]:
    """The stats file's content when it carries `fingerprint` and the tar has the recorded size, else None
    (the test that a shard is complete and current; `tools/index_shards.py` applies it to its tars too)."""
    try:
        stats = json.loads(Path(stats_path).read_text(encoding="utf-8"))
        size = Path(tar_path).stat().st_size
    except (OSError, json.JSONDecodeError):
        return None
    if stats.get("fingerprint") != fingerprint or stats.get("bytes") != size:
        return None
    return stats


def is_done(job: ShardJob) -> Optional[dict]:
    """The job's stats when its shard is complete and current, else None."""
    return done_stats(job.stats_path, job.tar_path, job.fingerprint())


def _sample_json(row: Row, meta: dict) -> bytes:
    info = dict(meta, id=row.id, source=row.relpath, row=row.index + 1, line=row.line)
    if len(row.captions) > 1:
        info["captions"] = row.captions
    if row.duration_hint is not None:
        info["listed_duration"] = row.duration_hint
    return json.dumps(info, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _bad(row: Row, reason: str, detail: str) -> dict:
    detail = printable(_TIMESTAMP.sub("", detail))
    rid = printable(row.id)
    LOG.warning("skip row %d (line %d) id=%r: %s: %s", row.index + 1, row.line, rid, reason, detail)
    return {"row": row.index + 1, "line": row.line, "id": rid, "reason": reason, "detail": detail}


class SampleTarWriter:
    """WebDataset-layout tar writer (what `webdataset.TarWriter` writes, without importing
    torch): members `{key}.{ext}` in sorted extension order, USTAR, fixed mtime/owner/mode."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, sample: dict) -> None:
        key = sample["__key__"]
        for ext in sorted(k for k in sample if not k.startswith("_")):
            data = sample[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
            info.uname = info.gname = "smaug"
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


def preload_codecs() -> None:
    """Import the media libraries once, before forking shard processes (not once per fork)."""
    import av  # noqa: F401 - imported for its side effect: loaded once in the parent, shared by the forks
    import PIL.Image  # noqa: F401 - same

    from .decoders import import_decord

    import_decord()


def _isolated_child(conn, fn, args) -> None:
    try:
        conn.send((True, fn(*args)))
    except BadSample as exn:
        conn.send((False, (exn.reason, exn.detail)))
    conn.close()
    os._exit(0)


def run_isolated(fn, args: tuple, timeout: float):
    """`fn(*args)` in a forked child; a crash or a timeout becomes `BadSample("undecodable")`."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_isolated_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            raise BadSample("undecodable", f"decoder timed out after {timeout:.0f}s")
        try:
            ok, payload = recv.recv()
        except EOFError:
            proc.join()
            raise BadSample("undecodable", f"decoder crashed (exit code {proc.exitcode})") from None
    finally:
        recv.close()
        proc.join()
    if not ok:
        raise BadSample(*payload)
    return payload


def write_shard(
    job: ShardJob, on_row: Optional[Callable[[], None]] = None, isolate: bool = False, row_timeout: float = 600.0
) -> dict:
    """Build one shard (tar, then stats file) and return its stats.

    `isolate` runs each row's media work in its own child process (crash/hang containment).
    """
    out = Path(job.out_dir)
    job.stats_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{job.name}.{os.getpid()}.tmp"
    skipped: Counter = Counter()
    bad_rows: list[dict] = []
    samples, duration = 0, 0.0
    opts = job.options
    with open(tmp, "wb") as f:
        writer = SampleTarWriter(f)
        for row in job.rows:
            try:
                if row.error is not None:
                    raise BadSample(*row.error)
                margs = (row, job.root, opts.get("frames", 0), opts.get("short_side", 0), opts.get("fps", 0.0))
                members, meta = run_isolated(sample_members, margs, row_timeout) if isolate else sample_members(*margs)
            except BadSample as exn:
                skipped[exn.reason] += 1
                bad_rows.append(_bad(row, exn.reason, exn.detail))
            else:
                members["txt"] = row.captions[0].encode("utf-8")
                members["json"] = _sample_json(row, meta)
                writer.write({"__key__": row.key, **members})
                samples += 1
                duration += float(meta.get("duration") or 0.0)
            if on_row is not None:
                on_row()
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, job.tar_path)
    stats = {
        "shard": job.name,
        "fingerprint": job.fingerprint(),
        "rows": len(job.rows),
        "samples": samples,
        "bytes": job.tar_path.stat().st_size,
        "duration": round(duration, 3),
        "skipped": dict(sorted(skipped.items())),
        "bad_rows": bad_rows,
    }
    write_json_atomic(job.stats_path, stats)
    return stats


def build_reports(
    stats: list[dict], kind: str, command: str, options: dict, prefix: str, per_shard: int
) -> tuple[dict, dict]:
    """manifest.json and summary.json from the shards' compact stats, in shard order
    (deterministic: no times, no host names)."""
    from smaug import __version__

    skipped: Counter = Counter()
    for s in stats:
        skipped.update(s["skipped"])
    bad_rows = [b for s in stats for b in s["bad_rows_head"]][:SUMMARY_MAX_ROWS]
    n_bad = sum(s["bad_rows_count"] for s in stats)
    total_samples = sum(s["samples"] for s in stats)
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "prefix": prefix,
        "samples_per_shard": per_shard,
        "shards": [{"name": s["shard"], "samples": s["samples"], "bytes": s["bytes"]} for s in stats],
        "num_shards": len(stats),
        "num_samples": total_samples,
        "num_rows": sum(s["rows"] for s in stats),
        "num_skipped": sum(skipped.values()),
        "total_duration": round(sum(s["duration"] for s in stats), 3),
        "options": options,
        "command": command,
        "version": __version__,
    }
    summary = {
        "rows": manifest["num_rows"],
        "samples": total_samples,
        "skipped": {r: skipped.get(r, 0) for r in REASONS},
        "bad_rows": bad_rows,
        "bad_rows_truncated": n_bad - len(bad_rows),
        "shards": len(stats),
    }
    return manifest, summary


def corpus_yaml(manifest: dict, out: Path, shards_root: str) -> str:
    """The corpus YAML of a finished conversion (fields: `shards/README.md`): its manifest, shard pattern, sample
    count and kind. Paths are relative to the shard root when `out` is inside it (the file then works once copied
    there as PREFIX.yaml), absolute otherwise (it works from any shard root)."""
    import yaml

    where = Path(out).resolve()
    try:
        base = PurePosixPath(where.relative_to(Path(shards_root).resolve()).as_posix())
    except ValueError:
        base = PurePosixPath(where.as_posix())
    prefix = manifest["prefix"]
    fields = {
        "name": prefix,
        "manifest": str(base / "manifest.json"),
        "pattern": str(base / f"{prefix}-{{000000..{manifest['num_shards'] - 1:06d}}}.tar"),
        "num_samples": manifest["num_samples"],
        "kind": manifest["kind"],
        "weight": 1.0,
    }
    return (
        f"# Written by tools/make_shards.py next to manifest.json. To train on corpus:{prefix}, copy it into the\n"
        "# shard root ($SMAUG_SHARDS or shards/), where relative paths are resolved.\n"
        + yaml.safe_dump(fields, sort_keys=False)
    )
