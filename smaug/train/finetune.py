"""Plumbing of the fine-tuning tools (tools/finetune_retrieval.py, tools/finetune_qa.py), one home for both.

    out, base_cfg, tokenizer = start(args, "finetune_qa")        # OUT and OUT/init_config.yaml; None: exit 2
    run_step(train_command(args, "smaug.train.qa", base_cfg, FINETUNE_CONFIG, out, sets), "QA fine-tuning")

`args` is the tool's argparse namespace; the names read are the options both tools have (--init, --out,
--tokenizer, --nproc, --config, the trailing key=value overrides). Every step runs in its own process (the
trainer under torchrun with --nproc > 1, the other tools as `python -m smaug_tools.<tool>`), in the caller's
working directory, so relative paths mean what they meant to the caller; importing this module loads neither
the trainer nor DeepSpeed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from smaug.checkpoint import CheckpointError


def launcher(nproc: int) -> list[str]:
    """The interpreter, or torchrun (`python -m torch.distributed.run`) with `nproc` processes."""
    if nproc <= 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]


def run_step(cmd: list[str], what: str, tag: str = "finetune") -> None:
    """Print and run one step (unbuffered output, in this working directory); a failure ends the tool (SystemExit
    "TAG: WHAT failed (exit N)")."""
    print(f"[{tag}] {what}: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if r.returncode != 0:
        raise SystemExit(f"{tag}: {what} failed (exit {r.returncode})")


def init_config(init: str, tokenizer, out: Path) -> tuple[Path, str]:
    """Write the checkpoint's run config as OUT/init_config.yaml (the base of the fine-tuning config)."""
    from smaug.checkpoint import load_smaug_checkpoint
    from smaug.config import flat_model_knobs
    from smaug.models.pretrained import VISION_DERIVED

    cfg, _, run_config, tok = load_smaug_checkpoint(init, tokenizer)
    if not run_config.get("model"):
        raise CheckpointError(f"checkpoint {init}: carries no run configuration to fine-tune with")
    rc = {k: dict(v) for k, v in run_config.items() if isinstance(v, dict)}
    rc.get("run", {}).pop("output_dir", None)
    rc["model"].pop("init_from", None)
    # every weight comes from --init (model.init_from): the towers the run started from are not read again (a
    # hub name need not be in this machine's cache); what the vision tower fixed comes from the checkpoint's model
    rc = flat_model_knobs(rc, f"checkpoint {init}")
    if rc["model"].pop("vision_init", None):
        rc["model"].update(
            {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items() if k in VISION_DERIVED}
        )
    rc["model"].pop("text_init", None)
    rc.get("ckpt", {}).pop("resume", None)
    rc["model"]["tokenizer"] = str(Path(tok).resolve()) if Path(tok).is_dir() else tok
    for key in ("train_shards", "eval_shards"):
        rc.get("data", {}).pop(key, None)
    path = out / "init_config.yaml"
    with open(path, "w") as f:
        f.write(f"# Run configuration of {init} (the fine-tuning base; written by tools/finetune_retrieval.py)\n")
        yaml.safe_dump(rc, f, sort_keys=False)
    return path, rc["model"]["tokenizer"]


def start(args, tool: str) -> tuple[Path, Path, str] | None:
    """Create --out and write its init_config.yaml from --init: -> (OUT, init_config.yaml, tokenizer), or None
    after printing "TOOL: error" on stderr when --init cannot be used (the tool then exits 2)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        base_cfg, tokenizer = init_config(args.init, args.tokenizer, out)
    except CheckpointError as e:
        print(f"{tool}: {e}", file=sys.stderr)
        return None
    return out, base_cfg, tokenizer


def train_command(args, module: str, base_cfg: Path, finetune_config: Path, out: Path, sets: list[str]) -> list[str]:
    """The trainer's command line: `python -m MODULE` (torchrun with --nproc > 1) on the configs init_config.yaml,
    the tool's fine-tuning config and --config ..., with --out OUT, model.init_from=--init, the tool's `sets`,
    then the user's overrides (last, so they win)."""
    configs = [str(base_cfg), str(finetune_config), *args.config]
    return [
        *launcher(args.nproc),
        "-m",
        module,
        *[a for c in configs for a in ("--config", c)],
        "--out",
        str(out),
        f"model.init_from={Path(args.init).resolve()}",
        *sets,
        *args.overrides,
    ]
