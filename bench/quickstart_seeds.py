"""The README's quickstart over several seeds: what it learns, seed by seed, and the worst and mean of it.

    python bench/quickstart_seeds.py                       # seeds 0 1 2, SMAUG
    python bench/quickstart_seeds.py --dense               # ... and the dense baseline (QUICKSTART_DENSE=1)
    python bench/quickstart_seeds.py --seeds 0 1 --out runs/seeds -- train.steps=300   # overrides for smaug.train
    python bench/quickstart_seeds.py --report-only --out runs/seeds                    # the table of finished runs

Each run is `bash launch/quickstart.sh run.seed=S [overrides]` (QUICKSTART_DENSE=1 for dense) into its own run
directory (OUT/<variant>_s<seed>); the synthetic corpus, shards and tokenizer are built by the first run and reused by
the others (the quickstart skips a stage whose output exists; --data / --shards point elsewhere). A run whose
eval.json exists is not rerun (delete its folder to rerun it). The code is the checkout this file lives in, or --repo
(PYTHONPATH points at it, so another copy of the code runs on the same venv; SMAUG_VENV picks the venv; when that
venv's install stamp does not match the copy's requirements, launch/setup_env.sh reinstalls it, editable install
included, from the copy: `pip install -e` the main checkout again afterwards).

Per run and as min / mean per variant it prints: the attribute table of the VTC ranking (colour, shape, motion with the
frozen-frame control, combination; eval.json's `attributes`, from labels.json), t2v R@1 of the three rankings (VTC, VTM
rerank, combined) with chance and their combination accuracy (R@1 by content: this corpus has ~8 held-out clips of
each content), the held-out VTM pair accuracy against its always-'no' prior, counting only the query's own clip as a
match and counting every clip of its content (`smaug.eval.attributes.vtm_content_accuracy`), the training VTM pair
accuracy over the last tenth of the steps split by negative kind (hard / uniform: 1 positive + 2 negatives of one kind,
always-'no' prior 2/3 each), the step from which hard negatives were in use, and the wall time (the harness's clock
around the whole command; the first run's includes building the data). OUT/seeds.json holds the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRIOR = 2 / 3  # always-'no' pair accuracy with 1 positive + 2 negatives


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dense", action="store_true", help="also the dense baseline (QUICKSTART_DENSE=1)")
    p.add_argument("--dense-only", action="store_true", help="only the dense baseline")
    p.add_argument("--out", default=str(REPO / "runs" / "seeds"), help="one run directory per variant and seed")
    p.add_argument("--repo", default=str(REPO), help="the checkout whose launch/quickstart.sh and code run")
    p.add_argument("--data", help="QUICKSTART_DATA (default: the quickstart's, <repo>/data/synthetic)")
    p.add_argument("--shards", help="SMAUG_SHARDS (default: the quickstart's, <repo>/shards)")
    p.add_argument("--report-only", action="store_true", help="print the table of the runs found, run nothing")
    p.add_argument(
        "--qa",
        action="store_true",
        help="also fine-tune VideoQA on each checkpoint with docs/downstream.md's synthetic command (into RUN/qa; "
        "with its blind baseline): held-out accuracy per question type",
    )
    p.add_argument(
        "--tail", type=float, default=0.1, help="share of the last training steps the final vtm_acc averages"
    )
    p.add_argument("overrides", nargs="*", help="after --: smaug.train overrides for every run")
    return p


def variants(args) -> list[str]:
    if args.dense_only:
        return ["dense"]
    return ["smaug", "dense"] if args.dense else ["smaug"]


def run_one(args, variant: str, seed: int, out: Path) -> float | None:
    """One quickstart into `out`; returns the wall time in s (None when it was already done)."""
    if (out / "eval.json").exists():
        return None
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(args.repo).resolve()
    env = dict(os.environ, QUICKSTART_OUT=str(out.resolve()), QUICKSTART_DENSE="1" if variant == "dense" else "0")
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])
    if args.data:
        env["QUICKSTART_DATA"] = str(Path(args.data).resolve())
    if args.shards:
        env["SMAUG_SHARDS"] = str(Path(args.shards).resolve())
    cmd = ["bash", str(repo / "launch" / "quickstart.sh"), f"run.seed={seed}", "log.progress=false", *args.overrides]
    print(f"[seeds] {variant} seed {seed}: {' '.join(cmd)} -> {out}/quickstart.log", flush=True)
    t0 = time.time()
    with open(out / "quickstart.log", "w") as log:
        rc = subprocess.call(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    (out / "wall_s").write_text(f"{wall:.1f}\n")
    if rc != 0:
        print(f"[seeds] {variant} seed {seed} failed (exit {rc}): see {out}/quickstart.log", flush=True)
    return wall


# docs/downstream.md's VideoQA fine-tuning on the quickstart corpus: tests/test_docs.py checks that this list is the
# overrides of that page's `tools/finetune_qa.py --init runs/quickstart` command
QA_OVERRIDES = (
    "train.steps=300",
    "optim.lr=5e-4",
    "optim.min_lr=1e-5",
    "optim.warmup_steps=20",
    "ckpt.every=100",
    "data.num_workers=1",
)


def run_qa(args, variant: str, seed: int, run: Path) -> None:
    """VideoQA fine-tuning (and its blind baseline) from the run's checkpoint into run/qa, unless done."""
    if not (run / "eval.json").exists() or (run / "qa" / "qa_report.json").exists():
        return
    repo = Path(args.repo).resolve()
    data = Path(args.data).resolve() if args.data else repo / "data" / "synthetic"
    cmd = [
        "python",
        "tools/finetune_qa.py",
        "--init",
        str(run.resolve()),
        "--out",
        str((run / "qa").resolve()),
        "--video-root",
        str(data / "videos"),
        "--train-json",
        str(data / "qa_train.json"),
        "--test-json",
        str(data / "qa_test.json"),
        "--answer-list",
        str(data / "answer_list.json"),
        *QA_OVERRIDES,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])
    print(f"[seeds] {variant} seed {seed} VideoQA: {' '.join(cmd)} -> {run}/qa.log", flush=True)
    with open(run / "qa.log", "w") as log:
        rc = subprocess.call(
            ["bash", "-c", '. launch/setup_env.sh && exec "$@"', "qa", *cmd],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if rc != 0:
        print(f"[seeds] {variant} seed {seed} VideoQA failed (exit {rc}): see {run}/qa.log", flush=True)


def training_vtm(log_path: Path, tail: float) -> dict:
    """Training VTM pair accuracy over the last `tail` of the logged steps, by negative kind, and when hard
    negatives were first in use. A log without the per-kind keys (older code) counts a record as hard when
    its `vtm_hard` flag is set."""
    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "vtm_acc" in r and "step" in r]
    if not recs:
        return {}
    last = recs[-1]["step"]
    final = [r for r in recs if r["step"] > last * (1 - tail)]
    out = {"steps": last, "vtm_acc": _mean(r["vtm_acc"] for r in final)}
    for kind in ("hard", "uniform"):
        key = f"vtm_acc_{kind}"
        if any(key in r for r in recs):
            vals = [r[key] for r in final if key in r]
        else:  # one kind per step: the flag says which
            vals = [r["vtm_acc"] for r in final if (r.get("vtm_hard", 0) > 0) == (kind == "hard")]
        out[key] = _mean(vals) if vals else None
    started = [r["step"] for r in recs if r.get("vtm_hard", 0) > 0]
    # the record at step s averages steps s-9..s: hard negatives were in use from within that window
    out["hard_from"] = started[0] if started else None
    out["hard_share_end"] = recs[-1].get("vtm_hard", 0.0)
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def collect(out: Path, tail: float) -> dict | None:
    ev = out / "eval.json"
    if not ev.exists():
        return None
    rep = json.loads(ev.read_text())
    res, att = rep["results"], rep.get("attributes") or {}
    row = {
        "r1": {k: res[k]["t2v_r1"] for k in ("vtc", "vtm", "combined") if k in res},
        "chance_r1": rep["protocol"].get("chance_r1"),
        "heldout_vtm_acc": res.get("vtm_acc"),
        "heldout_vtm_prior": 1 - res["vtm_pos_frac"] if "vtm_pos_frac" in res else None,
    }
    if att:
        row["attr"] = att["rankings"]["vtc"]
        row["attr_control"] = att["frozen_frame_control"].get("vtc", {})
        row["attr_chance"] = att["chance"]
        row["r1_ceiling"] = att.get("r1_ceiling")
        row["attr_rankings"] = att["rankings"]
        row["vtm_pairs"] = att.get("vtm_pairs")
    if (out / "log.jsonl").exists():
        row["train"] = training_vtm(out / "log.jsonl", tail)
    qa = out / "qa" / "qa_report.json"
    if qa.exists():
        q = json.loads(qa.read_text())
        row["qa"] = {t: v for t, v in q["per_type"].items()}
        row["qa_all"], row["qa_blind"] = q["accuracy"], q.get("blind_accuracy")
    if (out / "wall_s").exists():
        row["wall_s"] = float((out / "wall_s").read_text())
    return row


COLUMNS = (
    ("colour", lambda r: r["attr"]["colour"]),
    ("shape", lambda r: r["attr"]["shape"]),
    ("motion", lambda r: r["attr"]["motion"]),
    ("m.ctl", lambda r: r["attr_control"]["motion"]),
    ("m-ctl", lambda r: r["attr"]["motion"] - r["attr_control"]["motion"]),
    ("comb", lambda r: r["attr"]["combination"]),
    ("R1vtc", lambda r: r["r1"]["vtc"]),
    ("R1vtm", lambda r: r["r1"]["vtm"]),
    ("R1comb", lambda r: r["r1"]["combined"]),
    ("cVTM", lambda r: r["attr_rankings"]["vtm"]["combination"]),
    ("cComb", lambda r: r["attr_rankings"]["combined"]["combination"]),
    ("hoVTM", lambda r: r["heldout_vtm_acc"]),
    ("hoPrior", lambda r: r["heldout_vtm_prior"]),
    ("coVTM", lambda r: r["vtm_pairs"]["acc"]),
    ("coPrior", lambda r: max(r["vtm_pairs"]["always_no"], r["vtm_pairs"]["always_yes"])),
    ("noMot", lambda r: r["vtm_pairs"]["no_on_motion"]),
    ("trVTM", lambda r: r["train"]["vtm_acc"]),
    ("trHard", lambda r: r["train"]["vtm_acc_hard"]),
    ("trUnif", lambda r: r["train"]["vtm_acc_uniform"]),
    ("hardFrom", lambda r: r["train"]["hard_from"]),
    ("qaCol", lambda r: r["qa"]["colour"]["model"]),
    ("qaShp", lambda r: r["qa"]["shape"]["model"]),
    ("qaMot", lambda r: r["qa"]["motion"]["model"]),
    ("blCol", lambda r: r["qa"]["colour"]["blind"]),
    ("blShp", lambda r: r["qa"]["shape"]["blind"]),
    ("blMot", lambda r: r["qa"]["motion"]["blind"]),
    ("wall_s", lambda r: r["wall_s"]),
)


def _cell(fn, row):
    try:
        v = fn(row)
    except (KeyError, TypeError):
        return None
    return v


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 1.5 and v != 0:
        return f"{v:.3f}"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def table(rows: dict[str, dict]) -> list[str]:
    """rows: {'smaug s0': row, ...} -> lines; min / mean rows per variant."""
    width = 9
    lines = [f"{'run':<12}" + "".join(f"{name:>{width}}" for name, _ in COLUMNS)]
    by_variant: dict[str, list[dict]] = {}
    for name, row in rows.items():
        by_variant.setdefault(name.split()[0], []).append(row)
        lines.append(f"{name:<12}" + "".join(f"{_fmt(_cell(fn, row)):>{width}}" for _, fn in COLUMNS))
    for variant, rs in by_variant.items():
        for label, agg in (("min", min), ("mean", _mean)):
            cells = []
            for _, fn in COLUMNS:
                vals = [v for v in (_cell(fn, r) for r in rs) if v is not None]
                cells.append(_fmt(float(agg(vals))) if len(vals) == len(rs) and vals else "-")
            lines.append(f"{variant + ' ' + label:<12}" + "".join(f"{c:>{width}}" for c in cells))
    some = next(iter(rows.values()), {})
    if "attr_chance" in some:
        ch = some["attr_chance"]
        lines.append(
            f"chance: colour {ch['colour']:.1f} shape {ch['shape']:.1f} motion {ch['motion']:.1f} "
            f"combination {ch['combination']:.1f}; R@1 {some.get('chance_r1')} (ceiling {some.get('r1_ceiling', 0):.1f}); "
            f"training VTM prior {PRIOR:.3f} per negative kind"
        )
    lines.append(
        "colour..comb: held-out t2v top-1 attribute accuracy of the VTC ranking (%), m.ctl its frozen-frame control, "
        "R1*: held-out t2v R@1; cVTM/cComb: combination accuracy of the VTM-reranked and combined rankings (the "
        "R@1 of a query counting every clip of its content; VTC's is comb); hoVTM/hoPrior: held-out VTM pair "
        "accuracy on the reranked candidates and its always-'no' prior (only the query's own clip a match); "
        "coVTM/coPrior: the same with every clip of the query's content a match (%) and the better constant head's, noMot: % of the motion-only "
        "negatives it calls no match; trVTM/trHard/trUnif: training VTM pair accuracy over the last tenth of the steps (all, "
        "hard-negative rows, uniform-negative rows); hardFrom: first log step with hard negatives in use; qa*/bl*: "
        "held-out VideoQA accuracy per question type (%) of the fine-tuned model and of its blind (text-only) "
        "baseline (--qa)"
    )
    return lines


def main(argv=None) -> int:
    args = arg_parser().parse_args(argv)
    out = Path(args.out)
    rows = {}
    for variant in variants(args):
        for seed in args.seeds:
            run_dir = out / f"{variant}_s{seed}"
            if not args.report_only:
                run_one(args, variant, seed, run_dir)
                if args.qa:
                    run_qa(args, variant, seed, run_dir)
            row = collect(run_dir, args.tail)
            if row is not None:
                rows[f"{variant} s{seed}"] = row
    if not rows:
        print(f"[seeds] no finished run under {out}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
