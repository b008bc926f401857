"""Hugging Face configuration of an exported SMAUG video-language model.

This file is copied as it is into every exported folder (`tools/export_hf.py`), next to
`modeling_smaug.py`, so `AutoConfig.from_pretrained(dir, trust_remote_code=True)` works with
plain `transformers`: it must not import `smaug`.

Layout of `config.json`:
  vision_config   the per-frame ViT video tower (+ EViT token sparsification, kept at eval)
  text_config     the BERT text encoder; layers >= `fusion_layer` are cross-attention fusion layers
  projection_dim  VTC embedding size; `temp_min` / `temp_max` clamp the learned temperature
  select_frames   frames per clip the text-guided selector passes to fusion (VTM)
  preprocessing   what the model expects as input: frames per clip, frame size, mean/std,
                  and how frames are sampled and cropped
  pretraining     the remaining training-only knobs (loss weights, masking, MAE decoder), kept
                  so the toolkit can rebuild the exact training configuration
"""

from __future__ import annotations

from transformers import PretrainedConfig


class SmaugVisionConfig(PretrainedConfig):
    """Per-frame ViT: patch embedding, spatial + temporal position embeddings, timm-style blocks."""

    model_type = "smaug_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_frames=4,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        sparsify_layers=(3, 6, 9),
        keep_ratio=0.7,
        sparsify_mode="fuse",
        drop_path_rate=0.0,
        temporal_moments=1,
        moments_weight=0.5,
        moments_xy=False,
        moments_centroid=False,
        **kwargs,
    ):
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.num_frames = int(num_frames)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.layer_norm_eps = float(layer_norm_eps)
        self.sparsify_layers = [int(i) for i in sparsify_layers]  # blocks that keep the top tokens by [CLS] attention
        self.keep_ratio = float(keep_ratio)  # tokens kept at each sparsify block: ceil(keep_ratio * n)
        self.sparsify_mode = str(sparsify_mode)  # "fuse" (EViT: the rest -> one token) or "drop"
        self.drop_path_rate = float(drop_path_rate)
        # the order-aware video embedding (moments.py, copied from smaug/models/moments.py): moments over time
        # (1 = the mean of frames only), their share, and whether they also read where things are / go
        self.temporal_moments = int(temporal_moments)
        self.moments_weight = float(moments_weight)
        self.moments_xy = bool(moments_xy)
        self.moments_centroid = bool(moments_centroid)
        super().__init__(**kwargs)


class SmaugTextConfig(PretrainedConfig):
    """BERT: layers [0, fusion_layer) encode text alone, the rest cross-attend to video tokens."""

    model_type = "smaug_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        fusion_layer=9,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        mask_token_id=103,
        cls_token_id=101,
        sep_token_id=102,
        **kwargs,
    ):
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.fusion_layer = int(fusion_layer)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.max_position_embeddings = int(max_position_embeddings)
        self.type_vocab_size = int(type_vocab_size)
        self.layer_norm_eps = float(layer_norm_eps)
        self.pad_token_id = int(pad_token_id)
        self.mask_token_id = int(mask_token_id)
        self.cls_token_id = int(cls_token_id)
        self.sep_token_id = int(sep_token_id)
        super().__init__(**kwargs)


DEFAULT_PREPROCESSING = {
    "num_frames": 4,
    "image_size": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "frame_sampling": "T equal segments of the clip, the centre frame of each (eval)",
    "resize": "short side to image_size, then centre crop image_size x image_size",
    "input": "uint8 RGB [B, T, 3, H, W] (normalised inside the model) or already-normalised float",
}


class SmaugHFConfig(PretrainedConfig):
    """A SMAUG video-language model: video tower + text tower + VTC projections + VTM fusion."""

    model_type = "smaug"

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projection_dim=256,
        temp_min=0.001,
        temp_max=0.5,
        select_frames=2,
        select_temp=0.1,
        preprocessing=None,
        pretraining=None,
        **kwargs,
    ):
        if isinstance(vision_config, SmaugVisionConfig):
            vision_config = vision_config.to_dict()
        if isinstance(text_config, SmaugTextConfig):
            text_config = text_config.to_dict()
        self.vision_config = SmaugVisionConfig(**(vision_config or {}))
        self.text_config = SmaugTextConfig(**(text_config or {}))
        self.projection_dim = int(projection_dim)
        self.temp_min = float(temp_min)
        self.temp_max = float(temp_max)
        self.select_frames = int(select_frames)
        self.select_temp = float(select_temp)
        self.preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
        self.pretraining = dict(pretraining or {})
        super().__init__(**kwargs)

    def to_dict(self):
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        out["text_config"] = self.text_config.to_dict()
        return out
