"""tools/make_shards.py and tools/index_shards.py split over N tasks (smaug/data/arraytask.py): task I of N does the
units I, I+N, ...; the last task to finish, or --merge, writes the reports; a merge with a task missing names it
and writes nothing. Under the real local Slurm of tests/test_launchers.py (same skip/require rule,
SMAUG_REQUIRE_SLURM), launch/make_shards_slurm.sh as a 2-task array, one task cancelled mid-way and submitted
again, leaves every file that one run of the same command leaves, byte for byte.

The one-task reference and the array write to the same --out path (the reference is moved aside first): the
reports record the command, so both runs must name the same paths."""

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_index_shards import write_v2d_shards
from test_launchers import ENDED, slurm  # noqa: F401 - `slurm`: the fixture the Slurm tests use (skip or fail)

from conftest import REPO, run_tool, subprocess_env

SHARD_ARGS = ["--samples-per-shard", "2", "--resize-short-side", "64", "--fps", "5"]


def listing(corpus: Path, path: Path) -> None:
    """A WebVid CSV of 18 rows at `path`, 2 bad (rows from 0; shards of 2 rows split over 2 tasks): row 6 names a
    missing file (shard 3: task 1), row 16 repeats the id of row 2 (shard 8: task 0; row 2 is in task 1's shard 1)."""
    lines = (corpus / "results_2M_train.csv").read_text(encoding="utf-8").splitlines()
    header, good = lines[0], lines[1:17]
    missing = good[0].split(",", 1)[0] + "999," + good[0].split(",", 1)[1]
    rows = [*good[:6], missing, *good[6:15], good[2], good[15]]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def tree(out: Path) -> dict:
    """{relative path: bytes} of what a conversion leaves, without stats/tasks/ (each task's record and locks)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and "tasks" not in p.relative_to(out).parts)
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def assert_same_tree(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref)  # no temp file left, nothing missing
    for name in ref:
        assert got[name] == ref[name], name


def array_env(tmp_path: Path, **extra) -> dict:
    """A Slurm job's environment (sbatch passes it on): this checkout's code and venv (as tests/test_launchers.py),
    the shard root `tmp_path` (the corpus YAML's paths are relative to it)."""
    return subprocess_env(
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        SMAUG_VENV=Path(sys.executable).parent.parent,
        SMAUG_SHARDS=tmp_path,
        **extra,
    )


def submit(env: dict, log: Path, array: str, *args) -> str:
    """sbatch launch/make_shards_slurm.sh as an array with one CPU per task -> the array's job id."""
    cmd = ["sbatch", "--parsable", f"--array={array}", "--cpus-per-task=1", f"--output={log}"]
    r = subprocess.run(
        [*cmd, "launch/make_shards_slurm.sh", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert r.returncode == 0, f"sbatch exited {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout.strip().split(";")[0]


def array_states(job: str, env: dict) -> dict:
    """{task id: job state} of an array job (pending tasks not yet split off have ids like `2-3`)."""
    r = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"scontrol show job {job}: {r.stdout}{r.stderr}"
    return dict(re.findall(r"ArrayTaskId=(\S+) .*?JobState=(\S+)", r.stdout))


def wait_array(job: str, env: dict, timeout: float = 300) -> dict:
    """Poll until every task of array `job` has ended -> {task id: final state}."""
    deadline = time.time() + timeout
    while True:
        states = array_states(job, env)
        if all(s in ENDED for s in states.values()):
            return states
        assert time.time() < deadline, f"array job {job} still running after {timeout} s: {states}"
        time.sleep(0.3)


def cancel_when(job: str, task: int, env: dict, done, timeout: float = 300) -> None:
    """scancel task `task` of array `job` as soon as `done()` is true (polled every 10 ms; the job's state every
    0.5 s, so a task that ends without getting there fails the test at once)."""
    deadline = time.time() + timeout
    for i in itertools.count():
        if done():
            break
        assert time.time() < deadline, f"task {task} of {job} did not get there in {timeout} s"
        if i % 50 == 49:
            assert array_states(job, env).get(str(task)) not in ENDED, f"task {task} of {job} ended first"
        time.sleep(0.01)
    r = subprocess.run(["scancel", f"{job}_{task}"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"scancel {job}_{task}: {r.stdout}{r.stderr}"


def job_log(tmp_path: Path, pattern: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob(pattern)))


# ------------------------------------------------------------------------------------- without Slurm
@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--num-tasks", "2", "--task-index", "2"], {}, "--task-index 2 is not a task of --num-tasks 2"),
        (["--num-tasks", "0", "--task-index", "0"], {}, "--num-tasks 0: must be >= 1"),
        (["--num-tasks", "3"], {}, "--num-tasks 3 needs --task-index"),
        (
            [],
            {
                "SLURM_ARRAY_TASK_COUNT": "2",
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "2",
            },
            "ids 1..2: the split needs ids 0..N-1",
        ),
        (["--merge", "--workers", "2"], {}, "--merge reads only --out (and --num-tasks); drop --video-root, "),
    ],
)
def test_task_arguments_fail_fast(tmp_path, monkeypatch, args, env, message):
    """Task numbers that name no task of the split (from the flags or Slurm's array variables, whose ids must be
    0..N-1 unless --num-tasks says N), and --merge with conversion options, stop before any work."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    corpus = ["--webvid-csv", tmp_path / "rows.csv", "--video-root", tmp_path, "--out", tmp_path / "out"]
    r = run_tool("make_shards.py", *corpus, *args, check=False, in_process=True)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_tasks_are_named_as_sbatch_ranges():
    """The refusal of a 1000-task merge is a line, not a page: tasks grouped by why, ids as --array ranges."""
    from smaug.data.arraytask import Incomplete

    exn = Incomplete(1000, {**{i: "not finished" for i in [*range(3, 900), 950]}, 7: "another command"})
    assert str(exn) == "898 of 1000 tasks not complete: tasks 3-6,8-899,950 (not finished); task 7 (another command)"
    assert "sbatch --array=3-899,950 launch/make_shards_slurm.sh --num-tasks 1000 ARGS" in exn.rerun()


def test_merge_of_no_run_creates_nothing(tmp_path):
    """--merge on a folder no run wrote into (a mistyped --out) says so and creates nothing, for both tools."""
    for tool in ("make_shards.py", "index_shards.py"):
        r = run_tool(tool, "--out", tmp_path / "typo", "--merge", check=False, in_process=True)
        assert r.returncode == 2 and "no task records in" in r.stderr, r.stderr
        assert not (tmp_path / "typo").exists()


def test_two_tasks_by_flag_and_by_env_equal_one_run(synthetic_corpus, tmp_path, monkeypatch):
    """Without Slurm: task 1 of 2 (flags) ends waiting; a --merge then refuses, naming task 0, and writes nothing;
    task 0 (Slurm's variables) merges by itself: the tars, stats, summary.json, manifest.json and corpus YAML
    are those of one run. Raw mp4 copied, 3 rows per shard: the cheapest conversion of 2 shards per task."""
    corpus = Path(synthetic_corpus)
    listing(corpus, tmp_path / "rows.csv")
    out = tmp_path / "out"
    args = ["--webvid-csv", tmp_path / "rows.csv", "--video-root", corpus / "videos", "--out", out]
    args += ["--samples-per-shard", 3, "--no-progress"]
    monkeypatch.setenv("SMAUG_SHARDS", str(tmp_path))
    run_tool("make_shards.py", *args, "--workers", 2, in_process=True)
    out.rename(tmp_path / "one")
    ref = tree(tmp_path / "one")
    r = run_tool("make_shards.py", *args, "--num-tasks", 2, "--task-index", 1, in_process=True)
    assert "task 1 of 2 done; not merged yet, 1 of 2 tasks not complete: task 0 (not finished" in r.stderr
    r = run_tool("make_shards.py", "--out", out, "--merge", check=False, in_process=True)
    assert r.returncode == 2 and "task 0 (not finished: no record" in r.stderr and "--array=0 " in r.stderr
    assert not [p.name for p in out.iterdir() if p.suffix in (".json", ".yaml")]
    for k, v in dict(
        SLURM_ARRAY_TASK_COUNT=2, SLURM_ARRAY_TASK_ID=0, SLURM_ARRAY_TASK_MIN=0, SLURM_ARRAY_TASK_MAX=1
    ).items():
        monkeypatch.setenv(k, str(v))
    r = run_tool("make_shards.py", *args, in_process=True)
    assert "task 0 of 2 (from $SLURM_ARRAY_TASK_COUNT and $SLURM_ARRAY_TASK_ID)" in r.stderr
    assert "[make_shards] done: 16 of 18 rows in 6 shards, 2 skipped" in r.stderr
    assert_same_tree(tree(out), ref)


# ------------------------------------------------------------------------------------- Slurm
@pytest.mark.slow
@pytest.mark.usefixtures("slurm")
def test_make_shards_slurm_array_killed_task_resubmitted_equals_one_run(synthetic_corpus, tmp_path, monkeypatch):
    """sbatch --array=0-1 launch/make_shards_slurm.sh; task 1 is cancelled once it has written one of its 4 shards.
    Task 0 ends waiting for it; a --merge refuses, naming task 1, and writes nothing. `sbatch --array=1 ...
    --num-tasks 2` finishes task 1 without rewriting its finished shards and merges: every file equals a one-task
    run's (re-encoded shards, one bad row in each task's share: summary.json has both)."""
    corpus = Path(synthetic_corpus)
    listing(corpus, tmp_path / "rows.csv")
    out = tmp_path / "out"
    args = ["--webvid-csv", tmp_path / "rows.csv", "--video-root", corpus / "videos", "--out", out, *SHARD_ARGS]
    env = array_env(tmp_path)
    monkeypatch.setenv("SMAUG_SHARDS", str(tmp_path))  # the one-task run's shard root: the jobs' one
    # the one-task run in a fresh interpreter, as the jobs' tasks run: run in the pytest process after the rest of the
    # suite, its re-encoded mp4s differed from the tasks' by a byte (not when this test ran alone)
    run_tool("make_shards.py", *args, "--workers", 2, "--no-progress")
    out.rename(tmp_path / "one")
    ref = tree(tmp_path / "one")
    assert len([n for n in ref if n.endswith(".tar")]) == 9  # task 0: shards 0, 2, 4, 6, 8; task 1: 1, 3, 5, 7

    job = submit(env, tmp_path / "first-%a.out", "0-1", *args)
    mine = [out / "stats" / f"out-{n:06d}.json" for n in (1, 3, 5, 7)]
    cancel_when(job, 1, env, lambda: any(p.exists() for p in mine))
    assert wait_array(job, env) == {"0": "COMPLETED", "1": "CANCELLED"}, job_log(tmp_path, "first-*")[-4000:]
    finished = [p for p in mine if p.exists()]
    assert 0 < len(finished) < 4, f"task 1 was not stopped mid-way: {len(finished)} of its 4 shards done"
    log = job_log(tmp_path, "first-0.out")
    assert "task 0 of 2 done; not merged yet, 1 of 2 tasks not complete: task 1 (not finished" in log, log
    r = run_tool("make_shards.py", "--out", out, "--merge", check=False, in_process=True)
    assert r.returncode == 2 and "cannot merge" in r.stderr and "task 1 (not finished" in r.stderr, r.stderr
    assert not [p.name for p in out.iterdir() if p.suffix in (".json", ".yaml")]

    before = {p.name: (out / f"{p.stem}.tar").stat() for p in finished}
    job = submit(env, tmp_path / "again-%a.out", "1", "--num-tasks", 2, *args)
    assert wait_array(job, env) == {"1": "COMPLETED"}, job_log(tmp_path, "again-*")[-4000:]
    log = job_log(tmp_path, "again-*")
    assert f"({len(finished)} already done, {4 - len(finished)} built)" in log and "[make_shards] done:" in log, log
    for name, st in before.items():  # finished shards were not rewritten
        now = (out / f"{Path(name).stem}.tar").stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert_same_tree(tree(out), ref)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["rows"], summary["samples"], summary["shards"]) == (18, 16, 9)
    assert {k: v for k, v in summary["skipped"].items() if v} == {"missing_file": 1, "duplicate_id": 1}
    tasks = [json.loads((out / "stats" / "tasks" / f"{i}-of-2.json").read_text()) for i in (0, 1)]
    assert [t["summary"]["skipped"]["duplicate_id"] for t in tasks] == [1, 0]  # found across the tasks' shares
    assert [t["summary"]["skipped"]["missing_file"] for t in tasks] == [0, 1]
    yml = (out / "out.yaml").read_text()
    assert "manifest: out/manifest.json\npattern: out/out-{000000..000008}.tar\nnum_samples: 16\n" in yml, yml


@pytest.mark.slow
@pytest.mark.usefixtures("slurm")
def test_index_shards_slurm_array_killed_task_resubmitted_equals_one_run(synthetic_corpus, tmp_path):
    """TOOL=index_shards: 6 foreign tars (video2dataset's layout, 3 bad samples in the first two) rewritten by a
    2-task array; task 1 is cancelled once it has indexed one of its 3 tars, a --merge refuses naming it, the
    resubmitted task finishes and merges: every tar, stats file, manifest.json and summary.json equal one run's."""
    shards = tmp_path / "v2d"
    write_v2d_shards(Path(synthetic_corpus), shards, num_shards=6)
    out = tmp_path / "clean"
    args = [shards, "--rewrite", "--out", out]
    env = array_env(tmp_path, TOOL="index_shards")
    run_tool("index_shards.py", *args, "--workers", 2, in_process=True)
    out.rename(tmp_path / "one")
    ref = tree(tmp_path / "one")

    job = submit(env, tmp_path / "first-%a.out", "0-1", *args)
    mine = [out / "stats" / f"{n:05d}.tar.json" for n in (1, 3, 5)]
    cancel_when(job, 1, env, lambda: any(p.exists() for p in mine))
    assert wait_array(job, env) == {"0": "COMPLETED", "1": "CANCELLED"}, job_log(tmp_path, "first-*")[-4000:]
    finished = [p for p in mine if p.exists()]
    assert 0 < len(finished) < 3, f"task 1 was not stopped mid-way: {len(finished)} of its 3 tars done"
    r = run_tool("index_shards.py", "--out", out, "--merge", check=False, in_process=True)
    assert r.returncode == 2 and "cannot merge" in r.stderr and "task 1 (not finished" in r.stderr, r.stderr
    assert not (out / "manifest.json").exists() and not (out / "summary.json").exists()

    before = {p.name: (out / p.stem).stat() for p in finished}
    job = submit(env, tmp_path / "again-%a.out", "1", "--num-tasks", 2, *args)
    assert wait_array(job, env) == {"1": "COMPLETED"}, job_log(tmp_path, "again-*")[-4000:]
    log = job_log(tmp_path, "again-*")
    assert f"({len(finished)} already indexed, {3 - len(finished)} indexed)" in log, log
    assert "[index_shards] 6 shards, 36 samples: 33 good, 3 bad" in log, log
    for name, st in before.items():  # finished tars were not rewritten
        now = (out / Path(name).stem).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert_same_tree(tree(out), ref)
