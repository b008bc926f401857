"""Helpers for the model tests (tests/test_model_*.py): synthetic batches and the 2-process worker."""

from __future__ import annotations

import functools
import os

import torch


def make_batch(cfg, batch_size: int = 4, text_len: int = 12, seed: int = 0, num_frames: int | None = None) -> dict:
    """A loader-like batch: uint8 video, `[CLS] w.. [SEP] [PAD]*` captions of different lengths, all distinct."""
    g = torch.Generator().manual_seed(seed)
    T = num_frames or cfg.num_frames
    video = torch.randint(0, 256, (batch_size, T, 3, cfg.image_size, cfg.image_size), generator=g, dtype=torch.uint8)
    ids = torch.full((batch_size, text_len), cfg.pad_token_id, dtype=torch.long)
    mask = torch.zeros(batch_size, text_len, dtype=torch.long)
    for i in range(batch_size):
        n = text_len - (i * 3) // batch_size  # real tokens incl. [CLS]/[SEP]; the last rows are shorter
        words = torch.randint(1000, min(cfg.vocab_size, 5000), (n - 2,), generator=g)
        ids[i, :n] = torch.cat([torch.tensor([cfg.cls_token_id]), words, torch.tensor([cfg.sep_token_id])])
        mask[i, :n] = 1
    return {
        "video": video,
        "input_ids": ids,
        "attention_mask": mask,
        "is_image": torch.zeros(batch_size, dtype=torch.bool),
        "key": [f"k{i}" for i in range(batch_size)],
        "caption": ["c"] * batch_size,
    }


def global_batch_worker(rank: int, world_size: int, port: int, cfg_kwargs: dict, state_path: str, out_path: str):
    """One of 2 gloo ranks: the same model and seed as the 1-process reference, half the batch each.

    Saves (rank 0) VTC/VTM values, the sampled negatives, the rank-averaged gradients and the
    results of the function-level VTC / mining on exact slices of a fixed feature matrix.
    """
    import torch.distributed as dist

    from smaug.models import SmaugConfig, SmaugModel
    from smaug.models.losses import sample_negatives, vtc_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = SmaugConfig.preset("tiny", **cfg_kwargs)
        model = SmaugModel(cfg)
        model.load_state_dict(torch.load(state_path, weights_only=True))
        batch = make_batch(cfg, batch_size=8, text_len=12, seed=1)
        b = 8 // world_size
        local = {k: v[rank * b : (rank + 1) * b] for k, v in batch.items() if torch.is_tensor(v)}
        L = int(local["attention_mask"].sum(1).max())  # each rank pads to its own longest caption
        local["input_ids"], local["attention_mask"] = local["input_ids"][:, :L], local["attention_mask"][:, :L]
        torch.manual_seed(123)
        out = model(local)
        (out.losses["vtc"] + out.losses["vtm"]).backward()
        grads = {}
        for n, p in model.named_parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads[n] = g / world_size
        vtm = out.losses["vtm"].detach().clone()
        dist.all_reduce(vtm)
        # function level: exact slices of fixed features
        g = torch.Generator().manual_seed(7)
        v = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        t = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        fvtc, sim = vtc_loss(v[rank * b : (rank + 1) * b], t[rank * b : (rank + 1) * b], torch.tensor(0.1))
        negs = sample_negatives(sim, None, torch.Generator().manual_seed(3))
        if rank == 0:
            torch.save(
                {
                    "vtc": out.losses["vtc"].detach(),
                    "vtm_mean": vtm / world_size,
                    "negatives": model._last_negatives,
                    "grads": grads,
                    "fn_vtc": fvtc.detach(),
                    "fn_negs": negs,
                },
                out_path,
            )
    finally:
        dist.destroy_process_group()


@functools.cache
def real_path(filename: str) -> str:
    """os.path.realpath, cached: stack-walking dispatch modes resolve the same few files per op."""
    return os.path.realpath(filename)


def package_prefix(module) -> str:
    """The absolute folder of an imported package + separator, to tell its stack frames by path prefix (a
    substring such as "/smaug/" also matches every frame of a checkout cloned into a folder named smaug)."""
    return os.path.dirname(os.path.realpath(module.__file__)) + os.sep


def tiny_config(**overrides):
    """The tiny preset at 32 px, 2 frames (1 fused), with a 40-token vocabulary whose ids 0-3 are
    [PAD] [CLS] [SEP] [MASK]: small enough for hand-built token batches (QA / MC tests)."""
    from smaug.models import SmaugConfig

    kw = dict(
        vocab_size=40,
        pad_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
        image_size=32,
        num_frames=2,
        select_frames=1,
    )
    return SmaugConfig.preset("tiny", **{**kw, **overrides})
