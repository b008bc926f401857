#!/usr/bin/env python
"""Write the built-in synthetic video-caption corpus, in WebVid's exact release layout.

    python tools/make_synthetic.py --out DIR [--num-videos N] [--seed S] [--workers W]

DIR/
  results_2M_train.csv      WebVid header `videoid,name,page_idx,page_dir,duration,contentUrl`,
                            `name` = caption, `duration` ISO-8601 (`PT00H00M02S`)
  videos/{page_dir}/{videoid}.mp4   training clips (H.264)
  videos/eval/{videoid}.mp4         held-out clips
  eval.json                 MSRVTT-style [{"video": "eval/ID.mp4", "caption": [str, str]}],
                            relative to DIR/videos
  images.tsv + images/*.jpg CC3M-style image-caption list: `caption<TAB>images/ID.jpg`, no
                            header (like CC3M's own TSV), relative to DIR
  labels.json               ground truth per clip (colour, shape, motion), splits, held-out set
  qa_train.json, qa_test.json, answer_list.json
                            VideoQA [{"video", "question", "answer", "type"}] on colour, shape and motion:
                            train on the training clips, test on the held-out clips (unseen colour-shape
                            pairs); the answer list = the training answers
  mc_test.json              multiple choice on the held-out clips [{"video", "caption": [5], "answer",
                            "type", "differs"}], every distractor differing in one attribute: per clip an
                            "appearance" row (2 colour + 2 shape distractors) and a "motion" row (3
                            motion-only distractors + 1 colour) (`--downstream-only` writes these four files
                            from an existing corpus's labels.json)

Clips: 1.5-3 s at 6-15 fps, 160x120 / 320x240 / 480x270, one or two large coloured shapes
(5 colours x 3 shapes) each moving left, right, up or down. Each shape's path is centred at a
uniformly drawn point symmetric about the frame centre, so any single frame has the same
position distribution for opposite directions: only motion tells left from right.
Captions use varied templates naming colour, shape and motion. The eval split holds out
whole (colour, shape) pairs with all four motions (3 of the 15 pairs: 12 of the 60 combinations,
none seen in training by clips or images), while every colour, shape and direction appears in
training. Within the held-out split, clips of one (colour, shape) differ only in motion, so a
model blind to time cannot exceed 25% on the held-out motions (`HELD_OUT_PAIRS`). Output bytes are a function of --seed and
--num-videos (x264 runs single-threaded; parallelism is across clips).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

from smaug.data.transcode import encode_h264

COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 240),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SIZES = ((160, 120), (320, 240), (480, 270))
SIZE_P = (0.45, 0.4, 0.15)
FPS_CHOICES = (6, 8, 10, 12, 15)
DURATIONS = (1.5, 2.0, 2.5, 3.0)
PHRASES = {
    "left": ("left", "to the left", "leftward", "towards the left edge"),
    "right": ("right", "to the right", "rightward", "towards the right edge"),
    "up": ("up", "upward", "towards the top", "upwards"),
    "down": ("down", "downward", "towards the bottom", "downwards"),
}
VERBS = ("moves", "slides", "drifts", "travels", "is moving", "goes", "glides")
ARTICLES = ("a", "the", "one")
WEBVID_HEADER = ["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"]
PER_PAGE = 50


# (colour, shape) pairs held out with every motion: distinct colours and distinct shapes, so each
# colour and each shape still appears in training with the other shapes / colours.
HELD_OUT_PAIRS = (("red", "circle"), ("green", "triangle"), ("blue", "square"))


def is_held_out(colour: str, shape: str, motion: str) -> bool:
    """12 of 60 combos: the (colour, shape) pairs of HELD_OUT_PAIRS, with all four motions."""
    return (colour, shape) in HELD_OUT_PAIRS


def all_combos(held_out: bool) -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS if is_held_out(c, s, m) == held_out]


def phrase(rng: np.random.Generator, obj: dict, style: int) -> str:
    c, s, m = obj["colour"], obj["shape"], obj["motion"]
    d = PHRASES[m][int(rng.integers(len(PHRASES[m])))]
    art = ARTICLES[int(rng.integers(len(ARTICLES)))]
    if style == 0:
        return f"{art} {c} {s} {VERBS[int(rng.integers(len(VERBS)))]} {d}"
    if style == 1:
        return f"{art} {c} {s} moving {d}"
    return f"{c} {s}, heading {d}"


def caption(rng: np.random.Generator, objs: list[dict]) -> str:
    if len(objs) == 1:
        return phrase(rng, objs[0], int(rng.integers(3)))
    style = int(rng.integers(2))
    return f"{phrase(rng, objs[0], style)} and {phrase(rng, objs[1], style)}"


def plan_clip(rng: np.random.Generator, videoid: int, split: str, combos: list) -> dict:
    w, h = SIZES[int(rng.choice(len(SIZES), p=SIZE_P))]
    fps = int(rng.choice(FPS_CHOICES))
    n = max(4, int(round(float(rng.choice(DURATIONS)) * fps)))
    nobj = 1 if split == "eval" or rng.random() < 0.7 else 2
    picks = rng.choice(len(combos), size=nobj, replace=False)
    objs = []
    for k, ci in enumerate(picks):
        c, s, m = combos[int(ci)]
        r = float(rng.uniform(0.14, 0.2)) * h
        dx, dy = MOTIONS[m]
        along, across = (w, h) if dx else (h, w)
        travel = 0.4 * along
        lo = r + travel / 2
        centre = float(rng.uniform(lo, along - lo))
        # two shapes: one per half across the motion axis so they never overlap
        a_lo, a_hi = (r, across - r) if nobj == 1 else ((r, across / 2) if k == 0 else (across / 2, across - r))
        cross = float(rng.uniform(a_lo, a_hi))
        objs.append(
            {"colour": c, "shape": s, "motion": m, "radius": r, "centre": centre, "cross": cross, "travel": travel}
        )
    bg = tuple(int(x) for x in rng.integers(15, 60, size=3))
    return {
        "videoid": videoid,
        "split": split,
        "width": w,
        "height": h,
        "fps": fps,
        "frames": n,
        "background": bg,
        "objects": objs,
        "caption": caption(rng, objs),
    }


def draw(frame: np.ndarray, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    h, w = frame.shape[:2]
    x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx * dx + dy * dy <= r * r
    elif shape == "square":
        mask = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    else:  # upward triangle
        t = (dy + r) / (1.8 * r)
        mask = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    frame[y0:y1, x0:x1][mask] = rgb


def render(spec: dict) -> np.ndarray:
    """Frames `[n, h, w, 3]` uint8 of a planned clip."""
    n, w, h = spec["frames"], spec["width"], spec["height"]
    out = np.empty((n, h, w, 3), np.uint8)
    out[:] = spec["background"]
    for i in range(n):
        u = i / (n - 1) - 0.5
        for o in spec["objects"]:
            dx, dy = MOTIONS[o["motion"]]
            pos = o["centre"] + u * o["travel"] * (dx or dy)
            cx, cy = (pos, o["cross"]) if dx else (o["cross"], pos)
            draw(out[i], o["shape"], cx, cy, o["radius"], COLOURS[o["colour"]])
    return out


def write_clip(job: tuple[dict, str]) -> str:
    spec, path = job
    encode_h264(render(spec), spec["fps"], path, crf=20)
    return path


def write_image(job: tuple[dict, str]) -> str:
    from PIL import Image

    spec, path = job
    frame = render(dict(spec, frames=2))[0]  # first frame of a 2-frame clip: shapes off-centre
    Image.fromarray(frame).save(path, format="JPEG", quality=92)
    return path


def iso_duration(seconds: float) -> str:
    s = max(1, int(seconds + 0.5))
    return f"PT{s // 3600:02d}H{s % 3600 // 60:02d}M{s % 60:02d}S"


def build(out: Path, num_videos: int, seed: int, eval_fraction: float, num_images: int, workers: int) -> dict:
    rng = np.random.default_rng(seed)
    n_eval = max(2, int(round(num_videos * eval_fraction))) if num_videos >= 4 else 1
    n_train = num_videos - n_eval
    ids = 1_000_000 + rng.choice(98_999_999, size=num_videos + num_images, replace=False)
    train_c, eval_c = all_combos(False), all_combos(True)
    clips = [plan_clip(rng, int(ids[i]), "train", train_c) for i in range(n_train)]
    clips += [plan_clip(rng, int(ids[n_train + i]), "eval", eval_c) for i in range(n_eval)]
    images = []
    for i in range(num_images):
        spec = plan_clip(rng, int(ids[num_videos + i]), "image", train_c)  # held-out pairs stay unseen
        o = spec["objects"][0]
        art = ARTICLES[int(rng.integers(2))]
        spec["caption"] = (
            f"{art} {o['colour']} {o['shape']}"
            if len(spec["objects"]) == 1
            else f"{art} {o['colour']} {o['shape']} and a {spec['objects'][1]['colour']} {spec['objects'][1]['shape']}"
        ) + (" on a dark background" if rng.random() < 0.5 else "")
        images.append(spec)
    for k, c in enumerate(clips[:n_train]):
        c["page_idx"] = k // PER_PAGE
        c["page_dir"] = f"{c['page_idx'] * PER_PAGE + 1:06d}_{(c['page_idx'] + 1) * PER_PAGE:06d}"
        c["relpath"] = f"{c['page_dir']}/{c['videoid']}.mp4"
    for c in clips[n_train:]:
        c["relpath"] = f"eval/{c['videoid']}.mp4"
        c["captions"] = [c["caption"], caption(rng, c["objects"])]
    for c in images:
        c["relpath"] = f"images/{c['videoid']}.jpg"
    for d in {str(Path(c["relpath"]).parent) for c in clips}:
        (out / "videos" / d).mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(c, str(out / "videos" / c["relpath"])) for c in clips]
    ijobs = [(c, str(out / c["relpath"])) for c in images]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            list(pool.imap_unordered(write_clip, jobs, chunksize=4))
            list(pool.imap_unordered(write_image, ijobs, chunksize=8))
    else:
        list(map(write_clip, jobs))
        list(map(write_image, ijobs))
    with open(out / "results_2M_train.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(WEBVID_HEADER)
        for c in clips[:n_train]:
            wr.writerow(
                [
                    c["videoid"],
                    c["caption"],
                    c["page_idx"],
                    c["page_dir"],
                    iso_duration(c["frames"] / c["fps"]),
                    f"https://example.invalid/synthetic/{c['videoid']}.mp4",
                ]
            )
    evals = [{"video": c["relpath"], "caption": c["captions"]} for c in clips[n_train:]]
    (out / "eval.json").write_text(json.dumps(evals, indent=1) + "\n", encoding="utf-8")
    with open(out / "images.tsv", "w", encoding="utf-8", newline="\n") as f:
        for c in images:
            f.write(f"{c['caption']}\t{c['relpath']}\n")

    def label(c: dict) -> dict:
        keep = ("videoid", "split", "relpath", "caption", "width", "height", "fps", "frames")
        objs = [{k: o[k] for k in ("colour", "shape", "motion")} for o in c["objects"]]
        return dict({k: c[k] for k in keep}, objects=objs)

    labels = {
        "seed": seed,
        "num_videos": num_videos,
        "held_out_combos": [list(x) for x in eval_c],
        "train_combos": [list(x) for x in train_c],
        "clips": [label(c) for c in clips],
        "images": [label(c) for c in images],
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    write_downstream(out, labels)
    return {"train": n_train, "eval": n_eval, "images": num_images}


QA_TEMPLATES = {  # (question, needs): `needs` = the attribute that must single the object out in its clip
    "colour": (("what colour is the {shape}?", "shape"), ("what is the colour of the {shape}?", "shape")),
    "shape": (("what shape is the {colour} object?", "colour"), ("which shape is {colour}?", "colour")),
    "motion": (
        ("which direction is the {colour} {shape} moving?", None),
        ("where does the {colour} {shape} go?", None),
    ),
}
ANSWER_OF = {"colour": "colour", "shape": "shape", "motion": "motion"}


def qa_rows(rng: np.random.Generator, clip: dict) -> list[dict]:
    """Colour, shape and motion questions about the clip's objects (one per type and object, when the
    question can name the object unambiguously: a colour question names the shape, so two objects of one
    shape get none)."""
    objs, rows = clip["objects"], []
    for o in objs:
        for qtype, templates in QA_TEMPLATES.items():
            tmpl, needs = templates[int(rng.integers(len(templates)))]
            if needs and sum(x[needs] == o[needs] for x in objs) > 1:
                continue
            rows.append(
                {"video": clip["relpath"], "question": tmpl.format(**o), "answer": o[ANSWER_OF[qtype]], "type": qtype}
            )
    return rows


def mc_caption(o: dict) -> str:
    return f"a {o['colour']} {o['shape']} moving {PHRASES[o['motion']][1]}"


def mc_rows(rng: np.random.Generator, clip: dict) -> list[dict]:
    """Two 5-option rows for a one-object clip: "appearance" (distractors: two other colours, the two other
    shapes) and "motion" (the three other motions, and another colour); each distractor differs from the clip
    in exactly one attribute, named in `differs` ("" for the right option)."""
    o = clip["objects"][0]

    def other(attr: str, values, n: int) -> list[tuple[str, dict]]:
        pool = [v for v in values if v != o[attr]]
        picks = rng.choice(len(pool), size=n, replace=False)
        return [(attr, dict(o, **{attr: pool[int(i)]})) for i in picks]

    out = []
    for kind, spec in (("appearance", (("colour", 2), ("shape", 2))), ("motion", (("motion", 3), ("colour", 1)))):
        opts = [("", o)]
        for attr, n in spec:
            opts += other(attr, {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS)}[attr], n)
        perm = rng.permutation(len(opts))
        opts = [opts[int(i)] for i in perm]
        out.append(
            {
                "video": clip["relpath"],
                "caption": [mc_caption(x) for _, x in opts],
                "answer": [d for d, _ in opts].index(""),
                "type": kind,
                "differs": [d for d, _ in opts],
            }
        )
    return out


def write_downstream(out: Path, labels: dict) -> dict:
    """VideoQA and multiple-choice sets of the corpus (own random stream: the other outputs do not change).
    qa_train.json (training clips), qa_test.json (the held-out clips: colour-shape pairs never seen in
    training), answer_list.json (the training answers), mc_test.json (held-out clips, 5 options); paths
    relative to DIR/videos, like eval.json."""
    rng = np.random.default_rng([labels["seed"], 13])
    train = [r for c in labels["clips"] if c["split"] == "train" for r in qa_rows(rng, c)]
    test = [r for c in labels["clips"] if c["split"] == "eval" for r in qa_rows(rng, c)]
    mc = [r for c in labels["clips"] if c["split"] == "eval" for r in mc_rows(rng, c)]
    answers = sorted({r["answer"] for r in train})
    for name, data in (
        ("qa_train.json", train),
        ("qa_test.json", test),
        ("answer_list.json", answers),
        ("mc_test.json", mc),
    ):
        (out / name).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return {"qa_train": len(train), "qa_test": len(test), "answers": len(answers), "mc_test": len(mc)}


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-videos", type=int, default=1000, help="clips in total, train + eval (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed: the output is a function of it")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of clips in the held-out split")
    p.add_argument("--num-images", type=int, default=None, help="images in images.tsv (default num-videos/4)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument(
        "--downstream-only",
        metavar="CORPUS",
        default=None,
        help="only write the QA / MC sets of an existing corpus (its labels.json) into --out",
    )
    return p


def main(argv=None) -> int:
    p = arg_parser()
    args = p.parse_args(argv)
    if args.downstream_only:
        labels = json.loads((Path(args.downstream_only) / "labels.json").read_text(encoding="utf-8"))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(f"[make_synthetic] {write_downstream(Path(args.out), labels)} in {args.out}", file=sys.stderr)
        return 0
    if args.num_videos < 2:
        p.error("--num-videos must be >= 2")
    n_img = args.num_videos // 4 if args.num_images is None else args.num_images
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    counts = build(out, args.num_videos, args.seed, args.eval_fraction, n_img, max(1, args.workers))
    print(
        f"[make_synthetic] {counts['train']} train + {counts['eval']} eval clips, {counts['images']} images "
        f"in {out} ({time.time() - t0:.1f}s, {args.workers} workers)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
