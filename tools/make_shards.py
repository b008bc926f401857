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
result is byte-identical to an uninterrupted run. Bad rows are skipped, counted and logged with
their row and line numbers; a run in which every row fails exits with status 2.

Example:
  python tools/make_shards.py --webvid-csv results_2M_train.csv --video-root videos \\
      --out shards/webvid2m --prefix webvid2m --workers 16
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shlex
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

try:
    import smaug  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smaug.data.shardwriter import build_reports, is_done, plan_jobs, write_shard  # noqa: E402
from smaug.data.sources import read_rows  # noqa: E402
from smaug.data.specs import write_json_atomic  # noqa: E402

LOG = logging.getLogger("smaug.make_shards")
_COUNTER = None  # shared progress counter in worker processes


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
    """Worker watchdog: a killed parent must not leave orphans holding the output lock."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(counter, parent: int = 0) -> None:
    global _COUNTER
    _COUNTER = counter
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if parent:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _tick() -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += 1


def _run_job(job):
    return write_shard(job, on_row=_tick)


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
        rows = read_rows(kind_in, listing)
    except (OSError, ValueError) as exn:
        print(f"error: cannot read {listing}: {exn}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {listing} has no data rows", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_output(out)  # noqa: F841  (held until the process exits)
    remove_stale_temps(out)
    prefix = args.prefix or out.resolve().name
    options = {"frames": args.frames, "short_side": args.resize_short_side,
               "fps": 0.0 if args.frames else float(args.fps)}
    kind = "image" if kind_in == "images" else ("frames" if args.frames else "video")
    jobs = plan_jobs(rows, str(out), prefix, args.samples_per_shard, root, options)
    stats: dict[int, dict] = {}
    for job in jobs:
        done = is_done(job)
        if done is not None:
            stats[job.index] = done
    todo = [j for j in jobs if j.index not in stats]
    already = sum(len(jobs[i].rows) for i in stats)
    print(f"[make_shards] {len(rows)} rows -> {len(jobs)} shards in {out} "
          f"({len(stats)} already done, {len(todo)} to build, {args.workers} workers)", file=sys.stderr)
    t0 = time.time()
    counter = mp.Value("q", 0)
    bar = _progress(len(rows), args.no_progress)
    bar.update(already)
    _init_worker(counter)
    if args.workers == 1:
        for job in todo:
            stats[job.index] = write_shard(job, on_row=lambda: bar.update(1))
    else:
        with ProcessPoolExecutor(args.workers, initializer=_init_worker,
                                 initargs=(counter, os.getpid())) as pool:
            futures = {pool.submit(_run_job, job): job for job in todo}
            pending, seen = set(futures), 0
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    stats[futures[fut].index] = fut.result()
                bar.update(counter.value - seen)
                seen = counter.value
    bar.close()
    elapsed = time.time() - t0
    ordered = [stats[j.index] for j in jobs]
    command = "tools/make_shards.py " + shlex.join(argv)
    manifest, summary = build_reports(jobs, ordered, kind, command, options, prefix, args.samples_per_shard)
    write_json_atomic(out / "summary.json", summary)
    built = sum(len(j.rows) for j in todo)
    rate = built / elapsed if elapsed > 0 else 0.0
    skipped = {k: v for k, v in summary["skipped"].items() if v}
    print(f"[make_shards] done: {manifest['num_samples']} samples in {len(jobs)} shards, "
          f"{sum(skipped.values())} skipped{' ' + str(skipped) if skipped else ''}; built {built} rows in {elapsed:.1f}s "
          f"({rate:.1f} videos/s); total duration {manifest['total_duration'] / 3600:.2f} h", file=sys.stderr)
    if manifest["num_samples"] == 0:
        (out / "manifest.json").unlink(missing_ok=True)
        print(f"error: every one of the {len(rows)} rows failed ({skipped}); nothing usable in {listing} "
              f"with root {root}. See {out / 'summary.json'}.", file=sys.stderr)
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
