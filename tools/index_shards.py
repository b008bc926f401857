#!/usr/bin/env python
"""Index WebDataset shards that smaug did not write (video2dataset output, or any
`{key}.mp4|.jpg + .txt|.json` layout) so the loader can train on them.

    python tools/index_shards.py SHARDS [--out DIR] [--caption-field txt|json:NAME] [--rewrite]
                                 [--decoder decord|pyav|torchcodec] [--timeout S] [--workers N]
                                 [--num-tasks N --task-index I]
    python tools/index_shards.py --out DIR --merge [--num-tasks N]

SHARDS: a directory of *.tar, a brace pattern (`dir/{00000..00099}.tar`) or a list of tars.
Every sample is test-decoded as the loader decodes it, in a forked child with a time limit, so a
video that crashes or hangs the decoder is counted (`decoder_crash`, `decode_timeout`), not fatal.
Bad samples are counted per reason (failed_download, missing_media, missing_caption, bad_caption,
bad_json, decode_error, decoder_crash, decode_timeout, duplicate_key) in DIR/summary.json.

Without --rewrite the tars stay as they are: DIR/manifest.json (DIR = the shard folder by
default) names them with their good-sample counts and lists the bad samples' keys, which the
loader drops unread. With --rewrite, clean shards in smaug's layout go to --out (needed when the
caption lives in the json: --caption-field json:caption).

Each tar's result is kept in DIR/stats/NAME.json as soon as it is done: rerunning the same command
after a kill indexes only the rest. Many machines: `--num-tasks N --task-index I` (default: Slurm's
SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_ID) makes this run task I of N, which indexes the tars
I, I+N, ... of the sorted list; the last task to finish writes manifest.json and summary.json for
all (or `--merge`, which names the missing tasks while one is), the bytes one run writes.
`TOOL=index_shards sbatch --array=0-(N-1) launch/make_shards_slurm.sh SHARDS ...` submits the tasks.

Then: data.train_shards=DIR (or a corpus YAML naming DIR/manifest.json).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

from smaug.data.arraytask import Incomplete, TaskError, add_task_arguments, recorded_command, resolve_task


def expand(specs: list[str]) -> list[str]:
    import braceexpand

    out = []
    for s in specs:
        if os.path.isdir(s):
            out += sorted(glob.glob(os.path.join(s, "*.tar")))
        else:
            out += [u for part in s.split("::") for u in braceexpand.braceexpand(part)]
    missing = [t for t in out if not os.path.isfile(t)]
    if missing:
        raise SystemExit(f"index_shards: {len(missing)} shard(s) not found, e.g. {missing[0]}")
    if not out:
        raise SystemExit(f"index_shards: no .tar files in {specs}")
    return out


def arg_parser() -> argparse.ArgumentParser:
    # no abbreviated options: the recorded command drops the run-only options by their full names
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("shards", nargs="*", help="shard directory, brace pattern or tar files")
    p.add_argument("--out", help="where manifest.json/summary.json (and --rewrite shards) go [the shards' folder]")
    p.add_argument("--caption-field", default="txt", help="txt (the .txt member) or json:NAME [txt]")
    p.add_argument("--rewrite", action="store_true", help="write clean shards in smaug's layout to --out")
    p.add_argument(
        "--decoder",
        default="decord",
        choices=("decord", "pyav", "torchcodec"),
        help="decoder the test decode uses (train with the same data.decoder) [decord]",
    )
    p.add_argument("--num-frames", type=int, default=4, help="frames the test decode reads per clip [4]")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one sample may take to decode [60]")
    p.add_argument("--workers", type=int, default=1, help="shards indexed in parallel [1]")
    add_task_arguments(p, "input tar")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = arg_parser()
    args = p.parse_args(argv)
    from smaug.data.index import index_task, merge_index

    if args.merge:
        given = {k for k, v in vars(args).items() if v not in (p.get_default(k), [])}
        extra = given - {"out", "merge", "num_tasks"}
        if extra or not args.out:
            p.error("--merge reads only --out DIR (the folder of manifest.json) and --num-tasks")
        try:
            man, summary = merge_index(args.out, args.num_tasks)
        except TaskError as exn:
            hint = f" nothing written. {exn.rerun('TOOL=index_shards ')}" if isinstance(exn, Incomplete) else ""
            print(f"index_shards: cannot merge {args.out}: {exn};{hint}", file=sys.stderr)
            return 2
        return report(man, summary, args.out, None)
    if not args.shards:
        p.error("give the shards (a directory, a brace pattern or tar files), or --merge --out DIR")
    try:
        task = resolve_task(args.num_tasks, args.task_index, os.environ)
    except TaskError as exn:
        p.error(str(exn))
    from smaug.data.decoders import check_decoder

    tars = expand(args.shards)
    out = args.out or os.path.dirname(os.path.abspath(tars[0]))
    if args.rewrite and not args.out:
        raise SystemExit("index_shards: --rewrite needs --out (the original tars are never overwritten)")
    if args.rewrite and any(os.path.abspath(os.path.dirname(t)) == os.path.abspath(out) for t in tars):
        raise SystemExit("index_shards: --out must differ from the shards' folder with --rewrite")
    try:
        check_decoder(args.decoder)
    except ValueError as exn:
        raise SystemExit(f"index_shards: {exn}") from None
    t0 = time.perf_counter()
    try:
        done = index_task(
            tars,
            out,
            args.caption_field,
            args.decoder,
            args.num_frames,
            args.timeout,
            args.rewrite,
            args.workers,
            command=recorded_command("tools/index_shards.py", argv),
            task=task,
        )
    except (ValueError, TaskError) as exn:
        raise SystemExit(f"index_shards: {exn}") from None
    if task.count > 1:
        s = done["summary"]
        print(
            f"[index_shards] {task} (from {task.source}): {s['shards']} shards ({done['reused']} already indexed, "
            f"{done['indexed']} indexed), {s['samples']} good samples, {sum(s['skipped'].values())} bad"
        )
    try:
        man, summary = merge_index(out, task.count, done["plan"])
    except Incomplete as exn:
        print(
            f"[index_shards] {task} done; not merged yet, {exn}. The last task to finish writes the reports "
            f"(or: tools/index_shards.py --out {out} --merge --num-tasks {task.count})"
        )
        return 0
    except TaskError as exn:
        raise SystemExit(f"index_shards: cannot merge {out}: {exn}") from None
    return report(man, summary, out, time.perf_counter() - t0)


def report(man: dict, summary: dict, out: str, dt: float | None) -> int:
    """Print the merged result -> exit code (2 when no sample is good)."""
    bad = {k: v for k, v in summary["skipped"].items() if v}
    total = man["num_samples"] + man["num_skipped"]
    took = f" in {dt:.1f}s ({total / max(dt, 1e-9):.1f} samples/s)" if dt is not None else ""
    print(
        f"[index_shards] {man['num_shards']} shards, {total} samples: {man['num_samples']} good, "
        f"{man['num_skipped']} bad {bad or ''}{took} -> {out}/manifest.json"
    )
    return 0 if man["num_samples"] else 2


if __name__ == "__main__":
    sys.exit(main())
