"""Training-step throughput: SMAUG vs dense, DeepSpeed engine vs bare PyTorch, in ONE run.

    python bench/train_step.py                                  # GPU: base preset, 64 clips + largest batch each
    python bench/train_step.py --device cpu --preset tiny --batch 4 --steps 2   # smoke mode (in the test suite)

For each config (smaug, dense) it times the real training step: `SmaugModel` (every loss)
inside the DeepSpeed ZeRO-2 engine built from the same run config the trainer uses
(bf16 + FusedAdam on GPU), and the same model stepped by bare PyTorch (AdamW fused on GPU,
bf16 autocast). It prints clips/s, model TFLOP/s, MFU against a bf16 matmul measured in
the same run, peak memory, the SMAUG/dense ratio and the engine's overhead over bare.
`--max-batch` also searches each config's largest micro-batch that fits in `--mem-limit-gib`
(80 by default, so an H200 answers for an 80 GiB card too), starting from a memory model fitted
to the same-batch run. `--profile DIR` records, after every timing (a profiler session slows
what runs after it), a torch.profiler trace of a few steps of each path at the same batch and
appends to DIR/profiles.txt where the time goes: forward / backward / optimizer phases, the
forward of each loss branch, kernel launches and host syncs per step, GPU busy fraction, and
the top ops by host and by device time (also by input shape). `--engine-variants` times the
SMAUG engine under other DeepSpeed settings (bf16 overflow check on, ZeRO-0/1, overlap_comm) at
the same batch. `--skeleton` keeps every parameter tensor of the preset but shrinks widths and
frames until FLOPs vanish: the step is then host time, so engine minus bare is DeepSpeed's
per-parameter host cost (measurable on a CPU). `--interleave N` builds the SMAUG engine, bare
and the variants first and steps them round-robin N rounds (medians): the only fair comparison
on a host whose speed drifts, such as a shared VM. `--count-ops` counts the ops the DeepSpeed engine itself
dispatches per step, with DeepSpeed's own per-tensor methods and with smaug.train.engine_ops (what the
trainer installs). `--dense-1f` adds the dense model on one frame per clip (Singularity pre-trains on one
frame) and prints SMAUG's ratios against it too. Results of H100 runs: bench/results/.
`--json FILE` writes every number.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.profiler import record_function

from smaug.train.monitor import measure_matmul_tflops
from smaug.train.trainer import compile_model, setup_distributed, step_flags

REPO = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_batch(mcfg, batch: int, text_len: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    video = torch.randint(
        0, 256, (batch, mcfg.num_frames, 3, mcfg.image_size, mcfg.image_size), dtype=torch.uint8, generator=g
    )
    ids = torch.randint(1000, mcfg.vocab_size, (batch, text_len), generator=g)
    ids[:, 0], ids[:, -1] = mcfg.cls_token_id, mcfg.sep_token_id
    return {
        "video": video.to(device),
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "is_image": torch.zeros(batch, dtype=torch.bool, device=device),
    }


def precision(args) -> str:
    """bf16 on CUDA, fp32 on CPU unless --precision says otherwise (engine and bare alike)."""
    p = getattr(args, "precision", "auto")
    return p if p != "auto" else ("bf16" if args.device == "cuda" else "fp32")


CONFIGS = {  # name -> (dense, frames; None = --frames)
    "smaug": (False, None),
    "dense": (True, None),
    "dense_1f": (True, 1),  # --dense-1f: the dense model on one frame per clip, as Singularity pre-trains
}


def compile_modes() -> tuple[str, ...]:
    """train.compile's values, read from the run config's own type (one source)."""
    import typing

    from smaug.config import TrainSection

    return typing.get_args(typing.get_type_hints(TrainSection)["compile"])


def named_config(args, name: str, compiled: bool = False):
    """`run_config` of a CONFIGS entry."""
    dense, frames = CONFIGS[name]
    return run_config(args, dense, frames, compiled)


def run_config(args, dense: bool, frames: int | None = None, compiled: bool = False):
    """The trainer's own RunConfig, so the engine here is configured exactly as in training; `compiled`: with
    train.compile = --compile (else none)."""
    from smaug.config import load_config
    from smaug.models import PRESETS

    ov = [
        f"model.preset={args.preset}",
        f"model.dense={str(dense).lower()}",
        f"model.grad_checkpointing={str(args.grad_ckpt).lower()}",
        f"data.num_frames={frames or args.frames}",
        f"data.batch_size={args.batch}",
        "data.train_shards=unused",
        # throughput of random weights (the step costs the same); the vocabulary is BERT-base's, never loaded
        "model.allow_random_init=true",
        "model.tokenizer=bert-base-uncased",
        f"train.precision={precision(args)}",
        f"train.device={args.device}",
        f"train.compile={args.compile if compiled else 'none'}",
    ]
    # the frame size: the preset's where it fixes one (the run config must agree with it), else the skeleton's
    # 32 px or the data's default
    fixed_size = PRESETS[args.preset].get("image_size")
    if getattr(args, "skeleton", False):  # the preset's parameter tensors, next to no FLOPs: the step is host time
        ov += [
            f"data.image_size={fixed_size or 32}",
            *(f"model.{k}={v}" for k, v in SKELETON.items()),
        ]
    elif fixed_size:
        ov.append(f"data.image_size={fixed_size}")
    return load_config([str(REPO / "smaug" / "configs" / "base.yaml")], ov, output_dir="/tmp/smaug-bench")


# --skeleton: every parameter tensor of the preset (449 for SMAUG base) at width 64 and 32 px frames (a preset that
# fixes its frame size, as tiny does, keeps it)
SKELETON = dict(
    vision_width=64,
    vision_heads=2,
    decoder_width=32,
    decoder_heads=2,
    text_width=64,
    text_heads=2,
    text_intermediate=128,
    embed_dim=32,
)


def timed(step, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - t) / iters


def build_model(cfg, device):
    """The preset's SmaugModel, initialised directly on `device` (seconds less per engine than a CPU
    init of 200M parameters: the --max-batch search builds one per probe)."""
    from smaug.config import model_config
    from smaug.models import SmaugModel

    torch.manual_seed(0)
    mcfg = model_config(cfg)
    with torch.device(device):
        model = SmaugModel(mcfg)
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return mcfg, model


# --engine-variants: DeepSpeed settings timed against the shipped ds_configs/zero2_gpu.json
ENGINE_VARIANTS = {
    "bf16 check_grad_overflow=true": {"bf16": {"check_grad_overflow": True}},  # DeepSpeed's default
    "zero2+overlap+contig": {"zero_optimization": {"overlap_comm": True, "contiguous_gradients": True}},
    "zero1": {"zero_optimization": {"stage": 1}},
    "zero0": {"zero_optimization": {"stage": 0}},
}


def merged(base: dict, patch: dict) -> dict:
    """`base` with `patch` merged in, dicts recursively."""
    out = dict(base)
    for k, v in patch.items():
        out[k] = merged(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def engine_step(
    cfg, device, batch_size, ds_patch: dict | None = None, multi_tensor: bool = True, backend: str = "inductor"
):
    import deepspeed

    from smaug.train import engine_ops
    from smaug.train.ds_config import build_ds_config
    from smaug.train.optim import param_groups

    cfg.data.batch_size = batch_size
    mcfg, model = build_model(cfg, device)
    ds = build_ds_config(cfg, world_size=1, device=device.type)
    ds = merged(ds, ds_patch or {})
    # as the trainer: the multi-tensor grad norm and bucket copy (multi_tensor=False: DeepSpeed's own methods)
    if multi_tensor:
        engine_ops.install()
    else:
        engine_ops.uninstall()
    compile_model(model, cfg, backend)  # as the trainer (train.compile; traced at the first step)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=ds
    )
    batch = make_batch(mcfg, batch_size, 32, device)

    def step():  # as Trainer.train_step: forward, the non-finite/preemption flags (one sync), backward, step
        with record_function("phase:forward"):
            out = engine(batch)
            step_flags(out.loss, False)
        with record_function("phase:backward"):
            engine.backward(out.loss)
        with record_function("phase:optimizer"):
            engine.step()

    return mcfg, engine, step


def bare_step(cfg, device, batch_size, backend: str = "inductor"):
    cfg.data.batch_size = batch_size
    mcfg, model = build_model(cfg, device)
    model.to(device)
    from smaug.train.optim import param_groups

    opt = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        fused=device.type == "cuda",
    )
    compile_model(model, cfg, backend)
    batch = make_batch(mcfg, batch_size, 32, device)
    use_amp = cfg.train.precision == "bf16"  # the engine holds bf16 weights; bare autocasts fp32 weights

    def step():
        with record_function("phase:forward"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(batch)
        with record_function("phase:backward"):
            out.loss.backward()
        with record_function("phase:optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

    return mcfg, model, step


SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::_local_scalar_dense")
LAUNCH_OPS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


MODULE_LABELS = ("forward_video", "encode_text", "forward_vtm", "forward_mlm", "forward_mvm")


@contextlib.contextmanager
def module_labels():
    """Label SmaugModel's loss branches (forward only) for the profiler: `module:<method>` ranges."""
    from smaug.models import SmaugModel

    saved = {m: getattr(SmaugModel, m) for m in MODULE_LABELS}

    def labelled(name, fn):
        @functools.wraps(fn)
        def run(*a, **kw):
            with record_function(f"module:{name}"):
                return fn(*a, **kw)

        return run

    for m, fn in saved.items():
        setattr(SmaugModel, m, labelled(m, fn))
    try:
        yield
    finally:
        for m, fn in saved.items():
            setattr(SmaugModel, m, fn)


def profile_step(step, device, steps: int, out_dir: Path, name: str) -> dict:
    """Where the time of `steps` steps goes: per-phase and per-loss-branch host/device ms, launches
    and syncs per step, GPU busy fraction; top-op tables (also by input shape) are appended to
    `out_dir/profiles.txt` (one file for every path: a GPU check brings back only a few files)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    t = time.perf_counter()
    with module_labels(), profile(activities=acts, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        sync(device)
    wall_ms = (time.perf_counter() - t) * 1e3 / steps
    avgs = prof.key_averages()

    def dev_us(e) -> float:  # the attribute was renamed from cuda_* to device_* in torch 2.4
        return float(getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0)))

    res = {"wall_ms_per_step_profiled": wall_ms, "phases": {}, "modules": {}}
    for e in avgs:
        for prefix, key in (("phase:", "phases"), ("module:", "modules")):
            if e.key.startswith(prefix):
                res[key][e.key[len(prefix) :]] = {
                    "host_ms": e.cpu_time_total / 1e3 / steps,
                    "device_ms": dev_us(e) / 1e3 / steps,
                }
    counts = {e.key: e.count for e in avgs}
    res["launches_per_step"] = sum(counts.get(k, 0) for k in LAUNCH_OPS) / steps
    res["syncs_per_step"] = {k: counts[k] / steps for k in SYNC_OPS if k in counts}
    if cuda:
        kernel_us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
        res["kernel_ms_per_step"] = kernel_us / 1e3 / steps
        res["gpu_busy_fraction"] = res["kernel_ms_per_step"] / wall_ms
    tables = [
        f"\n\n# {name}: {wall_ms:.1f} ms/step under the profiler, {steps} steps\n",
        json.dumps(res, indent=1),
        "\n## top ops by self host time\n",
        avgs.table(sort_by="self_cpu_time_total", row_limit=30),
    ]
    if cuda:
        tables += ["\n## top ops by self device time\n", avgs.table(sort_by="self_device_time_total", row_limit=40)]
    by = "self_device_time_total" if cuda else "self_cpu_time_total"
    tables += [
        f"\n## top ops by {by}, by input shape\n",
        prof.key_averages(group_by_input_shape=True).table(
            sort_by=by, row_limit=40, max_name_column_width=40, max_shapes_column_width=90
        ),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "profiles.txt", "a") as f:
        f.write("".join(tables))
    return res


@contextlib.contextmanager
def built(kind: str, cfg, device, batch_size: int, ds_patch: dict | None = None, backend: str = "inductor"):
    """(model or engine, step) of one path; freed on exit, also after an OOM, so the next
    measurement starts from an empty device. backend: torch.compile's, when cfg.train.compile is set."""
    holder = step = None
    try:
        if kind == "engine":
            _, holder, step = engine_step(cfg, device, batch_size, ds_patch, backend=backend)
        else:
            _, holder, step = bare_step(cfg, device, batch_size, backend)
        yield holder, step
    finally:
        release(holder)
        del holder, step
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


VIEW_OPS = {
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
}  # metadata only: no kernel, not counted


def count_engine_ops(cfg, device, batch_size: int, ds_patch: dict | None = None, multi_tensor: bool = True) -> dict:
    """The ops DeepSpeed itself dispatches in one training step (after a warm-up step): every non-view aten op
    whose innermost smaug / bench / DeepSpeed stack frame is DeepSpeed's, except engine.backward running
    autograd (the model's own backward). -> {"ops", "tensors", "per_tensor", "by_site": {"file:function:op": n}}."""
    from collections import Counter

    import deepspeed
    from torch.utils._python_dispatch import TorchDispatchMode

    import smaug

    def prefix(module) -> str:  # a package's folder by path, not a substring (a clone may be named smaug)
        return os.path.dirname(os.path.realpath(module.__file__)) + os.sep

    own, ds = (prefix(smaug), os.path.dirname(os.path.realpath(__file__)) + os.sep), prefix(deepspeed)
    real = functools.lru_cache(maxsize=None)(os.path.realpath)

    class EngineOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = str(func.overloadpacket).removeprefix("aten.")
            if op not in VIEW_OPS:
                for f in reversed(traceback.extract_stack()[:-2]):
                    path = real(f.filename)
                    if path.startswith(own):
                        break  # the model's forward, or its backward run by autograd
                    if path.startswith(ds):
                        if not f.filename.endswith(("engine.py", "nvtx.py")):  # engine.backward: autograd
                            self.count[f"{os.path.basename(f.filename)}:{f.name}:{op}"] += 1
                        break
            return func(*args, **(kwargs or {}))

    _, engine, step = engine_step(cfg, device, batch_size, ds_patch, multi_tensor)
    try:
        step()
        mode = EngineOps()
        with mode:
            step()
        tensors = sum(1 for p in engine.module.parameters() if p.requires_grad)
        ops = sum(mode.count.values())
        return {"ops": ops, "tensors": tensors, "per_tensor": ops / tensors, "by_site": dict(mode.count.most_common())}
    finally:
        del engine, step
        gc.collect()


def measure(kind, cfg, device, batch_size, args, ds_patch: dict | None = None) -> dict:
    """Time `args.steps` steps after `args.warmup`; clips/s, model TFLOP/s, peak memory."""
    cuda = device.type == "cuda"
    if cuda:  # here, not only in built(): after an OOM the traceback held the last path until now
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")  # a leak between runs shows here
    with built(kind, cfg, device, batch_size, ds_patch, args.compile_backend) as (holder, step):
        static = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")  # before any activation
        sec = timed(step, device, args.warmup, args.steps)
        model = holder.module if kind == "engine" else holder
        flops = model.train_flops(batch_size, 32)
        del model
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {
        "ms_per_step": sec * 1e3,
        "clips_per_s": batch_size / sec,
        "model_tflops": flops / sec / 1e12,
        "peak_gib": peak,
        "batch": batch_size,
        "allocated_before_gib": before,
        "static_gib": static,
    }


def profile_path(kind, cfg, device, batch_size, args, name: str) -> dict:
    """Profile a freshly built path after every timing is done: a torch.profiler session (with
    record_shapes) leaves per-op overhead behind in this process, which would slow whatever is
    timed after it (the first H100 runs timed bare PyTorch after profiling the engines)."""
    with built(kind, cfg, device, batch_size, backend=args.compile_backend) as (_, step):
        for _ in range(2):
            step()
        return profile_step(step, device, args.profile_steps, Path(args.profile), name)


def release(holder) -> None:
    """Free an engine: its ZeRO optimizer hooks each parameter's grad accumulator (C++ objects the
    cyclic GC cannot see through), so a dropped engine is never collected, and every engine built
    by the --max-batch search would keep its weights, gradients and optimizer state on the device."""
    if holder is not None and hasattr(holder, "destroy"):
        holder.destroy()


OOM_MARKERS = ("out of memory", "ALLOC_FAILED")  # cuBLAS/cuDNN workspace failures are RuntimeErrors, not OOM errors


def fits(cfg, device, batch_size, args) -> bool:
    try:
        # 4 steps: the caching allocator's footprint grows over the first few (fragmentation)
        measure("engine", cfg, device, batch_size, argparse.Namespace(**{**vars(args), "warmup": 2, "steps": 2}))
        return True
    except torch.cuda.OutOfMemoryError:
        pass
    except RuntimeError as exn:
        if not any(m in str(exn) for m in OOM_MARKERS):
            raise
    print(f"  batch {batch_size}: does not fit", flush=True)  # the next measure() frees its memory
    return False


def largest_batch(cfg, device, start: int, args, grow: float = 2.0) -> int:
    """Largest micro-batch (a multiple of 8, within 1/16) whose engine step fits: from `start`, step
    by x`grow` up while it fits (or down while it does not) to bracket the limit, then bisect.
    `start` is a guess: --batch (grow 2), or the memory model's estimate (grow ~1.15, few probes)."""

    def r8(x: float) -> int:
        return max(8, int(x) // 8 * 8)

    lo, hi, b = 0, None, r8(min(start, args.max_batch_cap))
    while True:  # bracket: lo fits (0: none yet), hi does not
        if fits(cfg, device, b, args):
            lo = b
            if hi is not None:
                break
            b = min(max(r8(b * grow), b + 8), r8(args.max_batch_cap))
            if b <= lo:  # the cap fits
                return lo
        else:
            hi = b
            if lo > 0 or b == 8:
                break
            b = min(r8(b / grow), b - 8)
    while hi - lo > max(8, lo // 16):
        mid = r8((lo + hi) // 2)
        if mid <= lo:
            break
        if fits(cfg, device, mid, args):
            lo = mid
        else:
            hi = mid
    return lo


def estimate_max_batch(run: dict, limit_gib: float) -> int:
    """Largest batch a linear memory model allows, from one measured engine run: what the engine holds
    before its first step (weights, fp32 master, Adam moments, flat gradient buffers) is fixed, the
    rest of the peak scales with the batch. Conservative (batch-independent transients count as
    per-clip), so the search then steps up from it."""
    per_clip = (run["peak_gib"] - run["static_gib"]) / run["batch"]
    return int((limit_gib * 0.97 - run["static_gib"]) / per_clip) if per_clip > 0 else 0


def interleaved(args, device, rounds: int) -> dict:
    """SMAUG at --batch: the shipped engine, bare PyTorch and every --engine-variants engine, all built
    first, then stepped round-robin for `rounds` rounds; median ms per step of each. On a host whose
    speed drifts (a shared VM), only an interleaved comparison is fair."""
    steps = {
        "engine": engine_step(run_config(args, False), device, args.batch)[2],
        "bare": bare_step(run_config(args, False), device, args.batch)[2],
    }
    if args.engine_variants:
        for vname, patch in ENGINE_VARIANTS.items():
            steps[f"engine[{vname}]"] = engine_step(run_config(args, False), device, args.batch, patch)[2]
    times: dict[str, list[float]] = {k: [] for k in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            t = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\ninterleaved, smaug, batch {args.batch}, {rounds} rounds (median ms/step; x bare):")
    for k, v in med.items():
        print(f"  {k:34} {v:8.1f}  {v / med['bare']:5.2f}x")
    return med


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--preset", default="base", choices=["tiny", "base"])
    p.add_argument("--batch", type=int, default=64, help="clips per step for the same-batch comparison")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing on (off: faster, more memory)")
    p.add_argument("--max-batch", action="store_true", help="also search each config's largest micro-batch (GPU)")
    p.add_argument("--max-batch-cap", type=int, default=1024)
    p.add_argument(
        "--mem-limit-gib",
        type=float,
        default=80.0,
        help="GPU memory the --max-batch search may use (default 80: the issue's 80 GiB)",
    )
    p.add_argument("--no-bare", action="store_true", help="skip the bare-PyTorch comparison")
    p.add_argument(
        "--paths",
        default="smaug:engine,dense:engine,smaug:bare,dense:bare",
        help="which same-batch measurements to run (config:path, comma-separated)",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="profile each path at --batch and append its top-op tables to DIR/profiles.txt",
    )
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument(
        "--skeleton",
        action="store_true",
        help="the preset's parameter structure at negligible compute (width 64, 32 px unless the preset fixes "
        "its frame size): engine vs bare "
        "then measures the engine's per-parameter host cost, on CPU too",
    )
    p.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only: build the SMAUG engine, bare and the variants, step them round-robin, print medians",
    )
    p.add_argument(
        "--engine-variants",
        action="store_true",
        help="also time the SMAUG engine with other DeepSpeed settings at --batch (ENGINE_VARIANTS)",
    )
    p.add_argument(
        "--count-ops",
        action="store_true",
        help="only: ops the DeepSpeed engine dispatches per step, SMAUG and dense, with DeepSpeed's own "
        "per-tensor methods and with smaug.train.engine_ops (CPU is enough: use --skeleton)",
    )
    p.add_argument(
        "--dense-1f",
        action="store_true",
        help="also the dense model on ONE frame per clip (Singularity pre-trains on one frame): timed at "
        "--batch (and at its largest batch with --max-batch), SMAUG/dense_1f ratios printed",
    )
    p.add_argument(
        "--compile",
        default="none",
        choices=compile_modes(),
        help="also time every --paths path (and each config at its eager largest batch with --max-batch) with "
        "train.compile=MODE, next to the eager ones: paths <path>_compiled, ratios *_compiled",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled paths (aot_eager / eager: the same graphs, no kernels; tests)",
    )
    p.add_argument("--json", default=None, help="write all numbers here")
    return p


def main(argv=None) -> int:
    p = arg_parser()
    args = p.parse_args(argv)
    device = torch.device(args.device)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    setup_distributed(args.device)  # the trainer's own: a plain run becomes world size 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    cuda = device.type == "cuda"
    if cuda and args.mem_limit_gib > 0:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.mem_limit_gib * 2**30 / total))
    peak = measure_matmul_tflops(device, n=8192 if cuda else 512, iters=20 if cuda else 3, warmup=3)
    print(f"device: {name}; measured {'bf16' if device.type == 'cuda' else 'fp32'} matmul {peak:.1f} TFLOP/s")
    if args.count_ops:
        counts = {}
        for cfg_name in ("smaug", "dense"):
            for variant in ("deepspeed", "engine_ops"):
                cfg = named_config(args, cfg_name)
                c = count_engine_ops(cfg, device, args.batch, multi_tensor=variant == "engine_ops")
                counts[f"{cfg_name}/{variant}"] = c
                print(
                    f"engine ops per step, {cfg_name:5} {variant:10}: {c['ops']:6d} "
                    f"({c['per_tensor']:.2f} per parameter tensor, {c['tensors']} tensors)",
                    flush=True,
                )
        for cfg_name in ("smaug", "dense"):
            a, b = counts[f"{cfg_name}/deepspeed"]["ops"], counts[f"{cfg_name}/engine_ops"]["ops"]
            print(f"{cfg_name}: {a / b:.1f}x fewer engine ops per step with smaug.train.engine_ops", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"device": name, "engine_ops": counts}, indent=2) + "\n")
        return 0
    if args.interleave:
        med = interleaved(args, device, args.interleave)
        if args.json:
            Path(args.json).write_text(json.dumps({"device": name, "interleaved_ms": med}, indent=2) + "\n")
        return 0
    res = {
        "device": name,
        "matmul_tflops": peak,
        "preset": args.preset,
        "frames": args.frames,
        "mem_limit_gib": args.mem_limit_gib if cuda else None,
        "runs": {"smaug": {}, "dense": {}, **({"dense_1f": {}} if args.dense_1f else {})},
    }
    configs = [c for c in CONFIGS if c in res["runs"]]
    print(
        f"\n{'config':8} {'path':28} {'batch':>5} {'ms/step':>9} {'clips/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}",
        flush=True,
    )

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")

    def record(cfg_name: str, path: str, v: dict) -> None:
        """Keep, print and save each number as soon as it exists: a run cut short keeps what it measured."""
        v["mfu"] = v["model_tflops"] / peak
        res["runs"][cfg_name][path] = v
        print(
            f"{cfg_name:8} {path:28} {v['batch']:5d} {v['ms_per_step']:9.1f} {v['clips_per_s']:9.1f} "
            f"{v['model_tflops']:8.2f} {v['mfu']:6.1%} {v['peak_gib']:9.1f}",
            flush=True,
        )
        save()

    def guarded(what: str, fn):
        """fn()'s result, or None after a failure, which is printed and kept in the JSON: the others
        still run (a GPU check is one prepared call: one broken path must not cost every other number)."""
        try:
            return fn()
        except Exception as exn:  # any failure: reported below and in the JSON, never swallowed
            traceback.print_exc()
            res.setdefault("errors", {})[what] = f"{type(exn).__name__}: {exn}"
            save()
            return None

    def attempt(cfg_name: str, path: str, fn) -> None:
        v = guarded(f"{cfg_name}/{path}", fn)
        if v is not None:
            record(cfg_name, path, v)

    # most important first: the same-batch ratio, then engine vs bare, the best-batch ratio, variants
    paths = [tuple(x.split(":")) for x in args.paths.split(",") if x]
    if args.dense_1f and ("dense_1f", "engine") not in paths:
        paths.append(("dense_1f", "engine"))
    for cfg_name, path in paths:
        if path not in ("engine", "bare") or cfg_name not in configs:
            p.error(f"--paths: {cfg_name}:{path} is not config:path with config {'|'.join(configs)}, path engine|bare")
    paths = [(c, k) for c, k in paths if not (k == "bare" and args.no_bare)]
    for cfg_name, path in paths:
        attempt(cfg_name, path, lambda: measure(path, named_config(args, cfg_name), device, args.batch, args))
    if args.max_batch and device.type == "cuda":
        for cfg_name in configs:

            def best():
                same = res["runs"][cfg_name].get("engine")
                est = estimate_max_batch(same, args.mem_limit_gib) if same else 0
                print(f"  {cfg_name}: memory model estimate {est} clips within {args.mem_limit_gib:g} GiB", flush=True)
                mb = (
                    largest_batch(named_config(args, cfg_name), device, est, args, grow=1.15)
                    if est >= 8
                    else largest_batch(named_config(args, cfg_name), device, args.batch, args)
                )
                print(f"  {cfg_name}: largest micro-batch within {args.mem_limit_gib:g} GiB: {mb}", flush=True)
                for _ in range(3):  # a longer timed run can still outgrow the probe: back off by ~3%
                    if mb < 8:
                        raise RuntimeError(f"not even 8 clips fit in {args.mem_limit_gib:g} GiB")
                    try:
                        return measure("engine", named_config(args, cfg_name), device, mb, args)
                    except torch.cuda.OutOfMemoryError:  # the next measure() frees this one's memory
                        mb -= max(8, mb // 32 // 8 * 8)
                        print(f"  {cfg_name}: the timed run did not fit; retrying at {mb}", flush=True)
                raise RuntimeError(f"{cfg_name}: no timed run fitted near the searched batch")

            attempt(cfg_name, "engine_max", best)
    if args.compile != "none":  # the same paths compiled; the first (warm-up) step compiles
        for cfg_name, path in paths:
            attempt(
                cfg_name,
                f"{path}_compiled",
                lambda: measure(path, named_config(args, cfg_name, compiled=True), device, args.batch, args),
            )
        for cfg_name in configs:
            if "engine_max" in res["runs"][cfg_name]:  # at the eager largest batch (compiled holds fewer activations)
                mb = res["runs"][cfg_name]["engine_max"]["batch"]
                attempt(
                    cfg_name,
                    "engine_max_compiled",
                    lambda: measure("engine", named_config(args, cfg_name, compiled=True), device, mb, args),
                )
    if args.engine_variants:
        for vname, patch in ENGINE_VARIANTS.items():
            attempt(
                "smaug",
                f"engine[{vname}]",
                lambda: measure("engine", run_config(args, False), device, args.batch, args, patch),
            )
    if args.profile:  # last: a profiler session slows what runs after it
        todo = [(c, k, args.batch) for c, k in paths] + [  # and each config at its largest batch
            (c, "engine_max", r["engine_max"]["batch"]) for c, r in res["runs"].items() if "engine_max" in r
        ]
        for cfg_name, path, batch in todo:
            if path not in res["runs"][cfg_name]:
                continue
            pr = guarded(
                f"{cfg_name}/{path}/profile",
                lambda: profile_path(
                    path.removesuffix("_max"),
                    named_config(args, cfg_name),
                    device,
                    batch,
                    args,
                    f"{cfg_name}_{path}",
                ),
            )
            if pr is not None:
                res["runs"][cfg_name][path]["profile"] = pr
        save()
    rs, rd = res["runs"]["smaug"], res["runs"]["dense"]
    for suffix, ref in (("", rd), ("_1f", res["runs"].get("dense_1f", {}))):  # against dense at --frames / 1 frame
        for tag in ("", "_compiled"):  # eager against eager, compiled against compiled
            same, best = f"engine{tag}", f"engine_max{tag}"
            if same in rs and same in ref:
                res[f"ratio_same_batch{suffix}{tag}"] = rs[same]["clips_per_s"] / ref[same]["clips_per_s"]
            if best in rs and best in ref:
                res[f"ratio_best_batch{suffix}{tag}"] = rs[best]["clips_per_s"] / ref[best]["clips_per_s"]
    for cfg_name, r in res["runs"].items():  # what compiling buys each path
        for path in ("engine", "bare", "engine_max"):
            if path in r and f"{path}_compiled" in r:
                speedup = r[f"{path}_compiled"]["clips_per_s"] / r[path]["clips_per_s"]
                res.setdefault("compile_speedup", {})[f"{cfg_name}/{path}"] = speedup
    if args.profile:
        print(
            f"\nprofile at batch {args.batch}, engine_max at the largest batch (ms per step; tables in "
            f"{args.profile}/profiles.txt)"
        )
        print(
            f"{'config':8} {'path':10} {'forward':>14} {'backward':>14} {'optimizer':>14} {'launches':>9} "
            f"{'syncs':>6} {'GPU busy':>9}"
        )
        for cfg_name, r in res["runs"].items():
            for path in ("engine", "bare", "engine_max"):
                pr = r.get(path, {}).get("profile")
                if pr:
                    ph = {k: f"{v['host_ms']:.1f}/{v['device_ms']:.1f}" for k, v in pr["phases"].items()}
                    busy = pr.get("gpu_busy_fraction")
                    print(
                        f"{cfg_name:8} {path:10} {ph.get('forward', '-'):>14} {ph.get('backward', '-'):>14} "
                        f"{ph.get('optimizer', '-'):>14} {pr['launches_per_step']:9.0f} "
                        f"{sum(pr['syncs_per_step'].values()):6.0f} {'-' if busy is None else f'{busy:.0%}':>9}"
                    )
        print("(phase columns: host ms / device ms; syncs count host-blocking waits and .item() calls)")
        print(f"\nforward by loss branch, ms per step (device on CUDA, host on CPU): {', '.join(MODULE_LABELS)}")
        for cfg_name, r in res["runs"].items():
            for path in ("engine", "bare", "engine_max"):
                pr = r.get(path, {}).get("profile")
                if pr:
                    mods = pr.get("modules", {})
                    key = "device_ms" if device.type == "cuda" else "host_ms"
                    print(
                        f"{cfg_name:8} {path:10} "
                        + " ".join(f"{mods.get(m, {}).get(key, 0.0):8.1f}" for m in MODULE_LABELS)
                    )
    if "ratio_same_batch" in res:
        print(f"\nSMAUG/dense clips/s, same batch {args.batch}: {res['ratio_same_batch']:.2f}x")
    if "ratio_best_batch" in res:
        print(
            f"SMAUG/dense clips/s, best batch each ({rs['engine_max']['batch']} vs {rd['engine_max']['batch']}): "
            f"{res['ratio_best_batch']:.2f}x"
        )
    if "ratio_same_batch_1f" in res:
        print(
            f"SMAUG ({args.frames} frames)/dense (1 frame) clips/s, same batch {args.batch}: "
            f"{res['ratio_same_batch_1f']:.2f}x"
        )
    if "ratio_best_batch_1f" in res:
        r1 = res["runs"]["dense_1f"]["engine_max"]["batch"]
        print(
            f"SMAUG ({args.frames} frames)/dense (1 frame) clips/s, best batch each ({rs['engine_max']['batch']} "
            f"vs {r1}): {res['ratio_best_batch_1f']:.2f}x"
        )
    for key in ("ratio_same_batch_compiled", "ratio_best_batch_compiled", "ratio_same_batch_1f_compiled"):
        if key in res:
            print(
                f"SMAUG/dense{' (1 frame)' if '_1f' in key else ''} clips/s, both compiled "
                f"({'same batch' if 'same' in key else 'best batch each'}): {res[key]:.2f}x"
            )
    for what, x in res.get("compile_speedup", {}).items():
        print(f"compiled/eager clips/s ({what}): {x:.2f}x")
    if not args.no_bare:
        for cfg_name, r in res["runs"].items():
            for tag in ("", "_compiled"):
                if f"engine{tag}" not in r or f"bare{tag}" not in r:
                    continue
                ov = r[f"engine{tag}"]["ms_per_step"] / r[f"bare{tag}"]["ms_per_step"] - 1
                res[f"engine_overhead_{cfg_name}{tag}"] = ov
                print(f"engine overhead over bare PyTorch ({cfg_name}{', compiled' if tag else ''}): {ov:+.1%}")
    for what, err in res.get("errors", {}).items():
        print(f"FAILED {what}: {err}")
    save()
    return 1 if res.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
