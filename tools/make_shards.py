#!/usr/bin/env python
"""Convert a raw corpus into WebDataset shards, once, on a CPU box.

Inputs (one of):
  --webvid-csv CSV --video-root DIR   WebVid results CSV; videos at DIR/{page_dir}/{videoid}.mp4
  --image-list TSV --image-root DIR   CC3M-style `caption<TAB>path` list (optional header line)
  --json JSON --video-root DIR        MSRVTT/DiDeMo-style [{"video": path, "caption": str|[str]}]

Output: DIR/{prefix}-000000.tar ... with members {key}.mp4 (or .jpg, or {key}.f000.jpg...),
{key}.txt (caption) and {key}.json (id, duration, fps, num_frames, width, height, source, ...);
DIR/manifest.json (shards, counts, command, version), DIR/summary.json (skips per reason, bad
rows), DIR/{prefix}.yaml (corpus YAML), DIR/stats/{prefix}-N.json (per-shard stats; also the
resume markers).

Optional transforms: --resize-short-side S and/or --fps F re-encode to H.264 mp4;
--frames K stores K JPEG frames (segment centres) instead of the video.

Rerunning the same command after a kill finishes the job without rewriting finished shards; the
result is byte-identical to an uninterrupted run. Each shard is built in its own process; if
that process crashes or hangs (a decoder bug on some file), the shard is rebuilt with each row
in a child process, and the offending row is skipped as `undecodable`. Bad rows are skipped, counted and logged with
their row and line numbers; a run in which every row fails exits with status 2.

Many machines: `--num-tasks N --task-index I` (default: Slurm's SLURM_ARRAY_TASK_COUNT and
SLURM_ARRAY_TASK_ID) makes this run task I of N: it writes the shards I, I+N, I+2N, ..., with the
names and bytes one run writes, resumes after a kill as one run does, and records itself in
stats/tasks/I-of-N.json. The task that finds all N records writes the reports (or `--merge --out
DIR` does, refusing and naming the missing tasks while one is), so N tasks leave what one leaves:
launch/make_shards_slurm.sh submits them as a Slurm array (smaug/data/arraytask.py).

The reports record the command without the options that do not change the output (--workers,
--no-progress, the task options). Next to manifest.json goes PREFIX.yaml, the corpus YAML
(shards/README.md) to copy into the shard root.

Example:
  python tools/make_shards.py --webvid-csv results_2M_train.csv --video-root videos \\
      --out shards/webvid2m --prefix webvid2m --workers 16
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

from smaug.data.arraytask import (
    Incomplete,
    Task,
    TaskError,
    add_task_arguments,
    finish_task,
    gather,
    merge_lock,
    recorded_command,
    remove_stale_temps,
    resolve_task,
    start_task,
)
from smaug.data.config import default_shards_root
from smaug.data.shardwriter import (
    build_reports,
    check_layout,
    compact_stats,
    corpus_yaml,
    done_stats,
    is_done,
    plan_jobs,
    preload_codecs,
    shard_index,
    write_shard,
)
from smaug.data.sources import count_records, iter_rows
from smaug.data.specs import write_json_atomic
from smaug.progress import make_progress

LOG = logging.getLogger("smaug.make_shards")
POLL_S = 0.2
MERGE_ARGS = ("out", "merge", "num_tasks", "no_progress")  # what --merge reads


def parse_args(argv=None) -> argparse.Namespace:
    # no abbreviated options: the recorded command drops the run-only options by their full names
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--webvid-csv", help="WebVid results CSV (videoid,name,page_idx,page_dir,duration,contentUrl)")
    src.add_argument("--image-list", help="image-caption TSV: caption<TAB>path per line")
    src.add_argument("--json", help="eval JSON list of {video, caption}")
    p.add_argument("--video-root", help="root the CSV/JSON video paths are relative to")
    p.add_argument("--image-root", help="root the image-list paths are relative to")
    p.add_argument("--out", required=True, help="output directory for shards, manifest and stats")
    p.add_argument("--prefix", default=None, help="shard name prefix (default: the output directory's name)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="rows per shard (default 1000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--resize-short-side", type=int, default=0, help="re-encode with this short side (0: keep)")
    p.add_argument("--fps", type=float, default=0.0, help="re-encode at this frame rate (0: keep; never raised)")
    p.add_argument("--frames", type=int, default=0, help="store K JPEG frames per video instead of the video")
    p.add_argument(
        "--row-timeout",
        type=float,
        default=600.0,
        help="seconds without progress before a shard is rebuilt with isolated rows (default 600)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_arguments(p, "output shard")
    args = p.parse_args(argv)
    if args.merge:
        extra = [k for k, v in vars(args).items() if k not in MERGE_ARGS and v != p.get_default(k)]
        if extra:
            drop = ", ".join("--" + k.replace("_", "-") for k in sorted(extra))
            p.error(f"--merge reads only --out (and --num-tasks); drop {drop}")
        return args
    if not (args.webvid_csv or args.image_list or args.json):
        p.error("one of --webvid-csv, --image-list, --json is required (or --merge)")
    if args.image_list and not args.image_root:
        p.error("--image-list needs --image-root")
    if (args.webvid_csv or args.json) and not args.video_root:
        p.error("--webvid-csv/--json need --video-root")
    if args.frames < 0 or args.resize_short_side < 0 or args.fps < 0 or args.workers < 1:
        p.error("--frames, --resize-short-side, --fps must be >= 0 and --workers >= 1")
    try:
        check_layout(args.prefix or Path(args.out).resolve().name, args.samples_per_shard)
        args.task = resolve_task(args.num_tasks, args.task_index, os.environ)
    except (ValueError, TaskError) as exn:
        p.error(str(exn))
    return args


def _exit_with_parent(parent: int) -> None:
    """Watchdog thread: a killed parent must not leave orphans holding the output lock."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _shard_process(job, counter, parent: int, isolate: bool, row_timeout: float) -> None:
    """Body of one shard's process: write the shard, counting rows in `counter`."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    write_shard(job, on_row=tick, isolate=isolate, row_timeout=row_timeout)


def build_all(jobs, workers: int, row_timeout: float, bar) -> tuple[dict[int, dict], int, int, int]:
    """Build the shards of a job stream in up to `workers` processes, one process per shard.

    Finished shards (stats file with the job's fingerprint) are skipped. A shard whose process
    dies (a decoder crash) or makes no progress for `row_timeout` seconds (a decoder hang) is
    rebuilt with every row in its own child process, so the bad row is skipped as
    `undecodable` and the run goes on. Jobs are pulled lazily: only running shards' rows are
    in memory. Returns ({shard index: compact stats}, shards reused, shards built, rows built).
    """
    ctx = mp.get_context("fork")
    preload_codecs()
    jobs = iter(jobs)
    retry: deque = deque()
    running: dict = {}  # process -> [job, isolate, counter, last count, last change time]
    stats: dict[int, dict] = {}
    reused = built = built_rows = 0
    finished_rows = 0
    exhausted = False
    while not exhausted or retry or running:
        while len(running) < workers and (retry or not exhausted):
            if retry:
                job, isolate = retry.popleft()
            else:
                job, isolate = next(jobs, None), False
                if job is None:
                    exhausted = True
                    break
                done = is_done(job)
                if done is not None:
                    stats[job.index] = compact_stats(done)
                    reused += 1
                    finished_rows += len(job.rows)
                    continue
            counter = ctx.Value("q", 0)
            gc.freeze()  # the child shares this process's objects without copy-on-write from gc
            proc = ctx.Process(
                target=_shard_process, args=(job, counter, os.getpid(), isolate, row_timeout), name=f"shard-{job.index}"
            )
            proc.start()
            running[proc] = [job, isolate, counter, 0, time.time()]
        time.sleep(POLL_S if running else 0)
        for proc, (job, isolate, counter, last, since) in list(running.items()):
            if proc.is_alive():
                now = counter.value
                if now != last:
                    running[proc][3:] = [now, time.time()]
                elif not isolate and time.time() - since > row_timeout:
                    LOG.warning(
                        "shard %s: no progress for %.0fs (decoder hang?); rebuilding it row by row in "
                        "isolated processes",
                        job.name,
                        row_timeout,
                    )
                    proc.kill()
                    proc.join()
                    del running[proc]
                    retry.append((job, True))
                continue
            proc.join()
            del running[proc]
            done = is_done(job) if proc.exitcode == 0 else None
            if done is not None:
                stats[job.index] = compact_stats(done)
                built += 1
                built_rows += len(job.rows)
                finished_rows += len(job.rows)
            elif not isolate:
                LOG.warning(
                    "shard %s: its process died (exit code %s, a decoder crash?); rebuilding it row by "
                    "row in isolated processes",
                    job.name,
                    proc.exitcode,
                )
                retry.append((job, True))
            else:
                raise RuntimeError(f"shard {job.name}: failed even with isolated rows (exit code {proc.exitcode})")
        live = sum(min(r[2].value, len(r[0].rows)) for r in running.values())
        bar.update(finished_rows + live - bar.n)
    return stats, reused, built, built_rows


def _progress(total: int, disable: bool):
    """A bar on a terminal, plain lines in a log (`smaug.progress`), nothing with --no-progress."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: this process forks shard processes
    if disable:
        return tqdm(total=total, disable=True)
    return make_progress(total, "video", smoothing=0.1)


def _task_rows(total: int | None, per_shard: int, task: Task) -> int | None:
    """Rows in this task's shards when the listing has `total` rows (for the progress bar)."""
    if total is None:
        return None
    return sum(min(per_shard, total - n * per_shard) for n in task.share(-(-total // per_shard)))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.merge:
        return merge(Path(args.out), args.num_tasks, None, None)
    task: Task = args.task
    if args.webvid_csv:
        kind_in, listing, root = "webvid", args.webvid_csv, args.video_root
    elif args.image_list:
        kind_in, listing, root = "images", args.image_list, args.image_root
    else:
        kind_in, listing, root = "json", args.json, args.video_root
    if not Path(root).is_dir():
        print(f"error: media root {root} is not a directory", file=sys.stderr)
        return 2
    try:
        rows = iter_rows(kind_in, listing)
        first = next(rows, None)
    except (OSError, ValueError) as exn:
        print(f"error: cannot read {listing}: {exn}", file=sys.stderr)
        return 2
    if first is None:
        print(f"error: {listing} has no data rows", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = args.prefix or out.resolve().name
    try:
        # held while this name lives, until the process exits (forked shard processes share it)
        locks = start_task(out / "stats", task, out)  # noqa: F841
    except TaskError as exn:
        print(f"error: {exn}", file=sys.stderr)
        return 2
    remove_stale_temps([out, out / "stats"], lambda name: (n := shard_index(name, prefix)) is not None and task.owns(n))
    options = {
        "frames": args.frames,
        "short_side": args.resize_short_side,
        "fps": 0.0 if args.frames else float(args.fps),
    }
    kind = "image" if kind_in == "images" else ("frames" if args.frames else "video")
    total = count_records(kind_in, listing)
    label = f"{task} (from {task.source}): " if task.count > 1 else ""
    print(
        f"[make_shards] {label}{listing}: {total if total is not None else '?'} rows -> {out} "
        f"({args.samples_per_shard} per shard, {args.workers} workers)",
        file=sys.stderr,
    )
    num_rows = 0

    def counted(rows):  # every task reads every row (the row checks, e.g. duplicate ids, span the listing)
        nonlocal num_rows
        for row in rows:
            num_rows += 1
            yield row

    planned = plan_jobs(
        counted(itertools.chain([first], rows)), str(out), prefix, args.samples_per_shard, root, options
    )
    t0 = time.time()
    bar = _progress(_task_rows(total, args.samples_per_shard, task), args.no_progress)
    stats, reused, built, built_rows = build_all(
        (job for job in planned if task.owns(job.index)), args.workers, args.row_timeout, bar
    )
    bar.close()
    elapsed = time.time() - t0
    from smaug import __version__

    plan = {  # what decides the output: equal in every task of one job
        "command": recorded_command("tools/make_shards.py", argv),
        "listing": os.path.realpath(listing),
        "listing_sha256": _sha256(listing),
        "root": os.path.realpath(root),
        "kind": kind,
        "options": options,
        "prefix": prefix,
        "samples_per_shard": args.samples_per_shard,
        "num_rows": num_rows,
        "num_units": -(-num_rows // args.samples_per_shard),
        "version": __version__,
    }
    ordered = [stats[n] for n in sorted(stats)]
    units = [{"index": n, "name": stats[n]["shard"], "fingerprint": stats[n]["fingerprint"]} for n in sorted(stats)]
    summary = build_reports(ordered, kind, plan["command"], options, prefix, args.samples_per_shard)[1]
    finish_task(out / "stats", task, plan, units, summary)
    rate = built_rows / elapsed if elapsed > 0 else 0.0
    print(
        f"[make_shards] {f'{task}: ' if task.count > 1 else ''}{len(stats)} shards ({reused} already done, "
        f"{built} built); built {built_rows} rows in {elapsed:.1f}s ({rate:.1f} videos/s)",
        file=sys.stderr,
    )
    return merge(out, task.count, plan, task)


def merge(out: Path, num_tasks: int | None, plan: dict | None, task: Task | None) -> int:
    """Write summary.json, manifest.json and PREFIX.yaml from every task's shards once all tasks are done.

    `task`: the task that just finished (it leaves the merge to a later one while tasks are missing);
    None: an explicit --merge (it refuses then, naming them, and writes nothing)."""
    stats_dir = out / "stats"
    try:
        with merge_lock(stats_dir):
            num_tasks, plan, units = gather(stats_dir, num_tasks, plan)
            stats, changed = [], {}
            for u in units:
                s = done_stats(stats_dir / f"{u['name'][:-4]}.json", out / u["name"], u["fingerprint"])
                if s is None:
                    changed.setdefault(u["index"] % num_tasks, f"its shard {u['name']} changed since: rerun it")
                else:
                    stats.append(compact_stats(s))
            if changed:
                raise Incomplete(num_tasks, changed)
            return write_reports(out, plan, stats)
    except Incomplete as exn:
        if task is not None:
            print(
                f"[make_shards] {task} done; not merged yet, {exn}. The last task to finish writes the reports "
                f"(or: tools/make_shards.py --out {out} --merge --num-tasks {exn.num_tasks})",
                file=sys.stderr,
            )
            return 0
        print(f"error: cannot merge {out}: {exn}; nothing written. {exn.rerun()}", file=sys.stderr)
        return 2
    except TaskError as exn:
        print(f"error: cannot merge {out}: {exn}", file=sys.stderr)
        return 2


def write_reports(out: Path, plan: dict, stats: list[dict]) -> int:
    """summary.json, then (unless every row failed: exit 2) manifest.json and PREFIX.yaml; call under the merge
    lock, with the compact stats of every shard in order."""
    prefix = plan["prefix"]
    reports = ("summary.json", "manifest.json", f"{prefix}.yaml")
    remove_stale_temps([out], lambda name: name in reports)
    manifest, summary = build_reports(
        stats, plan["kind"], plan["command"], plan["options"], prefix, plan["samples_per_shard"]
    )
    write_json_atomic(out / "summary.json", summary)
    n_rows = manifest["num_rows"]
    skipped = {k: v for k, v in summary["skipped"].items() if v}
    print(
        f"[make_shards] done: {manifest['num_samples']} of {n_rows} rows in {len(stats)} shards, "
        f"{sum(skipped.values())} skipped{' ' + str(skipped) if skipped else ''}; "
        f"total duration {manifest['total_duration'] / 3600:.2f} h",
        file=sys.stderr,
    )
    if manifest["num_samples"] == 0:
        for name in reports[1:]:
            (out / name).unlink(missing_ok=True)
        print(
            f"error: every one of the {n_rows} rows failed ({skipped}); nothing usable in {plan['listing']} "
            f"with root {plan['root']}. See {out / 'summary.json'}.",
            file=sys.stderr,
        )
        return 2
    write_json_atomic(out / "manifest.json", manifest)
    yml = out / f"{prefix}.yaml"
    tmp = out / f".{yml.name}.{os.getpid()}.tmp"
    tmp.write_text(corpus_yaml(manifest, out, default_shards_root()), encoding="utf-8")
    os.replace(tmp, yml)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
