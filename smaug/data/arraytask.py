"""One shard tool's work split over N tasks (a Slurm job array, or N commands on N machines), and the merge.

The work is a sequence of units numbered from 0: the output shards of `tools/make_shards.py`, the input tars of
`tools/index_shards.py`. Task I of N does the units u with u % N == I, a split that needs no coordinator, is the
same in every task and spreads the slow end of a corpus over all tasks. A task writes only its own units' files
(each unit's tar and its stats file, `stats/NAME.json`) and, once all of them are done, its record
`stats/tasks/I-of-N.json`: the plan it ran (what decides the output bytes), its units with their fingerprints and
its own summary. No two tasks write the same file. The merge, done by the task that finds all N records once its
own is written or by `--merge`, rereads the units' stats files in unit order and writes the reports once, so N
tasks leave the bytes one task leaves. A task missing or recorded for another plan stops the merge before it
writes anything (`Incomplete`, naming those tasks).

Locks (`flock`, held while the process lives): a one-task run holds `stats/.lock` exclusively; each task of an
array holds it shared and `stats/tasks/.I-of-N.lock` exclusively. So two runs of one task never overlap, nor a
one-task run and an array over the same output. The merge holds `stats/tasks/.merge.lock`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .specs import write_json_atomic

ENV_COUNT, ENV_ID = "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"
ENV_MIN, ENV_MAX = "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"
# options that decide how a run goes, not what it writes: left out of the command the reports record, so a task
# resubmitted with other --workers, or the merge, records the command of a one-task run
RUN_ONLY_VALUED = ("--workers", "--num-tasks", "--task-index")
RUN_ONLY_FLAGS = ("--merge", "--no-progress")


class TaskError(Exception):
    """A task cannot run or merge (bad task numbers, a lock held by another run, no records)."""


class Incomplete(TaskError):
    """The merge found tasks not done: `missing` maps each task index to why."""

    def __init__(self, num_tasks: int, missing: Mapping[int, str]):
        self.num_tasks, self.missing = num_tasks, dict(sorted(missing.items()))
        by_why: dict[str, list[int]] = {}
        for i, why in self.missing.items():
            by_why.setdefault(why, []).append(i)
        what = "; ".join(  # grouped, ids as ranges: an array of 1000 tasks gives a line, not a page
            f"task{'s' if len(ids) > 1 else ''} {id_ranges(ids)} ({why})" for why, ids in by_why.items()
        )
        super().__init__(f"{len(self.missing)} of {num_tasks} tasks not complete: {what}")

    def rerun(self, env: str = "") -> str:
        """How to run the missing tasks under Slurm (`env`: what the launcher also needs, e.g. `TOOL=...`)."""
        return (
            f"Run them with the same arguments, e.g. {env}sbatch --array={id_ranges(self.missing)} "
            f"launch/make_shards_slurm.sh --num-tasks {self.num_tasks} ARGS"
        )


def id_ranges(ids: Iterable[int]) -> str:
    """Task ids as sbatch --array writes them: [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


@dataclass(frozen=True)
class Task:
    """Task `index` of `count`; `source` says where the numbers came from (for messages)."""

    index: int = 0
    count: int = 1
    source: str = ""

    def owns(self, unit: int) -> bool:
        return unit % self.count == self.index

    def share(self, num_units: int) -> list[int]:
        """This task's units among `num_units`, in order."""
        return list(range(self.index, num_units, self.count))

    def __str__(self) -> str:
        return f"task {self.index} of {self.count}"


def add_task_arguments(p: argparse.ArgumentParser, unit: str) -> None:
    """--num-tasks, --task-index, --merge (`unit`: what is split, for the help text)."""
    g = p.add_argument_group("many machines (one Slurm array task each: launch/make_shards_slurm.sh)")
    g.add_argument(
        "--num-tasks",
        type=int,
        help=f"split the work over N tasks by {unit}: task I does {unit}s I, I+N, I+2N, ... "
        f"[${ENV_COUNT}, else 1]; give it when resubmitting some tasks of an array",
    )
    g.add_argument("--task-index", type=int, help=f"this task, 0..N-1 [${ENV_ID}, else 0]")
    g.add_argument(
        "--merge",
        action="store_true",
        help="only merge the finished tasks of --out into the reports (the last task to finish does it by itself); "
        "with a task missing it names it and writes nothing",
    )


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise TaskError(f"${name}={value!r} is not an integer") from None


def resolve_task(num_tasks: Optional[int], task_index: Optional[int], env: Mapping[str, str]) -> Task:
    """The task this process is: --num-tasks/--task-index, else Slurm's array variables, else task 0 of 1.

    Without --num-tasks, N is the array's size, so its ids must be 0..N-1 (`--array=0-(N-1)`); a resubmission of
    some tasks (`--array=1,3`) is a smaller array and needs --num-tasks."""
    count, index = num_tasks, task_index
    sources = ["--num-tasks" if num_tasks is not None else "", "--task-index" if task_index is not None else ""]
    if count is None and (count := _env_int(env, ENV_COUNT)) is not None:
        sources[0] = f"${ENV_COUNT}"
        lo, hi = _env_int(env, ENV_MIN), _env_int(env, ENV_MAX)
        if lo is not None and hi is not None and (lo, hi) != (0, count - 1):
            raise TaskError(
                f"this Slurm array has {count} tasks with ids {lo}..{hi}: the split needs ids 0..N-1 (submit with "
                f"--array=0-(N-1)), or --num-tasks N naming all tasks of the job (when resubmitting some of them)"
            )
    if index is None and (index := _env_int(env, ENV_ID)) is not None:
        sources[1] = f"${ENV_ID}"
    count = 1 if count is None else count
    if count < 1:
        raise TaskError(f"--num-tasks {count}: must be >= 1")
    if index is None:
        if count > 1:
            raise TaskError(f"{sources[0]} {count} needs --task-index (or ${ENV_ID}, set in a Slurm array task)")
        index = 0
    if not 0 <= index < count:
        raise TaskError(
            f"{sources[1] or '--task-index'} {index} is not a task of {sources[0] or '--num-tasks'} {count} "
            f"(tasks are 0..{count - 1})"
        )
    return Task(index, count, " and ".join(s for s in sources if s))


def recorded_command(tool: str, argv: Iterable[str]) -> str:
    """`tool ARGV` without the options that decide how the run goes rather than what it writes (RUN_ONLY_*): the
    command the reports record, the same for every task of an array and for a one-task run."""
    kept: list[str] = []
    args = iter(argv)
    for a in args:
        name = a.split("=", 1)[0]
        if name in RUN_ONLY_FLAGS or (name in RUN_ONLY_VALUED and "=" in a):
            continue
        if name in RUN_ONLY_VALUED:
            next(args, None)
            continue
        kept.append(a)
    return shlex.join([tool, *kept])


def _lock(path: Path, exclusive: bool, wait_s: float):
    """An open file holding a flock on `path`, or None once `wait_s` has passed (a killed run's children need a
    moment to exit)."""
    f = open(path, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                return None
            time.sleep(0.1)


def tasks_dir(stats: Path) -> Path:
    return Path(stats) / "tasks"


def record_path(stats: Path, task: Task) -> Path:
    return tasks_dir(stats) / f"{task.index}-of-{task.count}.json"


def start_task(stats: Path, task: Task, out: Path, wait_s: float = 10.0) -> list:
    """Take this task's locks and drop its old record (the task is not done until it writes a new one); return
    the lock files, to keep open while the task runs. TaskError when another run holds them."""
    stats = Path(stats)
    tasks_dir(stats).mkdir(parents=True, exist_ok=True)
    if task.count == 1:
        held = [_lock(stats / ".lock", True, wait_s)]
    else:
        held = [_lock(stats / ".lock", False, wait_s)]
        if held[0] is not None:
            held.append(_lock(tasks_dir(stats) / f".{task.index}-of-{task.count}.lock", True, wait_s))
    if any(f is None for f in held):
        for f in held:
            if f is not None:
                f.close()
        who = "a one-task run or an array" if task.count == 1 else f"another run of {task}, or a one-task run,"
        raise TaskError(f"{who} is writing to {out}")
    record_path(stats, task).unlink(missing_ok=True)
    remove_stale_temps([tasks_dir(stats)], lambda name: name == record_path(stats, task).name)
    return held


def finish_task(stats: Path, task: Task, plan: dict, units: list[dict], summary: dict) -> None:
    """Write this task's record: `plan` (JSON; equal in all tasks of one job, with `num_units`), its `units`
    (dicts with `index`, in order: exactly `task.share(plan["num_units"])`), its own `summary`."""
    record = {"task": task.index, "num_tasks": task.count, "plan": plan, "units": units, "summary": summary}
    write_json_atomic(record_path(stats, task), record)


def gather(stats: Path, num_tasks: Optional[int], plan: Optional[dict]) -> tuple[int, dict, list[dict]]:
    """(N, plan, every unit in unit order) from the N task records under `stats`; Incomplete naming each task
    without a record, with one for another plan, or with units that are not its share.

    `plan` None (an explicit merge): the plan of the newest record; `num_tasks` None: that record's N."""
    folder = tasks_dir(stats)
    if num_tasks is None or plan is None:
        records = sorted(folder.glob("*-of-*.json"), key=lambda p: p.stat().st_mtime_ns)
        if not records:
            raise TaskError(f"no task has finished: no records in {folder}")
        if num_tasks is None:
            num_tasks = int(records[-1].stem.split("-of-")[1])
        if plan is None:
            ours = [p for p in records if p.stem.endswith(f"-of-{num_tasks}")]
            if not ours:
                raise Incomplete(num_tasks, {i: "not finished: no record" for i in range(num_tasks)})
            plan = json.loads(ours[-1].read_text(encoding="utf-8"))["plan"]
    missing: dict[int, str] = {}
    units: list[dict] = []
    for i in range(num_tasks):
        task = Task(i, num_tasks)
        try:
            record = json.loads(record_path(stats, task).read_text(encoding="utf-8"))
        except FileNotFoundError:
            missing[i] = "not finished: no record; still running, killed or never started"
            continue
        except (OSError, json.JSONDecodeError) as exn:
            missing[i] = f"unreadable record ({exn})"
            continue
        if record.get("plan") != plan:
            missing[i] = "recorded for another command or input: rerun it with this one"
        elif [u["index"] for u in record["units"]] != task.share(plan["num_units"]):
            missing[i] = "its record does not list its share of the units: rerun it"
        else:
            units += record["units"]
    if missing:
        raise Incomplete(num_tasks, missing)
    return num_tasks, plan, sorted(units, key=lambda u: u["index"])


@contextmanager
def merge_lock(stats: Path, wait_s: float = 3600.0):
    """Held while one process merges; a second merger waits, then merges again (to the same bytes). TaskError
    when no task ever started there (a mistyped --out: nothing is created)."""
    if not tasks_dir(stats).is_dir():
        raise TaskError(f"no task records in {tasks_dir(stats)}: no run of the tool started in {Path(stats).parent}")
    f = _lock(tasks_dir(stats) / ".merge.lock", True, wait_s)
    if f is None:
        raise TaskError(f"another merge of {Path(stats).parent} held its lock for {wait_s:.0f}s")
    try:
        yield
    finally:
        f.close()


def remove_stale_temps(folders: Iterable[Path], owned: Callable[[str], bool]) -> None:
    """Delete the `.NAME.PID.tmp` files a killed run left in `folders` whose NAME is `owned` by the caller (a task
    removes only its own units' temps: the other tasks may be writing theirs)."""
    for folder in folders:
        for p in Path(folder).glob(".*.tmp"):
            if owned(p.name[1:-4].rsplit(".", 1)[0]):
                p.unlink(missing_ok=True)
