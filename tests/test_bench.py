"""Smoke modes of the benches: the real step (model + DeepSpeed engine) on CPU with the tiny preset,
and the loader bench on a few synthetic clips."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_train_step_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "train_step.py"), "--device", "cpu", "--preset", "tiny",
                        "--batch", "4", "--steps", "1", "--warmup", "1", "--json", str(out),
                        "--profile", str(tmp_path / "prof"), "--profile-steps", "1", "--engine-variants"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    res = json.loads(out.read_text())
    for name in ("smaug", "dense"):
        for path in ("engine", "bare"):
            v = res["runs"][name][path]
            assert v["clips_per_s"] > 0 and v["model_tflops"] > 0 and v["batch"] == 4
    # the analytic FLOPs of a SMAUG step are well below the dense step's at the same batch
    flops = {n: res["runs"][n]["engine"]["model_tflops"] * res["runs"][n]["engine"]["ms_per_step"] for n in res["runs"]}
    assert flops["smaug"] < 0.6 * flops["dense"]
    assert res["ratio_same_batch"] > 0 and "engine_overhead_smaug" in res
    assert "SMAUG/dense clips/s, same batch 4" in r.stdout
    # --profile: per-phase times of each path, and the top-op tables on disk
    for name in ("smaug", "dense"):
        for path in ("engine", "bare"):
            prof = res["runs"][name][path]["profile"]
            assert set(prof["phases"]) == {"forward", "backward", "optimizer"}
            assert all(v["host_ms"] > 0 for v in prof["phases"].values())
            assert "top ops by self host time" in (tmp_path / "prof" / f"profile_{name}_{path}.txt").read_text()
    # --engine-variants: the SMAUG engine under other ZeRO settings at the same batch
    assert {"engine[zero0]", "engine[zero1]", "engine[zero2+overlap+contig]", "engine[bf16 check_grad_overflow=true]"} <= set(res["runs"]["smaug"])


def test_loader_bench_smoke(tmp_path):
    out = tmp_path / "loader.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "loader_throughput.py"), "--num-videos", "6", "--clips", "8",
                        "--workers", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    res = json.loads(out.read_text())
    assert set(res["kinds"]) == {"raw", "reencode", "frames", "frames224"}
    for v in res["kinds"].values():
        assert v["loader_clips_per_s"] > 0 and v["bare_clips_per_s"] > 0
        assert v["cores_per_gpu"] == pytest.approx(res["gpu_clips_per_s"] * (1 / v["loader_clips_per_s"]
                                                                           + res["main_process_cpu_s_per_clip"]))
    assert res["main_process_cpu_s_per_clip"] > 0
    assert "cores/GPU" in r.stdout


def test_max_batch_search_lands_within_its_tolerance(monkeypatch):
    """`--max-batch` doubles from --batch until a step does not fit, then bisects to within 1/16."""
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    import train_step

    args = argparse.Namespace(max_batch_cap=1024)
    for limit in (300, 64, 1000, 2000, 40):
        monkeypatch.setattr(train_step, "fits", lambda cfg, dev, b, a, limit=limit: b <= limit)
        got = train_step.largest_batch(None, None, 64, args)
        want = min(limit, 1024)
        assert got <= want and got >= want - max(8, want // 16), (limit, got)
