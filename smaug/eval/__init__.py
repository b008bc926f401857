"""Evaluation, shared by the trainer's periodic eval and the tools (library code: no DeepSpeed).

`smaug.eval.retrieval`: VTC retrieval, VTM rerankings, tie-aware metrics and the report schema of
eval.json. `smaug.eval.attributes`: attribute probes of the synthetic benchmark and the frozen-frame
control. Importing the package imports nothing; import the module you need."""
