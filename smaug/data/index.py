"""Index WebDataset shards smaug did not write (video2dataset's output, or any `{key}.mp4|.jpg +
.txt|.json` layout): test-decode every sample in isolation, count bad ones per reason, and write
the `manifest.json` the loader reads, without touching the tars (the engine behind
`tools/index_shards.py`).

video2dataset writes, per shard, `{shard}.tar` with `{key}.mp4` (or the configured encode format),
`{key}.txt` (the caption, when a caption column was given) and `{key}.json` (the input columns,
`key`, `status`, `error_message`, ...), plus `{shard}.parquet` and `{shard}_stats.json`. Samples
whose download failed are in the tar too, as `.txt` + `.json` without media: they are counted as
`failed_download` (the json's `status`).

Each sample is decoded as the loader decodes it (`decode.decode_sample`, eval mode, the chosen
`data.decoder`) inside a forked child with a time limit, so a decoder that crashes or hangs costs
that sample (`decoder_crash` / `decode_timeout`), not the job. The manifest lists every shard
with its count of good samples and, under `skip_keys`, the keys of the bad ones: the loader drops
those before decoding, so a shard with a poisoned video trains without ever opening it again.

Each tar's result goes to `stats/NAME.json` as soon as it is indexed, with a fingerprint of the tar and the
options, so a rerun after a kill indexes only the rest; the reports are then written from those files. Task I of N
(`smaug.data.arraytask`) indexes the tars I, I+N, ... of the list, and the last task to finish writes the reports
from all of them, the same bytes one run writes.

Captions: the `.txt` member by default; `caption_field="json:NAME"` reads `json[NAME]` instead,
which the loader cannot do from the original tars, so it requires `rewrite` (clean shards in
smaug's layout: `.txt` caption, `.json` with width/height/fps so the loader decodes at reduced size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Optional

from .arraytask import Incomplete, Task, finish_task, gather, merge_lock, remove_stale_temps, start_task
from .decode import IMAGE_EXTS, VIDEO_EXTS, CorruptSample, decode_sample, printable
from .shardwriter import SampleTarWriter, done_stats, run_isolated
from .specs import MANIFEST_FORMAT, write_json_atomic
from .transcode import BadSample, probe_video

LOG = logging.getLogger("smaug.data")

INDEX_REASONS = (
    "failed_download",
    "missing_media",
    "missing_caption",
    "bad_caption",
    "bad_json",
    "decode_error",
    "decoder_crash",
    "decode_timeout",
    "duplicate_key",
)


def iter_tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample, members grouped by key in file order (webdataset's rule:
    the key is the name up to the first dot of the basename)."""
    key, cur = None, {}
    with tarfile.open(path, mode="r|*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            d, base = os.path.split(m.name)
            if "." not in base:
                continue
            k, ext = base.split(".", 1)
            k = f"{d}/{k}" if d else k
            if k != key and key is not None:
                yield key, cur
                cur = {}
            key = k
            cur[ext.lower()] = tf.extractfile(m).read()
    if key is not None:
        yield key, cur


def _caption(members: dict, meta: dict, field: str) -> str:
    if field == "txt":
        raw = members.get("txt")
        if raw is None:
            raise BadSample("missing_caption", "no .txt member")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadSample("bad_caption", "caption is not UTF-8") from None
    else:
        text = meta.get(field.split(":", 1)[1])
        if not isinstance(text, str):
            raise BadSample("missing_caption", f"json has no string field {field.split(':', 1)[1]!r}")
    text = " ".join(text.split())
    if not text:
        raise BadSample("bad_caption", "empty caption")
    return text


def check_sample(key: str, members: dict, caption_field: str, decoder: str, num_frames: int) -> dict:
    """What the loader would do with this sample, or BadSample(reason). -> {"caption", "meta"}."""
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exn:
            raise BadSample("bad_json", str(exn)[:200]) from None
        if not isinstance(meta, dict):
            raise BadSample("bad_json", "metadata is not an object")
    status = meta.get("status")
    has_media = any(e in members for e in VIDEO_EXTS + IMAGE_EXTS) or any(e.startswith("f0") for e in members)
    if not has_media:
        if isinstance(status, str) and status != "success":
            raise BadSample("failed_download", f"status {status!r}: {str(meta.get('error_message'))[:160]}")
        raise BadSample("missing_media", f"no video/image member among {sorted(members)}")
    caption = _caption(members, meta, caption_field)
    sample = {"__key__": key, **members, "txt": caption.encode("utf-8")}
    sample.pop("json", None)  # foreign metadata may carry width/height of another stream: decode at full size
    try:
        decode_sample(sample, num_frames, 32, 0, None, decoder=decoder)
    except CorruptSample as exn:
        raise BadSample(exn.reason if exn.reason in INDEX_REASONS else "decode_error", exn.detail) from None
    video_ext = next((e for e in VIDEO_EXTS if e in members), None)
    info = probe_video(members[video_ext]) if video_ext else {}
    kind = "video" if video_ext else ("frames" if any(e.startswith("f0") for e in members) else "image")
    return {"caption": caption, "meta": info, "kind": kind}


def _isolated_check(key, members, caption_field, decoder, num_frames, timeout):
    try:
        return run_isolated(check_sample, (key, members, caption_field, decoder, num_frames), timeout)
    except BadSample as exn:
        if exn.reason == "undecodable":  # run_isolated's verdict: the child died or hung
            raise BadSample("decode_timeout" if "timed out" in exn.detail else "decoder_crash", exn.detail) from None
        raise


def preload(decoder: str) -> None:
    """Import what a check needs once, before the per-sample forks (a child that imports torch's
    functional ops, PyAV and the decoder by itself pays seconds per sample)."""
    import torch.nn.functional  # noqa: F401  (imported for the forked children)

    from .decoders import check_decoder
    from .shardwriter import preload_codecs

    preload_codecs()
    if decoder in ("decord", "pyav", "torchcodec"):
        check_decoder(decoder)


def index_shard(
    path: str,
    caption_field: str = "txt",
    decoder: str = "decord",
    num_frames: int = 4,
    timeout: float = 60.0,
    rewrite_to: Optional[str] = None,
) -> dict:
    """Check every sample of one tar -> {"name", "samples", "bytes", "skipped": {reason: n}, "bad": [...],
    "skip_keys": [...]}; with `rewrite_to`, also write the good samples to that tar in smaug's layout."""
    preload(decoder)
    skipped, bad, skip_keys, seen, good, kinds = Counter(), [], [], set(), 0, Counter()
    writer = fh = None
    if rewrite_to:
        tmp = os.path.join(os.path.dirname(rewrite_to), f".{os.path.basename(rewrite_to)}.{os.getpid()}.tmp")
        fh = open(tmp, "wb")
        writer = SampleTarWriter(fh)
    try:
        for key, members in iter_tar_samples(path):
            try:
                if key in seen:
                    raise BadSample("duplicate_key", "key repeated in the shard")
                seen.add(key)
                res = _isolated_check(key, members, caption_field, decoder, num_frames, timeout)
            except BadSample as exn:
                skipped[exn.reason] += 1
                skip_keys.append(key)
                detail = printable(exn.detail)
                LOG.warning("skip sample %s (%s): %s: %s", printable(key), os.path.basename(path), exn.reason, detail)
                bad.append({"key": key, "reason": exn.reason, "detail": detail})
                continue
            good += 1
            kinds[res["kind"]] += 1
            if writer is not None:
                media = {e: b for e, b in members.items() if e not in ("txt", "json")}
                src = json.loads(members["json"]) if "json" in members else {}
                info = dict(res["meta"], source_meta=src) if src else res["meta"]
                writer.write(
                    {
                        "__key__": key.replace("/", "_").replace(".", "_"),
                        **media,
                        "txt": res["caption"].encode("utf-8"),
                        "json": json.dumps(info, sort_keys=True, ensure_ascii=False).encode("utf-8"),
                    }
                )
    finally:
        if writer is not None:
            writer.close()
            fh.close()
    if rewrite_to:
        os.replace(tmp, rewrite_to)
    out_path = rewrite_to or path
    return {
        "name": os.path.basename(out_path),
        "path": os.path.abspath(path),
        "samples": good,
        "bytes": os.path.getsize(out_path),
        "skipped": dict(sorted(skipped.items())),
        "bad": bad,
        "skip_keys": [] if rewrite_to else skip_keys,
        "kinds": dict(kinds),
    }


def tar_fingerprint(
    path: str, caption_field: str, decoder: str, num_frames: int, timeout: float, rewrite_to: Optional[str]
) -> str:
    """Hash of what decides one tar's stats: the tar (real path, size, modification time) and the options."""
    from smaug import __version__

    st = os.stat(path)
    blob = json.dumps(
        {
            "tar": os.path.realpath(path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "caption_field": caption_field,
            "decoder": decoder,
            "num_frames": num_frames,
            "timeout": timeout,
            "rewrite_to": os.path.realpath(rewrite_to) if rewrite_to else None,
            "version": __version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()


class TarJob(NamedTuple):
    """One tar to index: where its rewritten copy (with `rewrite`) and its stats file go, and its fingerprint."""

    tar: str
    rewrite_to: Optional[str]
    stats_path: Path
    fingerprint: str
    options: dict  # caption_field, decoder, num_frames, timeout, rewrite

    @classmethod
    def make(cls, tar: str, out: Path, options: dict) -> TarJob:
        o = options
        rewrite_to = str(out / os.path.basename(tar)) if o["rewrite"] else None
        fp = tar_fingerprint(tar, o["caption_field"], o["decoder"], o["num_frames"], o["timeout"], rewrite_to)
        return cls(tar, rewrite_to, out / "stats" / f"{os.path.basename(tar)}.json", fp, options)

    def done(self) -> Optional[dict]:
        """Its stats when they are current (same fingerprint, output tar of the recorded size), else None."""
        return done_stats(self.stats_path, self.rewrite_to or self.tar, self.fingerprint)


def _index_job(job: TarJob) -> dict:
    """Index one tar in this (pool) process and write its stats file (the resume marker) -> its stats."""
    o = job.options
    stats = index_shard(job.tar, o["caption_field"], o["decoder"], o["num_frames"], o["timeout"], job.rewrite_to)
    stats["fingerprint"] = job.fingerprint
    write_json_atomic(job.stats_path, stats)
    return stats


def index_task(
    tars: list[str],
    out_dir: str,
    caption_field: str = "txt",
    decoder: str = "decord",
    num_frames: int = 4,
    timeout: float = 60.0,
    rewrite: bool = False,
    workers: int = 1,
    command: str = "",
    task: Task = Task(),
) -> dict:
    """Index (or rewrite) this task's share of `tars` into `out_dir` (tars whose stats file is current are kept)
    and write the task's record -> {"plan", "reused", "indexed", "summary", "locks"}: `plan` is what
    `merge_index` takes, `locks` the task's lock files, to keep open until the merge is done."""
    if caption_field != "txt" and not caption_field.startswith("json:"):
        raise ValueError(f"caption field {caption_field!r}: use 'txt' or 'json:NAME'")
    if caption_field != "txt" and not rewrite:
        raise ValueError("captions from the json need --rewrite: the loader reads the .txt member")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [os.path.basename(t) for t in tars]
    if len(set(names)) != len(names):
        raise ValueError("two shards share a file name")
    locks = start_task(out / "stats", task, out)
    mine = task.share(len(tars))
    owned = {names[i] for i in mine}
    remove_stale_temps([out, out / "stats"], lambda name: name in owned or name.removesuffix(".json") in owned)
    options = {
        "caption_field": caption_field,
        "decoder": decoder,
        "num_frames": num_frames,
        "timeout": timeout,
        "rewrite": rewrite,
    }
    jobs = {i: TarJob.make(tars[i], out, options) for i in mine}
    stats = {i: done for i, job in jobs.items() if (done := job.done()) is not None}
    todo = [i for i in mine if i not in stats]
    if workers > 1 and len(todo) > 1:
        preload(decoder)  # once here, not once per pool worker (~3 s of imports each)
        # not multiprocessing.Pool: its daemonic workers cannot fork the per-sample children
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            stats.update(zip(todo, pool.map(_index_job, [jobs[i] for i in todo])))
    else:
        stats.update((i, _index_job(jobs[i])) for i in todo)
    from smaug import __version__

    plan = {  # what decides the output: equal in every task of one job
        "command": command,
        "tars_sha256": hashlib.sha256(json.dumps([os.path.abspath(t) for t in tars]).encode()).hexdigest(),
        "num_units": len(tars),
        "options": options,
        "version": __version__,
    }
    units = [{"index": i, "tar": os.path.abspath(tars[i]), "fingerprint": stats[i]["fingerprint"]} for i in mine]
    summary = index_reports([stats[i] for i in mine], out, options, command)[1]
    finish_task(out / "stats", task, plan, units, summary)
    return {"plan": plan, "reused": len(mine) - len(todo), "indexed": len(todo), "summary": summary, "locks": locks}


def merge_index(out_dir: str, num_tasks: Optional[int] = None, plan: Optional[dict] = None) -> tuple[dict, dict]:
    """manifest.json and summary.json of every task's tars, written into `out_dir` once all tasks are done ->
    (manifest, summary). `arraytask.Incomplete`, naming the tasks, while one is missing, or when a tar or its
    stats changed since its task finished (nothing written then); `plan`/`num_tasks` None: the newest record's."""
    out = Path(out_dir)
    stats_dir = out / "stats"
    with merge_lock(stats_dir):
        num_tasks, plan, units = gather(stats_dir, num_tasks, plan)
        options = plan["options"]
        stats, changed = [], {}
        for u in units:
            try:
                done = TarJob.make(u["tar"], out, options).done()
            except OSError as exn:
                changed.setdefault(u["index"] % num_tasks, f"tar {u['tar']}: {exn.strerror}")
                continue
            if done is None:
                changed.setdefault(u["index"] % num_tasks, f"{u['tar']} or its stats changed since: rerun it")
            else:
                stats.append(done)
        if changed:
            raise Incomplete(num_tasks, changed)
        manifest, summary = index_reports(stats, out, options, plan["command"])
        remove_stale_temps([out], lambda name: name in ("manifest.json", "summary.json"))
        write_json_atomic(out / "manifest.json", manifest)
        write_json_atomic(out / "summary.json", summary)
    return manifest, summary


def index_reports(stats: list[dict], out: Path, options: dict, command: str) -> tuple[dict, dict]:
    """(manifest, summary) of indexed tars, from their stats in list order. Without `rewrite` the manifest names
    the original tars relative to `out` (which may be the shard folder itself) and lists the bad samples' keys
    under `skip_keys`."""
    rewrite = options["rewrite"]
    skipped, kinds = Counter(), Counter()
    for s in stats:
        skipped.update(s["skipped"])
        kinds.update(s["kinds"])
    kind = kinds.most_common(1)[0][0] if kinds else "video"
    shards = []
    for s in stats:
        name = s["name"] if rewrite else os.path.relpath(os.path.abspath(s["path"]), out.resolve())
        shards.append({"name": name, "samples": s["samples"], "bytes": s["bytes"]})
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "prefix": "",
        "shards": shards,
        "num_shards": len(shards),
        "num_samples": sum(s["samples"] for s in stats),
        "num_skipped": sum(skipped.values()),
        "skip_keys": {sh["name"]: s["skip_keys"] for sh, s in zip(shards, stats) if s["skip_keys"]},
        "options": {
            "caption_field": options["caption_field"],
            "decoder": options["decoder"],
            "rewrite": rewrite,
            "source": "index_shards",
        },
        "command": command,
    }
    summary = {
        "samples": manifest["num_samples"],
        "skipped": {r: skipped.get(r, 0) for r in INDEX_REASONS},
        "bad_samples": [dict(b, shard=s["name"]) for s in stats for b in s["bad"]][:1000],
        "shards": len(shards),
    }
    return manifest, summary


def index_shards(tars: list[str], out_dir: str, **options) -> tuple[dict, dict]:
    """Index (or rewrite) `tars` in one task (`options`: those of `index_task`) -> (manifest, summary), both
    written into `out_dir`."""
    done = index_task(tars, out_dir, **options)
    try:
        return merge_index(out_dir, 1, done["plan"])
    finally:
        for f in done["locks"]:
            f.close()
