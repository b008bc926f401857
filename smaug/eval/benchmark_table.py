"""The paper-style table of tools/eval_benchmarks.py: rows from the evaluation tools' reports, written as
benchmarks.json (every number and the protocol behind it) and benchmarks.md (the tables a paper shows).

    row = retrieval_row(report, ranking="vtm")      # tools/eval_retrieval.py's report -> the row's numbers
    row = mc_row(report, method="combined")          # tools/eval_mc.py's report
    row = qa_row(summary)                            # tools/finetune_qa.py's qa_report.json
    write_table(doc, out_dir)                        # doc = {"checkpoint", "step", ..., "rows": [...]}

The tool adds to each row what it knows of the benchmark (name, kind, task, split, protocol, coverage of the
release: clips and queries found / listed). Library code: neither the trainer nor DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path

METRICS = ("r1", "r5", "r10", "medr", "meanr")
TASK_NAMES = {"zero_shot": "zero-shot", "finetune": "fine-tuned", "mc": "zero-shot MC", "qa": "fine-tuned QA"}


def _directions(res: dict) -> dict:
    return {d: {m: res[f"{d}_{m}"] for m in METRICS} for d in ("t2v", "v2t")}


def retrieval_row(report: dict, ranking: str) -> dict:
    """The headline `ranking` (vtc | vtm | combined; vtc when the report has no rerank), every ranking, chance
    levels, and what was evaluated, from a tools/eval_retrieval.py report."""
    pr, res = report["protocol"], report["results"]
    rankings = {name: _directions(r) for name, r in res.items() if isinstance(r, dict)}
    head = ranking if ranking in rankings else "vtc"
    return {
        "ranking": head,
        "t2v": rankings[head]["t2v"],
        "v2t": rankings[head]["v2t"],
        "rankings": rankings,
        "vtm_acc": res.get("vtm_acc"),
        "chance": {f"{d}_r{k}": pr[f"{p}chance_r{k}"] for d, p in (("t2v", ""), ("v2t", "v2t_")) for k in (1, 5, 10)},
        "evaluated": {"clips": pr["num_videos"], "items": pr["num_texts"], "skipped": pr.get("skipped") or {}},
        "checkpoint": pr.get("checkpoint"),
        "step": pr.get("step"),
        "frames": pr["frames"],
        "k": pr["k"],
        "max_text_len": pr["max_text_len"],
        "warnings": report.get("warnings", []),
    }


def mc_row(report: dict, method: str) -> dict:
    pr, res = report["protocol"], report["results"]
    return {
        "method": method,
        "accuracy": res[method]["accuracy"],
        "methods": {m: res[m]["accuracy"] for m in ("vtc", "vtm", "combined")},
        "chance": res["chance"],
        "chance_kind": "uniform over the options",
        "evaluated": {
            "clips": len({r["video"] for r in report.get("rows", [])}),
            "items": pr["num_rows"],
            "skipped": report.get("skipped") or {},
        },
        "checkpoint": pr.get("checkpoint"),
        "step": pr.get("step"),
        "frames": pr["frames"],
        "warnings": report.get("warnings", []),
    }


def qa_row(summary: dict) -> dict:
    """From tools/finetune_qa.py's qa_report.json: accuracy of the fine-tuned model, the majority answer's (the
    chance column) and the blind model's when trained."""
    pr, ft = summary["protocol"], summary["finetuned"]
    return {
        "accuracy": summary["accuracy"],
        "chance": summary["majority_accuracy"],
        "chance_kind": "majority training answer",
        "blind_accuracy": summary.get("blind_accuracy"),
        "per_type": summary.get("per_type", {}),
        "evaluated": {
            "clips": None,
            "items": pr["num_questions"],
            "skipped": ft.get("skipped") or {},
            "out_of_list": pr["out_of_list"],
        },
        "checkpoint": pr.get("checkpoint"),
        "step": pr.get("step"),
        "frames": pr["frames"],
        "k": pr["k"],
        "answer_list_size": pr["answer_list_size"],
        "warnings": ft.get("warnings", []),
    }


def _num(x, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _cov(row: dict, what: str) -> str:
    """`evaluated / listed` (clips or items) of a row; the evaluated count is the found one when not reported."""
    cov, ev = row.get("coverage") or {}, row.get("evaluated") or {}
    done = ev.get(what)
    done = cov.get(f"{what}_found") if done is None else done
    return f"{done}/{cov.get(f'{what}_listed', '?')}"


def _ckpt(row: dict) -> str:
    """The run's folder name (not its step folder's) and the step."""
    path, step = Path(str(row.get("checkpoint") or "?")), row.get("step")
    if path.name.startswith("step_") and path.parent.name == "checkpoints":
        path = path.parent.parent
    return f"{path.name} ({step})" if step is not None else path.name


def format_markdown(doc: dict) -> str:
    from smaug.eval.retrieval import RANKINGS

    rows = doc["rows"]
    done = [r for r in rows if r.get("status") == "done"]
    ret = [r for r in done if r["task"] in ("zero_shot", "finetune")]
    acc = [r for r in done if r["task"] in ("mc", "qa")]
    step = f" (step {doc['step']})" if doc.get("step") is not None else ""
    out = [
        "# Benchmarks",
        "",
        f"Checkpoint `{doc['checkpoint']}`{step}; benchmarks `{doc['config']}`. Retrieval: R@K in percent, MdR the "
        "median rank, both directions; headline ranking per row (vtc: VTC similarity; vtm: the VTC top-k reranked "
        "by VTM, Singularity's; combined: see docs/benchmarks.md). Clips and queries: evaluated / listed by the "
        "release (the rest are missing from the download or undecodable: see Coverage).",
        "",
    ]
    if ret:
        out += [
            "## Text-video retrieval",
            "",
            "| Benchmark | Task | Ranking | T2V R@1 | R@5 | R@10 | MdR | V2T R@1 | R@5 | R@10 | MdR | Chance R@1 "
            "| Clips | Queries | Frames | Checkpoint (step) |",
            "|---|---|---|" + "---:|" * 12 + "---|",
        ]
        for r in ret:
            t, v = r["t2v"], r["v2t"]
            out.append(
                f"| {r['name']} | {TASK_NAMES[r['task']]} | {r['ranking']} | "
                + " | ".join(_num(t[m]) for m in ("r1", "r5", "r10", "medr"))
                + " | "
                + " | ".join(_num(v[m]) for m in ("r1", "r5", "r10", "medr"))
                + f" | {_num(r['chance']['t2v_r1'], '.2f')} | {_cov(r, 'clips')} | {_cov(r, 'items')} | "
                f"{r['frames']} | {_ckpt(r)} |"
            )
        out.append("")
    if acc:
        out += [
            "## Multiple choice and video QA",
            "",
            "| Benchmark | Task | Accuracy | Chance | Questions | Clips | Frames | Checkpoint (step) |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in acc:
            chance = f"{_num(r['chance'], '.2f')} ({'majority' if r['task'] == 'qa' else 'uniform'})"
            out.append(
                f"| {r['name']} | {TASK_NAMES[r['task']]} | {_num(r['accuracy'], '.2f')} | {chance} | "
                f"{_cov(r, 'items')} | {_cov(r, 'clips')} | {r['frames']} | {_ckpt(r)} |"
            )
        out.append("")
    if ret:
        out += [
            "## Retrieval, every ranking",
            "",
            "| Benchmark | Task | Ranking | T2V R@1 | R@5 | R@10 | MdR | MnR | V2T R@1 | R@5 | R@10 | MdR | MnR |",
            "|---|---|---|" + "---:|" * 10,
        ]
        for r in ret:
            for name, d in sorted(r["rankings"].items(), key=lambda kv: RANKINGS.index(kv[0])):
                out.append(
                    f"| {r['name']} | {TASK_NAMES[r['task']]} | {name} | "
                    + " | ".join(_num(d["t2v"][m]) for m in METRICS)
                    + " | "
                    + " | ".join(_num(d["v2t"][m]) for m in METRICS)
                    + " |"
                )
        out.append("")
    out += ["## Protocol and coverage", ""]
    for r in rows:
        cov, ev = r.get("coverage") or {}, r.get("evaluated") or {}
        line = f"- **{r['name']}** ({TASK_NAMES[r['task']]}, {r.get('split')}): {r.get('protocol')}"
        if r.get("status") != "done":
            line += f". **{r.get('status')}**: {r.get('error', '')}"
        else:
            line += (
                f". Clips {cov.get('clips_found')}/{cov.get('clips_listed')} found, "
                f"{cov.get('items_found')}/{cov.get('items_listed')} {'queries' if r['task'] in ('zero_shot', 'finetune') else 'questions'} "
                f"with their video"
            )
            if cov.get("missing"):
                line += f"; missing videos: {cov['missing']} (e.g. {', '.join(cov.get('missing_ids', [])[:5])})"
            if ev.get("skipped"):
                line += f"; skipped at evaluation: {ev['skipped']}"
            if cov.get("bad_rows"):
                line += f"; unusable annotation rows: {cov['bad_rows']}"
            tc = r.get("train_coverage")
            if tc:
                what = "captions" if r["task"] == "finetune" else "questions"
                line += (
                    f"; trained on {r.get('train_split')}: {tc['clips_found']}/{tc['clips_listed']} clips found "
                    f"({tc['items_found']}/{tc['items_listed']} {what})"
                )
            line += f"; report `{r.get('report')}`"
        out.append(line)
    return "\n".join(out) + "\n"


def write_table(doc: dict, out_dir) -> tuple[Path, Path]:
    """OUT/benchmarks.json (replaced atomically: a kill never leaves half of it) and OUT/benchmarks.md, its
    tables (made from the JSON again on every write)."""
    from smaug.data.specs import write_json_atomic

    out_dir = Path(out_dir)
    js, md = out_dir / "benchmarks.json", out_dir / "benchmarks.md"
    write_json_atomic(js, doc)
    md.write_text(format_markdown(doc), encoding="utf-8")
    return js, md
