"""New Python processes without the import bill, for tests whose child process is the point (SIGKILL, SIGTERM,
a benchmark that builds its own engines and process group) but whose imports are not.

A fresh interpreter that builds a model spends ~10 s on 2 cores importing torch, timm (which pulls in
torchvision and torch._dynamo), DeepSpeed and transformers. `popen(cmd)` instead forks a server that imported
them once per pytest worker (multiprocessing's "forkserver", with those modules preloaded); the child then
runs `cmd` as the interpreter would (`python SCRIPT ARGS`, `python -m MODULE ARGS` or `python -c CODE ARGS`):
sys.argv, sys.path[0], `__main__`, the given environment and working directory, its own session when asked (so
`os.killpg` reaches its data workers), stdout/stderr at the descriptor level, atexit handlers, and the exit
code (`sys.exit(n)`, 1 for an uncaught exception with its traceback on stderr, -N when killed by signal N).

Not for tests of what a fresh interpreter imports (test_layout, test_export_hf's "without smaug" checks) or of
installed entry points (test_packaging): those start real interpreters. SMAUG_TEST_PREFORK=0 turns it off
(every `popen` is then a plain subprocess.Popen).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

# what a model-building child imports first (the order a trainer imports them in), then what it imports later:
# DeepSpeed's first engine imports its Muon optimizer, whose torch.compile decorator imports inductor and triton
# (1.5 s on 2 cores), and the data workers import decord
PRELOAD = [
    "torch",
    "deepspeed",
    "timm",
    "transformers",
    "webdataset",
    "smaug.models",
    "smaug.train.trainer",
    "deepspeed.runtime.zero.muon.muon_optimizer",
    "decord",
]
ENABLED = os.environ.get("SMAUG_TEST_PREFORK", "1") != "0"
_ctx = None


def server_context(env: dict):
    """The forkserver context; its server is started on first use, in `env` (a child's environment, so nothing
    a preloaded module reads at import time comes from this pytest process's own variables). Also for
    torch.multiprocessing.start_processes(..., start_method="forkserver")."""
    global _ctx
    if _ctx is None:
        from multiprocessing import forkserver

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _ctx = ctx
    return _ctx


def _child(cmd: list[str], env: dict, cwd: str, out: str, err: str, new_session: bool) -> None:
    """Runs in the forked process: become `cmd`'s interpreter, then exit with its code (never returns)."""
    import atexit
    import runpy
    import traceback

    code = 1
    # The server's preloaded objects (~450k) stay shared with it: without this, every full collection here would
    # visit all of them, and the first would copy each page they sit on. The bench's gc.collect() after each path (it frees the
    # device) cost its children 14% of their CPU (83.5 -> 72.2 CPU-s for the suite's four bench runs).
    gc.freeze()
    try:
        if new_session:
            os.setsid()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        # multiprocessing made "forkserver" this process's default start method (spawn.prepare); a fresh interpreter
        # has the platform's default (fork on Linux): without this, each data worker would start a server of its own
        # that imports torch, transformers and the script again (~100 s of the suite's CPU time)
        multiprocessing.set_start_method(None, force=True)
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = open(1, "w", closefd=False, buffering=1, errors="backslashreplace")
        sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
        sys.stdin = open(os.devnull)
        import torch

        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))  # what a fresh interpreter reads at start
        args = cmd[1:]
        try:
            if args[0] == "-m":
                sys.argv = [args[1], *args[2:]]
                sys.path.insert(0, cwd)
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            elif args[0] == "-c":
                sys.argv = ["-c", *args[2:]]
                sys.path.insert(0, "")
                exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
            else:
                sys.argv = list(args)
                sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
                runpy.run_path(args[0], run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:  # sys.exit("message"): printed, exit 1, as the interpreter does
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # an uncaught exception: its traceback, exit 1, as the interpreter does
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing left to flush
                pass
        os._exit(code)


class Forked:
    """A subprocess.Popen look-alike (pid, poll, wait, kill, returncode, stdout/stderr text after exit)."""

    def __init__(self, cmd, env: dict, cwd, start_new_session: bool):
        self.args = [str(c) for c in cmd]
        self._dir = tempfile.TemporaryDirectory(prefix="prefork-")
        self._out, self._err = (os.path.join(self._dir.name, n) for n in ("stdout", "stderr"))
        for p in (self._out, self._err):  # readable (empty) before the child has opened them
            open(p, "w").close()
        self._proc = server_context(env).Process(
            target=_child, args=(self.args, env, str(cwd), self._out, self._err, start_new_session), daemon=False
        )
        self._proc.start()
        self.pid = self._proc.pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and not self._proc.is_alive():
            self.returncode = self._proc.exitcode
        return self.returncode

    def wait(self, timeout=None):
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self):
        self._proc.kill()

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) as written so far."""
        texts = []
        for p in (self._out, self._err):
            with open(p, errors="replace") as f:
                texts.append(f.read())
        return tuple(texts)


def popen(cmd, *, env: dict, cwd, start_new_session: bool = False):
    """`cmd` (`[sys.executable, ...]`) started as a forked child of the preloaded server (subprocess.Popen when
    SMAUG_TEST_PREFORK=0): -> Forked / Popen. Its output is read with `output(proc)` after it ends."""
    if not ENABLED:
        return subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            start_new_session=start_new_session,
        )
    assert str(cmd[0]) == sys.executable, "only this interpreter's commands can be forked from its server"
    return Forked(cmd, env, cwd, start_new_session)


def output(proc) -> tuple[str, str]:
    """(stdout, stderr) of an ended `popen` process."""
    if isinstance(proc, Forked):
        return proc.output()
    out, err = proc.communicate()
    return out, err


def run(cmd, *, env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
    """`popen` to completion (killed after `timeout` s) -> CompletedProcess with text stdout/stderr."""
    proc = popen(cmd, env=env, cwd=cwd)
    try:
        if isinstance(proc, Forked):
            proc.wait(timeout)
        else:
            out, err = proc.communicate(timeout=timeout)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, *proc.output())


def run_ranks(cmd, nproc: int, *, env: dict, cwd, timeout: float, master_port: int) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=NPROC cmd...` without torchrun's three interpreters: NPROC forked ranks, each with
    the variables torchrun gives a rank of a one-node job (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
    GROUP_RANK, MASTER_ADDR, MASTER_PORT; OMP_NUM_THREADS=1 unless set), rank 0 hosting the rendezvous store. As
    torchrun does, a rank that fails stops the others, and the exit code is the first failing rank's; the output
    is the ranks' outputs in rank order. With SMAUG_TEST_PREFORK=0 it is torchrun itself."""
    cmd = [str(c) for c in cmd]
    env = {"OMP_NUM_THREADS": "1", **env}
    if not ENABLED:
        run_cmd = [cmd[0], "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={master_port}"]
        return subprocess.run(
            [*run_cmd, *cmd[1:]], capture_output=True, text=True, errors="replace", timeout=timeout, env=env, cwd=cwd
        )
    common = dict(
        WORLD_SIZE=nproc, LOCAL_WORLD_SIZE=nproc, GROUP_RANK=0, MASTER_ADDR="127.0.0.1", MASTER_PORT=master_port
    )
    procs = [
        popen(cmd, env={**env, **{k: str(v) for k, v in dict(common, RANK=r, LOCAL_RANK=r).items()}}, cwd=cwd)
        for r in range(nproc)
    ]
    deadline, code = time.monotonic() + timeout, 0
    try:
        while any(p.poll() is None for p in procs):
            code = next((p.returncode for p in procs if p.poll() not in (None, 0)), 0)
            if code:
                break  # one rank failed: the others would wait for it at their next collective
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(cmd, timeout)
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    code = code or next((p.returncode for p in procs if p.returncode != 0), 0)
    outs = [p.output() for p in procs]
    return subprocess.CompletedProcess(cmd, code, "".join(o[0] for o in outs), "".join(o[1] for o in outs))
