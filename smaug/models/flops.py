"""Analytic model FLOPs of one training step, for MFU logging.

Matmul FLOPs only (2 per multiply-add) of the forward, times 3 for forward + backward (the
backward costs about 2x the forward). Recomputation under gradient checkpointing is not
counted (MFU counts model FLOPs, not hardware FLOPs); norms, softmax and elementwise ops are
ignored. What is counted: patch embedding of all patches; ViT blocks on 1 + n tokens per frame
following the masking / sparsification schedule (attention on the tokens before a sparsify
step, MLP on those after; the [CLS] attention row); the MAE decoder on all patches; the text
layers twice when MLM is on (clean + masked captions); the fusion layers on 3 pairs per clip
for VTM (1 positive, 2 hard negatives) + 1 for MLM, each over the selected frames' tokens; the
MLM head on the masked tokens only; projections and the frame selector. Not counted: the
[Bg, Bg] VTC similarity (it depends on the world size and is < 0.01% at base scale).
"""

from __future__ import annotations

from .video_encoder import num_visible, token_schedule


def linear(n: float, d_in: float, d_out: float) -> float:
    return 2.0 * n * d_in * d_out


def attention(n_q: float, n_kv: float, d: float) -> float:
    """QK^T and AV for n_q queries over n_kv keys, all heads together (d = heads * head_dim)."""
    return 4.0 * n_q * n_kv * d


def vit_block(n_attn: int, n_mlp: int, d: int, mlp_ratio: float, cls_row: bool = False) -> float:
    """One pre-norm ViT block: attention over n_attn tokens, MLP over n_mlp tokens."""
    f = linear(n_attn, d, 3 * d) + attention(n_attn, n_attn, d) + linear(n_attn, d, d)
    f += 2 * linear(n_mlp, d, mlp_ratio * d)
    if cls_row:
        f += 2.0 * n_attn * d  # q_cls k^T (one query per frame)
    return f


def bert_layer(n: int, d: int, inter: int, n_video: int = 0) -> float:
    """One BERT layer over n text tokens; with n_video > 0, plus cross-attention to that many tokens."""
    f = 4 * linear(n, d, d) + attention(n, n, d) + 2 * linear(n, d, inter)
    if n_video:
        f += 2 * linear(n, d, d) + 2 * linear(n_video, d, d) + attention(n, n_video, d)
    return f


def forward_flops(cfg, batch_size: int, text_len: int) -> float:
    B, L, T = batch_size, text_len, cfg.num_frames
    frames = B * T
    D, Dt, E, p = cfg.vision_width, cfg.text_width, cfg.embed_dim, cfg.patch_size
    N = (cfg.image_size // p) ** 2
    sched = token_schedule(
        num_visible(N, cfg.mask_ratio), cfg.vision_depth, cfg.sparsify_layers, cfg.keep_ratio, cfg.sparsify_mode
    )
    n_out = sched[-1][1]
    f = frames * linear(N, 3 * p * p, D)
    f += frames * sum(
        vit_block(na + 1, nm + 1, D, cfg.vision_mlp_ratio, i in cfg.sparsify_layers) for i, (na, nm) in enumerate(sched)
    )
    nt = T * (1 + n_out) if cfg.temporal_scope == "all" else T  # tokens the temporal blocks attend over
    f += B * cfg.temporal_layers * vit_block(nt, nt, D, cfg.vision_mlp_ratio)
    f += frames * linear(1, D, E) + B * linear(1, Dt, E)
    if cfg.mask_ratio > 0 and cfg.w_mvm > 0:
        Dd = cfg.decoder_width
        f += frames * (
            linear(1 + n_out, D, Dd) + cfg.decoder_depth * vit_block(N + 1, N + 1, Dd, 4.0) + linear(N, Dd, 3 * p * p)
        )
    mlm = cfg.w_mlm > 0
    f += (1 + mlm) * B * cfg.fusion_layer * bert_layer(L, Dt, cfg.text_intermediate)
    k = cfg.select_frames
    S = k * (1 + n_out)  # fusion video tokens per pair
    pairs = 3 * B * (cfg.w_vtm > 0) + B * mlm
    if k < T:
        f += pairs * (linear(T + 1, E, E))  # selector projections
    if D != Dt:
        f += pairs * linear(S, D, Dt)
    f += pairs * (cfg.text_layers - cfg.fusion_layer) * bert_layer(L, Dt, cfg.text_intermediate, S)
    f += 3 * B * (cfg.w_vtm > 0) * linear(1, Dt, 1)
    if mlm:
        masked = B * max(1.0, cfg.mlm_prob * max(L - 2, 0))
        f += masked * (linear(1, Dt, Dt) + linear(1, Dt, cfg.vocab_size))
    return f


def train_flops(cfg, batch_size: int, text_len: int) -> float:
    """FLOPs of one forward + backward training step on `batch_size` clips of `text_len` tokens."""
    return 3.0 * forward_flops(cfg, batch_size, text_len)
