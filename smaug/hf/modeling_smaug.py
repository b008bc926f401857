"""Hugging Face model of an exported SMAUG video-language model (inference + further fine-tuning).

Copied as it is into every exported folder, so that
`AutoModel.from_pretrained(dir, trust_remote_code=True)` works with plain `transformers` and
`torch`: it must not import `smaug` (nor timm). It reproduces the evaluation path of
`smaug.models.SmaugModel` with the same parameter names, so the exported `model.safetensors`
(the SmaugModel state dict) loads without renaming:

  video_encoder   per-frame ViT (timm block layout, re-implemented in torch): patch embedding,
                  spatial + temporal position embeddings, one [CLS] per frame, blocks with EViT
                  token sparsification at `sparsify_layers` (SMAUG keeps it at eval), final norm
  text_encoder    transformers BERT: `bert` = embeddings + text-only layers, `fusion` = the
                  cross-attention layers used by VTM
  vision_proj / text_proj   VTC projections; frame [CLS] features are averaged over time
  temporal_moments  (temporal_moments > 1) the order-aware part of the video embedding (moments.py)
  frame_selector, video_to_text, vtm_head   text-guided frame selection (frame_selection.py) + VTM head

The library's own plain-torch modules lie next to this file as byte copies, so the smaug-specific steps
run the library's code and cannot drift: frame_tokens.py (temporal embedding at any frame count, the
[CLS] attention row, EViT sparsification), frame_selection.py, moments.py. What is written here is the
timm layout of the ViT blocks (timm cannot be a dependency of the export; parity tests hold it to
timm's forward) and the BERT wiring of the text tower.
  vtc_log_temp    learned log temperature; the temperature is exp of it, clamped to [temp_min, temp_max]

Interface (named as transformers' CLIP):
  get_video_features(pixel_values) -> [B, E] L2-normalised
  get_text_features(input_ids, attention_mask, token_type_ids) -> [B, E] L2-normalised (takes
      `**tokenizer(texts, return_tensors="pt", padding=True)` as it comes)
  forward(input_ids, attention_mask, pixel_values) -> SmaugRetrievalOutput with
      logits_per_text [Bt, Bv] and logits_per_video [Bv, Bt] (cosine / temperature)
  get_vtm_logits(pixel_values, input_ids, attention_mask) -> [B] match logits of row-aligned pairs

`pixel_values`: [B, T, 3, H, W], uint8 RGB (normalised here with `config.preprocessing`
mean/std) or float already normalised. The MAE decoder and MLM head of the checkpoint are not
needed for retrieval and are ignored on load.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertModel, PreTrainedModel
from transformers.models.bert.modeling_bert import BertLayer
from transformers.utils import ModelOutput

from .configuration_smaug import SmaugHFConfig

try:  # an exported folder: byte copies of the library's plain-torch modules lie next to this file
    from .frame_selection import FrameSelector
    from .frame_tokens import cls_attention_row, num_kept, resize_time, sparsify_tokens
    from .moments import TemporalMoments
except ImportError:  # inside the smaug package (smaug/hf/ holds no copies)
    from smaug.models.frame_selection import FrameSelector
    from smaug.models.frame_tokens import cls_attention_row, num_kept, resize_time, sparsify_tokens
    from smaug.models.moments import TemporalMoments


# ---------------------------------------------------------------------------- video tower
class PatchEmbed(nn.Module):
    """Conv patchifier: [M, 3, H, W] -> [M, N, D] (timm `PatchEmbed` layout)."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention (timm `Attention` layout) that can also return the [CLS] row."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cls_row: bool = False):
        M, n, D = x.shape
        q, k, v = self.qkv(x).reshape(M, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(M, n, D))
        return out, (cls_attention_row(q, k, self.scale) if cls_row else None)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm `Block` parameter names)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))


class SmaugVideoTower(nn.Module):
    """Frames are encoded independently; time enters through the temporal embeddings."""

    def __init__(self, vc):
        super().__init__()
        D = vc.hidden_size
        self.vc = vc
        self.patch_embed = PatchEmbed(vc.patch_size, D)
        n = (vc.image_size // vc.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, D))
        self.temporal_embed = nn.Parameter(torch.zeros(1, vc.num_frames, 1, D))
        self.blocks = nn.ModuleList(
            [
                Block(D, vc.num_attention_heads, vc.mlp_ratio, vc.qkv_bias, vc.layer_norm_eps)
                for _ in range(vc.num_hidden_layers)
            ]
        )
        self.norm = nn.LayerNorm(D, eps=vc.layer_norm_eps)

    def temporal(self, T: int) -> torch.Tensor:
        return resize_time(self.temporal_embed, T)

    def forward(self, video: torch.Tensor):
        """video: [B, T, 3, H, W] normalised -> tokens [B, T, 1 + n_out, D] (token 0 = frame [CLS]), ids
        [B, T, n_out] the patch index of each output patch token (-1 = an EViT fused token)."""
        B, T = video.shape[:2]
        x = self.patch_embed(video.flatten(0, 1)) + self.pos_embed[:, 1:]
        te = self.temporal(T)
        x = (x.unflatten(0, (B, T)) + te).flatten(0, 1)
        cls = (self.cls_token + self.pos_embed[:, :1] + te).expand(B, -1, -1, -1).flatten(0, 1)
        x = torch.cat([cls, x], dim=1)
        ids = torch.arange(x.shape[1] - 1, device=x.device).expand(x.shape[0], -1)
        sparsify = set(self.vc.sparsify_layers)
        for i, blk in enumerate(self.blocks):
            out, cls_attn = blk.attn(blk.norm1(x), cls_row=i in sparsify)
            x = x + out
            if i in sparsify:
                keep = num_kept(x.shape[1] - 1, self.vc.keep_ratio)
                x, ids = sparsify_tokens(x, cls_attn, ids, keep, self.vc.sparsify_mode)
            x = x + blk.mlp(blk.norm2(x))
        return self.norm(x).unflatten(0, (B, T)), ids.unflatten(0, (B, T))


# ---------------------------------------------------------------------------- text tower
def _bert_config(tc, num_layers: int) -> BertConfig:
    return BertConfig(
        vocab_size=tc.vocab_size,
        hidden_size=tc.hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=tc.num_attention_heads,
        intermediate_size=tc.intermediate_size,
        hidden_dropout_prob=tc.hidden_dropout_prob,
        attention_probs_dropout_prob=tc.hidden_dropout_prob,
        max_position_embeddings=tc.max_position_embeddings,
        pad_token_id=tc.pad_token_id,
        type_vocab_size=tc.type_vocab_size,
        layer_norm_eps=tc.layer_norm_eps,
        attn_implementation="sdpa",
    )


class SmaugTextTower(nn.Module):
    def __init__(self, tc):
        super().__init__()
        bc = _bert_config(tc, tc.fusion_layer)
        self.bert = BertModel(bc, add_pooling_layer=False)
        fc = copy.deepcopy(bc)
        fc.is_decoder, fc.add_cross_attention = True, True
        self.fusion = nn.ModuleList([BertLayer(fc, layer_idx=i) for i in range(tc.num_hidden_layers - tc.fusion_layer)])
        for layer in self.fusion:
            layer.attention.self.is_causal = False  # fusion self-attention is bidirectional

    @staticmethod
    def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def forward_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        h = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # None = all 0, as in training
        ext = self.extended_mask(attention_mask, h.dtype)
        for layer in self.bert.encoder.layer:
            h = layer(h, ext)
        return h

    def forward_fusion(self, hidden: torch.Tensor, attention_mask: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        ext = self.extended_mask(attention_mask, hidden.dtype)
        for layer in self.fusion:
            hidden = layer(hidden, ext, encoder_hidden_states=video)  # by keyword: order differs across releases
        return hidden


# ---------------------------------------------------------------------------- model
@dataclass
class SmaugRetrievalOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits_per_video: Optional[torch.Tensor] = None  # [Bv, Bt]
    logits_per_text: Optional[torch.Tensor] = None  # [Bt, Bv]
    text_embeds: Optional[torch.Tensor] = None  # [Bt, E] normalised
    video_embeds: Optional[torch.Tensor] = None  # [Bv, E] normalised


class SmaugHFModel(PreTrainedModel):
    config_class = SmaugHFConfig
    base_model_prefix = "smaug"
    main_input_name = "pixel_values"
    _no_split_modules = ["Block", "BertLayer"]
    _keys_to_ignore_on_load_unexpected = [r"^mae_decoder\.", r"^text_encoder\.mlm_head\."]

    def __init__(self, config: SmaugHFConfig):
        super().__init__(config)
        vc, tc = config.vision_config, config.text_config
        self.video_encoder = SmaugVideoTower(vc)
        self.text_encoder = SmaugTextTower(tc)
        E = config.projection_dim
        self.frame_selector = (
            FrameSelector(E, config.select_frames, config.select_temp, gumbel=False)
            if config.select_frames < vc.num_frames
            else None
        )
        self.vision_proj = nn.Linear(vc.hidden_size, E)
        self.temporal_moments = (
            TemporalMoments(
                vc.hidden_size,
                E,
                vc.temporal_moments,
                vc.moments_xy,
                vc.moments_centroid,
                vc.moments_weight,
                vc.image_size // vc.patch_size,
            )
            if vc.temporal_moments > 1
            else None
        )
        self.text_proj = nn.Linear(tc.hidden_size, E)
        self.video_to_text = (
            nn.Linear(vc.hidden_size, tc.hidden_size) if vc.hidden_size != tc.hidden_size else nn.Identity()
        )
        self.vtm_head = nn.Linear(tc.hidden_size, 1)
        init = float((config.pretraining or {}).get("temp_init", 0.07))  # SmaugConfig.temp_init
        self.vtc_log_temp = nn.Parameter(torch.full((1,), math.log(init)))  # shape [1], as in SmaugModel
        self.post_init()

    def _init_weights(self, module):
        """Only for weights missing from a checkpoint (a fresh model is not meant to be trained from here)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def temp(self) -> torch.Tensor:
        return self.vtc_log_temp.exp().clamp(self.config.temp_min, self.config.temp_max)[0]

    def normalize_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.vision_proj.weight.dtype
        if pixel_values.dtype == torch.uint8:
            pp = self.config.preprocessing
            mean = torch.tensor(pp["mean"], device=pixel_values.device).view(1, 1, 3, 1, 1)
            std = torch.tensor(pp["std"], device=pixel_values.device).view(1, 1, 3, 1, 1)
            pixel_values = (pixel_values.float() / 255.0 - mean) / std
        return pixel_values.to(dtype)

    def encode_video(self, pixel_values: torch.Tensor):
        """-> frame_tokens [B, T, 1 + n, Dv], video_embeds [B, E], frame_embeds [B, T, E] (normalised)."""
        tokens, ids = self.video_encoder(self.normalize_video(pixel_values))
        cls = self.vision_proj(tokens[:, :, 0])
        if self.temporal_moments is None:
            video = cls.mean(1)
        else:  # the mean of frames + their moments over time (moments.py)
            video = self.temporal_moments.embed(cls, tokens, ids)
        return tokens, F.normalize(video, dim=-1), F.normalize(cls, dim=-1)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ):
        """-> text_hidden [B, L, Dt], text_embeds [B, E] (normalised). Takes what the tokenizer returns."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_encoder.forward_text(input_ids, attention_mask, token_type_ids)
        return hidden, F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def get_video_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_video(pixel_values)[1]

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """`model.get_text_features(**tokenizer(texts, return_tensors="pt", padding=True))` -> [B, E]."""
        return self.encode_text(input_ids, attention_mask, token_type_ids)[1]

    def get_vtm_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Video-text matching logits of row-aligned pairs (higher = match)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        tokens, _, frame_embeds = self.encode_video(pixel_values)
        hidden, text_embeds = self.encode_text(input_ids, attention_mask, token_type_ids)
        if self.frame_selector is None or tokens.shape[1] <= self.frame_selector.k:
            video = tokens.flatten(1, 2)
        else:
            video = self.frame_selector(tokens, frame_embeds, text_embeds)[0]  # eval: top-k, temporal order
        fused = self.text_encoder.forward_fusion(hidden, attention_mask, self.video_to_text(video))
        return self.vtm_head(fused[:, 0]).squeeze(-1)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        return_loss: bool = False,
        **kwargs,
    ) -> SmaugRetrievalOutput:
        video_embeds = self.get_video_features(pixel_values) if pixel_values is not None else None
        text_embeds = (
            self.get_text_features(input_ids, attention_mask, token_type_ids) if input_ids is not None else None
        )
        out = SmaugRetrievalOutput(text_embeds=text_embeds, video_embeds=video_embeds)
        if video_embeds is not None and text_embeds is not None:
            out.logits_per_text = text_embeds @ video_embeds.t() / self.temp
            out.logits_per_video = out.logits_per_text.t()
            if return_loss:
                labels = torch.arange(out.logits_per_text.shape[0], device=out.logits_per_text.device)
                out.loss = (
                    F.cross_entropy(out.logits_per_text, labels) + F.cross_entropy(out.logits_per_video, labels)
                ) / 2
        return out
