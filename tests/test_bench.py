"""Smoke modes of the benches: the real step (model + DeepSpeed engine) on CPU with the tiny preset,
and the loader bench on a few synthetic clips."""

import json
import sys

import pytest

from conftest import REPO, run


def train_step_bench(*args):
    """bench/train_step.py on the CPU, in a new process (it builds its own engines and process group)."""
    return run([sys.executable, REPO / "bench" / "train_step.py", "--device", "cpu", *args])


def test_train_step_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    args = "--preset tiny --batch 4 --steps 1 --warmup 1 --profile-steps 1 --engine-variants".split()
    r = train_step_bench(*args, "--json", out, "--profile", tmp_path / "prof")
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
            assert f"# {name}_{path}:" in (tmp_path / "prof" / "profiles.txt").read_text()
    # --engine-variants: the SMAUG engine under other ZeRO settings at the same batch
    assert {
        "engine[zero0]",
        "engine[zero1]",
        "engine[zero2+overlap+contig]",
        "engine[bf16 check_grad_overflow=true]",
    } <= set(res["runs"]["smaug"])


def test_loader_bench_smoke(tmp_path):
    out = tmp_path / "loader.json"
    r = run(
        [
            sys.executable,
            REPO / "bench" / "loader_throughput.py",
            "--num-videos",
            "6",
            "--clips",
            "8",
            "--workers",
            "1",
            "--json",
            out,
        ]
    )
    res = json.loads(out.read_text())
    assert set(res["kinds"]) == {"raw", "reencode", "frames", "frames224"}
    for v in res["kinds"].values():
        assert v["loader_clips_per_s"] > 0 and v["bare_clips_per_s"] > 0
        assert v["cores_per_gpu"] == pytest.approx(
            res["gpu_clips_per_s"] * (1 / v["loader_clips_per_s"] + res["main_process_cpu_s_per_clip"])
        )
    assert res["main_process_cpu_s_per_clip"] > 0
    assert "cores/GPU" in r.stdout
    assert set(res["convert_clips_per_hour_per_core"]) == set(res["kinds"])
    assert min(res["convert_clips_per_hour_per_core"].values()) > 0
    assert set(res["decoders"]) == {"raw", "reencode"}
    for rates in res["decoders"].values():
        assert set(rates) == {"decord", "pyav", "torchcodec", "decord, isolated"} and min(rates.values()) > 0


def test_max_batch_search_lands_within_its_tolerance(monkeypatch):
    """`--max-batch` brackets the limit from a guess (x2 from --batch, or x1.15 from the memory
    model's estimate, up or down), then bisects: a multiple of 8 within 1/16 below the true limit,
    never above it or the cap; probes are counted (each builds an engine on the GPU)."""
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    import train_step

    args = argparse.Namespace(max_batch_cap=1024)
    for limit in (300, 64, 1000, 2000, 40, 7, 8, 555):
        for start, grow in ((64, 2.0), (int(limit * 0.9) + 1, 1.15), (int(limit * 1.2) + 1, 1.15), (1, 2.0)):
            probes = []
            monkeypatch.setattr(train_step, "fits", lambda cfg, dev, b, a, limit=limit: probes.append(b) or b <= limit)
            got = train_step.largest_batch(None, None, start, args, grow)
            want = min(limit, 1024) // 8 * 8
            assert got % 8 == 0 and want - max(8, want // 16) <= got <= want, (limit, start, got)
            assert len(probes) <= 12, (limit, start, probes)
            if grow < 2 and 64 <= limit <= 1024:  # a good estimate: a handful of probes
                assert len(probes) <= 6, (limit, start, probes)


def test_memory_model_estimate_is_close_and_conservative():
    """From one run (4 GiB held before the first step, 0.25 GiB per clip) the estimate lands a few
    percent under the batch that exactly fills the limit (304 clips in 80 GiB), never over it."""
    sys.path.insert(0, str(REPO / "bench"))
    import train_step

    run = {"peak_gib": 4.0 + 64 * 0.25, "static_gib": 4.0, "batch": 64}
    exact = (80.0 - 4.0) / 0.25
    assert 0.95 * exact <= train_step.estimate_max_batch(run, 80.0) < exact
    assert train_step.estimate_max_batch({**run, "peak_gib": 4.0}, 80.0) == 0  # no per-clip memory seen: no estimate


def test_train_step_bench_skeleton_cpu(tmp_path):
    """--skeleton: the base preset's parameter tensors at negligible FLOPs, bf16, on CPU (host cost)."""
    out = tmp_path / "skel.json"
    skeleton = "--preset base --skeleton --precision bf16 --batch 2".split()
    train_step_bench(*skeleton, "--steps", "1", "--warmup", "1", "--json", out)
    res = json.loads(out.read_text())
    assert res["preset"] == "base" and set(res["runs"]) == {"smaug", "dense"}
    assert all(v["engine"]["clips_per_s"] > 0 and v["bare"]["clips_per_s"] > 0 for v in res["runs"].values())
    # --interleave: engine, bare and the variants stepped round-robin (fair on a drifting host)
    train_step_bench(*skeleton, "--interleave", "2", "--engine-variants", "--json", out)
    med = json.loads(out.read_text())["interleaved_ms"]
    assert {"engine", "bare", "engine[zero0]", "engine[bf16 check_grad_overflow=true]"} <= set(med)
    assert all(v > 0 for v in med.values())


def test_shipped_engine_adds_few_ops_per_parameter_tensor(single_process_env):
    """Host cost of the engine: ops DeepSpeed itself dispatches per step (beyond the model's forward and
    backward) stay within a few per parameter tensor with ds_configs as shipped; DeepSpeed's bf16
    per-tensor overflow check alone adds ~13 per tensor (it is why the JSON turns it off)."""
    import argparse
    import traceback
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    sys.path.insert(0, str(REPO / "bench"))
    import torch
    import train_step

    views = {
        "view",
        "t",
        "transpose",
        "expand",
        "detach",
        "as_strided",
        "_unsafe_view",
        "alias",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "permute",
        "reshape",
    }

    import deepspeed

    import smaug

    from model_helpers import package_prefix, real_path

    own = (package_prefix(smaug), package_prefix(train_step))  # the model's and the bench's frames
    ds_prefix = package_prefix(deepspeed)

    class DeepSpeedOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func.overloadpacket).removeprefix("aten.") not in views:
                for f in reversed(traceback.extract_stack()[:-2]):
                    filename = real_path(f.filename)
                    if filename.startswith(own):
                        break  # the model's own ops (forward, or backward run by autograd)
                    if filename.startswith(ds_prefix):
                        # engine.py / nvtx.py frames are engine.backward running autograd: the model's ops
                        if not f.filename.endswith(("engine.py", "nvtx.py")):
                            self.count[f.name] += 1
                        break
            return func(*args, **(kwargs or {}))

    train_step.setup_distributed("cpu")
    args = argparse.Namespace(preset="tiny", precision="bf16", grad_ckpt=False, frames=4, batch=2, device="cpu")
    per_tensor = {}
    for name, patch in (("shipped", None), ("overflow check", {"bf16": {"check_grad_overflow": True}})):
        _, engine, step = train_step.engine_step(train_step.run_config(args, False), torch.device("cpu"), 2, patch)
        step()
        mode = DeepSpeedOps()
        with mode:
            step()
        per_tensor[name] = sum(mode.count.values()) / sum(1 for p in engine.module.parameters() if p.requires_grad)
    assert per_tensor["shipped"] <= 4, per_tensor
    assert per_tensor["overflow check"] >= per_tensor["shipped"] + 8, per_tensor


def test_measure_frees_each_engine(monkeypatch, single_process_env):
    """bench/train_step.measure() releases the engine it built, also when its step raises (an OOM in
    the --max-batch search): ZeRO's grad-accumulator hooks otherwise keep every engine alive, and on a
    GPU each probe's weights and optimizer state would stay allocated and shrink the next one's room."""
    import argparse
    import gc
    import weakref

    sys.path.insert(0, str(REPO / "bench"))
    import torch
    import train_step

    train_step.setup_distributed("cpu")
    args = argparse.Namespace(
        preset="tiny",
        precision="fp32",
        grad_ckpt=False,
        frames=4,
        batch=2,
        device="cpu",
        warmup=1,
        steps=1,
        profile=None,
    )
    built = []
    real = train_step.engine_step

    def spy(*a, fail=False, **kw):
        mcfg, engine, step = real(*a, **kw)
        built.append(weakref.ref(engine.module))

        def failing():
            step()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

        return mcfg, engine, failing if fail else step

    monkeypatch.setattr(train_step, "engine_step", spy)
    train_step.measure("engine", train_step.run_config(args, False), torch.device("cpu"), 2, args)
    monkeypatch.setattr(train_step, "engine_step", lambda *a, **kw: spy(*a, fail=True, **kw))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train_step.measure("engine", train_step.run_config(args, False), torch.device("cpu"), 2, args)
    gc.collect()
    assert len(built) == 2 and all(r() is None for r in built)


def test_cls_row_bench_runs():
    """bench/cls_row.py: the [CLS]-row cost figures quoted in smaug/models/video_encoder.py."""
    sys.path.insert(0, str(REPO / "bench"))
    from cls_row import bench_cls_row

    r = bench_cls_row(64, 2, frames=2, tokens=5, iters=2)
    assert set(r) == {"sdpa", "sdpa+row", "sdpa+full_matrix"} and all(v > 0 for v in r.values())
