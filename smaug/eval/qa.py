"""Open-ended VideoQA: the `qa` run-config section and evaluation (MSRVTT-QA / ActivityNet-QA style), the
Singularity way. Training is `smaug.train.qa` (the trainer stays out of the library):

    python -m smaug.train.qa --config INIT_CONFIG.yaml --config smaug/configs/finetune_qa.yaml --out runs/qa \\
        model.init_from=runs/pt qa.train_json=train.json qa.test_json=test.json qa.answer_list=answer_list.json \\
        qa.video_root=videos/          # tools/finetune_qa.py does all of it, baselines included

Training (`smaug.train.qa.QATrainer`): the pre-training trainer (`smaug.train.trainer.Trainer`: DeepSpeed engine, exact resume, SIGTERM-safe
checkpoints, logging) with `QAModel` (SmaugModel + answer decoder, `smaug.models.answer_decoder`) and the QA
loader (`smaug.data.qa_data.QATrainLoader`); loss: teacher-forced answer tokens. The run config gets a `qa`
section (`QASection`), validated like the others.

Evaluation (`evaluate_qa`, collective with world > 1): each rank answers its share of the test questions
(`shard_indices`); for each question the answer list is ranked by `QAModel.rank_answers` (top-k by
first-token probability, then full log-likelihood); a prediction is right when it equals the reference
answer string. Test answers outside the answer list can never be predicted: they count as wrong and the
report says how many there were. Results are gathered and merged by row index, and the merge checks that
every question was answered exactly once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from smaug.config import ConfigError, RunConfig
from smaug.data.config import MAX_TEXT_LEN
from smaug.dist import gather_object


@dataclass
class QASection:
    train_json: Optional[str] = None  # QA training rows [{video, question, answer}]
    test_json: Optional[str] = None  # QA test rows (evaluated at the end of training)
    answer_list: Optional[str] = None  # answer_list.json: the answers evaluation ranks
    video_root: Optional[str] = None  # folder the train JSON's video paths are relative to
    test_video_root: Optional[str] = None  # the test JSON's (default: video_root)
    video_shards: Optional[str] = None  # or: shards holding the training videos (keys as make_shards gives the paths)
    test_video_shards: Optional[str] = None  # shards holding the test videos
    split: str = ""  # name of the test split in the report (default: the test JSON's file name)
    k: int = 128  # answers re-scored by full log-likelihood per question (top-k by first-token probability)
    max_answer_len: int = 8  # answer tokens incl. [CLS] and [SEP]
    decoder_layers: int = 0  # answer decoder depth; 0 = as many as the fusion layers (initialised from them)
    blind: bool = False  # text-only baseline: every clip replaced by a black one (training and evaluation)
    eval_batch_size: int = 0  # questions per eval batch; 0 = data.eval_batch_size or data.batch_size


@dataclass
class QARunConfig(RunConfig):
    qa: QASection = dataclasses.field(default_factory=QASection)
    EXTRA_SECTIONS = {"qa": QASection}
    TRAIN_SHARDS_REQUIRED = False
    SHARDS_READ = False  # the videos come from qa.video_root / qa.video_shards, evaluation from qa.test_json

    def data_paths(self) -> dict:
        q = self.qa
        keys = ("train_json", "test_json", "answer_list", "video_root", "test_video_root")
        return {f"qa.{k}": getattr(q, k) for k in keys if getattr(q, k)}

    def __post_init__(self):
        q = self.qa
        if not q.train_json:
            raise ConfigError("qa.train_json: required")
        if (q.video_root is None) == (q.video_shards is None):
            raise ConfigError("qa.video_root / qa.video_shards: give exactly one")
        if q.test_json and not q.answer_list:
            raise ConfigError("qa.answer_list: required with qa.test_json")
        if q.test_json and not (q.test_video_root or q.test_video_shards or q.video_root or q.video_shards):
            raise ConfigError("qa.test_video_root: required")
        if q.k < 1 or q.max_answer_len < 3 or q.decoder_layers < 0 or q.eval_batch_size < 0:
            raise ConfigError("qa.k >= 1, qa.max_answer_len >= 3, qa.decoder_layers >= 0, qa.eval_batch_size >= 0")
        if self.eval.every:
            raise ConfigError("eval.every: QA evaluates once, at the end of training (set 0)")


def test_clip_source(q: QASection, data_cfg, tokenizer):
    from smaug.data.qa_data import make_clip_source

    if q.test_video_shards or (q.video_shards and not q.test_video_root):
        return make_clip_source(data_cfg, tokenizer, shards=q.test_video_shards or q.video_shards)
    return make_clip_source(data_cfg, tokenizer, video_root=q.test_video_root or q.video_root)


# ---------------------------------------------------------------------------- evaluation
def gather_by_index(local: list[dict], expected: list[int]) -> list[dict]:
    """All ranks' per-item results (dicts with "index"), merged in index order; every expected index exactly
    once (a RuntimeError names what is missing or repeated)."""
    parts = gather_object(local)
    merged = sorted((r for p in parts for r in p), key=lambda r: r["index"])
    got = Counter(r["index"] for r in merged)
    dup = sorted(i for i, c in got.items() if c > 1)
    missing = sorted(set(expected) - set(got))
    if dup or missing:
        raise RuntimeError(
            f"eval merge: {len(missing)} items missing (e.g. {missing[:5]}), {len(dup)} repeated (e.g. {dup[:5]})"
        )
    return merged


def gather_counts(c: Counter) -> Counter:
    return sum((Counter(p) for p in gather_object(dict(c))), Counter())


@torch.no_grad()
def evaluate_qa(
    model,
    rows: list[dict],
    clips,
    tokenizer,
    answer_list: list[str],
    device,
    k: int = 128,
    batch_size: int = 16,
    num_workers: int = 0,
    max_text_len: int = MAX_TEXT_LEN,
    max_answer_len: int = 8,
    rank: int = 0,
    world: int = 1,
) -> dict:
    """Answer every row (this rank its share), gather. -> {"predictions": [{index, video, question, answer,
    pred, correct, in_list, type}], "skipped": {reason: n}} over all ranks."""
    from smaug.data.collate import tokenize
    from smaug.data.qa_data import eval_batches, shard_indices

    was_training = model.training
    model.eval()
    ans = tokenize(tokenizer, answer_list, max_answer_len)
    ans_ids, ans_mask = ans["input_ids"].to(device), ans["attention_mask"].to(device)
    in_list = set(answer_list)
    mine = [rows[i] for i in shard_indices(len(rows), rank, world)]
    skipped: Counter = Counter()
    local = []
    dtype = next(model.parameters()).dtype
    for batch in eval_batches(mine, clips, tokenizer, batch_size, num_workers, max_text_len, "question", skipped):
        q_ids, q_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        fused = model.encode_question(batch["video"].to(device), q_ids, q_mask).to(dtype)
        best, _, _ = model.rank_answers(fused, q_mask, ans_ids, ans_mask, k=k)
        for r, b in zip(batch["rows"], best.tolist()):
            pred = answer_list[b]
            local.append(
                {
                    "index": r["index"],
                    "video": r["video"],
                    "question": r["question"],
                    "answer": r["answer"],
                    "pred": pred,
                    "correct": pred == r["answer"],
                    "in_list": r["answer"] in in_list,
                    "type": r.get("type"),
                }
            )
    model.train(was_training)
    answered = {p["index"] for p in local}
    local += [{"index": r["index"], "skipped": True} for r in mine if r["index"] not in answered]
    merged = gather_by_index(local, [r["index"] for r in rows])  # each question exactly once over the ranks
    skipped = gather_counts(skipped)
    merged = [p for p in merged if not p.get("skipped")]
    return {"predictions": merged, "skipped": dict(skipped)}


def accuracy_table(preds: list[dict]) -> dict:
    """Accuracy (percent) over all questions and per question type (rows' optional "type")."""

    def acc(ps):
        return 100.0 * sum(p["correct"] for p in ps) / max(len(ps), 1)

    types = sorted({p["type"] for p in preds if p.get("type")})
    return {
        "accuracy": acc(preds),
        "num_questions": len(preds),
        "per_type": {
            t: {
                "accuracy": acc([p for p in preds if p.get("type") == t]),
                "num_questions": sum(p.get("type") == t for p in preds),
            }
            for t in types
        },
    }


def majority_baseline(train_rows: list[dict], test_rows: list[dict]) -> dict:
    """Always the most frequent training answer (ties: the alphabetically first), on the test rows."""
    counts = Counter(r["answer"] for r in train_rows)
    best = min(counts, key=lambda a: (-counts[a], a))
    preds = [{"correct": r["answer"] == best, "type": r.get("type")} for r in test_rows]
    return {"answer": best, **accuracy_table(preds)}


def qa_report(res: dict, answer_list: list[str], **protocol) -> dict:
    preds = res["predictions"]
    out_of_list = sum(not p["in_list"] for p in preds)
    table = accuracy_table(preds)
    protocol.update(
        answer_list_size=len(answer_list),
        num_questions=len(preds),
        out_of_list=out_of_list,
        method="top-k answers by first-token probability, re-ranked by full log-likelihood; exact "
        "string match; out-of-list answers count as wrong",
    )
    results = {**table, "in_list_ceiling": 100.0 * (len(preds) - out_of_list) / max(len(preds), 1)}
    warnings = []
    if out_of_list:
        warnings.append(f"{out_of_list} of {len(preds)} test answers are not in the answer list (counted wrong)")
    if res["skipped"]:
        warnings.append(f"skipped test rows: {res['skipped']}")
    return {
        "protocol": protocol,
        "results": results,
        "skipped": res["skipped"],
        "warnings": warnings,
        "predictions": preds,
    }


def run_qa_eval(model, q: QASection, dcfg, tokenizer, device, rank: int, world: int, **protocol) -> dict:
    """QA evaluation of `q.test_json` with the data settings `dcfg` (frames, size, batch, workers) -> the
    report; `protocol` (checkpoint, step, ...) is recorded in it. Collective with world > 1."""
    from smaug.data.qa_data import read_answer_list, read_qa

    test_root = (
        None
        if (q.test_video_shards or (q.video_shards and not q.test_video_root))
        else (q.test_video_root or q.video_root)
    )
    rows, bad = read_qa(q.test_json, test_root)
    answers = read_answer_list(q.answer_list)
    clips = test_clip_source(q, dcfg, tokenizer)
    res = evaluate_qa(
        model,
        rows,
        clips,
        tokenizer,
        answers,
        device,
        q.k,
        q.eval_batch_size or dcfg.eval_batch_size or dcfg.batch_size,
        dcfg.num_workers,
        dcfg.max_text_len,
        q.max_answer_len,
        rank,
        world,
    )
    res["skipped"] = dict(Counter(res["skipped"]) + bad)
    report = qa_report(
        res,
        answers,
        **protocol,
        split=q.split or Path(q.test_json).stem,
        test_json=str(Path(q.test_json).resolve()),
        frames=dcfg.num_frames,
        image_size=dcfg.image_size,
        k=min(q.k, len(answers)),
        k_requested=q.k,
        blind=q.blind,
        world_size=world,
        device=device.type,
    )
    if q.train_json and Path(q.train_json).is_file():
        report["baselines"] = {"majority": majority_baseline(read_qa(q.train_json)[0], res["predictions"])}
    return report


def format_qa(report: dict) -> str:
    pr, res = report["protocol"], report["results"]
    lines = [
        f"QA split={pr['split']} questions={pr['num_questions']} answers={pr['answer_list_size']} k={pr['k']} "
        f"frames={pr['frames']} out-of-list={pr['out_of_list']}{' BLIND' if pr.get('blind') else ''} "
        f"step={pr.get('step')}",
        f"QA accuracy {res['accuracy']:.2f}%"
        + "".join(f"  {t} {v['accuracy']:.2f}% (n={v['num_questions']})" for t, v in res["per_type"].items()),
    ]
    maj = report.get("baselines", {}).get("majority")
    if maj:
        lines.append(f"majority answer {maj['answer']!r}: {maj['accuracy']:.2f}%")
    lines += [f"WARNING: {w}" for w in report["warnings"]]
    return "\n".join(lines)
