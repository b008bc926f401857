"""Hugging Face wrapper of SMAUG models: `SmaugHFConfig` + `SmaugHFModel`, registered with the Auto classes.

    import smaug.hf  # registers model_type "smaug" with AutoConfig / AutoModel
    model = AutoModel.from_pretrained("exported_dir")          # smaug installed
    model = AutoModel.from_pretrained("exported_dir", trust_remote_code=True)  # without smaug

`SmaugHFModel` wraps the library's own `SmaugModel`. An export copies byte for byte (MODEL_CODE_FILES):
`configuration_smaug.py`, `modeling_smaug.py`, `smaug/models/smaug.py` with every model module it
imports (found by following its relative imports, so a new model file needs no edit here) and
`smaug/dist.py`; `auto_map` points at the first two. `processing_smaug.py` (with the library's
`smaug/data/frames.py`, PROCESSOR_CODE_FILES, which its `save_pretrained` writes) is the AutoProcessor,
named in the folder's `processor_config.json`. CODE_FILES: both.
"""

from __future__ import annotations

import re
from pathlib import Path

from transformers import AutoConfig, AutoModel

from .configuration_smaug import SmaugHFConfig
from .modeling_smaug import SmaugHFModel, SmaugRetrievalOutput
from .processing_smaug import SmaugProcessor

PACKAGE = Path(__file__).parents[1]  # smaug/
# the relative imports transformers follows when it copies a remote-code module (dynamic_module_utils)
RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE)


def model_modules(root: Path = PACKAGE / "models" / "smaug.py") -> tuple[Path, ...]:
    """`root` and every module it imports relatively, transitively: `from .x import` is smaug/models/x.py,
    or smaug/x.py where the model code reaches the package's plain-torch helpers (common.py's `.dist`)."""
    seen, todo = [], [root]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.append(f)
        for name in RELATIVE_IMPORT.findall(f.read_text(encoding="utf-8")):
            found = [p for p in (f.parent / f"{name}.py", PACKAGE / f"{name}.py") if p.is_file()]
            if not found:
                raise FileNotFoundError(f"{f}: `from .{name} import` names no module in {f.parent} or {PACKAGE}")
            todo.append(found[0])
    return tuple(sorted(seen, key=lambda p: p.name))


MODEL_CODE_FILES = (  # what export_hf copies next to config.json
    Path(__file__).with_name("configuration_smaug.py"),
    Path(__file__).with_name("modeling_smaug.py"),
    *model_modules(),  # the library's model code the exported model runs, byte for byte
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
    "CODE_FILES",
    "MODEL_CODE_FILES",
    "PROCESSOR_CODE_FILES",
    "AUTO_MAP",
]
