"""End-to-end pre-training on synthetic shards with the real DeepSpeed engine (CPU, gloo).

Runs call `smaug.train.trainer.main(argv)` in this process (as a notebook or a sweep would; the
process group and DeepSpeed's groups are made once and reused). Others are new processes because
the process boundary is what they test: the 2-rank run (two ranks with torchrun's variables, forked
by `conftest.run_ranks`; test_prefork checks them against torchrun's, and test_launchers runs the
real launchers), the killed run of the resume test (SIGKILL), the preemption test (SIGTERM to the
process) and `python -m smaug.train`'s own exit path (test_train_config.py: the CLI refuses a bad
key with exit 2).
"""

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

import prefork
from conftest import QS, REPO, run, run_overrides, run_ranks, subprocess_env, train_in_process


@pytest.fixture(scope="session")
def train_data(synthetic_shards):
    return synthetic_shards


def train_args(data, out, *extra) -> list[str]:
    return ["--config", QS, "--out", str(out), *run_overrides(data, "train.device=cpu", *extra)]


def train_cmd(data, out, *extra) -> list[str]:
    """The command line of a run in a new process (`python -m smaug.train`)."""
    return [sys.executable, "-m", "smaug.train", *train_args(data, out, *extra)]


def train(capfd, data, out, *extra, rc=0) -> str:
    """One run in this process (`main(argv)`): asserts its exit code, returns what it printed."""
    got = train_in_process(*train_args(data, out, *extra))
    text = "".join(capfd.readouterr())
    assert got == rc, f"exit {got}\n{text[-6000:]}"
    return text


def records(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def train_losses(out):
    return [r["loss"] for r in records(out) if "loss" in r]


def module_state(out, step):
    f = Path(out) / "checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt"
    return torch.load(f, map_location="cpu", weights_only=False)["module"]


def assert_loss_falls(out, k=5):
    losses = train_losses(out)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < first - 0.1, f"loss did not fall: first {first:.3f} last {last:.3f} ({losses})"


@pytest.mark.slow
def test_train_world1_loss_falls_and_logs(train_data, tmp_path, capfd):
    out = tmp_path / "w1"
    measured = "log.peak_tflops=0"  # run_overrides gives one
    text = train(
        capfd, train_data, out, "train.steps=24", "ckpt.every=100", "eval.every=12", "eval.num_frames=6", measured
    )
    assert re.search(r"peak=\d+\.\d TFLOP/s \(measured matmul on cpu\)", text), text[-3000:]  # the MFU denominator
    assert_loss_falls(out)
    rec = [r for r in records(out) if "loss" in r][-1]
    for key in (
        "vtc",
        "vtm",
        "mlm",
        "mvm",
        "lr",
        "temp",
        "clips_per_s",
        "data_wait_frac",
        "mfu",
        "visible_tokens",
        "kept_tokens",
        "selected_frames",
        "skipped_steps",
        "grad_norm",
        "vtm_acc",
    ):
        assert key in rec, key
    assert 0 <= rec["vtm_acc"] <= 1 and 0 < rec["grad_norm"] < float("inf")
    assert 0 <= rec["data_wait_frac"] <= 1 and rec["clips_per_s"] > 0
    evals = [r for r in records(out) if "eval/vtc/t2v_r1" in r]
    assert [r["step"] for r in evals] == [12, 24]
    for key in ("eval/vtm/t2v_r1", "eval/combined/t2v_r1", "eval/vtm_acc", "eval/vtm_pos_frac", "eval/chance_r1"):
        assert key in evals[-1], key
    report = json.loads((out / "eval.json").read_text())  # tools/eval_retrieval.py's report schema
    for name in ("vtc", "vtm", "combined"):
        assert {"t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_medr"} <= set(report["results"][name]), name
    assert 0 <= report["results"]["vtm_acc"] <= 1
    pr = report["protocol"]
    assert pr["frames"] == 6 and pr["k"] == 16 and pr["step"] == 24 and "chance_r1" in pr  # the protocol is recorded
    assert (out / "config.yaml").is_file() and (out / "ds_config.json").is_file()
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["zero_optimization"]["stage"] == 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000024"


@pytest.mark.slow
def test_train_world2(train_data, tmp_path, free_port):
    """Two ranks (as torchrun starts them, forked from the preloaded server, with the LOCAL_SIZE that DeepSpeed's
    launcher adds): loss falls, ZeRO-2 partitions; at exit no rank leaves DeepSpeed's shared-memory all-reduce
    buffer in /dev/shm (`trainer.teardown_distributed`)."""
    out = tmp_path / "w2"
    shm = [Path(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{free_port}_{r}") for r in (0, 1)]
    cmd = train_cmd(train_data, out, "train.steps=16", "ckpt.every=8", "ckpt.keep=1")
    run_ranks(cmd, 2, env=subprocess_env(LOCAL_SIZE=2), master_port=free_port)
    assert not [p.name for p in shm if p.exists()]  # both remain without the unlink (checked)
    assert_loss_falls(out, k=4)
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir() if p.is_dir()) == ["step_00000016"]  # keep=1 pruned step 8
    shards = sorted(p.name for p in (ck / "step_00000016").glob("*optim_states.pt"))
    assert len(shards) == 2, shards  # ZeRO-2 partitions over 2 ranks
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 8  # 4 per rank x 2 ranks


def _kill_after_checkpoint(cmd, ckpt_dir: Path, timeout=600):
    """`cmd` in a new process (forked from the preloaded server, tests/prefork.py) and session, SIGKILLed with
    its data workers once `ckpt_dir` is complete -> its exit code."""
    proc = prefork.popen(cmd, env=subprocess_env(), cwd=REPO, start_new_session=True)
    t0 = time.time()
    while not (ckpt_dir / "COMPLETE").exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the checkpoint: {prefork.output(proc)[1][-4000:]}")
        assert time.time() - t0 < timeout
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


@pytest.mark.parametrize("precision, atol, n", [("fp32", 0.0, 4), ("bf16", 2e-2, 2)])
@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(train_data, tmp_path, capfd, precision, atol, n):
    """Killed (SIGKILL) after the step-N checkpoint and resumed, a run equals an uninterrupted one at 2N.

    fp32: bitwise equal. bf16: within `atol` on every weight (bf16 rounding of the engine's
    low-precision copy; measured max |diff| is 0 on CPU, the tolerance allows other kernels).
    N = 4 resumes at the boundary of a shuffle round (data.round_batches=4), N = 2 inside one. bf16 takes
    N = 2: its CPU kernels are ~3x slower than fp32's, and each precision then covers one of the two cases.
    """
    extra = (f"train.steps={2 * n}", f"ckpt.every={n}", f"train.precision={precision}")
    ref = tmp_path / "ref"
    train(capfd, train_data, ref, *extra)
    out = tmp_path / "killed"  # a subprocess: SIGKILL is the point
    rc = _kill_after_checkpoint(train_cmd(train_data, out, *extra), out / "checkpoints" / f"step_{n:08d}")
    assert rc == -signal.SIGKILL
    assert "resumed from" in train(capfd, train_data, out, *extra)
    a, b = module_state(ref, 2 * n), module_state(out, 2 * n)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    if atol == 0.0:
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert worst <= atol, worst
    # the resumed run continued the logged sequence: same losses as the reference after step n
    ra = {r["step"]: r["loss"] for r in records(ref) if "loss" in r}
    rb = {r["step"]: r["loss"] for r in records(out) if "loss" in r}
    for s in range(n + 1, 2 * n + 1):
        assert rb[s] == pytest.approx(ra[s], abs=max(atol, 1e-6)), s


def test_sigterm_saves_and_exits_zero(train_data, tmp_path):
    """A subprocess: the signal goes to the training process, as a scheduler's preemption does."""
    out = tmp_path / "pre"
    proc = prefork.popen(
        train_cmd(train_data, out, "train.steps=10000", "ckpt.every=10000"), env=subprocess_env(), cwd=REPO
    )
    log = out / "log.jsonl"
    t0 = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None, prefork.output(proc)[1][-4000:]
        assert time.time() - t0 < 600
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=300)
    stdout = "".join(prefork.output(proc))
    assert proc.returncode == 0, stdout[-4000:]
    tag = (out / "checkpoints" / "latest").read_text().strip()
    step = int(tag.split("_")[1])
    assert step >= 2 and (out / "checkpoints" / tag / "COMPLETE").is_file()
    assert "SIGTERM received" in stdout


EARLY_SIGNAL = """
import os, runpy, signal, sys
import smaug.train.preemption as preemption
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as launch/pretrain_slurm.sh's `trap "" USR1`
catch, mode = preemption.catch_early, sys.argv[1]
def catch_then_signal():
    catch()
    if mode == "order":  # a real interpreter: nothing heavy imported yet
        sys.exit(0 if not {"torch", "deepspeed", "smaug.train.trainer"} & set(sys.modules) else 3)
    os.kill(os.getpid(), signal.SIGUSR1)  # arrives before the trainer module is even imported
preemption.catch_early = catch_then_signal
sys.argv = ["smaug.train", *sys.argv[2:]]
runpy.run_module("smaug.train", run_name="__main__", alter_sys=True)
"""


def test_a_signal_during_the_imports_is_kept_for_the_first_step(train_data, tmp_path):
    """`python -m smaug.train` catches SIGUSR1/SIGTERM from its first line, before torch is imported (a real
    interpreter checks the order); a SIGUSR1 then (forked: the rest of the run) saves at step 1, exit 0."""
    r = run([sys.executable, "-c", EARLY_SIGNAL, "order"])
    assert r.returncode == 0
    out = tmp_path / "early"
    args = train_args(train_data, out, "train.steps=3", "ckpt.every=1000")  # lost, the signal would not stop it
    r = run([sys.executable, "-c", EARLY_SIGNAL, "signal", *args], forked=True)
    assert "SIGUSR1 received: checkpoint saved at step 1, exiting" in r.stdout + r.stderr, r.stderr[-3000:]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000001"


def test_nonfinite_losses_are_skipped_then_stop_the_run(train_data, tmp_path, capfd):
    """An absurd LR blows the weights up; each non-finite loss is skipped, N in a row stop the run clearly."""
    out = tmp_path / "nan"
    text = train(
        capfd,
        train_data,
        out,
        "train.steps=50",
        "optim.lr=1e30",
        "optim.warmup_steps=0",
        "train.max_nonfinite=3",
        "ckpt.every=1000",
        rc=3,
    )
    assert "non-finite loss at step" in text and "micro-batch skipped" in text
    assert "3 non-finite losses in a row" in text and "train.max_nonfinite=3" in text


def _overflow_run(capfd, train_data, out, *extra, rc):
    """bf16 with w_vtc=1e38: the loss stays finite (~2.8e38 < fp32 max) but bf16 gradients overflow."""
    return train(
        capfd,
        train_data,
        out,
        "train.steps=3",
        "train.precision=bf16",
        "optim.warmup_steps=0",
        "model.w_vtc=1.0e+38",
        "ckpt.every=1",
        *extra,
        rc=rc,
    )


def test_nonfinite_gradients_with_a_finite_loss_stop_before_any_save(train_data, tmp_path, capfd):
    """The shipped JSON turns DeepSpeed's per-tensor bf16 overflow check off; the trainer's grad-norm
    guard must then stop the run, and no checkpoint may hold the corrupted weights."""
    out = tmp_path / "gnorm"
    text = _overflow_run(capfd, train_data, out, rc=3)
    assert "non-finite loss" not in text  # the loss was finite: only the gradients overflowed
    assert "non-finite gradient norm at or before step 1" in text and "nothing was saved" in text
    ckpts = out / "checkpoints"
    assert not ckpts.exists() or not any(p.name.startswith("step_") for p in ckpts.iterdir())


def test_nonfinite_gradients_are_skipped_and_counted_when_deepspeed_checks(train_data, tmp_path, capfd):
    """With bf16.check_grad_overflow=true DeepSpeed skips those steps; the trainer counts them."""
    ds = json.loads((REPO / "ds_configs" / "zero2_cpu.json").read_text())
    ds["bf16"]["check_grad_overflow"] = True
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    out = tmp_path / "gnorm_skip"
    assert "skipped by DeepSpeed" in _overflow_run(
        capfd, train_data, out, f"train.ds_config={tmp_path / 'ds.json'}", rc=0
    )
    recs = [x for x in records(out) if "loss" in x]
    assert recs[-1]["skipped_steps"] == 3 and all(x["loss"] < float("inf") for x in recs)


def test_gradient_accumulation_steps_once_per_accum_micro_batches(train_data, tmp_path, capfd):
    """train.grad_accum=2: each logged step consumed 2 micro-batches (clips), took one optimizer step
    (one grad norm) and the checkpoint counts optimizer steps."""
    out = tmp_path / "accum"
    train(capfd, train_data, out, "train.steps=3", "train.grad_accum=2", "ckpt.every=3")
    recs = [r for r in records(out) if "loss" in r]
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(0 < r["grad_norm"] < float("inf") for r in recs)
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 8
    state = torch.load(
        out / "checkpoints" / "step_00000003" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )
    assert state["global_steps"] == 3 and state["global_samples"] == 24


@pytest.mark.slow
def test_main_runs_twice_in_one_process(train_data, tmp_path, capfd):
    """`main(argv)` is callable from Python (a notebook, a sweep): a second run in the same process
    reuses the process group (DeepSpeed caches its groups; only `python -m smaug.train` tears it down).
    Every in-process test here relies on it; this one says so by name."""
    for i in range(2):
        train(capfd, train_data, tmp_path / f"run{i}", "train.steps=2", "optim.warmup_steps=1")
    assert all(train_losses(tmp_path / f"run{i}") for i in range(2))


def test_vtm_curriculum_ramps_a_share_of_hard_rows_and_starts_by_its_step():
    """ "auto": no hard rows until the window's pair accuracy reaches the bar or step `by_step`, whichever is first;
    then a share growing linearly over `ramp` steps to `max_share`. The start survives a checkpoint."""
    from smaug.train.trainer import VTMCurriculum

    c = VTMCurriculum("auto", 0.9, by_step=200, max_share=0.5, ramp=50)
    for step in range(10):
        c.observe(torch.tensor(0.5), step)
    assert c.update(10, "cpu", 1) is None and c.share(10) == 0.0  # bar not reached
    assert [c.share(s) for s in (199, 200, 224, 249, 399)] == [0.0, 0.01, 0.25, 0.5, 0.5]  # forced at by_step
    c.observe(torch.tensor(0.95), 20)
    assert c.update(30, "cpu", 1) == pytest.approx(0.95) and c.hard_step == 30  # the bar: earlier than by_step
    assert [c.share(s) for s in (29, 30, 54, 79, 250)] == [0.0, 0.01, 0.25, 0.5, 0.5]
    c.observe(torch.tensor(0.1), 40)  # once hard negatives are on, the window collects nothing
    assert c.window[1] == 0
    resumed = VTMCurriculum("auto", 0.9, by_step=200, max_share=0.5, ramp=50)
    resumed.load_state_dict(c.state_dict())
    assert [resumed.share(s) for s in range(400)] == [c.share(s) for s in range(400)]
    assert VTMCurriculum("hard", 0.9, 200, 0.5, 50).share(0) == 1.0  # the paper's: all rows, from the start
    assert VTMCurriculum("uniform", 0.9, 200, 0.5, 50).share(399) == 0.0
    never = VTMCurriculum("auto", 0.9, None, 1.0, 0)  # vtm_hard_by=1: only the bar starts them
    assert never.share(10**6) == 0.0


@pytest.mark.slow
def test_vtm_curriculum_and_unmasked_tail_switch_on_time_and_resume_exactly(train_data, tmp_path, capfd):
    """ "auto" VTM negatives switch from uniform to hard at the first log window whose pair accuracy
    reaches `vtm_switch_acc`, and not before (the run equals the all-uniform one bit for bit up to
    there); `train.unmasked_tail_steps` trains the last steps on every patch without MVM; a run
    resumed from a checkpoint taken mid-window (before the switch or after it) equals the
    uninterrupted one."""
    common = ["train.steps=12", "log.every=2", "ckpt.every=5", "train.unmasked_tail_steps=3"]
    train(capfd, train_data, tmp_path / "uniform", *common, "model.vtm_negatives=uniform")
    accs = [(r["step"], r["vtm_acc"]) for r in records(tmp_path / "uniform") if "vtm_acc" in r]
    thr = max(a for s, a in accs if s < 10)  # a threshold this short run reaches, before the last checkpoint
    switch_step = next(s for s, a in accs if a >= thr)
    # all rows hard at once and no forced start: the switch itself (the ramp is test_vtm_curriculum_*)
    auto = (
        *common,
        "model.vtm_negatives=auto",
        f"model.vtm_switch_acc={thr - 1e-6:.9f}",
        "model.vtm_hard_by=1",
        "model.vtm_hard_share=1",
        "model.vtm_hard_ramp=0",
    )
    text = train(capfd, train_data, tmp_path / "auto", *auto)
    assert f"hard negatives from step {switch_step + 1}" in text
    ra, ru = ([x for x in records(tmp_path / d) if "loss" in x] for d in ("auto", "uniform"))
    assert [x["vtm_hard"] for x in ra] == [float(x["step"] > switch_step) for x in ra]
    assert [x["loss"] for x in ra if x["step"] <= switch_step] == [x["loss"] for x in ru if x["step"] <= switch_step]
    assert [x["loss"] for x in ra if x["step"] > switch_step] != [x["loss"] for x in ru if x["step"] > switch_step]
    # unmasked tail: steps 10-12 see all 4 x 49 patches and skip MVM
    assert [x["visible_tokens"] for x in ra] == [48.0] * 4 + [122.0, 196.0]  # windows of 2 steps: (9, 10) is half
    assert ra[-1]["mvm"] == 0.0 and ra[0]["mvm"] > 0
    # the quickstart's train.unmasked_tail_lr: the main cosine ends at step 9, the tail restarts at the peak
    lrs = {x["step"]: x["lr"] for x in ra}
    assert lrs[8] < 0.2 * lrs[2] and lrs[10] > 2 * lrs[8]
    # resume from each checkpoint (steps 5 and 10, mid-window) -> the same weights at step 12
    ref = module_state(tmp_path / "auto", 12)
    for start in (5, 10):
        d = tmp_path / f"resume{start}"
        shutil.copytree(tmp_path / "auto", d)
        for p in (d / "checkpoints").iterdir():
            if p.is_dir() and p.name != f"step_{start:08d}":
                shutil.rmtree(p)
        (d / "checkpoints" / "latest").write_text(f"step_{start:08d}")
        train(capfd, train_data, d, *auto)
        got = module_state(d, 12)
        assert all(torch.equal(got[k], ref[k]) for k in ref), f"resume from step {start} differs"
