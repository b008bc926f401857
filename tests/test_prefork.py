"""tests/prefork.py: a child forked from the preloaded server behaves as a fresh interpreter running the same
command (exit codes, argv, sys.path[0], working directory, environment, output, signals, sessions)."""

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
import json, os, sys
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "env": os.environ.get("PROBE_VAR"),
                  "name": __name__, "sid": os.getsid(0) == os.getpid()}))
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
