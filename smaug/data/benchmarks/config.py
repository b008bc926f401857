"""The benchmarks YAML of tools/eval_benchmarks.py: which benchmarks, where their release files and videos are,
which tasks; validated in full (unknown keys and kinds, missing files and folders) before anything is computed.

    suite = load_suite("benchmarks.yaml")           # BenchmarkError on anything wrong, naming the key
    for b in suite.benchmarks: test = b.read("test"); train = b.read("train")   # RetrievalSet / QuestionSet

Relative paths are relative to the YAML file's folder. See docs/benchmarks.md for the layout of each kind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Union

import yaml

from smaug.schema import ConfigError, build_section

from . import activitynet, didemo, lsmdc, msrvtt, msvd, preprocessed
from .common import VideoFinder

RETRIEVAL_TASKS = ("zero_shot", "finetune")
TASKS = {"retrieval": RETRIEVAL_TASKS, "mc": ("mc",), "qa": ("qa",)}
RANKINGS = ("vtc", "vtm", "combined")
# query tokens of the paragraph benchmarks: Singularity's max_txt_l (configs/ret_didemo.yaml, ret_anet.yaml); the
# sentence benchmarks keep the checkpoint's own data.max_text_len
PARAGRAPH_TEXT_LEN = {"didemo": 64, "activitynet": 150}


class BenchmarkError(ValueError):
    """A bad benchmarks YAML; the message names the key or file."""


@dataclass(frozen=True)
class Kind:
    family: str  # "retrieval" | "mc" | "qa"
    files: dict  # YAML key -> (fewest, most) files it names; `test` is required
    read: Callable  # (entry, the split's files, VideoFinder, "test" | "train") -> RetrievalSet | QuestionSet
    train_task: str = ""  # the task that needs `train` ("finetune", "qa")
    notes: str = ""  # the files, for error messages


def _msrvtt(e, files, f, split):
    return msrvtt.read_1ka(files[0], f) if split == "test" else msrvtt.read_train(files, f, e.train_split, e.test[0])


def _msrvtt_full(e, files, f, split):
    if split == "test":
        return msrvtt.read_videodatainfo(files, f, ("test",), split_name="official test")
    return msrvtt.read_videodatainfo(files, f, ("train", "validate"), split_name="train 7k")


ONE, BOTH = {"test": (1, 1)}, {"test": (1, 1), "train": (1, 1)}
KINDS: dict[str, Kind] = {
    "msrvtt": Kind(
        "retrieval",
        {"test": (1, 1), "train": (1, 2)},
        _msrvtt,
        "finetune",
        "test: MSRVTT_JSFUSION_test.csv; train: train_val_videodatainfo.json [+ test_videodatainfo.json]",
    ),
    "msrvtt_full": Kind(
        "retrieval",
        BOTH,
        _msrvtt_full,
        "finetune",
        "test: test_videodatainfo.json; train: train_val_videodatainfo.json",
    ),
    "msrvtt_mc": Kind("mc", ONE, lambda e, p, f, s: msrvtt.read_mc(p[0], f), notes="test: MSR_MC_test.csv"),
    "msrvtt_qa": Kind(
        "qa", BOTH, lambda e, p, f, s: msrvtt.read_qa(p[0], f, s), "qa", "test: test_qa.json; train: train_qa.json"
    ),
    "didemo": Kind(
        "retrieval",
        BOTH,
        lambda e, p, f, s: didemo.read_didemo(p[0], f, s),
        "finetune",
        "test: test_data.json; train: train_data.json",
    ),
    "activitynet": Kind(
        "retrieval",
        BOTH,
        lambda e, p, f, s: activitynet.read_captions(p[0], f, os.path.splitext(os.path.basename(p[0]))[0]),
        "finetune",
        "test: val_1.json; train: train.json",
    ),
    "activitynet_qa": Kind(
        "qa",
        {"test": (2, 2), "train": (2, 2)},
        lambda e, p, f, s: activitynet.read_qa(p[0], p[1], f, s),
        "qa",
        "test: [test_q.json, test_a.json]; train: [train_q.json, train_a.json]",
    ),
    "msvd": Kind(
        "retrieval",
        {**BOTH, "descriptions": (1, 1)},
        lambda e, p, f, s: msvd.read_msvd(e.descriptions[0], p[0], f, s),
        "finetune",
        "descriptions: AllVideoDescriptions.txt; test: test_list.txt; train: train_list.txt",
    ),
    "lsmdc": Kind(
        "retrieval",
        BOTH,
        lambda e, p, f, s: lsmdc.read_lsmdc(p[0], f, s),
        "finetune",
        "test: LSMDC16_challenge_1000_publictect.csv; train: LSMDC16_annos_training.csv",
    ),
    # the peers' preprocessed JSON ([{"video", "caption"}], [{"video", "question", "answer"}], ...)
    "retrieval_json": Kind(
        "retrieval",
        BOTH,
        lambda e, p, f, s: preprocessed.read_retrieval(p[0], f, s, e.paragraph),
        "finetune",
        'test / train: [{"video", "caption": str | [str]}]',
    ),
    "mc_json": Kind(
        "mc", ONE, lambda e, p, f, s: preprocessed.read_mc(p[0], f, s), notes='test: [{"video", "caption", "answer"}]'
    ),
    "qa_json": Kind(
        "qa",
        BOTH,
        lambda e, p, f, s: preprocessed.read_qa(p[0], f, s),
        "qa",
        'test / train: [{"video", "question", "answer"}]',
    ),
}


@dataclass
class Entry:
    """One benchmark of the YAML (`benchmarks: {NAME: {...}}`)."""

    videos: str  # the folder holding the release's videos
    test: Union[str, tuple[str, ...]]
    kind: str = ""  # one of KINDS; default: the entry's name
    train: Union[str, tuple[str, ...], None] = None
    descriptions: Union[str, tuple[str, ...], None] = None  # msvd: AllVideoDescriptions.txt
    train_split: str = "9k"  # msrvtt fine-tuning: "9k" (all but the 1k-A test clips) or "7k" (train + validate)
    tasks: Optional[tuple[str, ...]] = None  # default: zero_shot (retrieval), mc, qa
    frames: int = 0  # 0 = the suite's
    k: int = -1  # VTM rerank top-k (retrieval) / answers re-scored (QA); -1 = the suite's
    max_text_len: int = 0  # query tokens; 0 = PARAGRAPH_TEXT_LEN for DiDeMo / ActivityNet, else the checkpoint's
    answer_list: Optional[str] = None  # QA: answer_list.json; default: the training answers, most frequent first
    answer_list_size: int = 0  # QA: keep the N most frequent training answers (0 = all)
    blind: bool = False  # QA: also train the text-only baseline
    paragraph: bool = False  # retrieval_json: a clip's captions joined into one query (DiDeMo / ActivityNet style)
    overrides: tuple[str, ...] = ()  # trainer key=value for this entry's fine-tuning
    name: str = ""
    family: str = ""

    def read(self, split: str, finder: Optional[VideoFinder] = None):
        """The RetrievalSet / QuestionSet of "test" or "train" (the video folder walked once per call without
        `finder`)."""
        return KINDS[self.kind].read(self, getattr(self, split), finder or VideoFinder(self.videos), split)


@dataclass
class Suite:
    benchmarks: list  # of Entry
    frames: int = 12  # frames per clip at evaluation (and fine-tuning evaluation)
    k: int = 128  # VTM rerank top-k / QA answers re-scored
    ranking: str = "vtm"  # the retrieval ranking of the headline table: vtc | vtm | combined
    mc_method: str = "combined"  # the MC headline: vtc | vtm | combined
    batch_size: int = 0  # clips per eval batch (0 = the checkpoint's)
    workers: int = -1  # decoding workers per process (-1 = the checkpoint's)
    finetune_overrides: tuple[str, ...] = ()  # trainer key=value for every retrieval fine-tuning
    qa_overrides: tuple[str, ...] = ()  # trainer key=value for every QA fine-tuning
    path: str = ""
    names: tuple = ()  # every benchmark of the YAML, in order (`benchmarks` holds the selected ones)


# fields load_suite fills in itself, not YAML keys
DERIVED = {"suite": ("path", "names"), "entry": ("name", "family")}


def _no_derived(where: str, raw: dict, kind: str) -> None:
    for key in DERIVED[kind]:
        if key in raw:
            raise BenchmarkError(f"{where}.{key}: unknown key")


def _files(base: str, value) -> list[str]:
    vals = [value] if isinstance(value, str) else list(value or [])
    return [v if os.path.isabs(v) else os.path.normpath(os.path.join(base, v)) for v in map(os.path.expanduser, vals)]


def _entry(name: str, raw, base: str, suite: Suite) -> Entry:
    where = f"benchmarks.{name}"
    if not isinstance(raw, dict):
        raise BenchmarkError(f"{where}: expected a mapping of settings")
    _no_derived(where, raw, "entry")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise BenchmarkError(f"{where}: a benchmark's name is its output folder's: letters, digits, _ . - only")
    try:
        e = build_section(where, Entry, raw)
    except ConfigError as err:
        raise BenchmarkError(str(err)) from None
    e.name, e.kind = name, e.kind or name
    kind = KINDS.get(e.kind)
    if kind is None:
        raise BenchmarkError(f"{where}.kind: unknown benchmark {e.kind!r} (one of {', '.join(KINDS)})")
    e.family = kind.family
    e.tasks = list(e.tasks) if e.tasks is not None else [TASKS[kind.family][0]]
    bad = [t for t in e.tasks if t not in TASKS[kind.family]]
    if bad or not e.tasks:
        raise BenchmarkError(f"{where}.tasks: {bad or '[]'} not tasks of {e.kind} (one of {list(TASKS[kind.family])})")
    e.videos = _files(base, e.videos)[0]
    if not os.path.isdir(e.videos):
        raise BenchmarkError(f"{where}.videos: {e.videos} is not a folder")
    needs_train = kind.train_task in e.tasks
    for key in ("test", "train", "descriptions"):
        files = _files(base, getattr(e, key))
        setattr(e, key, files)
        if key not in kind.files:
            if files:
                raise BenchmarkError(f"{where}.{key}: {e.kind} has no {key} file ({kind.notes})")
            continue
        if key == "train" and not needs_train:
            continue
        lo, hi = kind.files[key]
        if not lo <= len(files) <= hi:
            n = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise BenchmarkError(f"{where}.{key}: {n} file(s) expected, got {len(files)} ({kind.notes})")
        for f in files:
            if not os.path.isfile(f):
                raise BenchmarkError(f"{where}.{key}: annotation file {f} does not exist")
    if e.answer_list:
        e.answer_list = _files(base, e.answer_list)[0]
        if not os.path.isfile(e.answer_list):
            raise BenchmarkError(f"{where}.answer_list: {e.answer_list} does not exist")
    if e.paragraph and e.kind != "retrieval_json":
        raise BenchmarkError(f"{where}.paragraph: only for retrieval_json ({e.kind} has its own protocol)")
    if e.train_split not in ("9k", "7k"):
        raise BenchmarkError(f"{where}.train_split: {e.train_split!r} is not 9k or 7k")
    e.frames = e.frames or suite.frames
    e.k = suite.k if e.k < 0 else e.k
    e.max_text_len = e.max_text_len or PARAGRAPH_TEXT_LEN.get(e.kind, 0)
    if e.frames < 1 or e.max_text_len < 0 or e.answer_list_size < 0:
        raise BenchmarkError(f"{where}: frames >= 1, max_text_len >= 0, answer_list_size >= 0")
    return e


def load_suite(path: str, only: Optional[list[str]] = None) -> Suite:
    """The validated suite of a benchmarks YAML (`only`: these entry names, in YAML order)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise BenchmarkError(f"benchmarks file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise BenchmarkError(f"{path}: not YAML ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("benchmarks"), dict) or not raw["benchmarks"]:
        raise BenchmarkError(f"{path}: expected a mapping with a non-empty `benchmarks:` mapping")
    entries = raw.pop("benchmarks")
    _no_derived("suite", raw, "suite")
    try:
        suite = build_section("suite", Suite, {**raw, "benchmarks": []})
    except ConfigError as err:
        raise BenchmarkError(f"{path}: {err}") from None
    if suite.ranking not in RANKINGS or suite.mc_method not in RANKINGS:
        raise BenchmarkError(f"{path}: ranking / mc_method must be one of {list(RANKINGS)}")
    if suite.frames < 1 or suite.k < 0:
        raise BenchmarkError(f"{path}: frames >= 1 and k >= 0")
    unknown = [n for n in only or [] if n not in entries]
    if unknown:
        raise BenchmarkError(f"--only {unknown}: not in {path} (its benchmarks: {', '.join(entries)})")
    base = os.path.dirname(os.path.abspath(path))
    suite.path, suite.names = os.path.abspath(path), tuple(str(n) for n in entries)
    suite.benchmarks = [_entry(str(n), v, base, suite) for n, v in entries.items() if not only or n in only]
    return suite
