#!/usr/bin/env python
"""The paper's evaluation in one command: every benchmark of a YAML, read from its release's own files, with its
standard protocol, in one table (benchmarks.json + benchmarks.md).

    python tools/eval_benchmarks.py --checkpoint runs/pt --benchmarks benchmarks.yaml --out runs/pt/benchmarks
    python tools/eval_benchmarks.py --checkpoint hf/smaug-5m --benchmarks benchmarks.yaml --out bench --nproc 8
    python tools/eval_benchmarks.py ... --only msrvtt --only didemo     # a subset; the table keeps the others
    python tools/eval_benchmarks.py ... --prepare-only                  # read the releases, write the eval JSONs

benchmarks.yaml (paths relative to it; docs/benchmarks.md lists every kind and key):
    frames: 12                      # frames per clip at evaluation
    k: 128                          # VTM rerank top-k (QA: answers re-scored)
    benchmarks:
      msrvtt:   {videos: msrvtt/videos/all, test: msrvtt/MSRVTT_JSFUSION_test.csv}
      didemo:   {videos: didemo/videos, test: didemo/test_data.json, train: didemo/train_data.json,
                 tasks: [zero_shot, finetune]}
      msrvtt_mc: {videos: msrvtt/videos/all, test: msrvtt/MSR_MC_test.csv}
      msrvtt_qa: {videos: msrvtt/videos/all, train: msrvtt_qa/train_qa.json, test: msrvtt_qa/test_qa.json}

Steps, per benchmark in YAML order (all files read and every listed video looked up first: a bad YAML, a missing
annotation file or a video folder holding none of a release's videos stops the tool, exit 2, before any compute):
1. OUT/NAME/test.json (and train.json, answer_list.json): the release as the evaluation tools' JSON rows, only
   clips whose video was found; OUT/NAME/coverage.json: clips and queries found / listed, the missing ids.
2. Each task, each one a child process (torchrun with --nproc > 1), in OUT/NAME/TASK-FINGERPRINT/:
   zero_shot   tools/eval_retrieval.py: both directions, VTC and VTM-reranked (and combined)
   finetune    tools/finetune_retrieval.py (shards of train.json by tools/make_shards.py, training, evaluation)
   mc          tools/eval_mc.py (no training)
   qa          tools/finetune_qa.py (QA fine-tuning, then evaluation; the majority answer as the chance column)
3. OUT/benchmarks.json and OUT/benchmarks.md, rewritten after every row.

Rerunning resumes: a row whose fingerprint (checkpoint and step, task, frames, k, text length, the eval JSONs'
content, fine-tuning overrides) is already in OUT/benchmarks.json is kept, not recomputed, and a fine-tuning that
was killed continues in its own folder. A failing step is recorded in its row and the others go on (exit 1).
Start the tool with plain python: it launches its steps itself (--nproc).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

from smaug.data.specs import write_json_atomic

TOOL = "eval_benchmarks"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", required=True, help="DeepSpeed checkpoint (run dir, checkpoints/ or a step dir) or HF folder"
    )
    p.add_argument("--benchmarks", required=True, help="the benchmarks YAML")
    p.add_argument(
        "--out", required=True, help="output folder (benchmarks.json, benchmarks.md, one folder per benchmark)"
    )
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per step (torchrun)")
    p.add_argument("--only", action="append", default=[], help="evaluate only this benchmark of the YAML (repeatable)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--prepare-only", action="store_true", help="read the releases and write the eval JSONs; no compute")
    args = p.parse_args(argv)
    if args.nproc < 1:
        p.error("--nproc must be >= 1")
    return args


# ---------------------------------------------------------------------------- the releases -> eval JSONs
def _write_rows(path: Path, rows) -> str:
    """Write `rows` as JSON; -> the SHA-1 of what was written (the fingerprint of the data)."""
    text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return hashlib.sha1(text.encode()).hexdigest()


def answer_list(train_rows: list[dict], size: int) -> list[str]:
    """The training answers, most frequent first (ties alphabetical); the `size` most frequent (0 = all)."""
    counts = Counter(r["answer"] for r in train_rows)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked[:size] if size else ranked


def prepare(e, folder: Path) -> dict:
    """Read entry `e`'s release, write its eval JSONs into `folder` -> {"test", "train": set or None, "files",
    "digest", "coverage"}. A release of which no video was found is a configuration error (BenchmarkError)."""
    from smaug.data.benchmarks.common import VideoFinder, load_json
    from smaug.data.benchmarks.config import KINDS, BenchmarkError

    folder.mkdir(parents=True, exist_ok=True)
    finder = VideoFinder(e.videos)
    test = e.read("test", finder)
    needs_train = KINDS[e.kind].train_task in e.tasks
    train = e.read("train", finder) if needs_train else None
    for split, s in (("test", test), ("train", train)):
        if s is not None and not s.rows():
            raise BenchmarkError(
                f"benchmarks.{e.name}: none of the {len(s.coverage().missing)} videos its {split} file lists is "
                f"under {e.videos} ({len(finder)} video files there)"
            )
    digest = hashlib.sha1()
    files = {"test": folder / "test.json"}
    digest.update(_write_rows(files["test"], test.rows()).encode())
    if train is not None:
        files["train"] = folder / "train.json"
        digest.update(_write_rows(files["train"], train.rows()).encode())
    if e.family == "qa":
        files["answer_list"] = folder / "answer_list.json"
        answers = load_json(e.answer_list) if e.answer_list else answer_list(train.rows(), e.answer_list_size)
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise BenchmarkError(f"benchmarks.{e.name}.answer_list: expected a non-empty JSON list of answers")
        digest.update(_write_rows(files["answer_list"], answers).encode())
    coverage = {"test": test.coverage().to_json(), "train": train.coverage().to_json() if train else None}
    (folder / "missing.txt").write_text("".join(f"{m}\n" for m in test.coverage().missing), encoding="utf-8")
    write_json_atomic(folder / "coverage.json", coverage)
    return {"test": test, "train": train, "files": files, "digest": digest.hexdigest(), "coverage": coverage}


# ---------------------------------------------------------------------------- one task
def fingerprint(init: dict, e, task: str, digest: str, args, suite) -> str:
    """What decides a row's numbers: the checkpoint and step, the benchmark's data and protocol settings and, for
    fine-tuning, the trainer overrides."""
    overrides = {"finetune": suite.finetune_overrides, "qa": suite.qa_overrides}.get(task, [])
    key = {
        "init": init,
        "task": task,
        "kind": e.kind,
        "frames": e.frames,
        "k": e.k,
        "max_text_len": e.max_text_len,
        "data": digest,
        "overrides": [*overrides, *e.overrides] if task in ("finetune", "qa") else [],
        "blind": e.blind if task == "qa" else None,
        "tokenizer": args.tokenizer,
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _common(args, e, batch: bool, suite) -> list[str]:
    out = ["--frames", str(e.frames)]
    if args.tokenizer:
        out += ["--tokenizer", args.tokenizer]
    if batch and suite.batch_size:
        out += ["--batch-size", str(suite.batch_size)]
    if batch and suite.workers >= 0:
        out += ["--workers", str(suite.workers)]
    return out


def run_task(task: str, e, prep: dict, folder: Path, args, suite) -> tuple[dict, str]:
    """Run one task's step(s) in `folder` -> (the row's numbers, the report's path)."""
    from smaug.eval.benchmark_table import mc_row, qa_row, retrieval_row
    from smaug.train.finetune import launcher, run_step

    py, files, split = [sys.executable], prep["files"], f"{e.name} {prep['test'].split}"
    folder.mkdir(parents=True, exist_ok=True)
    text_len = ["--max-text-len", str(e.max_text_len)] if e.max_text_len else []
    text_len_set = [f"data.max_text_len={e.max_text_len}"] if e.max_text_len else []
    if task == "zero_shot":
        report = folder / "zero_shot.json"
        cmd = [*launcher(args.nproc), "-m", "smaug_tools.eval_retrieval", "--checkpoint", args.checkpoint]
        cmd += ["--json", str(files["test"]), "--video-root", e.videos, "--k", str(e.k), "--split", split]
        cmd += [*text_len, *_common(args, e, True, suite), "--out", str(report)]
        run_step(cmd, f"{e.name}: zero-shot retrieval", TOOL)
        return retrieval_row(json.loads(report.read_text()), suite.ranking), str(report)
    if task == "finetune":
        run = folder / "run"
        cmd = [*py, "-m", "smaug_tools.finetune_retrieval", "--init", args.checkpoint, "--out", str(run)]
        cmd += ["--train-json", str(files["train"]), "--eval-json", str(files["test"]), "--video-root", e.videos]
        cmd += ["--k", str(e.k), "--nproc", str(args.nproc), "--skip-zero-shot", *_common(args, e, False, suite)]
        cmd += [*text_len_set, *suite.finetune_overrides, *e.overrides]
        run_step(cmd, f"{e.name}: retrieval fine-tuning", TOOL)
        report = run / "finetune_report.json"
        return retrieval_row(json.loads(report.read_text())["finetuned"], suite.ranking), str(report)
    if task == "mc":
        report = folder / "mc.json"
        cmd = [*launcher(args.nproc), "-m", "smaug_tools.eval_mc", "--checkpoint", args.checkpoint]
        cmd += ["--json", str(files["test"]), "--video-root", e.videos, "--split", split, "--method", suite.mc_method]
        cmd += [*text_len, *_common(args, e, True, suite), "--out", str(report)]
        run_step(cmd, f"{e.name}: multiple choice", TOOL)
        return mc_row(json.loads(report.read_text()), suite.mc_method), str(report)
    run = folder / "run"
    cmd = [*py, "-m", "smaug_tools.finetune_qa", "--init", args.checkpoint, "--out", str(run)]
    cmd += ["--train-json", str(files["train"]), "--test-json", str(files["test"]), "--answer-list"]
    cmd += [str(files["answer_list"]), "--video-root", e.videos, "--split", split, "--k", str(e.k)]
    cmd += ["--nproc", str(args.nproc), *_common(args, e, False, suite), *([] if e.blind else ["--no-blind"])]
    cmd += [*text_len_set, *suite.qa_overrides, *e.overrides]
    run_step(cmd, f"{e.name}: QA fine-tuning and evaluation", TOOL)
    report = run / "qa_report.json"
    return qa_row(json.loads(report.read_text())), str(report)


# ---------------------------------------------------------------------------- the table
def _previous(path: Path, init: dict) -> dict:
    """The rows of an earlier run for the same checkpoint, by (name, task)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return {(r["name"], r["task"]): r for r in doc.get("rows", []) if r.get("init") == init}


def in_yaml_order(rows: list[dict], names) -> list[dict]:
    """Rows by their benchmark's place in the YAML (a benchmark's tasks keep their order)."""
    return sorted(rows, key=lambda r: list(names).index(r["name"]))


def main(argv=None) -> int:
    from smaug.checkpoint import CheckpointError, resolve_checkpoint
    from smaug.data.benchmarks.common import AnnotationError
    from smaug.data.benchmarks.config import BenchmarkError, load_suite
    from smaug.eval.benchmark_table import format_markdown, write_table
    from smaug.eval.cli import checkpoint_step

    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(
            f"{TOOL}: start it with plain python and --nproc N (it launches its steps with torchrun)", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    try:
        suite = load_suite(args.benchmarks, args.only)
        prepared = {}
        for e in suite.benchmarks:  # every release read and every video looked up before any compute
            prepared[e.name] = prep = prepare(e, out / e.name)
            c = prep["coverage"]["test"]
            print(
                f"[{TOOL}] {e.name} ({e.kind}, {prep['test'].split}): clips {c['clips_found']}/{c['clips_listed']}, "
                f"{'queries' if e.family == 'retrieval' else 'questions'} {c['items_found']}/{c['items_listed']} "
                f"found in {e.videos}" + (f"; unusable rows {c['bad_rows']}" if c["bad_rows"] else ""),
                flush=True,
            )
        ref = resolve_checkpoint(args.checkpoint)
        init = {"checkpoint": str(ref.path), "kind": ref.kind, "step": checkpoint_step(ref)}
    except (BenchmarkError, AnnotationError, CheckpointError) as err:
        print(f"{TOOL}: {err}", file=sys.stderr)
        return 2
    if args.prepare_only:
        print(f"[{TOOL}] eval JSONs in {out}/NAME/ (test.json, train.json, coverage.json)", flush=True)
        return 0
    old = _previous(out / "benchmarks.json", init)
    doc = {**init, "config": suite.path, "frames": suite.frames, "k": suite.k, "ranking": suite.ranking, "rows": []}
    names = {e.name for e in suite.benchmarks}
    # --only: the YAML's other benchmarks keep their rows (a benchmark no longer in the YAML leaves the table)
    kept = [r for key, r in old.items() if key[0] not in names and key[0] in suite.names]
    failed = 0
    for e in suite.benchmarks:
        prep = prepared[e.name]
        for task in e.tasks:
            fp = fingerprint(init, e, task, prep["digest"], args, suite)
            row = {
                "name": e.name,
                "kind": e.kind,
                "task": task,
                "split": prep["test"].split,
                "protocol": prep["test"].protocol,
                "sources": prep["test"].sources,
                "coverage": prep["coverage"]["test"],
                "train_coverage": prep["coverage"]["train"] if task in ("finetune", "qa") else None,
                "train_split": prep["train"].split if task in ("finetune", "qa") else None,
                "frames": e.frames,
                "init": init,
                "fingerprint": fp,
            }
            prev = old.get((e.name, task))
            if prev and prev.get("fingerprint") == fp and prev.get("status") == "done":
                print(f"[{TOOL}] {e.name} {task}: done for this checkpoint (fingerprint {fp}), kept", flush=True)
                row = prev
            else:
                try:
                    numbers, report = run_task(task, e, prep, out / e.name / f"{task}-{fp}", args, suite)
                    row.update(numbers, report=report, status="done")
                except SystemExit as err:  # a failed step (run_step): recorded, the other rows go on
                    row.update(status="failed", error=str(err))
                    failed += 1
            doc["rows"] = [*doc["rows"], row]
            write_table({**doc, "rows": in_yaml_order([*doc["rows"], *kept], suite.names)}, out)
    doc["rows"] = in_yaml_order([*doc["rows"], *kept], suite.names)
    js, md = write_table(doc, out)
    print(format_markdown(doc), flush=True)
    print(f"[{TOOL}] table: {md}  (every number and its protocol: {js})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
