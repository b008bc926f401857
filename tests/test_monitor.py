"""Rank-0 monitoring: JSONL records with throughput/MFU fields, and wandb in offline mode (no network)."""

import json

from smaug.config import load_config
from smaug.train.monitor import Monitor

from conftest import QS as QUICKSTART


def test_jsonl_and_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config([QUICKSTART], ["log.every=2", "log.progress=false"], output_dir=str(tmp_path))
    mon = Monitor(tmp_path, cfg, total_steps=4, start_step=0, enabled=True, peak_tflops=2.0, wandb_config=cfg.to_dict())
    assert mon.wandb is not None
    out = [mon.update(s, clips=16, flops=1e12, data_time=0.0, scalars={"loss": 5.0 - s}) for s in (1, 2, 3, 4)]
    mon.close()
    assert out[0] is None and out[1]["step"] == 2 and out[1]["loss"] == 3.5  # mean over the window
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4]
    assert all(r["clips_per_s"] > 0 and 0 <= r["data_wait_frac"] <= 1 and r["mfu"] > 0 for r in recs)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb offline run directory missing"


def test_a_key_some_steps_lack_is_the_mean_over_the_steps_that_have_it(tmp_path, monkeypatch):
    """vtm_acc_hard comes only with steps that mine negatives: averaging it over the whole window would count the
    steps without it as 0."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = load_config([QUICKSTART], ["log.every=4", "log.progress=false"], output_dir=str(tmp_path))
    mon = Monitor(tmp_path, cfg, total_steps=4, start_step=0, enabled=True, peak_tflops=2.0)
    for s in (1, 2, 3, 4):
        rec = mon.update(
            s, clips=16, flops=1e12, data_time=0.0, scalars={"loss": 1.0, **({"hard": 0.9} if s > 2 else {})}
        )
    mon.close()
    assert rec["loss"] == 1.0 and abs(rec["hard"] - 0.9) < 1e-9
