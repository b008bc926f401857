#!/usr/bin/env bash
# Pre-train on several nodes with a DeepSpeed hostfile (passwordless ssh between nodes,
# the repo and shards on a shared filesystem or at the same path on every node).
#
#   HOSTFILE=hosts.txt bash launch/pretrain_multinode.sh [key=value ...]
#
# hosts.txt has one line per node:  node001 slots=8
# Without ssh between nodes (a scheduler starts one launcher per node): run the same command on
# every node with NODE_RANK=<its line in HOSTFILE, from 0> (DeepSpeed's --no_ssh mode); every node
# then needs MASTER_ADDR (default: the first host) to reach node 0 at MASTER_PORT.
# Env knobs (defaults in brackets):
#   HOSTFILE      DeepSpeed hostfile (required)
#   CONFIG        run config(s), space-separated        [smaug/configs/pretrain_5m.yaml]
#   OUT           output dir on the shared filesystem    [runs/$(basename first config .yaml)]
#   MASTER_ADDR   rank-0 host                            [first host in HOSTFILE]
#   MASTER_PORT   rendezvous port                        [29500]
#   NODE_RANK     set: launch only this node's ranks, no ssh (--no_ssh --node_rank)  [unset: ssh to all]
#   SMAUG_SHARDS  shard root (same path on all nodes)   [<repo>/shards]
#   SMAUG_SETUP   1 = create/refresh .venv on this node first                  [1]
#   PYTORCH_CUDA_ALLOC_CONF  CUDA caching allocator        [expandable_segments:True]
# Data-parallel size = total slots; the global batch grows with it (see data.batch_size).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOSTFILE:?set HOSTFILE to a DeepSpeed hostfile (lines like: node001 slots=8)}"
CONFIG="${CONFIG:-smaug/configs/pretrain_5m.yaml}"
first="${CONFIG%% *}"
OUT="${OUT:-runs/$(basename "$first" .yaml)}"
MASTER_ADDR="${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [ "${SMAUG_SETUP:-1}" = 1 ]; then . launch/setup_env.sh; fi
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"  # less fragmentation: text lengths vary per batch
cfg_args=(); for c in $CONFIG; do cfg_args+=(--config "$c"); done
# DeepSpeed forwards these variables to every node (see its .deepspeed_env mechanism).
export DS_ENV_FILE="${DS_ENV_FILE:-$PWD/.deepspeed_env}"
{ for v in SMAUG_SHARDS WANDB_MODE HF_HUB_OFFLINE HF_HOME HF_HUB_CACHE TORCH_EXTENSIONS_DIR PYTHONPATH PYTORCH_CUDA_ALLOC_CONF; do
    [ -n "${!v:-}" ] && echo "$v=${!v}"; done; } > "$DS_ENV_FILE"
node_args=()
if [ -n "${NODE_RANK:-}" ]; then node_args=(--no_ssh --node_rank "$NODE_RANK"); fi
exec deepspeed --hostfile "$HOSTFILE" "${node_args[@]}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --module smaug.train "${cfg_args[@]}" --out "$OUT" "$@"
