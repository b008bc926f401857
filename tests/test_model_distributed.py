"""Global batch over 2 gloo processes, and the model under a real DeepSpeed ZeRO-2 engine."""

import os
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp

from smaug.models import SmaugConfig, SmaugModel
from smaug.models.losses import sample_negatives, vtc_loss

import prefork
from conftest import REPO, subprocess_env
from model_helpers import global_batch_worker, make_batch

# deterministic selection (no Gumbel), no random MAE mask, no random MLM masking: the only
# randomness left is negative sampling, seeded by the first RNG draw of the step
CFG = dict(mask_ratio=0.0, select_gumbel=False, w_mlm=0.0)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_over_the_concatenated_batch(tmp_path, free_port):
    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny", **CFG)
    model = SmaugModel(cfg)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    batch = make_batch(cfg, batch_size=8, text_len=12, seed=1)
    torch.manual_seed(123)
    ref = model(batch)
    (ref.losses["vtc"] + ref.losses["vtm"]).backward()
    ref_negs = model._last_negatives

    if prefork.ENABLED:  # the 2 ranks fork from the preloaded server (tests/prefork.py)
        prefork.server_context(subprocess_env())
    mp.start_processes(
        global_batch_worker,
        args=(2, free_port, CFG, str(tmp_path / "state.pt"), str(tmp_path / "out.pt")),
        nprocs=2,
        join=True,
        start_method="forkserver" if prefork.ENABLED else "spawn",
    )
    got = torch.load(tmp_path / "out.pt", weights_only=True)

    # VTC over the gathered features = VTC of one process over the whole batch, on every rank
    torch.testing.assert_close(got["vtc"], ref.losses["vtc"].detach(), rtol=1e-5, atol=1e-6)
    # the same hard negatives (global indices), drawn from the global similarity matrix
    assert torch.equal(got["negatives"][0], ref_negs[0]) and torch.equal(got["negatives"][1], ref_negs[1])
    # VTM with negatives from the other rank: mean over ranks = the one-process loss
    torch.testing.assert_close(got["vtm_mean"], ref.losses["vtm"].detach(), rtol=1e-4, atol=1e-5)
    # gradients through all_gather: the rank average (what data parallelism applies) = one process
    for n, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got["grads"][n], g, rtol=1e-3, atol=1e-5, msg=n)
    # function level, exact slices of fixed features
    g = torch.Generator().manual_seed(7)
    v = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    fvtc, sim = vtc_loss(v, t, torch.tensor(0.1))
    negs = sample_negatives(sim, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got["fn_vtc"], fvtc)
    assert torch.equal(got["fn_negs"][0], negs[0]) and torch.equal(got["fn_negs"][1], negs[1])


DS_SCRIPT = textwrap.dedent("""
    import torch, deepspeed
    from smaug.models import SmaugConfig, SmaugModel
    from model_helpers import make_batch
    torch.manual_seed(0)
    cfg = SmaugConfig.preset("tiny")
    model = SmaugModel(cfg)
    model.set_grad_checkpointing(True)
    assert model.text_encoder.mlm_head.transform.dense.weight is not None  # head present, decoder = word embeddings
    ds = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}}, "bf16": {"enabled": False}}
    deepspeed.init_distributed(dist_backend="gloo")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=ds)
    for step in range(2):
        out = engine(make_batch(cfg, batch_size=4, text_len=12, seed=step))
        engine.backward(out.loss)
        engine.step()
        assert torch.isfinite(out.loss), out.losses
    print("ZERO2_OK", float(out.loss))
""")


@pytest.mark.slow
def test_deepspeed_zero2_step_with_checkpointing_and_tied_head(tmp_path, free_port):
    """Reentrant checkpointing here fails with "Gradient computed twice for this partition"."""
    script = tmp_path / "zero2.py"
    script.write_text(DS_SCRIPT)
    env = dict(
        os.environ,
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port),
        TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "torch_extensions"),
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    res = prefork.run([sys.executable, script], env=env, cwd=REPO, timeout=600)  # forked: a fresh process, no imports
    assert res.returncode == 0 and "ZERO2_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-5000:]
    assert "computed twice" not in res.stderr
