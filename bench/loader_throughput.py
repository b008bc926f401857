#!/usr/bin/env python
"""Loader throughput per worker process, per shard kind, against bare decoding of the same clips.

    python bench/loader_throughput.py [--corpus DIR] [--num-videos 48] [--clips 96] [--workdir DIR]

Builds (in a temp dir unless --workdir) four shard kinds from one WebVid-layout corpus (the
synthetic one from tools/make_synthetic.py when --corpus is not given):
  raw        the source mp4s as they are
  reencode   --resize-short-side 224 --fps 2 (Singularity-style compression)
  frames     --frames 2T JPEG frames per video, at the source size
  frames224  --frames 2T --resize-short-side 224: JPEG frames stored at the training size
             (the kind the README recommends for pre-training)
For each kind it times, in this one process with one thread (= one dataloader worker):
  loader    smaug's train stream: tar read, decode at reduced size, T segment frames, random-resized
            crop to image_size, tokenise, collate (clips/s)
  bare      the same clips decoded from plain files: decord VideoReader(path, reduced size)
            + get_batch(T segment centres) for mp4; PIL decoding the T JPEG files for frames
and prints both and their ratio, measured in the same run. For the recommended kind it also runs
the real DataLoader with one worker process and measures the main process's CPU time per clip
(receiving batches from the worker), which a training process pays on top of its workers.
For the two mp4 kinds it also times the loader once per video decoder (`--decoders`, default all
three: decord, pyav, torchcodec; `data.decoder`), and decord with `data.isolate_decode` (each
sample decoded in the worker's decode process), same shards, same clips, same run.
Cores per GPU follows:
  cores per GPU = GPU clips/s x (1 / loader clips/s per worker + main-process CPU s per clip)
with GPU clips/s from bench/train_step.py (--gpu-clips-per-s; default 1272, the real SMAUG step
on one H100 at its largest batch, 600 clips: bench/results/h100-2026-11-26).
Synthetic clips are small (<= 480x270, <= 15 fps); `--webvid-like N` times N 640x360/25fps/10s
textured clips instead, closer to WebVid's 360p previews.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]


def tool(name: str, *args) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / name), *map(str, args)], capture_output=True, text=True, errors="replace"
    )
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")


def _webvid_like_clip(job: tuple[int, str, float, int, int, int]) -> None:
    """A WebVid-like clip: smooth camera pan over a textured scene plus a moving object."""
    import numpy as np
    from PIL import Image

    from smaug.data.transcode import encode_h264

    seed, path, seconds, fps, w, h = job
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (h // 6, (w + 200) // 6, 3), dtype=np.uint8))
    scene = np.asarray(small.resize((w + 200, h), Image.BICUBIC))
    n = int(seconds * fps)

    def frames():
        for i in range(n):
            x = int(200 * i / n)
            f = scene[:, x : x + w].copy()
            cx = int((0.2 + 0.6 * i / n) * w)
            f[h // 3 : h // 3 + h // 4, cx : cx + h // 4] = (230, 40, 40)
            yield f

    encode_h264(frames(), fps, path, crf=23, gop=2 * fps)  # a keyframe every 2 s


def make_webvid_like(
    out: Path, n: int, workers: int, seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (640, 360)
) -> None:
    """N WebVid-like clips (default 640x360, 25 fps, 10 s) in WebVid's layout."""
    import csv
    import multiprocessing as mp

    (out / "videos" / "p0").mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(out / "videos" / "p0" / f"{1000 + i}.mp4"), seconds, fps, *size) for i in range(n)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_webvid_like_clip, jobs)
    with open(out / "results_2M_train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"])
        for i in range(n):
            w.writerow(
                [
                    1000 + i,
                    f"a red block crosses a textured scene, take {i}",
                    0,
                    "p0",
                    f"PT00H00M{int(seconds):02d}S",
                    "u",
                ]
            )


def build_shards(corpus: Path, work: Path, frames: int, workers: int) -> tuple[dict[str, Path], dict[str, float]]:
    """The four shard kinds, and each conversion's wall seconds (make_shards with `workers` processes)."""
    csv_path, videos = corpus / "results_2M_train.csv", corpus / "videos"
    kinds = {
        "raw": [],
        "reencode": ["--resize-short-side", 224, "--fps", 2],
        "frames": ["--frames", 2 * frames],
        "frames224": ["--frames", 2 * frames, "--resize-short-side", 224],
    }
    out, seconds = {}, {}
    for kind, extra in kinds.items():
        out[kind] = work / "shards" / kind
        t0 = time.perf_counter()
        tool(
            "make_shards.py",
            "--webvid-csv",
            csv_path,
            "--video-root",
            videos,
            "--out",
            out[kind],
            "--samples-per-shard",
            16,
            "--workers",
            workers,
            "--no-progress",
            *("--num-tasks", 1, "--task-index", 0),  # all shards, also inside a Slurm job array (its variables)
            *extra,
        )
        seconds[kind] = time.perf_counter() - t0
    tool("build_tokenizer.py", "--shards", out["raw"], "--out", work / "tokenizer", "--vocab-size", 500)
    return out, seconds


def extract_files(shard_dir: Path, dest: Path) -> list[tuple[list[Path], dict]]:
    """Each sample's media as plain files (mp4, or the JPEG frames) plus its json metadata."""
    dest.mkdir(parents=True, exist_ok=True)
    items: dict[str, dict] = {}
    for tar in sorted(shard_dir.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                data = tf.extractfile(m).read()
                entry = items.setdefault(key, {"files": [], "meta": {}})
                if ext == "json":
                    entry["meta"] = json.loads(data)
                elif ext != "txt":
                    p = dest / m.name
                    p.write_bytes(data)
                    entry["files"].append(p)
    return [(sorted(v["files"]), v["meta"]) for v in items.values()]


def bare_rate(items, kind: str, t: int, short_side: int, clips: int) -> float:
    """Clips/s decoding the same clips from files, outside the loader."""
    import decord
    from PIL import Image

    from smaug.data.decode import scaled_size, segment_indices

    decord.logging.set_level(decord.logging.QUIET)
    n = 0
    start = time.perf_counter()
    while n < clips:
        for files, meta in items:
            if kind.startswith("frames"):
                for i in segment_indices(len(files), t):
                    img = Image.open(files[i])
                    img.draft("RGB", scaled_size(img.size[0], img.size[1], short_side))
                    img.convert("RGB").load()
            else:
                w, h = -1, -1  # as the loader: rescale only when the short side is larger
                if short_side > 0 and min(meta["width"], meta["height"]) > short_side:
                    w, h = scaled_size(meta["width"], meta["height"], short_side)
                vr = decord.VideoReader(str(files[0]), width=w, height=h, num_threads=1)
                vr.get_batch(segment_indices(len(vr), t)).asnumpy()
            n += 1
            if n >= clips:
                break
    return n / (time.perf_counter() - start)


def loader_rate(
    shards: Path,
    tok,
    t: int,
    image_size: int,
    short_side: int,
    clips: int,
    num_workers: int = 0,
    decoder: str = "decord",
    isolate: bool = False,
) -> tuple[float, float]:
    """(clips/s, this process's CPU seconds per clip) of smaug's train stream. num_workers=0: all
    the work in this process (one worker's work); 1: a real worker process, so the CPU time is
    what the main process pays on top (receiving batches)."""
    from smaug.data import DataConfig, build_train_loader

    bs = 8
    cfg = DataConfig(
        train_shards=str(shards),
        num_frames=t,
        image_size=image_size,
        decode_short_side=short_side,
        batch_size=bs,
        num_workers=num_workers,
        shuffle_buffer=8,
        round_batches=10_000,
        decoder=decoder,
        isolate_decode=isolate,
    )
    it = iter(build_train_loader(cfg, tok, seed=0))
    next(it)  # warm-up: shuffle-buffer fill, imports, worker start
    steps = max(1, clips // bs)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return steps * bs / wall, cpu / (steps * bs)


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", help="WebVid-layout corpus dir (default: build a synthetic one)")
    p.add_argument("--num-videos", type=int, default=48, help="synthetic clips when --corpus is not given")
    p.add_argument(
        "--webvid-like",
        type=int,
        default=0,
        help="instead: build N WebVid-like clips (640x360, 25 fps, 10 s, textured) as the corpus",
    )
    p.add_argument("--clips", type=int, default=96, help="clips timed per measurement")
    p.add_argument("--num-frames", type=int, default=4, help="T frames per clip")
    p.add_argument("--image-size", type=int, default=224, help="output crop size")
    p.add_argument("--short-side", type=int, default=224, help="decode short side (reduced-size decode)")
    p.add_argument("--workers", type=int, default=2, help="make_shards processes")
    p.add_argument("--workdir", help="keep shards here (default: a temp dir)")
    p.add_argument(
        "--gpu-clips-per-s",
        type=float,
        default=1272.0,
        help="GPU training clips/s for the cores-per-GPU column (default: SMAUG base on one H100, 600 clips per step)",
    )
    p.add_argument(
        "--decoders",
        default="decord,pyav,torchcodec",
        help="video decoders timed side by side on the mp4 kinds (comma list; data.decoder)",
    )
    p.add_argument("--json", default=None, help="write every number here")
    return p


def main(argv=None) -> int:
    p = arg_parser()
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        corpus = Path(args.corpus) if args.corpus else work / "corpus"
        if args.webvid_like and not args.corpus:
            make_webvid_like(corpus, args.webvid_like, args.workers)
        elif not args.corpus:
            tool(
                "make_synthetic.py",
                "--out",
                corpus,
                "--num-videos",
                args.num_videos,
                "--num-images",
                0,
                "--workers",
                args.workers,
            )
        shards, convert_s = build_shards(corpus, work, args.num_frames, args.workers)
        with open(corpus / "results_2M_train.csv", encoding="utf-8") as f:
            n_clips = sum(1 for _ in f) - 1
        # conversion throughput per core: clips x 3600 / (wall seconds x make_shards processes)
        convert = {k: n_clips * 3600.0 / (s * args.workers) for k, s in convert_s.items()}
        from smaug.data import load_tokenizer

        tok = load_tokenizer(work / "tokenizer")
        print(
            f"setup {time.perf_counter() - t0:.1f}s; timing {args.clips} clips per row, T={args.num_frames}, "
            f"decode short side {args.short_side}, crop {args.image_size}, 1 thread",
            flush=True,
        )
        rows, by_decoder = [], {}
        decoders = [d for d in args.decoders.split(",") if d]
        for kind, sdir in shards.items():
            items = extract_files(sdir, work / "files" / kind)
            bare = bare_rate(items, kind, args.num_frames, args.short_side, args.clips)
            load = loader_rate(sdir, tok, args.num_frames, args.image_size, args.short_side, args.clips)[0]
            rows.append((kind, load, bare))
            if not kind.startswith("frames"):
                by_decoder[kind] = {
                    d: loader_rate(sdir, tok, args.num_frames, args.image_size, args.short_side, args.clips, decoder=d)[
                        0
                    ]
                    for d in decoders
                }
                by_decoder[kind]["decord, isolated"] = loader_rate(  # data.isolate_decode: a decode process
                    sdir, tok, args.num_frames, args.image_size, args.short_side, args.clips, isolate=True
                )[0]
        dl_rate, main_cpu = loader_rate(
            shards["frames224"], tok, args.num_frames, args.image_size, args.short_side, args.clips, num_workers=1
        )
    gpu = args.gpu_clips_per_s
    print(
        f"\n{'shard kind':<10} {'loader clips/s/worker':>22} {'bare decode clips/s':>20} {'loader/bare':>12} "
        f"{'cores/GPU':>10}"
    )
    for kind, load, bare in rows:
        print(f"{kind:<10} {load:>22.1f} {bare:>20.1f} {load / bare:>12.2f} {gpu * (1 / load + main_cpu):>10.1f}")
    raw = rows[0][1]
    print("\nrelative to raw mp4 (loader): " + ", ".join(f"{k} x{v / raw:.1f}" for k, v, _ in rows))
    print(f"main process with 1 worker (frames224): {dl_rate:.1f} clips/s, {main_cpu * 1e3:.2f} ms CPU per clip")
    print(f"cores/GPU = {gpu:g} GPU clips/s x (1 / clips/s per worker + main-process CPU per clip)")
    print(
        f"\nconversion (make_shards, {n_clips} clips, {args.workers} processes): "
        + ", ".join(f"{k} {v:,.0f} clips/hour/core" for k, v in convert.items())
    )
    if by_decoder:
        print(
            f"\n{'decoder':<18}"
            + "".join(f"{k + ' clips/s/worker':>26}" for k in by_decoder)
            + "".join(f"{'vs decord (' + k + ')':>22}" for k in by_decoder)
        )
        for d in [*decoders, "decord, isolated"]:
            print(
                f"{d:<18}"
                + "".join(f"{by_decoder[k][d]:>26.1f}" for k in by_decoder)
                + "".join(
                    f"{by_decoder[k][d] / by_decoder[k].get('decord', by_decoder[k][d]):>22.2f}" for k in by_decoder
                )
            )
    if args.json:
        res = {
            "gpu_clips_per_s": gpu,
            "main_process_cpu_s_per_clip": main_cpu,
            "dataloader_1_worker_clips_per_s": dl_rate,
            "kinds": {
                k: {"loader_clips_per_s": load, "bare_clips_per_s": bare, "cores_per_gpu": gpu * (1 / load + main_cpu)}
                for k, load, bare in rows
            },
            "decoders": by_decoder,
            "convert_clips_per_hour_per_core": convert,
        }
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
