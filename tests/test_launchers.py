"""The launchers in launch/ as a user runs them: bash, the real `deepspeed` launcher (2 CPU ranks,
gloo), the DeepSpeed multinode runner (two "nodes" on this machine), and a real one-node Slurm
(launch/slurm_local_setup.sh). Tiny preset, a few steps, the session's synthetic shards.

Each launcher run gets PYTHONPATH=<repo> so the code under test is this checkout's even when the
venv's editable install points elsewhere, and the venv's bin/ first on PATH (`deepspeed`, `python`).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smaug.dist import free_port

from conftest import QS, REPO, run_overrides

pytestmark = pytest.mark.slow


def overrides(d, *extra):
    """conftest.run_overrides with batches of 2 and no eval shards: the launchers are under test."""
    return run_overrides(d, "data.eval_shards=null", "data.batch_size=2", *extra)


def launcher_env(out, **kw):
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        SMAUG_SETUP="0",
        CONFIG=QS,
        OUT=str(out),
        MASTER_PORT=str(free_port()),
    )
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in kw.items()})
    return env


def bash(script, env, *args, timeout=600):
    r = subprocess.run(
        ["bash", f"launch/{script}", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    return r.stdout + r.stderr


def records(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def loss_steps(out):
    return [r["step"] for r in records(out) if "loss" in r]


def latest(out):
    return (Path(out) / "checkpoints" / "latest").read_text().strip()


def optim_shards(out, tag):
    return sorted(p.name for p in (Path(out) / "checkpoints" / tag).glob("*optim_states.pt"))


@pytest.fixture
def small_fs(tmp_path):
    """A 120 MiB tmpfs (needs root): room for one checkpoint of the tiny 2-rank run (83 MB), not two.
    Yields (mount point, grow) or (None, why not); `grow()` remounts it at 400 MiB ("space freed")."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        yield None, f"mount -t tmpfs failed: {r.stderr.strip()}"
        return

    def grow():
        subprocess.run(["mount", "-o", "remount,size=400m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def multinode(out, tmp_path, *args) -> list[str]:
    """launch/pretrain_multinode.sh on a 2-host hostfile (two names of this machine), one process per "node"
    (NODE_RANK=0/1: DeepSpeed's --no_ssh mode), both ranks of one ZeRO-2 data-parallel job -> each node's output."""
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = free_port()
    procs = []
    for node in (0, 1):
        env = launcher_env(
            out, HOSTFILE=hostfile, NODE_RANK=node, MASTER_PORT=port, DS_ENV_FILE=tmp_path / f".deepspeed_env{node}"
        )
        procs.append(
            subprocess.Popen(
                ["bash", "launch/pretrain_multinode.sh", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=env,
                cwd=REPO,
            )
        )
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {node} exited {p.returncode}\n{log[-5000:]}"
    return logs


def test_pretrain_8gpu_disk_full_then_multinode_resume(synthetic_shards, small_fs, tmp_path):
    """launch/pretrain_8gpu.sh, NUM_GPUS=2: the deepspeed launcher starts 2 ranks (gloo) and checkpoints
    at step 2; on a small tmpfs the step-4 checkpoint fills the disk: the run stops non-zero naming the
    cause, the directory and the intact `latest` (step 2). Without root (no tmpfs) that run just ends at step 2.
    With space again, launch/pretrain_multinode.sh resumes the run as two "nodes" of this machine (`multinode`)
    from step 2 to step 4: one 2-rank ZeRO-2 job whose checkpoint holds both ranks' loader and RNG state.

    One run of each launcher: the resume is the trainer's, whichever launcher starts it (the Slurm test resumes
    with the same submission); a second 8-GPU launch for it cost ~20 s of the suite's 2 cores."""
    mnt, grow = small_fs
    out = (mnt or tmp_path) / "run"
    args = overrides(synthetic_shards, "train.steps=4", "ckpt.every=2")
    if mnt is not None:
        r = subprocess.run(
            ["bash", "launch/pretrain_8gpu.sh", *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=600,
            env=launcher_env(out, NUM_GPUS=2),
            cwd=REPO,
        )
        log = r.stdout + r.stderr
        assert r.returncode != 0, log[-4000:]
        assert "world=2" in log and "exits with return code = 4" in log, log[-4000:]
        ck = out / "checkpoints"
        msg = next(line for line in log.splitlines() if line.startswith("[smaug] stopped:"))
        assert f"checkpoint step_00000004 could not be written to {ck}" in msg, msg
        assert "No space left on device" in msg and "`latest` still names step_00000002" in msg, msg
        assert "Traceback" not in log, log[-4000:]
        assert latest(out) == "step_00000002" and not (ck / "step_00000004").exists()
        grow()
    else:
        print(f"NOTE: no disk-full check here ({grow}); it needs root for a tmpfs")
        log = bash(
            "pretrain_8gpu.sh",
            launcher_env(out, NUM_GPUS=2),
            *overrides(synthetic_shards, "train.steps=2", "ckpt.every=2"),
        )
        assert "world=2" in log and latest(out) == "step_00000002" and loss_steps(out) == [1, 2]
    logs = multinode(out, tmp_path, *args)
    assert "world=2" in logs[0] and re.search(r"resumed from \S+/step_00000002 at step 2", logs[0]), logs[0][-3000:]
    assert latest(out) == "step_00000004" and loss_steps(out)[-2:] == [3, 4] and loss_steps(out)[:2] == [1, 2]
    assert optim_shards(out, "step_00000004") == [  # ZeRO-2 over the 2 ranks
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    ck = torch.load(
        out / "checkpoints" / "step_00000004" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2  # both ranks' loader/RNG state in one checkpoint
    assert json.loads((out / "ds_config.json").read_text())["train_batch_size"] == 4  # 2 per rank x 2 ranks


@pytest.mark.skipif(
    os.geteuid() == 0 and os.environ.get("SMAUG_TEST_FSIZE") != "1",
    reason="root: the tmpfs disk-full of test_pretrain_8gpu_disk_full_then_multinode_resume "
    "covers a failing checkpoint write (SMAUG_TEST_FSIZE=1 runs this one too)",
)
def test_checkpoint_write_error_names_cause_and_keeps_latest(synthetic_shards, tmp_path):
    """Without root: a file-size limit (RLIMIT_FSIZE, 1 MiB; Python ignores SIGXFSZ, so writes fail with
    EFBIG) on a one-process run that resumes from a step-2 checkpoint: its step-4 save fails, the run
    exits 4 with the cause, the directory and the intact `latest`, no traceback."""
    import resource

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "smaug.train",
        "--config",
        QS,
        "--out",
        str(out),
        *overrides(synthetic_shards, "ckpt.every=2"),
    ]
    env = launcher_env(out)
    r = subprocess.run(cmd + ["train.steps=2"], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    r = subprocess.run(
        cmd + ["train.steps=4"], capture_output=True, text=True, timeout=600, env=env, cwd=REPO, preexec_fn=limit
    )
    assert r.returncode == 4, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    ck = out / "checkpoints"
    assert f"[smaug] stopped: checkpoint step_00000004 could not be written to {ck}" in r.stderr, r.stderr[-4000:]
    assert "File too large" in r.stderr and "file-size limit (ulimit -f) 1048576 bytes" in r.stderr, r.stderr[-4000:]
    assert "`latest` still names step_00000002" in r.stderr and "Traceback" not in r.stderr, r.stderr[-4000:]
    assert latest(out) == "step_00000002" and not (ck / "step_00000004").exists()


# ----------------------------------------------------------------------------------------------- Slurm
def _slurm_ready() -> str:
    """'' when a local Slurm answers (started with launch/slurm_local_setup.sh when root), else why not."""
    if os.environ.get("SMAUG_TEST_SLURM", "1") == "0":
        return "SMAUG_TEST_SLURM=0"
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0:
        return ""
    if os.geteuid() != 0:
        return "no running Slurm, and setting one up (launch/slurm_local_setup.sh) needs root"
    r = subprocess.run(
        ["bash", str(REPO / "launch" / "slurm_local_setup.sh")], capture_output=True, text=True, timeout=600
    )
    if r.returncode != 0:
        return f"launch/slurm_local_setup.sh failed: {r.stdout[-1500:]}{r.stderr[-2500:]}"
    return ""


@pytest.fixture(scope="module")
def slurm():
    why = _slurm_ready()
    if why:
        if os.environ.get("SMAUG_REQUIRE_SLURM") == "1":  # .ci/run as root: a broken Slurm set-up fails CI
            pytest.fail(f"SMAUG_REQUIRE_SLURM=1 but no local Slurm: {why}")
        pytest.skip(f"NO SLURM TEST: {why}")


# the job states that are final (`man squeue`); a running job can also be SIGNALING, STAGE_OUT, REQUEUED, ...
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def sbatch(env, out_file, *args, timeout=600, signal_at: str | None = None):
    """Submit launch/pretrain_slurm.sh and wait for the job; return (job exit code, its output).

    The wait polls `scontrol show job` twice a second instead of using `sbatch --wait`, whose poll interval
    grows (2, 8, then 32 s): a 13 s job returned after 42 s. `signal_at`: once this text is in the job's
    output, `scancel --signal=USR1` has Slurm send SIGUSR1 to the tasks of the job's steps, as `--signal=USR1@T`
    does at T seconds before the time limit (without `B:`, not to the batch shell)."""
    cmd = ["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--nodes=1", f"--output={out_file}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, f"sbatch exited {r.returncode}: {r.stdout}{r.stderr}"
    job = r.stdout.strip().split(";")[0]
    deadline, rc, signalled = time.time() + timeout, None, signal_at is None
    while rc is None:
        assert time.time() < deadline, f"job {job} still running after {timeout} s"
        time.sleep(0.5)
        if not signalled and Path(out_file).exists() and signal_at in Path(out_file).read_text(errors="replace"):
            s = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True, env=env)
            assert s.returncode == 0, f"scancel --signal=USR1 {job}: {s.stdout}{s.stderr}"
            signalled = True
        info = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=env)
        state = re.search(r"JobState=(\S+)", info.stdout)
        assert state, f"scontrol show job {job}: {info.stdout}{info.stderr}"
        if state.group(1) in ENDED:
            code, sig = map(int, re.search(r" ExitCode=(\d+):(\d+)", info.stdout).groups())
            rc = code or (128 + sig if sig else 0) or int(state.group(1) != "COMPLETED")
    text = Path(out_file).read_text(errors="replace") if Path(out_file).exists() else ""
    assert signalled, f"job {job} ended before {signal_at!r} was in its output:\n{text[-4000:]}"
    return rc, f"job {job}: {state.group(1)}\njob output:\n{text}"


def test_pretrain_slurm_sigusr1_before_time_limit_saves_then_resubmission_resumes(slurm, synthetic_shards, tmp_path):
    """sbatch, 2 tasks, --time=2 --signal=USR1@20, as a user submits it; Slurm sends SIGUSR1 to both tasks
    once they train (`sbatch(signal_at=...)`: `scancel --signal=USR1`, the delivery `--signal` uses; Slurm's own
    time-limit check, every 30 s, would send it 70-100 s into the job, and the trainer's work is the same either
    way). The trainer checkpoints at the next step and the job exits 0 before its 2-minute limit; the same
    submission again resumes from that checkpoint and finishes. A signal during a rank's imports or set-up is
    kept for its first step: tests/test_train.py.

    The limit is 2 minutes, not Slurm's smallest (1): this first job took 37 s with the other core busy (as when
    the other pytest worker runs a test), and on a CI machine half as fast it could reach a 60 s limit."""
    out = tmp_path / "run"
    env = launcher_env(out, SMAUG_VENV=Path(sys.executable).parent.parent)
    args = overrides(synthetic_shards, "ckpt.every=100000")
    limit_min = 2  # the first job's --time
    t0 = time.time()
    rc, text = sbatch(
        env,
        tmp_path / "job1.out",
        f"--time={limit_min}",
        "--signal=USR1@20",
        "launch/pretrain_slurm.sh",
        *args,
        "train.steps=100000",
        signal_at="world=2",  # both ranks are past the process group's rendezvous
    )
    took = time.time() - t0
    assert rc == 0, text[-6000:]
    assert "world=2" in text and "SIGUSR1 received: checkpoint saved at step" in text, text[-4000:]
    assert took < 60 * limit_min, took  # before the time limit
    step = int(re.search(r"SIGUSR1 received: checkpoint saved at step (\d+)", text).group(1))
    assert latest(out) == f"step_{step:08d}" and len(optim_shards(out, latest(out))) == 2
    rc, text = sbatch(
        env, tmp_path / "job2.out", "--time=5", "launch/pretrain_slurm.sh", *args, f"train.steps={step + 2}"
    )
    assert rc == 0, text[-6000:]
    assert f"at step {step}" in text and "resumed from" in text, text[-4000:]
    assert latest(out) == f"step_{step + 2:08d}"
    assert loss_steps(out) == list(range(1, step + 3))
