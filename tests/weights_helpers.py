"""Helpers for the export / weights tests: write a real DeepSpeed ZeRO-2 checkpoint of a tiny
SmaugModel, in the trainer's layout, from 1 or more gloo ranks (no data pipeline needed).

    python tests/weights_helpers.py OUT TOKENIZER [key=value ...]          # world size 1
    torchrun --nproc_per_node 2 tests/weights_helpers.py OUT TOKENIZER ...  # ZeRO shards over 2 ranks
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_checkpoint(out: str, tokenizer: str, overrides: list[str], steps: int = 1) -> None:
    """Build the run config like the trainer, take `steps` optimizer steps on random batches, save."""
    import deepspeed
    import torch

    from smaug import checkpoint as ckpt
    from smaug.config import load_config, model_config, save_resolved
    from smaug.data import load_tokenizer, tokenizer_fields
    from smaug.models import SmaugModel
    from smaug.train.ds_config import build_ds_config
    from smaug.train.optim import param_groups
    from smaug.train.trainer import setup_distributed

    from conftest import QS

    cfg = load_config(
        [QS],
        [
            "data.train_shards=unused",
            "data.batch_size=2",
            "train.precision=fp32",
            f"model.tokenizer={tokenizer}",
            *overrides,
        ],
        out,
    )
    tok = load_tokenizer(tokenizer)
    mcfg = model_config(cfg, **tokenizer_fields(tok))
    rank, world, _ = setup_distributed("cpu")  # the trainer's: a plain run becomes a 1-process gloo group
    torch.manual_seed(cfg.run.seed)
    model = SmaugModel(mcfg)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, cfg.optim.weight_decay),
        config=build_ds_config(cfg, world, "cpu"),
    )
    g = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        b = 2
        enc = tok(["a red circle moves left", "the blue square goes up"], padding=True, return_tensors="pt")
        batch = {
            "video": torch.randint(
                0, 256, (b, mcfg.num_frames, 3, mcfg.image_size, mcfg.image_size), dtype=torch.uint8, generator=g
            ),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
        }
        loss = engine(batch).loss
        engine.backward(loss)
        engine.step()
    if rank == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, Path(out) / "config.yaml")
    client = {"step": steps, "samples_seen": 2 * steps * world, "skipped_steps": 0, "config": cfg.to_dict()}
    ckpt.save(engine, out, steps, client, {"loader": {}, "rng": ckpt.rng_state()}, keep=2)
    torch.distributed.barrier()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # smaug from this checkout
    write_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3:])
