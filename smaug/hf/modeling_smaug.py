"""Hugging Face model of an exported SMAUG video-language model: the library's own `SmaugModel`, wrapped.

Copied as it is into every exported folder together with byte copies of the library's model files
(`smaug/models/smaug.py` and every module it imports, and `smaug/dist.py`: `smaug.hf.MODEL_CODE_FILES`),
so `AutoModel.from_pretrained(dir, trust_remote_code=True)` runs exactly the code the model was trained
with, for every tower family (timm ViT, CLIP, BEiT), temporal blocks and moments, and cannot drift from it.
It needs `torch`, `transformers` and `timm` (the towers are timm's and transformers' own modules), not smaug.

`SmaugHFModel.smaug` is that `SmaugModel`, built from `config.smaug_config` (every SmaugConfig field);
`model.safetensors` is its state dict under the prefix `smaug.`, MAE decoder and MLM head included, so
pre-training can continue from an export.

Interface (named as transformers' CLIP):
  get_video_features(pixel_values) -> [B, E] L2-normalised
  get_text_features(input_ids, attention_mask, token_type_ids) -> [B, E] L2-normalised (takes
      `**tokenizer(texts, return_tensors="pt", padding=True)` as it comes; the model was trained with
      segment 0 everywhere, which is what the tokenizer gives a single text, so token_type_ids are not read)
  forward(input_ids, attention_mask, pixel_values) -> SmaugRetrievalOutput with
      logits_per_text [Bt, Bv] and logits_per_video [Bv, Bt] (cosine / temperature)
  get_vtm_logits(pixel_values, input_ids, attention_mask) -> [B] match logits of row-aligned pairs

`pixel_values`: [B, T, 3, H, W], uint8 RGB (normalised in the model with the training mean/std) or float
already normalised; any T (the temporal embedding is interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import timm  # noqa: F401  (the video tower's blocks are timm's: transformers names it when it is missing)
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_smaug import SmaugHFConfig

try:  # an exported folder: byte copies of the library's model files lie next to this file
    from .smaug import SmaugConfig, SmaugModel
except ModuleNotFoundError as e:  # inside the smaug package (smaug/hf/ holds no copies)
    if e.name != f"{__package__}.smaug":  # an export missing a module, or timm: say so, never mask it
        raise
    from smaug.models.smaug import SmaugConfig, SmaugModel


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

    def __init__(self, config: SmaugHFConfig):
        super().__init__(config)
        self.smaug = SmaugModel(SmaugConfig(**config.smaug_config))
        self.post_init()

    def _init_weights(self, module):
        """Every weight comes from model.safetensors (or, for `SmaugHFModel(config)`, from SmaugModel's own
        initialisation). What transformers' loader, which builds the model on the meta device, leaves to
        this hook are the non-persistent buffers (BEiT's relative position index, the MAE decoder's fixed
        position embedding): each module recomputes its own, as timm's modules do."""
        init = getattr(module, "init_non_persistent_buffers", None)
        if init is not None:
            init()

    @property
    def temp(self) -> torch.Tensor:
        """The VTC temperature: logits are cosine / temp."""
        return self.smaug.temp

    def normalize_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, H, W] -> normalised float in the model's dtype (float input is taken as normalised)."""
        return self.smaug.normalize_video(pixel_values)

    def get_video_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.smaug.get_video_features(pixel_values)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """`model.get_text_features(**tokenizer(texts, return_tensors="pt", padding=True))` -> [B, E]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.smaug.get_text_features(input_ids, attention_mask)

    def get_vtm_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Video-text matching logits of row-aligned pairs (higher = match): text-guided frame selection,
        then the fusion layers, as the model reranks retrieval candidates."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        frame_tokens, _, frame_feat = self.smaug.encode_video(pixel_values)
        text_hidden, text_feat = self.smaug.encode_text(input_ids, attention_mask)
        return self.smaug.vtm_logits(frame_tokens, frame_feat, text_hidden, text_feat, attention_mask)

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
        text_embeds = self.get_text_features(input_ids, attention_mask) if input_ids is not None else None
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
