"""Helpers for the export / weights tests: write a real DeepSpeed ZeRO-2 checkpoint of a tiny
SmaugModel, in the trainer's layout, from 1 or more gloo ranks (no data pipeline needed).

    python tests/weights_helpers.py OUT TOKENIZER [key=value ...]          # world size 1
    torchrun --nproc_per_node 2 tests/weights_helpers.py OUT TOKENIZER ...  # ZeRO shards over 2 ranks
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QS = str(REPO / "smaug" / "configs" / "quickstart.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_checkpoint(out: str, tokenizer: str, overrides: list[str], steps: int = 1) -> None:
    """Build the run config like the trainer, take `steps` optimizer steps on random batches, save."""
    import deepspeed
    import torch

    from smaug.data import load_tokenizer
    from smaug.models import SmaugModel
    from smaug.train import checkpoint as ckpt
    from smaug.train.config import load_config, model_config, save_resolved
    from smaug.train.ds_config import build_ds_config
    from smaug.train.optim import param_groups

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    world = int(os.environ["WORLD_SIZE"])
    cfg = load_config([QS], ["data.train_shards=unused", "data.batch_size=2", "train.precision=fp32",
                             f"model.tokenizer={tokenizer}", *overrides], out)
    tok = load_tokenizer(tokenizer)
    mcfg = model_config(cfg, vocab_size=len(tok), pad_token_id=tok.pad_token_id, mask_token_id=tok.mask_token_id,
                        cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    torch.manual_seed(cfg.run.seed)
    model = SmaugModel(mcfg)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, cfg.optim.weight_decay),
                                      config=build_ds_config(cfg, world, "cpu"))
    g = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        b = 2
        enc = tok(["a red circle moves left", "the blue square goes up"], padding=True, return_tensors="pt")
        batch = {"video": torch.randint(0, 256, (b, mcfg.num_frames, 3, mcfg.image_size, mcfg.image_size),
                                        dtype=torch.uint8, generator=g),
                 "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
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
    sys.path.insert(0, str(REPO))
    write_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3:])
