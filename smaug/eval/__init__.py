"""Evaluation beyond the training losses: attribute probes of the synthetic benchmark.

Imports nothing heavy; each module is self-contained (`smaug.eval.attributes`)."""
