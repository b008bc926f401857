"""The temporal extensions of the model, in one place: what the paper's model (smaug.py) adds to read the
order of frames. The paper encodes each frame on its own (space-only attention, as Singularity) and pools
the clip as the mean of its frames, which is the same for a motion and its reverse.

    temporal blocks     `temporal_layers` transformer blocks across frames on top of the frame encoder, over
                        each frame's [CLS] (scope "cls", Singularity-temporal, CLIP4Clip's seqTransf) or over
                        every token of every frame (scope "all": joint space-time attention, as VindLU finds
                        temporal attention matters; the patch tokens carry where things are)
    temporal moments    the clip embedding as the mean of frames plus their moments over time (moments.py):
                        the pooling component `SmaugModel.video_pooling`, chosen when the model is built
    arrow-of-time term  `vtc_reversed`: each text also scored against its own clip played backwards, a negative
    order-blind term    `vtc_static` (with moments): a second VTC term on the mean of frames alone, so appearance
                        keeps the full contrastive signal once motion separates part of the batch

`TemporalExtension` holds the blocks and adds the two VTC terms through one hook, `vtc_terms`, which
`SmaugModel.forward` calls after the paper's VTC loss. The model builds it only when a temporal knob is on.

Temporal blocks: x = tokens + time[t] [B, T, N, D] -> `depth` timm `Block`s over the T * N tokens -> x - time[t].
Time enters what the blocks read, not what they return: `time` is a learned per-frame embedding initialised
at unit scale (a zero-initialised one grows by ~lr per step and leaves the blocks nearly blind to frame order;
a blind stack of blocks is permutation-equivariant, so its mean over frames cannot tell a motion from its
reverse), and it is subtracted again at the output. With each block's output projections zero at init the
blocks start as the exact identity, so a model built on image-pretrained towers starts as the image model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, init_weights_vit_timm

from .frame_tokens import resize_time
from .losses import reversed_vtc_term, vtc_loss


def wanted(cfg) -> bool:
    """Whether a config turns on any temporal extension (the model then builds a `TemporalExtension`)."""
    return cfg.temporal_layers > 0 or cfg.temporal_moments > 1 or cfg.vtc_reversed > 0


class TemporalExtension(nn.Module):
    """Temporal blocks (`temporal_layers`, parameters `pos_embed` and `blocks`) and the VTC terms of the
    temporal extensions (`vtc_terms`)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        if cfg.temporal_layers:
            D = cfg.vision_width
            self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_frames, D))  # [1, T, D], unit scale (see above)
            self.blocks = nn.ModuleList(
                [Block(D, cfg.vision_heads, cfg.vision_mlp_ratio, qkv_bias=True) for _ in range(cfg.temporal_layers)]
            )
            self.apply(init_weights_vit_timm)
            for blk in self.blocks:  # residual branches start at zero: with `- time` the blocks start as the identity
                nn.init.zeros_(blk.attn.proj.weight)
                nn.init.zeros_(blk.mlp.fc2.weight)
        else:
            self.blocks = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The temporal blocks. tokens: [B, T, N, D] -> [B, T, N, D], every token aware of the other frames' tokens."""
        B, T, N, D = tokens.shape
        time = resize_time(self.pos_embed, T).to(tokens.dtype)[:, :, None]  # [1, T, 1, D]
        x = (tokens + time).flatten(1, 2)  # [B, T * N, D]
        for blk in self.blocks:
            x = blk(x)
        return x.unflatten(1, (T, N)) - time

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frame encoder's tokens [B, T, 1 + n, Dv] after the temporal blocks: each frame's [CLS] only
        (scope "cls") or every token (scope "all"); unchanged without blocks."""
        if self.blocks is None:
            return tokens
        if self.cfg.temporal_scope == "all":
            return self(tokens)
        return torch.cat([self(tokens[:, :, :1]), tokens[:, :, 1:]], dim=2)

    def reversed_embedding(self, model, video: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """The VTC embedding [B, E] of each clip played backwards (video normalised, [B, T, 3, H, W]). The frame
        encoder runs without gradient: the arrow-of-time term teaches the order-aware readout (temporal blocks,
        moments) and the text, not the per-frame encoder."""
        with torch.no_grad():
            enc = model.video_encoder(video.flip(1), mask_ratio)
        tokens = self.tokens(enc.tokens)
        B, T = tokens.shape[:2]
        feat = model.video_pooling.embed(model.vision_proj(tokens[:, :, 0]), tokens, enc.ids.view(B, T, -1))
        return F.normalize(feat, dim=-1)

    def vtc_terms(
        self,
        model,
        vtc: torch.Tensor,
        video: torch.Tensor,
        mask_ratio: float,
        video_feat: torch.Tensor,
        text_feat: torch.Tensor,
        frame_tokens: torch.Tensor,
        positives: torch.Tensor | None,
        metrics: dict,
    ) -> torch.Tensor:
        """The hook: the paper's VTC loss `vtc` plus the temporal extensions' terms; their diagnostics go into
        `metrics` (logged). video: normalised [B, T, 3, H, W]; video_feat, text_feat: [B, E] normalised;
        frame_tokens: [B, T, 1 + n, Dv] after the temporal blocks.

        rev_acc     the text prefers its clip over the clip reversed (0.5 = blind to order)
        vtc_static  VTC of the order-blind part alone (the mean of frames)
        """
        cfg = self.cfg
        if cfg.vtc_reversed > 0 and video.shape[1] > 1:  # the clip played backwards, a negative of its text
            reversed_feat = self.reversed_embedding(model, video, mask_ratio)
            with torch.no_grad():
                metrics["rev_acc"] = ((text_feat * (video_feat - reversed_feat)).sum(-1) > 0).float().mean()
            vtc = vtc + cfg.vtc_reversed * reversed_vtc_term(video_feat, text_feat, reversed_feat, model.temp)
        if cfg.temporal_moments > 1 and cfg.vtc_static > 0:  # moment 0 alone must match the caption too
            static = F.normalize(model.vision_proj(frame_tokens[:, :, 0]).mean(1), dim=-1)  # [B, E]
            vtc0, _ = vtc_loss(static, text_feat, model.temp, positives)
            metrics["vtc_static"] = vtc0.detach()
            vtc = vtc + cfg.vtc_static * vtc0
        return vtc
