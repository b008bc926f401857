"""The DeepSpeed pre-training entry point: `python -m smaug.train --config X.yaml [key=value ...]`.

The only package that needs DeepSpeed; nothing else under `smaug/` imports it (tests/test_layout.py).
Importing the package imports nothing: `from smaug.train.trainer import main` for in-process runs.
"""
