#!/usr/bin/env python
"""Convert a raw corpus into WebDataset shards, once, on a CPU box.

Inputs (one of):
  --webvid-csv CSV --video-root DIR   WebVid results CSV; videos at DIR/{page_dir}/{videoid}.mp4
  --image-list TSV --image-root DIR   CC3M-style `caption<TAB>path` list (optional header line)
  --json JSON --video-root DIR        MSRVTT/DiDeMo-style [{"video": path, "caption": str|[str]}]

Output: DIR/{prefix}-000000.tar ... with members {key}.mp4 (or .jpg, or {key}.f000.jpg...),
{key}.txt (caption) and {key}.json (id, duration, fps, num_frames, width, height, source, ...);
DIR/manifest.json (shards, counts, command, version), DIR/summary.json (skips per reason, bad
rows), DIR/stats/{prefix}-N.json (per-shard stats; also the resume markers).

Optional transforms: --resize-short-side S and/or --fps F re-encode to H.264 mp4;
--frames K stores K JPEG frames (segment centres) instead of the video.

Rerunning the same command after a kill finishes the job without rewriting finished shards; the
result is byte-identical to an uninterrupted run. Each shard is built in its own process; if
that process crashes or hangs (a decoder bug on some file), the shard is rebuilt with each row
in a child process, and the offending row is skipped as `undecodable`. Bad rows are skipped, counted and logged with
their row and line numbers; a run in which every row fails exits with status 2.

Example:
  python tools/make_shards.py --webvid-csv results_2M_train.csv --video-root videos \\
      --out shards/webvid2m --prefix webvid2m --workers 16
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import multiprocessing as mp
import os
import shlex
import sys
import threading
import time
from collections import deque
from pathlib import Path

from smaug.data.shardwriter import build_reports, compact_stats, is_done, plan_jobs, preload_codecs, write_shard
from smaug.data.sources import count_records, iter_rows
from smaug.data.specs import write_json_atomic

LOG = logging.getLogger("smaug.make_shards")
POLL_S = 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
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
    args = p.parse_args(argv)
    if args.image_list and not args.image_root:
        p.error("--image-list needs --image-root")
    if (args.webvid_csv or args.json) and not args.video_root:
        p.error("--webvid-csv/--json need --video-root")
    if args.frames < 0 or args.resize_short_side < 0 or args.fps < 0 or args.workers < 1:
        p.error("--frames, --resize-short-side, --fps must be >= 0 and --workers >= 1")
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


def build_all(jobs, workers: int, row_timeout: float, bar) -> tuple[list[dict], int, int, int]:
    """Build the shards of a job stream in up to `workers` processes, one process per shard.

    Finished shards (stats file with the job's fingerprint) are skipped. A shard whose process
    dies (a decoder crash) or makes no progress for `row_timeout` seconds (a decoder hang) is
    rebuilt with every row in its own child process, so the bad row is skipped as
    `undecodable` and the run goes on. Jobs are pulled lazily: only running shards' rows are
    in memory. Returns (compact stats in shard order, shards reused, shards built, rows built).
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
    return [stats[i] for i in sorted(stats)], reused, built, built_rows


def lock_output(out: Path):
    """Hold an exclusive lock on OUT/stats/.lock for this run (forked workers share it, so a rerun
    waits for no one but refuses while orphans of a killed run still write)."""
    import fcntl

    (out / "stats").mkdir(exist_ok=True)
    f = open(out / "stats" / ".lock", "a+")
    for _ in range(100):  # workers of a just-killed run need a moment to exit
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            time.sleep(0.1)
    f.close()
    raise SystemExit(f"error: another make_shards run is writing to {out}")


def remove_stale_temps(out: Path) -> None:
    """Delete `.NAME.PID.tmp` files left by a killed run (call with the output lock held)."""
    for p in [*out.glob(".*.tmp"), *(out / "stats").glob(".*.tmp")]:
        p.unlink(missing_ok=True)


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: this process forks shard processes
    return tqdm(total=total, unit="video", dynamic_ncols=True, disable=disable, smoothing=0.1)


def run(args: argparse.Namespace, argv: list[str]) -> int:
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
    lock = lock_output(out)  # noqa: F841 - the lock is held while this name lives, until the process exits
    remove_stale_temps(out)
    prefix = args.prefix or out.resolve().name
    options = {
        "frames": args.frames,
        "short_side": args.resize_short_side,
        "fps": 0.0 if args.frames else float(args.fps),
    }
    kind = "image" if kind_in == "images" else ("frames" if args.frames else "video")
    total = count_records(kind_in, listing)
    print(
        f"[make_shards] {listing}: {total if total is not None else '?'} rows -> {out} "
        f"({args.samples_per_shard} per shard, {args.workers} workers)",
        file=sys.stderr,
    )
    jobs = plan_jobs(itertools.chain([first], rows), str(out), prefix, args.samples_per_shard, root, options)
    t0 = time.time()
    bar = _progress(total, args.no_progress)
    stats, reused, built, built_rows = build_all(jobs, args.workers, args.row_timeout, bar)
    bar.close()
    elapsed = time.time() - t0
    command = "tools/make_shards.py " + shlex.join(argv)
    manifest, summary = build_reports(stats, kind, command, options, prefix, args.samples_per_shard)
    write_json_atomic(out / "summary.json", summary)
    n_rows = manifest["num_rows"]
    rate = built_rows / elapsed if elapsed > 0 else 0.0
    skipped = {k: v for k, v in summary["skipped"].items() if v}
    print(
        f"[make_shards] done: {manifest['num_samples']} of {n_rows} rows in {len(stats)} shards "
        f"({reused} already done, {built} built), {sum(skipped.values())} skipped"
        f"{' ' + str(skipped) if skipped else ''}; built {built_rows} rows in {elapsed:.1f}s ({rate:.1f} videos/s); "
        f"total duration {manifest['total_duration'] / 3600:.2f} h",
        file=sys.stderr,
    )
    if manifest["num_samples"] == 0:
        (out / "manifest.json").unlink(missing_ok=True)
        print(
            f"error: every one of the {n_rows} rows failed ({skipped}); nothing usable in {listing} "
            f"with root {root}. See {out / 'summary.json'}.",
            file=sys.stderr,
        )
        return 2
    write_json_atomic(out / "manifest.json", manifest)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
