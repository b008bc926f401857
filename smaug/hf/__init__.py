"""Hugging Face wrapper of SMAUG models: `SmaugHFConfig` + `SmaugHFModel`, registered with the Auto classes.

    import smaug.hf  # registers model_type "smaug" with AutoConfig / AutoModel
    model = AutoModel.from_pretrained("exported_dir")          # smaug installed
    model = AutoModel.from_pretrained("exported_dir", trust_remote_code=True)  # without smaug

`configuration_smaug.py` and `modeling_smaug.py` are the single source of the exported modeling
code, with `smaug/models/moments.py` (the library's own temporal moments, plain torch):
`tools/export_hf.py` copies the three into the folder and points `auto_map` at the first two.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel

from .configuration_smaug import SmaugHFConfig, SmaugTextConfig, SmaugVisionConfig
from .modeling_smaug import SmaugHFModel, SmaugRetrievalOutput

CODE_FILES = (
    Path(__file__).with_name("configuration_smaug.py"),
    Path(__file__).with_name("modeling_smaug.py"),
    Path(__file__).parents[1] / "models" / "moments.py",  # the video embedding's moments, shared byte for byte
)
AUTO_MAP = {"AutoConfig": "configuration_smaug.SmaugHFConfig", "AutoModel": "modeling_smaug.SmaugHFModel"}

AutoConfig.register(SmaugHFConfig.model_type, SmaugHFConfig, exist_ok=True)
AutoModel.register(SmaugHFConfig, SmaugHFModel, exist_ok=True)

__all__ = [
    "SmaugHFConfig",
    "SmaugHFModel",
    "SmaugRetrievalOutput",
    "SmaugTextConfig",
    "SmaugVisionConfig",
    "CODE_FILES",
    "AUTO_MAP",
]
