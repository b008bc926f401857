"""Hugging Face wrapper of SMAUG models: `SmaugHFConfig` + `SmaugHFModel`, registered with the Auto classes.

    import smaug.hf  # registers model_type "smaug" with AutoConfig / AutoModel
    model = AutoModel.from_pretrained("exported_dir")          # smaug installed
    model = AutoModel.from_pretrained("exported_dir", trust_remote_code=True)  # without smaug

`configuration_smaug.py` and `modeling_smaug.py` are the single source of the exported modeling
code, with the library's own plain-torch modules `smaug/models/frame_tokens.py` (temporal embedding,
EViT), `frame_selection.py` and `moments.py`: `tools/export_hf.py` copies them into the folder
(MODEL_CODE_FILES) and points `auto_map` at the first two; `processing_smaug.py` (with the library's
`smaug/data/frames.py`, PROCESSOR_CODE_FILES, which its `save_pretrained` writes) is the AutoProcessor,
named in the folder's `processor_config.json`. CODE_FILES: both.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel

from .configuration_smaug import SmaugHFConfig, SmaugTextConfig, SmaugVisionConfig
from .modeling_smaug import SmaugHFModel, SmaugRetrievalOutput
from .processing_smaug import SmaugProcessor

MODEL_CODE_FILES = (  # what export_hf copies next to config.json
    Path(__file__).with_name("configuration_smaug.py"),
    Path(__file__).with_name("modeling_smaug.py"),
    # the library's plain-torch modules the exported model runs, shared byte for byte (PLAIN_TORCH_FILES)
    *(Path(__file__).parents[1] / "models" / f for f in ("frame_tokens.py", "frame_selection.py", "moments.py")),
)
PROCESSOR_CODE_FILES = (  # what SmaugProcessor.save_pretrained writes itself, so a processor saved alone loads too
    Path(__file__).with_name("processing_smaug.py"),
    Path(__file__).parents[1] / "data" / "frames.py",  # the processor's frame sampling / crop, as evaluation's
)
CODE_FILES = MODEL_CODE_FILES + PROCESSOR_CODE_FILES  # every code file of an exported folder
AUTO_MAP = {"AutoConfig": "configuration_smaug.SmaugHFConfig", "AutoModel": "modeling_smaug.SmaugHFModel"}

AutoConfig.register(SmaugHFConfig.model_type, SmaugHFConfig, exist_ok=True)
AutoModel.register(SmaugHFConfig, SmaugHFModel, exist_ok=True)

__all__ = [
    "SmaugHFConfig",
    "SmaugHFModel",
    "SmaugProcessor",
    "SmaugRetrievalOutput",
    "SmaugTextConfig",
    "SmaugVisionConfig",
    "CODE_FILES",
    "MODEL_CODE_FILES",
    "PROCESSOR_CODE_FILES",
    "AUTO_MAP",
]
