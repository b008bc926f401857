"""A kill during a save never leaves `latest` pointing at a broken checkpoint (real DeepSpeed, gloo)."""

import sys
import textwrap

from smaug import checkpoint as ckpt

from conftest import run

SCRIPT = textwrap.dedent(r"""
    import os, signal, sys, torch
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
    import deepspeed
    from smaug import checkpoint as ckpt
    deepspeed.init_distributed(dist_backend="gloo")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    def step():
        loss = engine(torch.randn(2, 8)).pow(2).mean(); engine.backward(loss); engine.step()
    step()
    ckpt.save(engine, sys.argv[1], 1, {"step": 1, "samples_seen": 2}, {"loader": None, "rng": ckpt.rng_state()}, keep=3)
    step()
    real_save = torch.save
    def dying_save(obj, f, *a, **k):  # write part of the file, then die like a SIGKILLed job
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(64)
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    ckpt.save(engine, sys.argv[1], 2, {"step": 2, "samples_seen": 4}, {"loader": None, "rng": ckpt.rng_state()}, keep=3)
""")


def test_kill_during_save_keeps_latest_valid(tmp_path, free_port):
    out = tmp_path / "run"
    r = run([sys.executable, "-c", SCRIPT, out, free_port], check=False, timeout=300, forked=True)
    assert r.returncode == -9, r.stderr[-3000:]
    root = ckpt.ckpt_root(out)
    assert (root / "step_00000002").is_dir() and not ckpt.is_complete(root / "step_00000002")
    assert (root / ckpt.LATEST).read_text().strip() == "step_00000001"
    assert ckpt.find_resume(out, "auto") == (root, "step_00000001")
    assert ckpt.clean_incomplete(out) == ["step_00000002"]
    assert not (root / "step_00000002").exists()


def test_latest_pointing_at_incomplete_falls_back(tmp_path):
    root = ckpt.ckpt_root(tmp_path)
    for s in (1, 2, 3):
        (root / ckpt.tag_for(s)).mkdir(parents=True)
    (root / ckpt.tag_for(1) / ckpt.MARKER).write_text("1")
    (root / ckpt.tag_for(2) / ckpt.MARKER).write_text("2")
    (root / ckpt.LATEST).write_text(ckpt.tag_for(3))  # e.g. hand-edited or a foreign writer
    assert ckpt.read_latest(root) == ckpt.tag_for(2)
    assert ckpt.find_resume(tmp_path, "none") is None
