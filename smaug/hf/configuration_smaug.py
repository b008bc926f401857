"""Hugging Face configuration of an exported SMAUG video-language model.

This file is copied as it is into every exported folder (`tools/export_hf.py`), next to
`modeling_smaug.py`, so `AutoConfig.from_pretrained(dir, trust_remote_code=True)` works with
plain `transformers`: it must not import `smaug` (nor torch or timm: a config loads without them).

Layout of `config.json`:
  smaug_config    every field of the library's `SmaugConfig` (smaug/models/smaug.py, copied beside this
                  file as smaug.py), as the model was trained: the exported model is built from exactly
                  these values, so the export needs no table of its own that could drift from the library
  preprocessing   what the model expects as input: frames per clip, frame size, mean/std, and how frames
                  are sampled and cropped (the processor, processing_smaug.py, does exactly this)
  run_config      the training run's configuration, with local paths reduced to their last component
  run             where the weights come from: config name, step, the towers it started from
"""

from __future__ import annotations

from transformers import PretrainedConfig

PREPROCESSING_TEXT = {
    "frame_sampling": "T equal segments of the clip, the centre frame of each (eval)",
    "resize": "short side to image_size, then centre crop image_size x image_size",
    "input": "uint8 RGB [B, T, 3, H, W] (normalised inside the model) or already-normalised float",
}


class SmaugHFConfig(PretrainedConfig):
    """A SMAUG video-language model: video tower + text tower + VTC projections + VTM fusion."""

    model_type = "smaug"

    def __init__(self, smaug_config=None, preprocessing=None, run_config=None, run=None, **kwargs):
        self.smaug_config = dict(smaug_config or {})  # SmaugConfig field -> value (empty: SmaugConfig's defaults)
        c = self.smaug_config
        self.preprocessing = {
            "num_frames": c.get("num_frames", 4),
            "image_size": c.get("image_size", 224),
            "mean": list(c.get("mean", (0.485, 0.456, 0.406))),
            "std": list(c.get("std", (0.229, 0.224, 0.225))),
            **PREPROCESSING_TEXT,
            **(preprocessing or {}),
        }
        self.run_config = dict(run_config or {})
        self.run = dict(run or {})
        super().__init__(**kwargs)
        if c:  # CLIP's name for the embedding size: get_*_features return [B, projection_dim] (derived)
            self.projection_dim = int(c["embed_dim"])
