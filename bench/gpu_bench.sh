#!/usr/bin/env bash
# One prepared GPU check (issue 6), for an offline H100/H200 whose image has torch/timm/transformers:
#   carry .whl (bench/gpu_wheels.sh) and, if wanted, a copy of ../shared/probes in .probes/
#   command: bash bench/gpu_bench.sh        (writes $OUT/*.json and logs)
# Builds nothing but DeepSpeed's FusedAdam JIT op (~40 s). Order: our bench first (the targets),
# then the bare peer rendition at the same batch in the same call, so ratios share the machine.
set -uo pipefail
OUT="${OUT:-/tmp/smaug-gpu}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 420 python3 bench/train_step.py --device cuda --preset base --batch 64 --steps 10 --warmup 3 \
  --max-batch --json "$OUT/train_step.json" 2>&1 | grep -v '^\[20' | tee "$OUT/train_step.log"
if [ -f .probes/step_ratio.py ]; then
  CLIPS=64 OUT="$OUT" timeout 120 python3 .probes/step_ratio.py 2>&1 | tail -20 | tee "$OUT/step_ratio.log"
fi
