"""SMAUG models: `SmaugConfig`, `SmaugModel`, `SmaugOutput` (see ARCHITECTURE.md, "Model contract").

Library code: imports torch, timm and transformers, never DeepSpeed.
"""

from .smaug import PRESETS, SmaugConfig, SmaugModel, SmaugOutput

__all__ = ["PRESETS", "SmaugConfig", "SmaugModel", "SmaugOutput"]
