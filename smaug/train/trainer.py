"""The pre-training loop: shards -> SmaugModel -> DeepSpeed ZeRO-2 engine.

    python -m smaug.train --config smaug/configs/quickstart.yaml --out runs/qs [key=value ...]

`main(argv)` takes a list so tests run a real training in-process or under torchrun.
Order of work: validate the whole config (no compute before that), set up distributed,
build model + engine, resume, then loop. Rank 0 logs; every rank checkpoints its shard.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from smaug import checkpoint as ckpt
from smaug.config import ConfigError, RunConfig, load_config, model_config, save_resolved
from smaug.dist import init_distributed, world
from smaug.preflight import check_paths

from . import engine_ops
from .compile import pad_captions
from .ds_config import build_ds_config, save_ds_config
from .monitor import LOG, Monitor, device_peak_tflops, setup_logging
from .optim import make_scheduler, param_groups
from .preemption import Preemption
from .prefetch import DevicePrefetcher

LOSS_KEYS = ("vtc", "vtm", "mlm", "mvm")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m smaug.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        action="append",
        required=True,
        help="YAML run config (repeatable; later files override earlier ones)",
    )
    p.add_argument("--out", default=None, help="output directory (or run.output_dir=..., or $SMAUG_OUTPUT)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 train.steps=100")
    return p.parse_intermixed_args(argv)  # overrides may come between --config files


def setup_distributed(device_kind: str) -> tuple[int, int, int]:
    """Initialise torch.distributed (`smaug.dist.init_distributed`; a plain `python -m` run becomes world
    size 1) and let DeepSpeed adopt the process group. -> (rank, world size, local rank)."""
    import deepspeed
    from deepspeed.constants import default_pg_timeout  # $DEEPSPEED_TIMEOUT minutes, as DeepSpeed's own init

    rank, world_size, device = init_distributed(device_kind, always=True, timeout=default_pg_timeout)
    backend = "nccl" if device_kind == "cuda" else "gloo"
    deepspeed.init_distributed(dist_backend=backend, timeout=default_pg_timeout)  # adopts the process group
    return rank, world_size, int(os.environ.get("LOCAL_RANK", 0))


def teardown_distributed() -> None:
    """Destroy the process group at process exit (NCCL warns, and may leak, without it), and remove this rank's
    DeepSpeed shared-memory all-reduce buffer. Only at exit: DeepSpeed caches its process groups, so a later in-process
    `main()` could not run.

    On CPU, when every rank is on one machine (LOCAL_SIZE, which DeepSpeed's launcher sets, equals the world size),
    DeepSpeed's comm op creates /dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank> (69 MB)
    and never unlinks it (deepspeed/ops/csrc/cpu/comm/shm.cpp never calls its shared_close): each such run would
    leave its ranks' buffers in memory until reboot. The other ranks' mappings outlive the name."""
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
        Path(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}").unlink(missing_ok=True)


def step_flags(loss: torch.Tensor, preempt: bool) -> tuple[float, float, float]:
    """(non-finite here, non-finite on any rank, preemption on any rank): one all-reduce and the
    trainer's only host sync per micro-batch (the model's MLM selection is the other one in a step),
    between forward and backward (a skipped micro-batch has no backward)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    g = torch.cat([bad, bad.new_full((1,), float(preempt))])
    if world()[1] > 1:
        dist.all_reduce(g, op=dist.ReduceOp.MAX)
    local, bad_any, pre_any = torch.cat([bad, g]).tolist()
    return local, bad_any, pre_any


@contextmanager
def _keep_rng(device):
    """Eval and probes must not move the training RNG (exact resume compares runs with and without them)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def compile_model(model, cfg: RunConfig, backend: str = "inductor") -> None:
    """`train.compile` != none: the training forward's regions compiled from outside the model
    (`smaug.train.compile.apply_compile`) in torch.compile's mode. Refused for a model whose forward runs no compiled
    region (QA). Called before `deepspeed.initialize`: torch.compile traces at the first training forward, after the
    engine's casts."""
    if cfg.train.compile == "none":
        return
    from smaug.models import SmaugModel

    from .compile import apply_compile

    if type(model).forward is not SmaugModel.forward:
        raise ConfigError(
            f"train.compile={cfg.train.compile}: only pre-training compiles its step; set train.compile=none"
        )
    apply_compile(model, cfg.train.compile, backend)


class VTMCurriculum:
    """Which VTM negatives the model trains on (`SmaugConfig.vtm_negatives`), as the share of each batch's rows whose
    negatives are mined (the others are uniform): "hard" 1 and "uniform" 0 from the start; "auto" 0 until the pair
    accuracy averaged over the window since the last check (and over ranks) reaches `vtm_switch_acc`, or until step
    `by_step` (`vtm_hard_by` x train.steps) whichever comes first, then a share that grows linearly over `ramp`
    steps to `max_share` and stays there. A switch to all-hard negatives at once dropped VTM to its prior (2/3) for
    the rest of the run; the ramp and the uniform rows keep a signal it learns from. Checked at log steps (one host
    sync); the start and the open window are checkpointed, so a resumed run follows the uninterrupted one."""

    def __init__(self, mode: str, switch_acc: float, by_step: int | None = None, max_share=1.0, ramp: int = 0):
        self.mode, self.switch_acc = mode, switch_acc
        self.by_step = by_step if mode == "auto" else None  # "auto" starts hard negatives by this step at the latest
        self.max_share, self.ramp = (1.0, 0) if mode == "hard" else (max_share, ramp)
        self.hard_step = 0 if mode == "hard" else None  # the step from which hard negatives are in use
        self.window = [0.0, 0]  # (sum of VTM pair accuracy, micro-batches) since the last check

    def start(self, step: int) -> int | None:
        """The step from which hard negatives are in use (None: not yet at `step`, or never)."""
        if self.mode == "uniform":
            return None
        starts = [s for s in (self.hard_step, self.by_step) if s is not None and s <= step]
        return min(starts) if starts else None

    def share(self, step: int) -> float:
        """Share of the rows with mined negatives in the forward of step `step` (0-based: steps done so far)."""
        s = self.start(step)
        if s is None:
            return 0.0
        return self.max_share * (min(1.0, (step - s + 1) / self.ramp) if self.ramp > 0 else 1.0)

    @property
    def hard(self) -> bool:
        """Hard negatives have started (the window no longer collects uniform-only evidence)."""
        return self.hard_step is not None

    def observe(self, vtm_acc: torch.Tensor, step: int) -> None:
        """A micro-batch's pair accuracy (a device scalar: no host sync), evidence while negatives are uniform."""
        if self.start(step) is None:
            self.window = [self.window[0] + vtm_acc.detach().float(), self.window[1] + 1]

    def update(self, step: int, device, world_size: int) -> float | None:
        """At a log step (`step` steps done): start hard negatives when the window's accuracy reaches the bar.
        Returns that accuracy if they start now, else None."""
        total, n = self.window
        if self.mode != "auto" or self.start(step) is not None or n == 0:
            return None
        acc = torch.as_tensor(total, dtype=torch.float32, device=device).reshape(1) / n
        if world_size > 1:
            dist.all_reduce(acc)
            acc /= world_size
        acc = float(acc)
        self.window = [0.0, 0]
        if acc < self.switch_acc:
            return None
        self.hard_step = step
        return acc

    def state_dict(self) -> dict:
        return {"vtm_hard_step": self.hard_step, "vtm_window": [float(self.window[0]), self.window[1]]}

    def load_state_dict(self, client: dict) -> None:
        self.hard_step = client.get("vtm_hard_step", self.hard_step)
        self.window = list(client.get("vtm_window", self.window))


class Trainer:
    """The pre-training run: set-up in a few named steps (`__init__`), then `run()` (steps, checkpoints, evals).
    A subclass swaps the model, the loader or the evaluation (`build_model`, `build_loader`, `evaluate`,
    `forward_state`): smaug.train.qa's VideoQA fine-tuning."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        # First: a SIGTERM/SIGUSR1 during the set-up (Slurm's --signal may come early) is kept for the first step,
        # as is one that came during the imports (`python -m smaug.train` catches them from its first line)
        self.preempt = Preemption()
        ds_cfg = self.setup_run()
        found = ckpt.find_resume(self.out, cfg.ckpt.resume)
        self.build_engine(found, ds_cfg)
        peak, peak_source = self.seed_ranks()
        loader_state = self.resume(found) if found is not None else None
        seed = cfg.run.seed if loader_state is not None or self.step == 0 else cfg.run.seed + self.step
        self.loader = self.build_loader(seed, loader_state)
        self.batches = DevicePrefetcher(self.loader, self.device)  # the copy of batch i+1 overlaps step i
        self.monitor = Monitor(
            self.out, cfg, cfg.train.steps, self.step, self.is_main, peak, wandb_config=cfg.to_dict()
        )
        self.setup_gradient_guard(ds_cfg)
        self._say(
            f"world={self.world} device={self.device} params={sum(p.numel() for p in self.model.parameters()) / 1e6:.1f}M "
            f"global_batch={cfg.data.batch_size * cfg.train.grad_accum * self.world} peak={peak:.1f} "
            f"TFLOP/s ({peak_source})"
        )

    def setup_run(self) -> dict:
        """Device, process group, the run's output dir (resolved config, DeepSpeed JSON, interrupted saves
        removed), tokenizer and model config. Returns the DeepSpeed config, derived from the run config (a
        mismatch is an error before any compute)."""
        from smaug.data import load_tokenizer, tokenizer_fields

        cfg = self.cfg
        check_paths(cfg)  # shards, tokenizer, init checkpoint, output dir: every problem now, not at step N
        kind = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        ds_cfg = build_ds_config(cfg, int(os.environ.get("WORLD_SIZE", 1)), kind)
        self.rank, self.world, self.local_rank = setup_distributed(kind)
        self.device = torch.device(kind, self.local_rank) if kind == "cuda" else torch.device("cpu")
        self.is_main = self.rank == 0
        self.out = Path(cfg.run.output_dir)
        torch.manual_seed(cfg.run.seed)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.out / "config.yaml")
            save_ds_config(ds_cfg, self.out / "ds_config.json")
            removed = ckpt.clean_incomplete(self.out)
            if removed:
                LOG.info(f"removed incomplete checkpoints: {removed}")
        dist.barrier()
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.text_init)  # text_init's own by default
        self.mcfg = model_config(cfg, **tokenizer_fields(self.tokenizer))
        m = self.mcfg
        by_step = math.ceil(m.vtm_hard_by * cfg.train.steps) if m.vtm_hard_by < 1 else None
        self.curriculum = VTMCurriculum(m.vtm_negatives, m.vtm_switch_acc, by_step, m.vtm_hard_share, m.vtm_hard_ramp)
        self.static_text = cfg.train.compile != "none"  # captions padded to data.max_text_len: static shapes
        self.step, self.samples_seen, self.skipped_steps = 0, 0, 0
        return ds_cfg

    def build_engine(self, found, ds_cfg: dict) -> None:
        """The model (initialised unless `found`, a checkpoint to resume, brings its weights), compiled on
        request, in a DeepSpeed engine with its optimizer and LR schedule: `self.engine`, `self.model`
        (the engine's module), `self.scheduler`."""
        import deepspeed

        cfg = self.cfg
        model = self.build_model(found)
        model.set_grad_checkpointing(cfg.model.grad_checkpointing)
        compile_model(model, cfg)  # before the engine: a refused config costs no engine build (compiling is lazy)
        engine_ops.install()  # multi-tensor gradient-clipping norm (smaug/train/engine_ops.py)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, cfg.optim.weight_decay),
            config=ds_cfg,
            lr_scheduler=make_scheduler(
                cfg.optim.warmup_steps,
                cfg.train.steps,
                cfg.optim.lr,
                cfg.optim.min_lr,
                cfg.train.unmasked_tail_steps,
                cfg.train.unmasked_tail_lr,
            ),
        )
        self.model = self.engine.module

    def seed_ranks(self) -> tuple[float, str]:
        """A stream per rank for masking / dropout / sampling (the engine broadcast rank 0's weights), and the
        device's peak TFLOP/s for MFU, measured without moving that stream. Before a resume restores the RNG."""
        torch.manual_seed(self.cfg.run.seed + 1000003 * self.rank)
        with _keep_rng(self.device):
            return device_peak_tflops(self.device, self.cfg.log.peak_tflops)

    def resume(self, found) -> dict | None:
        """Engine, optimizer, scheduler and the trainer's state from checkpoint `found` (dir, tag). Returns this
        rank's loader state, or None when the world size changed (the data streams then restart)."""
        client = ckpt.load(self.engine, *found)
        self.step = client["step"]
        self.samples_seen = client["samples_seen"]
        self.skipped_steps = client.get("skipped_steps", 0)
        self.curriculum.load_state_dict(client)
        loader_state = None
        if client.get("world_size") == self.world:
            mine = client["ranks"][self.rank]
            loader_state = mine["loader"]
            ckpt.set_rng_state(mine["rng"])
        else:
            # A different world size cannot continue the per-rank streams; start new ones seeded by the step so
            # that no stream is replayed.
            torch.manual_seed(self.cfg.run.seed + self.step + 1000003 * self.rank)
            self._say(
                f"resumed with world size {self.world} != saved {client.get('world_size')}: "
                f"data streams restart (seed offset {self.step}), RNG re-seeded"
            )
        self._say(f"resumed from {found[0]}/{found[1]} at step {self.step}")
        return loader_state

    def setup_gradient_guard(self, ds_cfg: dict) -> None:
        """Non-finite gradients with a finite loss. DeepSpeed's bf16 `check_grad_overflow` finds them with ~13
        small kernels per parameter tensor (the largest host cost of SMAUG base's step), so the shipped JSON turns
        it off and this guard reads the grad norm DeepSpeed computes anyway for clipping: a device-side count,
        checked (one sync) when a record is logged and before every checkpoint (`check_gradients`), so a
        corrupted state is never saved."""
        bf16_check = bool(ds_cfg.get("bf16", {}).get("check_grad_overflow", True))
        self.ds_skips_overflow = bf16_check or not self.engine.bfloat16_enabled()
        self._bad_norm = torch.zeros((), dtype=torch.int64, device=self.device)
        self._bad_norm_seen = 0

    def build_model(self, found):
        """The model to train (a SmaugModel, or a subclass in a subclass of Trainer), its weights initialised
        unless `found` (a checkpoint to resume) brings them."""
        from smaug.models import SmaugModel

        model = SmaugModel(self.mcfg)
        if found is None and not self.cfg.model.init_from:  # resume / init_from bring every weight themselves
            self.init_towers(model)
        if self.cfg.model.init_from and found is None:  # a resumed run loads its own checkpoint instead
            from smaug.checkpoint import load_weights

            missing, unexpected = load_weights(model, self.cfg.model.init_from)
            self._say(
                f"initialised from {self.cfg.model.init_from} (missing {len(missing)}, unexpected {len(unexpected)})"
            )
        return model

    def build_loader(self, seed: int, state):
        """The endless training loader (`state_dict()`, `skip_counts()`), restored from `state` when given."""
        from smaug.data import build_train_loader

        return build_train_loader(
            self.cfg.data,
            self.tokenizer,
            rank=self.rank,
            world_size=self.world,
            seed=seed,
            state=state,
            pin_memory=self.device.type == "cuda",
        )

    def init_towers(self, model) -> None:
        """Pretrained towers (model.vision_init / text_init): strict load, `init_report.json`, summary first in the log."""
        from smaug.models.pretrained import InitError, init_towers, summary_lines

        try:
            report = init_towers(model, self.cfg.model.vision_init, self.cfg.model.text_init)
        except InitError as e:
            raise ConfigError(str(e)) from e
        if self.is_main:
            (self.out / "init_report.json").write_text(json.dumps(report, indent=1) + "\n")
        for line in summary_lines(report):
            self._say(line)

    def _say(self, msg: str) -> None:
        """Log on rank 0 only (`smaug.train` logger, printed as `[smaug] ...`)."""
        if self.is_main:
            LOG.info(msg)

    # ------------------------------------------------------------------ steps
    def train_step(self, it) -> tuple[dict, int, float, float, bool]:
        """One optimizer step over `grad_accum` finite micro-batches.

        Returns (scalars, clips, flops, data_wait_seconds, preempt_requested).
        A non-finite loss skips that micro-batch (no backward) on every rank and is counted;
        `train.max_nonfinite` of them in a row stop the run.
        """
        cfg = self.cfg
        sums, clips, flops, wait, done, streak = {}, 0, 0.0, 0.0, 0, 0
        preempt = False
        while done < cfg.train.grad_accum:
            t0 = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - t0
            batch.pop("__meta__", None)
            if self.static_text:  # static shapes for a compiled step
                batch = pad_captions(batch, self.cfg.data.max_text_len, self.mcfg.pad_token_id)
            out = self.engine(batch, **self.forward_state())
            bad_local, bad, preempt_any = step_flags(out.loss, self.preempt.requested)
            preempt = preempt or preempt_any > 0
            if bad:
                self.skipped_steps += 1
                streak += 1
                self._say(f"non-finite loss at step {self.step} (rank-local: {bool(bad_local)}); micro-batch skipped")
                if streak >= cfg.train.max_nonfinite:
                    raise FloatingPointError(
                        f"{streak} non-finite losses in a row at step {self.step} (train.max_nonfinite="
                        f"{cfg.train.max_nonfinite}); check optim.lr / data; last losses: "
                        f"{ {k: float(v.detach()) for k, v in out.losses.items()} }"
                    )
                continue
            streak = 0
            self.engine.backward(out.loss)
            self.engine.step()
            done += 1
            b = batch["video"].shape[0]
            clips += b * self.world
            flops += self.model.train_flops(b, batch["input_ids"].shape[1]) * self.world
            # losses stay on the device (no host sync per step); the monitor converts them when it logs
            for k, v in [("loss", out.loss), *out.losses.items(), *out.metrics.items()]:
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            if "vtm_acc" in out.metrics:  # the curriculum's evidence
                self.curriculum.observe(out.metrics["vtm_acc"], self.step)
            for k, v in out.stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        scalars = {k: v / done for k, v in sums.items()}
        # the optimizer step just taken (the last micro-batch was the accumulation boundary)
        norm = self.engine.get_global_grad_norm()  # a device tensor; a float (inf) for a skipped step
        if norm is not None:
            norm = torch.as_tensor(norm, dtype=torch.float32, device=self.device).detach().reshape(())
            self._bad_norm += (~torch.isfinite(norm) | (norm < 0)).long()
            scalars["grad_norm"] = norm
        scalars["lr"] = self.scheduler.get_last_lr()[0]
        scalars["temp"] = self.model.temp.detach().float()
        scalars["vtm_hard"] = self.curriculum.share(self.step)  # share of rows on mined negatives
        return scalars, clips, flops, wait, preempt

    def forward_state(self) -> dict:
        """The training state the model's forward takes from the trainer: the MAE mask ratio of this step (0 in
        the unmasked tail) and which VTM negatives to use."""
        return {
            "mask_ratio": 0.0 if self.unmasked_tail else self.mcfg.mask_ratio,
            "vtm_hard": self.curriculum.share(self.step),
        }

    @property
    def unmasked_tail(self) -> bool:
        """The step being taken is one of the last `train.unmasked_tail_steps` (no MAE masking)."""
        return self.step >= self.cfg.train.steps - self.cfg.train.unmasked_tail_steps

    def update_vtm_curriculum(self) -> None:
        """At a log step: let the VTM curriculum decide on hard negatives (one host sync)."""
        acc = self.curriculum.update(self.step, self.device, self.world)
        c = self.curriculum
        ramp = f", their share of the rows growing to {c.max_share:g} over {c.ramp} steps" if c.ramp else ""
        if acc is not None:
            self._say(
                f"VTM pair accuracy {acc:.3f} >= {self.mcfg.vtm_switch_acc} on uniform negatives "
                f"(prior 0.667): hard negatives from step {self.step + 1}{ramp}"
            )
        elif c.by_step is not None and self.step - self.cfg.log.every < c.by_step <= self.step and not c.hard:
            self._say(
                f"VTM: hard negatives from step {c.by_step + 1} (model.vtm_hard_by={self.mcfg.vtm_hard_by}; the "
                f"pair accuracy had not reached {self.mcfg.vtm_switch_acc}){ramp}"
            )

    def check_gradients(self) -> None:
        """Act on non-finite gradient norms since the last check (one host sync).

        With DeepSpeed's bf16 overflow check on (or fp32, where it uses the norm), DeepSpeed
        skipped those optimizer steps: they are counted in `skipped_steps`. With it off (the
        shipped ds_configs), the update has already been applied, so the weights are no longer
        trustworthy: stop before anything is saved; the last checkpoint predates the bad step.
        """
        bad = int(self._bad_norm)
        if bad == self._bad_norm_seen:
            return
        new, self._bad_norm_seen = bad - self._bad_norm_seen, bad
        if self.ds_skips_overflow:
            self.skipped_steps += new
            self._say(
                f"{new} optimizer step(s) with a non-finite gradient norm skipped by DeepSpeed (by step {self.step})"
            )
            return
        raise FloatingPointError(
            f"non-finite gradient norm at or before step {self.step} with a finite loss: the update was applied "
            f"(bf16.check_grad_overflow is off in the DeepSpeed JSON), so the weights are not trustworthy and "
            f"nothing was saved. Resume from the last checkpoint ({ckpt.ckpt_root(self.out)}); lower optim.lr or "
            f"raise optim.warmup_steps, or set bf16.check_grad_overflow=true to skip such steps (slower)"
        )

    def save(self) -> Path:
        self.check_gradients()  # never checkpoint weights updated with non-finite gradients
        client = {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "skipped_steps": self.skipped_steps,
            **self.curriculum.state_dict(),
            "config": self.cfg.to_dict(),
            "model_config": dataclasses.asdict(self.mcfg),
        }
        per_rank = {"loader": self.batches.state_dict(), "rng": ckpt.rng_state()}
        path = ckpt.save(self.engine, self.out, self.step, client, per_rank, self.cfg.ckpt.keep)
        self._say(f"checkpoint {path}")
        return path

    def evaluate(self) -> dict | None:
        """Retrieval eval on data.eval_shards (`smaug.eval.retrieval.evaluate`, VTC + the VTM rerankings of the
        top eval.rerank_k): logs `eval/...` scalars and writes eval.json in the report schema of
        tools/eval_retrieval.py. Collective with world > 1; returns the report."""
        cfg = self.cfg
        if not cfg.data.eval_shards:
            return None
        from smaug.data import build_eval_loader
        from smaug.eval.retrieval import evaluate, report_scalars, retrieval_report

        dcfg = dataclasses.replace(cfg.data, num_frames=cfg.eval.num_frames or cfg.data.num_frames)
        loader = build_eval_loader(dcfg, self.tokenizer, cfg.data.eval_shards, rank=self.rank, world_size=self.world)
        with _keep_rng(self.device):
            res = evaluate(
                self.model,
                loader,
                self.tokenizer,
                self.device,
                k=cfg.eval.rerank_k,
                max_text_len=cfg.data.max_text_len,
                max_samples=cfg.eval.max_samples,
            )
        report = retrieval_report(
            res,
            step=self.step,
            split=str(cfg.data.eval_shards),
            data={"shards": cfg.data.eval_shards, "shards_root": cfg.data.shards_root},
            frames=dcfg.num_frames,
            image_size=dcfg.image_size,
            decode_short_side=dcfg.short_side,
            precision=cfg.train.precision,
            device=self.device.type,
            world_size=self.world,
            skipped=loader.skip_counts(),
            checkpoint=str(self.out),
            checkpoint_kind="training run (in-process eval)",
        )
        self.monitor.log({"step": self.step, **{f"eval/{k}": v for k, v in report_scalars(report).items()}})
        r1 = "  ".join(
            f"{name} t2v/v2t R@1 {m['t2v_r1']:.1f}/{m['v2t_r1']:.1f}"
            for name, m in report["results"].items()
            if isinstance(m, dict)
        )
        acc = report["results"]["vtm_acc"]
        self._say(
            f"eval step {self.step}: {r1}"
            + (
                f"  vtm_acc {acc:.3f} (always-no {1 - report['results']['vtm_pos_frac']:.3f})"
                if acc is not None
                else ""
            )
            + f" (chance R@1 {report['protocol']['chance_r1']:.1f}, {report['protocol']['num_videos']} clips)"
        )
        for warning in report["warnings"]:
            self._say(f"eval step {self.step} WARNING: {warning}")
        if self.is_main:
            (self.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        return report

    def run(self) -> int:
        cfg = self.cfg
        it = iter(self.batches)
        last_saved = self.step if self.step else -1
        preempted = False
        while self.step < cfg.train.steps:
            if cfg.train.unmasked_tail_steps and self.step == cfg.train.steps - cfg.train.unmasked_tail_steps:
                self._say(f"unmasked tuning: steps {self.step + 1}-{cfg.train.steps} see every patch (no MVM)")
            scalars, clips, flops, wait, preempted = self.train_step(it)
            self.step += 1
            self.samples_seen += clips
            skips = self.batches.skip_counts()
            scalars.update({f"skipped/{k}": v for k, v in skips.items()})
            if self.step % cfg.log.every == 0:
                self.check_gradients()
                self.update_vtm_curriculum()
            scalars["skipped_steps"] = self.skipped_steps
            self.monitor.update(self.step, clips, flops, wait, scalars)
            if preempted or self.step % cfg.ckpt.every == 0 or self.step == cfg.train.steps:
                self.save()
                last_saved = self.step
            if preempted:
                self._say(f"{self.preempt.signal or 'signal'} received: checkpoint saved at step {self.step}, exiting")
                return 0
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step != cfg.train.steps:
                self.evaluate()
        if last_saved != self.step:
            self.save()
        self.evaluate()
        self._say(
            f"done: {self.step} steps, {self.samples_seen} clips; checkpoints in "
            f"{ckpt.ckpt_root(self.out)}; log {self.out / 'log.jsonl'}"
        )
        return 0

    def close(self) -> None:
        self.monitor.close()
        self.preempt.restore()


def main(argv=None, trainer_cls=None, config_cls=RunConfig) -> int:
    """`trainer_cls` / `config_cls`: Trainer / RunConfig or subclasses (e.g. smaug.train.qa's VideoQA fine-tuning)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    first_rank = int(os.environ.get("RANK", 0)) == 0  # every rank finds the same problems; one reports them
    try:
        cfg = load_config(args.config, args.overrides, args.out, config_cls, check_paths=True)
    except ConfigError as e:
        if first_rank:
            LOG.error(f"config error: {e}")
        return 2
    try:
        trainer = (trainer_cls or Trainer)(cfg)
    except ConfigError as e:
        if first_rank:
            LOG.error(f"config error: {e}")
        return 2
    try:
        return trainer.run()
    except FloatingPointError as e:  # diverged: the message says what happened and what to do
        LOG.error(f"stopped: {e}")
        return 3
    except ckpt.CheckpointWriteError as e:  # disk full, quota, ...: cause, directory, the intact `latest`
        if trainer.is_main:  # every rank has the same message (with every rank's cause)
            LOG.error(f"stopped: {e}")
        return 4
    finally:
        trainer.close()


def cli() -> int:
    """What `python -m smaug.train` and `smaug-train` run (`__main__.main`, after it catches early signals):
    `main(sys.argv[1:])`, then the process group ends (in-process callers of `main` keep it for their next run)."""
    rc = main()
    teardown_distributed()
    return rc
