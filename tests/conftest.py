"""Shared pytest fixtures and helpers. Tests run on CPU with tiny presets and the real libraries.

Helpers (test files import them: `from conftest import REPO, QS, run, run_tool, subprocess_env`):
    REPO, CONFIGS, QS                 the checkout, its run configs, the quickstart config
    subprocess_env(**extra)           os.environ for a child process: CPU only, no torchrun variables
    run(cmd)                          subprocess.run that asserts exit 0 and shows the output's tail otherwise
    run_tool(tool, *args, nproc=1)    `tools/<tool>` (or a repo script path) with this interpreter / as N ranks
    run_ranks(cmd, nproc)             a command as N ranks of a one-node job, as torchrun starts them
    train_in_process(*argv)           the trainer's `main(argv)` in this process (CPU) -> exit code
    run_overrides(shards, *extra)     key=value overrides of a short CPU run on the synthetic shards
    NOT_A_VIDEO, assert_one_skip_line bytes no decoder opens; a process's stderr holds one printable skip line
Fixtures: `free_port` (a free TCP port, `smaug.dist.free_port`), `single_process_env` (torchrun's
variables for a 1-process group in this process), `data_warnings_on_stderr` (smaug.data's warnings on fd 2).

Threads: this process and every child run with the same OpenMP/torch thread count ($OMP_NUM_THREADS,
default 1), so a run resumed in-process continues a run killed in a child bit for bit.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "smaug" / "configs"
QS = str(CONFIGS / "quickstart.yaml")


os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_overrides(shards: dict, *extra) -> list[str]:
    """key=value overrides of a short test run of the quickstart config on the session's synthetic shards (the
    `synthetic_shards` fixture): batches of 4, one data worker, small shuffle rounds, a log line per step, no
    periodic evaluation, a 2-step warm-up, no unmasked tail, a given MFU peak (each run would otherwise time
    1024^3 matmuls on the CPU: ~0.2 s of every start; test_train_world1 checks the measured path); `extra`
    comes last, so it wins."""
    return [
        f"data.shards_root={shards['shards_root']}",
        f"data.train_shards={shards['train']}",
        f"data.eval_shards={shards['eval']}",
        f"model.tokenizer={shards['tokenizer']}",
        "data.batch_size=4",
        "data.num_workers=1",
        "data.round_batches=4",
        "data.shuffle_buffer=20",
        "log.every=1",
        "log.progress=false",
        "eval.every=0",
        "optim.lr=3e-4",
        "optim.warmup_steps=2",
        "train.unmasked_tail_steps=0",
        "log.peak_tflops=0.1",
        *map(str, extra),
    ]


def pytest_configure(config) -> None:
    """Torch's thread count in each process that runs tests. The pytest-xdist controller, which only hands tests out,
    does not import torch: its ~2 s would come before the workers start."""
    if config.getoption("numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _free_port() -> int:
    from smaug.dist import free_port

    return free_port()


def pytest_collection_modifyitems(items) -> None:
    """Tests marked `slow` (~5 s or more each) run first, in file order: with the suite's scheduling (tests/run.sh:
    pytest-xdist hands each worker its next test as it finishes one) the last minute is short tests on both workers,
    not one long test on one worker while the other has nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache for this test (HF_HUB_OFFLINE=1, set above), in this process:
    huggingface_hub reads HF_HUB_CACHE when it is imported, and `hf_hub_download` uses its constant at each
    call. The pretrained-tower describe caches start and end empty."""
    from huggingface_hub import constants

    from smaug.models import pretrained

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert constants.HF_HUB_OFFLINE
    pretrained.describe_vision.cache_clear()
    pretrained.describe_text.cache_clear()
    yield cache
    pretrained.describe_vision.cache_clear()
    pretrained.describe_text.cache_clear()


@pytest.fixture
def single_process_env(monkeypatch) -> None:
    """torchrun's variables for a 1-process group in this process (restored after the test; a process
    group made under them stays, and later in-process runs reuse it)."""
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", os.environ.get("MASTER_PORT") or str(_free_port()))


def subprocess_env(**extra) -> dict:
    """The environment of a child process: unbuffered, CPU only, this process's thread count, and without
    the torchrun variables (an in-process training run leaves RANK, MASTER_PORT, ... in os.environ)."""
    from smaug.dist import DIST_ENV

    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")  # OMP_NUM_THREADS: this process's
    for k in DIST_ENV:
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def checked(r: subprocess.CompletedProcess, what, check: bool = True) -> subprocess.CompletedProcess:
    """`r`, or (with `check`, on a non-zero exit) an AssertionError naming `what` with the output's tails."""
    if check and r.returncode != 0:
        raise AssertionError(f"{what} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def run(
    cmd, *, check: bool = True, timeout: float = 600, cwd=REPO, env=None, forked=False
) -> subprocess.CompletedProcess:
    """Run `cmd` (list) to completion; with `check`, a non-zero exit fails showing the output's tails.
    `forked`: a `python ...` command started from the preloaded fork server (tests/prefork.py: a new process
    without ~10 s of imports), for children whose imports are not what the test checks."""
    if forked:
        import prefork

        r = prefork.run(cmd, env=env or subprocess_env(), cwd=cwd, timeout=timeout)
    else:
        r = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env or subprocess_env(),
            cwd=cwd,
        )
    return checked(r, cmd[1:3], check)


def run_tool(
    tool: str, *args, nproc: int = 1, cwd=REPO, check: bool = True, timeout: float = 600, env=None, in_process=False
):
    """Run `tools/<tool>` (or another repo script path) with this interpreter; return the result. `nproc` > 1:
    as under torchrun, its ranks forked from the preloaded server (`prefork.run_ranks`: torchrun's variables,
    without its ~30 s of interpreter start-ups; tests of torchrun itself call it). `in_process`: a 1-process run of
    a tool as `smaug_tools.<tool>.main(argv)` in this process (`tool_in_process`), for tools whose process boundary
    is not what the test checks."""
    if in_process and nproc == 1:
        assert cwd == REPO and env is None, "an in-process tool runs in this process's directory and environment"
        return tool_in_process(tool, *args, check=check)
    script = REPO / tool if "/" in tool else REPO / "tools" / tool
    if nproc > 1:
        return run_ranks([sys.executable, script, *args], nproc, check=check, timeout=timeout, cwd=cwd, env=env)
    return run([sys.executable, script, *args], check=check, timeout=timeout, cwd=cwd, env=env)


def run_ranks(cmd, nproc: int, *, check: bool = True, timeout: float = 600, cwd=REPO, env=None, master_port=None):
    """`cmd` (`[sys.executable, ...]`) as NPROC ranks of a one-node job, as torchrun would start them
    (`prefork.run_ranks`; MASTER_PORT `master_port`, a free one by default); with `check`, a non-zero exit fails
    showing the output's tails."""
    import prefork

    env = env or subprocess_env()
    port = master_port or _free_port()
    r = prefork.run_ranks(cmd, nproc, env=env, cwd=cwd, timeout=timeout, master_port=port)
    return checked(r, f"{cmd[1:3]} x{nproc}", check)


def tool_in_process(tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """`python tools/<tool> ARGS` as `smaug_tools.<tool>.main(argv)` in this process (a child would spend ~10 s
    importing torch, timm, transformers): its exit code and what it printed, at the file-descriptor level as a
    child's (so the output of C++ code and of forked data workers is in it), as a CompletedProcess. It runs in a
    child's environment (`subprocess_env`: no torchrun variables left by an in-process training run, which the
    tool's own children would inherit), restored afterwards."""
    import importlib
    import tempfile

    main = importlib.import_module(f"smaug_tools.{Path(tool).stem}").main
    argv = [str(a) for a in args]
    saved_env, child_env = dict(os.environ), subprocess_env()
    os.environ.clear()
    os.environ.update(child_env)
    saved_fds, saved_streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for s in saved_streams:
            s.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False, errors="replace", buffering=1)
        sys.stderr = open(2, "w", closefd=False, errors="replace", buffering=1)
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse errors, sys.exit(...)
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.close()
            sys.stderr.close()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            os.environ.clear()
            os.environ.update(saved_env)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(
            [tool, *argv], rc or 0, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )
    return checked(r, tool, check)


@pytest.fixture
def forked_steps(monkeypatch):
    """The steps a fine-tuning tool runs as `python ...` children (`smaug.train.finetune.run_step`: shards,
    evaluation, training) forked from the preloaded server instead (tests/prefork.py: the same command, argv,
    environment and working directory, without ~10 s of imports each); their output goes to this process's
    descriptors when they end, where `tool_in_process` captures it. torchrun commands stay real children."""
    import types

    from smaug.train import finetune

    import prefork

    def run(cmd, env=None, **kw):
        if not prefork.ENABLED or kw or str(cmd[0]) != sys.executable or "torch.distributed.run" in cmd:
            return subprocess.run(cmd, env=env, **kw)
        r = prefork.run(cmd, env=dict(env or os.environ), cwd=os.getcwd(), timeout=3600)
        for fd, text in ((1, r.stdout), (2, r.stderr)):
            os.write(fd, text.encode())
        return r

    monkeypatch.setattr(finetune, "subprocess", types.SimpleNamespace(run=run))


def train_in_process(*argv) -> int:
    """`python -m smaug.train ARGV` as `smaug.train.trainer.main(argv)` in this process, on the CPU (the
    process group and DeepSpeed's groups are made once and reused by later runs). -> exit code."""
    from smaug.train.trainer import main

    return main([*map(str, argv), "train.device=cpu"])


def shard_eval_json(corpus: Path, out: Path, *args):
    """tools/make_shards.py on the synthetic corpus's held-out eval.json (MSRVTT layout) -> `out`."""
    return run_tool(
        "make_shards.py",
        "--json",
        corpus / "eval.json",
        "--video-root",
        corpus / "videos",
        "--out",
        out,
        "--no-progress",
        *args,
    )


# --- data fixtures (smaug.data): a tiny synthetic corpus and its shards, built once per session
# with the real command-line tools, reused by the loader, shard and trainer tests.
SYNTH_VIDEOS, SYNTH_EVAL_FRACTION, SYNTH_IMAGES = 48, 0.25, 12


def built_once(tmp_path_factory, worker_id: str, name: str, build):
    """`build(folder) -> value` (JSON-able) once per test session: under pytest-xdist the first worker that asks
    builds it in the session's shared temporary folder while the others wait on a file lock, then all reuse it
    (a session fixture is otherwise built by every worker: the corpus, its shards and the pre-trained run ~2 min
    each time). Users treat the result as read-only, as every session fixture. `-n 0`: built in this process."""
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # one per session, above each worker's own folder
    done = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            folder = root / name
            folder.mkdir()
            done.write_text(json.dumps(build(folder)), encoding="utf-8")
        return json.loads(done.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory, worker_id) -> Path:
    """Directory written by tools/make_synthetic.py (WebVid layout + eval.json + images.tsv)."""
    return Path(built_once(tmp_path_factory, worker_id, "synthetic", _make_synthetic_corpus))


def _make_synthetic_corpus(folder: Path) -> str:
    out = folder / "corpus"
    run_tool(
        "make_synthetic.py",
        "--out",
        out,
        "--num-videos",
        SYNTH_VIDEOS,
        "--eval-fraction",
        SYNTH_EVAL_FRACTION,
        "--num-images",
        SYNTH_IMAGES,
        "--seed",
        0,
        "--workers",
        2,
    )
    return str(out)


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_corpus, tmp_path_factory, worker_id) -> dict:
    """Shards of the synthetic corpus: {"shards_root", "train", "eval", "images", "tokenizer",
    "corpus"} (str paths). The root also holds corpus YAMLs `synthetic`, `synthetic_test`,
    `synthetic_images`, so `corpus:NAME` specs resolve with `shards_root`."""
    return built_once(tmp_path_factory, worker_id, "shards", lambda root: _make_shards(synthetic_corpus, root))


def _make_shards(c: Path, root: Path) -> dict:
    run_tool(
        "make_shards.py",
        "--webvid-csv",
        c / "results_2M_train.csv",
        "--video-root",
        c / "videos",
        "--out",
        root / "train",
        "--prefix",
        "synthetic",
        "--samples-per-shard",
        8,
        "--workers",
        2,
        "--no-progress",
    )
    shard_eval_json(c, root / "eval", "--prefix", "synthetic_test", "--samples-per-shard", 5)
    run_tool(
        "make_shards.py",
        "--image-list",
        c / "images.tsv",
        "--image-root",
        c,
        "--out",
        root / "images",
        "--prefix",
        "synthetic_images",
        "--samples-per-shard",
        8,
        "--no-progress",
    )
    run_tool(
        "build_tokenizer.py",
        "--shards",
        root / "train",
        "--captions",
        c / "eval.json",
        "--captions",
        c / "images.tsv",
        "--out",
        root / "tokenizer",
        "--vocab-size",
        500,
    )
    for name, sub, kind in (
        ("synthetic", "train", "video"),
        ("synthetic_test", "eval", "video"),
        ("synthetic_images", "images", "image"),
    ):
        (root / f"{name}.yaml").write_text(
            f"name: {name}\nmanifest: {sub}/manifest.json\nkind: {kind}\nweight: 1.0\n", encoding="utf-8"
        )
    return {
        "shards_root": str(root),
        "train": str(root / "train"),
        "eval": str(root / "eval"),
        "images": str(root / "images"),
        "tokenizer": str(root / "tokenizer"),
        "corpus": str(c),
    }


# --- retrieval / export fixtures (tools/eval_retrieval.py, export_hf.py, finetune_retrieval.py)
@pytest.fixture(scope="session")
def pretrained_run(synthetic_shards, tmp_path_factory, worker_id) -> Path:
    """A short tiny pre-training run (the real trainer, `main(argv)` in this process) on the synthetic
    shards, with its periodic and final zero-shot eval on the held-out split: run dir with checkpoints/
    and eval.json. LR 1e-4: at the quickstart's 1e-3 the tiny model's VTC features collapse in a few steps."""
    return Path(built_once(tmp_path_factory, worker_id, "pretrained", lambda f: _pretrain(synthetic_shards, f)))


def _pretrain(d: dict, folder: Path) -> str:
    out = folder / "run"
    rc = train_in_process(
        "--config",
        QS,
        "--out",
        out,
        *run_overrides(
            d,
            "data.batch_size=8",
            "train.steps=8",
            "train.unmasked_tail_steps=2",
            "eval.every=4",
            "ckpt.every=4",
            "optim.lr=1e-4",
            "optim.min_lr=1e-5",
        ),
    )
    assert rc == 0, f"pre-training exited {rc}"
    return str(out)


# Bytes that are not a video, with what a terminal must never be sent raw: an escape sequence, a bell, line
# breaks, each byte value from 1 to 255, then a NUL (where decord's C++ message stops quoting them).
NOT_A_VIDEO = b"\x1b[31m\x07not a video\r\n" + bytes(range(1, 256)) + b"\x00after the NUL"


def assert_one_skip_line(err: str, key: str, reason: str) -> None:
    """`err`, what a process wrote to fd 2, is printable text, and exactly one of its lines names the sample `key`:
    the skip, naming `reason`."""
    bad = [line for line in err.splitlines() if "\ufffd" in line or not line.isprintable()]
    assert not bad, f"non-printable output on fd 2: {bad[:3]!r}"
    lines = [line for line in err.splitlines() if key in line]
    assert len(lines) == 1 and reason in lines[0], err[-3000:]


@pytest.fixture
def data_warnings_on_stderr():
    """The smaug.data logger's warnings on this process's stderr, as a program without its own logging set-up
    prints them (Python's last-resort handler, which pytest's log capture replaces here)."""
    import logging

    stream = open(2, "w", closefd=False, buffering=1)  # fd 2 itself, whichever file it is when a record comes
    log, handler = logging.getLogger("smaug.data"), logging.StreamHandler(stream)
    log.addHandler(handler)
    yield
    log.removeHandler(handler)
    stream.close()
