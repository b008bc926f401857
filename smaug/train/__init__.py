"""The DeepSpeed pre-training entry point: `python -m smaug.train --config X.yaml [key=value ...]`.

Unlike `smaug.models` and `smaug.data`, this package needs DeepSpeed (imported lazily)."""
from .trainer import main

__all__ = ["main"]
