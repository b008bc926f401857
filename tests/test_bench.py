"""Smoke modes of the benches: the real step (model + DeepSpeed engine) on CPU with the tiny preset,
and the loader bench on a few synthetic clips."""

import json
import sys

import pytest

from conftest import REPO, run


def train_step_bench(*args):
    """bench/train_step.py on the CPU, in a new process (it builds its own engines and process group), forked
    from the preloaded server (tests/prefork.py)."""
    return run([sys.executable, REPO / "bench" / "train_step.py", "--device", "cpu", *args], forked=True)


# the smoke run's paths: both configs through the engine (their ratio) and SMAUG bare (the engine's overhead); each
# path is built twice (timed, then profiled), so the fourth (dense bare, timed in the skeleton run) would add a quarter
SMOKE_PATHS = (("smaug", "engine"), ("dense", "engine"), ("smaug", "bare"))


@pytest.mark.slow
def test_train_step_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    args = "--preset tiny --batch 4 --steps 1 --warmup 1 --profile-steps 1".split()
    paths = ",".join(f"{c}:{k}" for c, k in SMOKE_PATHS)
    r = train_step_bench(*args, "--paths", paths, "--json", out, "--profile", tmp_path / "prof")
    res = json.loads(out.read_text())
    assert {(c, k) for c, v in res["runs"].items() for k in v if k in ("engine", "bare")} == set(SMOKE_PATHS)
    for name, path in SMOKE_PATHS:
        v = res["runs"][name][path]
        assert v["clips_per_s"] > 0 and v["model_tflops"] > 0 and v["batch"] == 4
    # the analytic FLOPs of a SMAUG step are well below the dense step's at the same batch
    flops = {n: res["runs"][n]["engine"]["model_tflops"] * res["runs"][n]["engine"]["ms_per_step"] for n in res["runs"]}
    assert flops["smaug"] < 0.6 * flops["dense"]
    assert res["ratio_same_batch"] > 0 and "engine_overhead_smaug" in res
    assert "SMAUG/dense clips/s, same batch 4" in r.stdout
    # --profile: per-phase times of each path, and the top-op tables on disk
    for name, path in SMOKE_PATHS:
        prof = res["runs"][name][path]["profile"]
        assert set(prof["phases"]) == {"forward", "backward", "optimizer"}
        assert all(v["host_ms"] > 0 for v in prof["phases"].values())
        assert f"# {name}_{path}:" in (tmp_path / "prof" / "profiles.txt").read_text()


@pytest.mark.slow
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
        ],
        forked=True,  # its loader workers and isolated decoders start as in a fresh interpreter (tests/prefork.py)
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


@pytest.mark.slow
def test_dense_single_frame_reference_and_compiled_paths(tmp_path):
    """--dense-1f: the dense model on one frame per clip (Singularity's pre-training), timed at the same batch,
    with SMAUG's ratio against it next to the ratio against dense at --frames.
    --compile (in the same run, sharing its start-up): every path again with train.compile, ratios compiled against
    compiled and what compiling buys each path. The "eager" backend: dynamo captures each region's full graph and
    runs it as is (the bench's plumbing is under test here: 29 s alone against 73 s with aot_eager); AOT autograd
    and inductor's graph passes through the DeepSpeed engine are checked in tests/test_compile.py."""
    out = tmp_path / "d1.json"
    args = "--preset tiny --batch 2 --steps 1 --warmup 1 --dense-1f --compile default --compile-backend eager"
    r = train_step_bench(*args.split(), "--paths", "smaug:engine,dense:engine", "--json", out)
    res = json.loads(out.read_text())
    assert "errors" not in res, res.get("errors")
    assert set(res["runs"]) == {"smaug", "dense", "dense_1f"} and res["runs"]["dense_1f"]["engine"]["batch"] == 2
    assert res["ratio_same_batch"] > 0 and res["ratio_same_batch_1f"] > 0
    assert "dense (1 frame) clips/s, same batch 2" in r.stdout
    for name in ("smaug", "dense", "dense_1f"):
        assert res["runs"][name]["engine_compiled"]["clips_per_s"] > 0
        assert res["compile_speedup"][f"{name}/engine"] > 0
    assert res["ratio_same_batch_compiled"] > 0 and res["ratio_same_batch_1f_compiled"] > 0
    assert "SMAUG/dense clips/s, both compiled (same batch)" in r.stdout
    assert "compiled/eager clips/s (smaug/engine)" in r.stdout


@pytest.mark.slow
def test_train_step_bench_skeleton_cpu(tmp_path):
    """--skeleton: the base preset's parameter tensors at negligible FLOPs, bf16, on CPU (host cost).
    --engine-variants are timed here, not in the tiny smoke run, where they cost ~25 s of compute."""
    out = tmp_path / "skel.json"
    skeleton = "--preset base --skeleton --precision bf16 --batch 2".split()
    train_step_bench(*skeleton, "--steps", "1", "--warmup", "1", "--engine-variants", "--json", out)
    res = json.loads(out.read_text())
    assert res["preset"] == "base" and set(res["runs"]) == {"smaug", "dense"}
    assert all(v["engine"]["clips_per_s"] > 0 and v["bare"]["clips_per_s"] > 0 for v in res["runs"].values())
    # --engine-variants: the SMAUG engine under other ZeRO settings at the same batch
    variants = {
        "engine[zero0]",
        "engine[zero1]",
        "engine[zero2+overlap+contig]",
        "engine[bf16 check_grad_overflow=true]",
    }
    assert variants <= set(res["runs"]["smaug"])
    assert all(res["runs"]["smaug"][v]["clips_per_s"] > 0 and res["runs"]["smaug"][v]["batch"] == 2 for v in variants)
    # --interleave: engine, bare and the variants stepped round-robin (fair on a drifting host)
    train_step_bench(*skeleton, "--interleave", "2", "--engine-variants", "--json", out)
    med = json.loads(out.read_text())["interleaved_ms"]
    assert {"engine", "bare", "engine[zero0]", "engine[bf16 check_grad_overflow=true]"} <= set(med)
    assert all(v > 0 for v in med.values())


def test_every_preset_builds_a_consistent_run_config():
    """The bench's run configs are the trainer's, validated the same way: for every preset, with and without
    --skeleton, each config it can time (smaug, dense, dense_1f) loads, from the arguments of
    `python bench/train_step.py --device cpu --preset P [--skeleton] --count-ops` as the bench parses them. A
    preset that fixes its frame size (tiny: 112 px) keeps it under --skeleton, which otherwise uses 32 px."""
    sys.path.insert(0, str(REPO / "bench"))
    import train_step

    from smaug.config import model_config
    from smaug.models import PRESETS

    for preset in PRESETS:
        for skeleton in ([], ["--skeleton"]):
            args = train_step.arg_parser().parse_args(["--device", "cpu", "--preset", preset, *skeleton, "--count-ops"])
            for name in train_step.CONFIGS:
                mcfg = model_config(train_step.named_config(args, name))
                want = PRESETS[preset].get("image_size") or (32 if skeleton else mcfg.image_size)
                assert mcfg.image_size == want, (preset, skeleton, name)
                if skeleton:
                    assert mcfg.vision_width == train_step.SKELETON["vision_width"], (preset, name)


@pytest.mark.slow
def test_shipped_engine_dispatches_a_constant_number_of_ops_per_step(single_process_env):
    """Host cost of the engine: the ops DeepSpeed itself dispatches per step (beyond the model's forward and
    backward; `bench/train_step.count_engine_ops`). DeepSpeed's own ZeRO-2 methods take ~3.5 per parameter
    tensor (a grad-norm cast + norm and a bucket copy each); with smaug.train.engine_ops (the trainer installs
    it) the count no longer grows with the parameter count. DeepSpeed's bf16 per-tensor overflow check alone
    adds ~13 per tensor (it is why the JSON turns it off)."""
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    import torch
    import train_step

    train_step.setup_distributed("cpu")
    args = argparse.Namespace(preset="tiny", precision="bf16", grad_ckpt=False, frames=4, batch=2, device="cpu")
    cpu = torch.device("cpu")

    def count(**kw):
        return train_step.count_engine_ops(train_step.run_config(args, False), cpu, 2, **kw)

    shipped, deepspeed_own = count(), count(multi_tensor=False)
    overflow = count(ds_patch={"bf16": {"check_grad_overflow": True}})
    print(
        f"\nengine ops per step (tiny, {shipped['tensors']} tensors): DeepSpeed's methods {deepspeed_own['ops']}, "
        f"engine_ops {shipped['ops']}, + overflow check {overflow['ops']}"
    )
    assert deepspeed_own["per_tensor"] >= 3 and shipped["ops"] * 3 <= deepspeed_own["ops"], (shipped, deepspeed_own)
    assert shipped["per_tensor"] <= 0.5, shipped
    for site in ("get_grad_norm_direct:linalg_vector_norm", "allreduce_and_copy:copy_"):  # once per tensor
        assert deepspeed_own["by_site"][f"stage_1_and_2.py:{site}"] == deepspeed_own["tensors"], site
        assert f"stage_1_and_2.py:{site}" not in shipped["by_site"], site
    assert overflow["per_tensor"] >= shipped["per_tensor"] + 8, overflow


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_ops_step_as_deepspeeds_own_methods(single_process_env, precision):
    """smaug.train.engine_ops changes how the grad norm and the bucket copy are dispatched, not what they
    compute: the same steps from the same weights give the same clipping norm and the same weights."""
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    import torch
    import train_step

    train_step.setup_distributed("cpu")
    args = argparse.Namespace(preset="tiny", precision=precision, grad_ckpt=False, frames=4, batch=2, device="cpu")
    runs = {}
    for multi_tensor in (False, True):
        torch.manual_seed(0)
        _, engine, step = train_step.engine_step(
            train_step.run_config(args, False), torch.device("cpu"), 2, None, multi_tensor
        )
        norms = []
        for _ in range(3):
            step()
            norms.append(float(engine.get_global_grad_norm()))
        runs[multi_tensor] = norms, {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
        del engine, step
    (n0, w0), (n1, w1) = runs[False], runs[True]
    assert all(n > 0 for n in n0)
    assert n1 == pytest.approx(n0, rel=1e-6), (n0, n1)
    worst = max((w0[k].float() - w1[k].float()).abs().max().item() for k in w0)
    assert worst <= (0 if precision == "fp32" else 1e-2), worst


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
        compile="none",
        compile_backend="inductor",
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


def _fake_quickstart_run(d, motion, ctl, r1, log_recs):
    d.mkdir(parents=True)
    attrs = {"colour": 100.0, "shape": 100.0, "motion": motion, "combination": motion}
    report = {
        "protocol": {"chance_r1": 1.0},
        "results": {
            **{k: {"t2v_r1": v} for k, v in zip(("vtc", "vtm", "combined"), r1)},
            "vtm_acc": 0.9,
            "vtm_pos_frac": 0.05,
        },
        "attributes": {
            "r1_ceiling": 12.0,
            "chance": {"colour": 33.8, "shape": 33.8, "motion": 25.7, "combination": 9.6},
            "rankings": {"vtc": attrs},
            "frozen_frame_control": {"vtc": {**attrs, "motion": ctl}},
        },
    }
    (d / "eval.json").write_text(json.dumps(report))
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_recs))
    (d / "wall_s").write_text("300.0\n")


def test_quickstart_seeds_reads_each_run_and_gives_min_and_mean(tmp_path, capsys):
    """bench/quickstart_seeds.py --report-only: the attribute table against its control, the three R@1, the training
    VTM accuracy of the last tenth of the steps by negative kind (per-kind keys, or an older log's vtm_hard flag)."""
    sys.path.insert(0, str(REPO / "bench"))
    import quickstart_seeds

    new_log = [
        {"step": s, "vtm_acc": 0.8, "vtm_acc_hard": 0.7, "vtm_acc_uniform": 0.9, "vtm_hard": 0.5} for s in (90, 100)
    ]
    new_log.insert(0, {"step": 10, "vtm_acc": 0.6, "vtm_acc_uniform": 0.6, "vtm_hard": 0.0})
    _fake_quickstart_run(tmp_path / "smaug_s0", 90.0, 30.0, (10.0, 11.0, 12.0), new_log)
    old_log = [
        {"step": s, "vtm_acc": a, "vtm_hard": h} for s, a, h in ((10, 0.7, 0.0), (91, 0.9, 0.0), (100, 0.65, 1.0))
    ]
    _fake_quickstart_run(tmp_path / "smaug_s1", 70.0, 20.0, (8.0, 7.0, 9.0), old_log)
    assert quickstart_seeds.main(["--report-only", "--out", str(tmp_path), "--seeds", "0", "1"]) == 0
    rows = json.loads((tmp_path / "seeds.json").read_text())
    s0, s1 = rows["smaug s0"]["train"], rows["smaug s1"]["train"]
    assert (s0["vtm_acc_hard"], s0["vtm_acc_uniform"], s0["hard_from"]) == (0.7, 0.9, 90)
    assert (s1["vtm_acc_hard"], s1["vtm_acc_uniform"], s1["hard_from"]) == (0.65, 0.9, 100)
    out = capsys.readouterr().out
    line = {ln.split()[0] + " " + ln.split()[1]: ln.split()[2:] for ln in out.splitlines() if ln.startswith("smaug")}
    cols = [name for name, _ in quickstart_seeds.COLUMNS]
    assert float(line["smaug min"][cols.index("motion")]) == 70.0
    assert float(line["smaug mean"][cols.index("m-ctl")]) == 55.0  # (60 + 50) / 2
    assert float(line["smaug min"][cols.index("R1comb")]) == 9.0


def test_supervised_ceiling_trains_on_labelled_clips_and_scores_the_held_out_ones(synthetic_shards, tmp_path):
    """bench/supervised_ceiling.py: the model's video encoder with colour/shape heads, fed by the training loader on
    the single-object clips of labels.json (two-object ones skipped), scored on every single-object held-out clip."""
    from pathlib import Path

    sys.path.insert(0, str(REPO / "bench"))
    import supervised_ceiling

    corpus, out = Path(synthetic_shards["corpus"]), tmp_path / "ceiling.json"
    args = ["--data", corpus, "--tokenizer", synthetic_shards["tokenizer"], "--shards-root"]
    args += [synthetic_shards["shards_root"], "--steps", 4, "--eval-every", 2, "--batch-size", 4, "--frames", 2]
    args += ["--image-size", 32, "--patch-size", 16, "--workers", 0, "--json", out]
    assert supervised_ceiling.main([str(a) for a in args]) == 0
    curve = json.loads(out.read_text())["curve"]
    assert [r["step"] for r in curve] == [2, 4]
    seen = [r["labelled_clips_seen"] for r in curve]  # 4 clips a step, the two-object ones skipped
    assert 0 < seen[0] <= 8 and seen[0] <= seen[1] <= 16
    clips = json.loads((corpus / "labels.json").read_text())["clips"]
    held_out = sum(1 for c in clips if c["split"] == "eval" and len(c["objects"]) == 1)
    assert held_out and all(r["held_out_clips"] == held_out for r in curve)
    assert all(0 <= r[k] <= 100 for r in curve for k in ("train_colour", "train_shape", "held_out_shape"))
    args[args.index("--steps") + 1] = 2
    assert supervised_ceiling.main([str(a) for a in [*args, "--permute-channels"]]) == 0  # the shape loss alone
    assert [r["step"] for r in json.loads(out.read_text())["curve"]] == [2]
    assert supervised_ceiling.main([str(a) for a in [*args, "--encoder", "cnn"]]) == 0  # a CNN in the ViT's place
    assert [r["step"] for r in json.loads(out.read_text())["curve"]] == [2]
