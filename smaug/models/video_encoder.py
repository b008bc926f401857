"""Per-frame ViT video encoder from timm layers, with MAE masking and EViT token sparsification.

Notation: B clips, T frames, N = (image_size / patch_size)^2 patches per frame, D = vision_width.
Frames are encoded independently (space-only attention, as in Singularity), so the block batch
is M = B * T frames; time enters through learned temporal embeddings added to every token.

Pipeline (`forward`):
  embed             patches + spatial pos embed + temporal embed, one [CLS] per frame
  random_masking    MAE: keep int(N * (1 - mask_ratio)) random patches per frame (train only)
  blocks            timm `Block`s; at `sparsify_layers` the block runs `sparsify_block` instead
  norm              final LayerNorm; output tokens [B, T, 1 + n_out, D]

Token sparsification reuses the block's own attention pass: `attention_with_cls_row` computes q,
k, v once, runs fused SDPA over all tokens, and gets the [CLS] attention row explicitly from the
same q and k (softmax(q_cls k^T * scale), one query per frame: O(n D), not O(n^2 D)); only
sparsify blocks do this, the others run timm's own forward. Measured cost (`bench/cls_row.py`,
forward of one block's attention module, median of 100 interleaved runs, CPU, 1 thread, torch
2.14, on a shared 2-core box): ViT-B (768 wide, 12 heads), 16 frames x 50 tokens: SDPA 42.7 ms,
SDPA + row 43.8 ms (+2.5%), SDPA + a second full attention-matrix pass 76.5 ms (+79%);
16 x 197 tokens: +3.0% vs +90%; tiny (192 wide, 3 heads), 32 x 13 tokens: 1.59 vs 1.77 ms
(+11%, small-kernel overhead) vs +95%. Reproduce with `python bench/cls_row.py 768 12 16 50`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block, init_weights_vit_timm

from .common import maybe_checkpoint
from .temporal import resize_time


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches per frame the encoder sees after MAE masking: int(N * (1 - mask_ratio)), >= 1."""
    return max(1, int(round(num_patches * (1.0 - mask_ratio), 6)))


def num_kept(n: int, keep_ratio: float) -> int:
    """Top-k tokens kept out of n candidates at a sparsify layer: ceil(keep_ratio * n) (EViT), >= 1."""
    return max(1, math.ceil(round(keep_ratio * n, 6)))


def token_schedule(n_visible: int, depth: int, sparsify_layers, keep_ratio: float, mode: str):
    """Patch tokens per frame ([CLS] excluded) in each block: [(n_attention, n_mlp)] * depth.

    A sparsify block attends over n tokens and runs its MLP on the kept ones (+1 fused token).
    The last entry's n_mlp is the encoder output count.
    """
    sched, n = [], n_visible
    for i in range(depth):
        n_in = n
        if i in sparsify_layers:
            k = num_kept(n, keep_ratio)
            n = k + (1 if mode == "fuse" and k < n else 0)
        sched.append((n_in, n))
    return sched


def random_masking(x: torch.Tensor, mask_ratio: float):
    """MAE per-frame random masking.

    x: [M, N, D] -> x_vis [M, n_vis, D], mask [M, N] (1 = masked), ids_keep [M, n_vis] (ascending).
    """
    M, N, D = x.shape
    n_keep = num_visible(N, mask_ratio)
    noise = torch.rand(M, N, device=x.device)
    ids_keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    x_vis = x.gather(1, ids_keep[..., None].expand(-1, -1, D))
    mask = torch.ones(M, N, device=x.device, dtype=x.dtype).scatter(1, ids_keep, 0.0)
    return x_vis, mask, ids_keep


def attention_with_cls_row(attn: nn.Module, x: torch.Tensor):
    """The timm `Attention` forward, plus the head-averaged [CLS] attention row, in one pass.

    x: [M, n, D] (token 0 = [CLS]) -> out [M, n, D], cls_attn [M, n - 1] (over non-[CLS] tokens).
    """
    M, n, _ = x.shape
    if getattr(attn, "gate", None) is not None:
        raise NotImplementedError("gated attention is not supported at sparsify layers")
    qkv = attn.qkv(x).reshape(M, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    row = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)  # [M, H, 1, n]
    cls_attn = row.mean(dim=1).squeeze(1)[:, 1:]
    out = out.transpose(1, 2).reshape(M, n, attn.attn_dim)
    out = attn.proj_drop(attn.proj(attn.norm(out)))
    return out, cls_attn


def sparsify_tokens(x: torch.Tensor, cls_attn: torch.Tensor, ids: torch.Tensor, keep: int, mode: str = "fuse"):
    """EViT token reorganisation: keep the top-`keep` tokens by [CLS] attention, fuse the rest.

    x: [M, 1 + n, D] (token 0 = [CLS], kept), cls_attn: [M, n], ids: [M, n] original patch
    index of each token (-1 = a fused token). Returns x [M, 1 + keep (+1), D], ids [M, keep (+1)].
    mode "fuse": the dropped tokens become one token sum(a_i x_i) / sum(a_i), a = cls_attn;
    mode "drop": they are discarded. Kept tokens stay in their input order.
    """
    cls, patches = x[:, :1], x[:, 1:]
    M, n, D = patches.shape
    if keep >= n:
        return x, ids
    top = cls_attn.topk(keep, dim=1).indices.sort(dim=1).values
    kept = patches.gather(1, top[..., None].expand(-1, -1, D))
    kept_ids = ids.gather(1, top)
    if mode == "drop":
        return torch.cat([cls, kept], dim=1), kept_ids
    dropped = torch.ones_like(cls_attn, dtype=torch.bool).scatter(1, top, False)
    a = cls_attn * dropped  # [M, n], zero on kept tokens
    fused = (a[..., None] * patches.float()).sum(1, keepdim=True) / a.sum(1).clamp_min(1e-12)[:, None, None]
    fused_ids = torch.full((M, 1), -1, dtype=ids.dtype, device=ids.device)
    return torch.cat([cls, kept, fused.to(x.dtype)], dim=1), torch.cat([kept_ids, fused_ids], dim=1)


@dataclass
class VideoEncoderOutput:
    tokens: torch.Tensor  # [B, T, 1 + n_out, D], token 0 of each frame is its [CLS]
    ids: torch.Tensor  # [B * T, n_out] patch index of each output token, -1 for a fused token
    mask: torch.Tensor | None  # [B * T, N] 1 = masked by MAE, None without masking
    num_visible: int  # patches per frame entering the blocks


class VideoEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D = cfg.vision_width
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, 3, D)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, D))  # timm layout: [CLS] slot first
        self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, 1, D))  # zero: starts as the image model
        dpr = [cfg.drop_path_rate * i / max(1, cfg.vision_depth - 1) for i in range(cfg.vision_depth)]  # as linspace
        self.blocks = nn.ModuleList([
            Block(D, cfg.vision_heads, cfg.vision_mlp_ratio, qkv_bias=cfg.vision_qkv_bias, drop_path=dpr[i])
            for i in range(cfg.vision_depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.grad_checkpointing = False
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights_vit_timm)

    def temporal(self, T: int) -> torch.Tensor:
        """Temporal embeddings for T frames [1, T, 1, D], linearly interpolated if T != num_frames."""
        return resize_time(self.temporal_embed, T)

    def embed(self, video: torch.Tensor):
        """video: [B, T, 3, H, W] normalised -> patches [B*T, N, D], cls [B*T, 1, D]."""
        B, T = video.shape[:2]
        x = self.patch_embed(video.flatten(0, 1)) + self.pos_embed[:, 1:]
        te = self.temporal(T)
        x = (x.unflatten(0, (B, T)) + te).flatten(0, 1)
        cls = (self.cls_token + self.pos_embed[:, :1] + te).expand(B, -1, -1, -1).flatten(0, 1)
        return x, cls

    def sparsify_block(self, blk: Block, x: torch.Tensor, ids: torch.Tensor):
        """A timm `Block` with EViT reorganisation between attention and MLP.

        x: [M, 1 + n, D], ids: [M, n] -> x [M, 1 + n', D], ids [M, n'].
        """
        out, cls_attn = attention_with_cls_row(blk.attn, blk.norm1(x))
        x = x + blk.drop_path1(blk.ls1(out))
        keep = num_kept(x.shape[1] - 1, self.cfg.keep_ratio)
        x, ids = sparsify_tokens(x, cls_attn, ids, keep, self.cfg.sparsify_mode)
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        return x, ids

    def forward_blocks(self, x: torch.Tensor, ids: torch.Tensor):
        """x: [M, 1 + n, D], ids: [M, n] -> normed x [M, 1 + n_out, D], ids [M, n_out]."""
        for i, blk in enumerate(self.blocks):
            if i in self.cfg.sparsify_layers:
                x, ids = maybe_checkpoint(self.grad_checkpointing, self.sparsify_block, blk, x, ids)
            else:
                x = maybe_checkpoint(self.grad_checkpointing, blk, x)
        return self.norm(x), ids

    def forward(self, video: torch.Tensor, mask_ratio: float = 0.0) -> VideoEncoderOutput:
        """video: [B, T, 3, H, W] normalised -> VideoEncoderOutput (tokens [B, T, 1 + n_out, D])."""
        B, T = video.shape[:2]
        x, cls = self.embed(video)
        M, N, _ = x.shape
        mask = None
        if mask_ratio > 0:
            x, mask, ids = random_masking(x, mask_ratio)
        else:
            ids = torch.arange(N, device=x.device).expand(M, -1)
        n_vis = x.shape[1]
        x, ids = self.forward_blocks(torch.cat([cls, x], dim=1), ids)
        return VideoEncoderOutput(x.unflatten(0, (B, T)), ids, mask, n_vis)

    # ------------------------------------------------------------------ pretrained weights
    @torch.no_grad()
    def load_pretrained(self, name_or_path: str) -> dict:
        """Load image-pretrained ViT weights: a local state dict (.pth/.pt/.bin/.safetensors; MAE's
        {'model': ...} wrapper is fine) or a timm model name (needs the hub or its cache).

        timm ViT key names are used as they are; `pos_embed` is resampled to this grid. Returns
        {"missing": [...], "unexpected": [...]}; missing may only be `temporal_embed`.
        """
        if os.path.isfile(name_or_path):
            if name_or_path.endswith(".safetensors"):
                from safetensors.torch import load_file

                sd = load_file(name_or_path)
            else:
                sd = torch.load(name_or_path, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict", "module"):
                if isinstance(sd.get(key), dict):
                    sd = sd[key]
        else:
            import timm

            try:
                sd = timm.create_model(name_or_path, pretrained=True, num_classes=0).state_dict()
            except Exception as e:  # offline, unknown name, ...
                raise ValueError(f"vision_pretrained={name_or_path!r}: not a file and timm could not load it ({e})") from e
        grid = self.patch_embed.grid_size
        if "pos_embed" in sd and sd["pos_embed"].shape != self.pos_embed.shape:
            old = int(math.isqrt(sd["pos_embed"].shape[1] - 1))
            sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(grid), old_size=[old, old], num_prefix_tokens=1)
        own = self.state_dict()
        for k, v in sd.items():
            if k in own and own[k].shape != v.shape:
                raise ValueError(f"vision_pretrained: {k} has shape {tuple(v.shape)}, model needs {tuple(own[k].shape)}")
        res = self.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        missing = [k for k in res.missing_keys if k != "temporal_embed"]
        if missing:
            raise ValueError(f"vision_pretrained={name_or_path!r}: missing keys {missing[:8]} (not a timm ViT?)")
        unexpected = sorted(set(sd) - set(own))
        if any(k.startswith("blocks.") for k in unexpected):
            raise ValueError(f"vision_pretrained={name_or_path!r}: has more blocks than vision_depth="
                             f"{self.cfg.vision_depth} ({[k for k in unexpected if k.startswith('blocks.')][:2]} ...)")
        return {"missing": res.missing_keys, "unexpected": unexpected}  # e.g. head, fc_norm: unused
