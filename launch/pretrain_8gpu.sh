#!/usr/bin/env bash
# Pre-train on one node with the DeepSpeed launcher.
#
#   bash launch/pretrain_8gpu.sh [key=value ...]        # extra args go to smaug.train
#
# Env knobs (defaults in brackets):
#   CONFIG        run config(s), space-separated        [smaug/configs/pretrain_5m.yaml]
#                 e.g. CONFIG="smaug/configs/pretrain_5m.yaml smaug/configs/dense.yaml" for the dense baseline
#   OUT           output dir (checkpoints, log.jsonl)   [runs/$(basename first config .yaml)]
#   NUM_GPUS      GPUs on this node                     [8]
#   MASTER_PORT   rendezvous port                       [29500]
#   SMAUG_SHARDS  shard root holding the corpus YAMLs   [<repo>/shards]
#   SMAUG_SETUP   1 = create/refresh .venv first (launch/setup_env.sh); 0 = use the active env  [1]
#   WANDB_MODE    online | offline | disabled           [disabled]
#   PYTORCH_CUDA_ALLOC_CONF  CUDA caching allocator        [expandable_segments:True]
# Resume is automatic: rerun the same command and it continues from OUT's latest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${CONFIG:-smaug/configs/pretrain_5m.yaml}"
first="${CONFIG%% *}"
OUT="${OUT:-runs/$(basename "$first" .yaml)}"
NUM_GPUS="${NUM_GPUS:-8}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [ "${SMAUG_SETUP:-1}" = 1 ]; then . launch/setup_env.sh; fi
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"  # less fragmentation: text lengths vary per batch
cfg_args=(); for c in $CONFIG; do cfg_args+=(--config "$c"); done
exec deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" \
  --module smaug.train "${cfg_args[@]}" --out "$OUT" "$@"
