"""tests/prefork.py: a child forked from the preloaded server behaves as a fresh interpreter running the same
command (exit codes, argv, sys.path[0], working directory, environment, output, signals, sessions, the start
method of its own worker processes)."""

import os
import signal
import subprocess
import sys
import time

import pytest

import prefork
from conftest import REPO, subprocess_env

pytestmark = pytest.mark.skipif(not prefork.ENABLED, reason="SMAUG_TEST_PREFORK=0: every child is a real interpreter")

PROBE = """
import json, multiprocessing, os, sys
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "env": os.environ.get("PROBE_VAR"),
                  "name": __name__, "sid": os.getsid(0) == os.getpid(),
                  "start_method": multiprocessing.get_start_method()}))  # how its data workers start
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def both(cmd, tmp_path, **env):
    """The same command as a real interpreter and as a forked child -> (real, forked) CompletedProcess."""
    e = subprocess_env(PROBE_VAR="x", **env)
    real = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=e, cwd=tmp_path, timeout=120)
    return real, prefork.run(cmd, env=e, cwd=tmp_path, timeout=120)


def test_forked_script_module_and_code_match_the_interpreter(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    (tmp_path / "probe_mod.py").write_text(PROBE)
    for cmd in (
        [sys.executable, script, "3", "a b"],
        [sys.executable, "-m", "probe_mod", "0", "b"],
        [sys.executable, "-c", PROBE, "5", "c"],
    ):
        real, forked = both(cmd, tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), cmd
    real, forked = both([sys.executable, "-c", "raise ValueError('boom')"], tmp_path)
    assert forked.returncode == real.returncode == 1
    assert "ValueError: boom" in forked.stderr and "Traceback" in forked.stderr


def test_forked_child_takes_signals_and_its_own_session(tmp_path):
    proc = prefork.popen(
        [sys.executable, "-c", "import os, time; print(os.getsid(0) == os.getpid(), flush=True); time.sleep(600)"],
        env=subprocess_env(),
        cwd=REPO,
        start_new_session=True,
    )
    t0 = time.time()
    while not prefork.output(proc)[0] and time.time() - t0 < 60:
        assert proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL and prefork.output(proc)[0] == "True\n"


RANKS = """
import os, sys, time
import torch
import torch.distributed as dist
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "OMP_NUM_THREADS")
# one write per line: both ranks share the pipe, and print(flush=True) under PYTHONUNBUFFERED writes the text and
# its newline apart, so two ranks' lines can interleave ("sum=3sum=3")
say = lambda line: os.write(1, (line + "\\n").encode())
say(" ".join(f"{k}={os.environ.get(k)}" for k in names))
dist.init_process_group("gloo")
if sys.argv[1] == "fail":  # rank 1 fails; rank 0 would go on for 10 minutes
    sys.exit(3) if dist.get_rank() == 1 else time.sleep(600)
x = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(x)
say(f"sum={x.item():g}")
# as the trainer does at exit: a gloo group left to the interpreter's exit can abort a rank ("terminate called
# without an active exception", SIGABRT; seen once under torchrun in CI)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_forked_ranks_see_what_torchrun_gives_them_and_a_failed_rank_stops_the_job(free_port, tmp_path):
    """prefork.run_ranks against torchrun on the same command: each rank's variables, one gloo group, the exit code;
    when rank 1 fails, rank 0 is stopped and the job fails with rank 1's code."""
    env = subprocess_env()
    env.pop("OMP_NUM_THREADS", None)
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    runs = {}
    for name, real in (("torchrun", True), ("forked", False)):
        cmd = [sys.executable, script, "ok"]
        if real:
            cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port}"]
            runs[name] = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        else:
            runs[name] = prefork.run_ranks(cmd, 2, env=env, cwd=REPO, timeout=300, master_port=free_port)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    for r in runs.values():
        lines = r.stdout.splitlines()
        for rank in (0, 1):
            want = f"RANK={rank} LOCAL_RANK={rank} WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 MASTER_ADDR=127.0.0.1 "
            assert want + "OMP_NUM_THREADS=1" in lines, (want, r.stdout)
        assert lines.count("sum=3") == 2, r.stdout
    t0 = time.time()
    failed = prefork.run_ranks(
        [sys.executable, script, "fail"], 2, env=env, cwd=REPO, timeout=300, master_port=free_port
    )
    assert failed.returncode == 3 and "sum=" not in failed.stdout and time.time() - t0 < 120
