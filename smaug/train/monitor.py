"""Rank-0 run monitoring: the trainer's log lines, tqdm progress bar, JSON-lines log, wandb, throughput and MFU."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from smaug.progress import make_progress

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name substring, first match wins
# (so the PCIe / NVL H100 parts come before the SXM one).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A6000": 155.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "4090": 165.0,
}


LOG = logging.getLogger("smaug.train")  # the trainer's messages; `setup_logging` prints them as "[smaug] ..."


class _TqdmHandler(logging.Handler):
    """Writes through `tqdm.write`, so an active progress bar stays intact; warnings and errors to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Print the trainer's log records as `[smaug] message` (idempotent: `main()` may run many times)."""
    if not any(isinstance(h, _TqdmHandler) for h in LOG.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("[smaug] %(message)s"))
        LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False  # printed once, here, whatever the caller's root logger does


def measure_matmul_tflops(device: torch.device, n: int = 1024, iters: int = 5, warmup: int = 1) -> float:
    """Measure a bf16 (CUDA) / fp32 (CPU) matmul rate: the peak for MFU where no table entry applies."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def device_peak_tflops(device: torch.device, override: float = 0.0) -> tuple[float, str]:
    """(peak TFLOP/s, where it came from)."""
    if override > 0:
        return override, "config log.peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, v in PEAK_BF16_TFLOPS.items():
            if key in name:
                return v, f"table ({name})"
    return measure_matmul_tflops(device), f"measured matmul on {device.type}"


class Monitor:
    """Collects per-step numbers on rank 0 and writes them every `every` steps."""

    def __init__(
        self,
        output_dir: str | Path,
        cfg,
        total_steps: int,
        start_step: int,
        enabled: bool,
        peak_tflops: float,
        wandb_config: Optional[dict] = None,
    ):
        self.enabled = enabled
        self.every = cfg.log.every
        self.peak = peak_tflops
        self.bar = None
        self.wandb = None
        self._reset_window()
        if not enabled:
            return
        self.path = Path(output_dir) / "log.jsonl"
        self.file = open(self.path, "a")
        if cfg.log.progress:  # a bar on a terminal, else a plain `[smaug] name: step/total ...` line every 30 s
            self.bar = make_progress(total_steps, "step", cfg.run.name, start_step, LOG.info, mininterval=1.0)
        mode = os.environ.get("WANDB_MODE") or cfg.log.wandb
        if mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.log.wandb_project,
                name=cfg.run.name,
                mode=mode,
                dir=str(output_dir),
                config=wandb_config,
                resume="allow",
            )

    def _reset_window(self):
        self.t0 = time.perf_counter()
        self.data_time = 0.0
        self.clips = 0
        self.flops = 0.0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # steps that reported each key (some keys come only with some steps)

    def update(self, step: int, clips: int, flops: float, data_time: float, scalars: dict) -> Optional[dict]:
        """Record one optimizer step; every `every` steps write a record and return it."""
        if not self.enabled:
            return None
        self.clips += clips
        self.flops += flops
        self.data_time += data_time
        for k, v in scalars.items():  # device tensors stay on the device until a record is written
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else float(v))
            self.counts[k] = self.counts.get(k, 0) + 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.every:
            return None
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rec = {
            "step": step,
            **{k: float(v) / self.counts[k] for k, v in self.sums.items()},  # the mean over the steps that had it
            "clips_per_s": self.clips / dt,
            "data_wait_frac": self.data_time / dt,
            "model_tflops": self.flops / dt / 1e12,
        }
        rec["mfu"] = rec["model_tflops"] / self.peak if self.peak else 0.0
        self._reset_window()
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{rec.get('loss', float('nan')):.3f}",
                clips_s=f"{rec['clips_per_s']:.1f}",
                data=f"{rec['data_wait_frac']:.0%}",
                refresh=False,
            )
        self.log(rec)
        return rec

    def log(self, rec: dict) -> None:
        if not self.enabled:
            return
        rec = {"time": time.time(), **rec}
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=rec.get("step"))

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()
