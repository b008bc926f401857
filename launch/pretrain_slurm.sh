#!/usr/bin/env bash
# Pre-train under Slurm with srun (one task per GPU).
#
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=10 \
#          --signal=USR1@300 launch/pretrain_slurm.sh [key=value ...]
#
# Submit from the repository root (the job runs there: $SLURM_SUBMIT_DIR).
# `--signal=USR1@300` asks Slurm to send SIGUSR1 to every task five minutes before the time limit
# (Slurm may send it up to a minute earlier): smaug saves a checkpoint at the next step and exits 0;
# resubmitting the same job resumes. `python -m smaug.train` takes SIGUSR1/SIGTERM from its first
# line (before importing torch); one that comes before that (~0.1 s of interpreter start) is ignored
# (the `trap ""` below), and the time limit's SIGTERM then still saves, within Slurm's KillWait.
# Try it on one machine: `bash launch/slurm_local_setup.sh` (root) sets up a local Slurm, then
#   sbatch --ntasks=2 --time=10 --signal=USR1@120 launch/pretrain_slurm.sh key=value ...
# Env knobs (defaults in brackets):
#   CONFIG        run config(s), space-separated        [smaug/configs/pretrain_5m.yaml]
#   OUT           output dir on a shared filesystem     [runs/$(basename first config .yaml)]
#   MASTER_PORT   rendezvous port                       [29500]
#   SMAUG_SHARDS  shard root                            [<repo>/shards]
#   SMAUG_VENV    virtualenv to use (must exist on all nodes; run launch/setup_env.sh once)  [<repo>/.venv]
#   PYTORCH_CUDA_ALLOC_CONF  CUDA caching allocator        [expandable_segments:True]
#SBATCH --job-name=smaug
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
[ -f smaug/train/__main__.py ] || { echo "pretrain_slurm.sh: submit from the smaug repository root (job dir: $PWD)" >&2; exit 2; }
CONFIG="${CONFIG:-smaug/configs/pretrain_5m.yaml}"
first="${CONFIG%% *}"
export OUT="${OUT:-runs/$(basename "$first" .yaml)}"
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT="${MASTER_PORT:-29500}"
SMAUG_VENV="${SMAUG_VENV:-$PWD/.venv}"
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"  # less fragmentation: text lengths vary per batch
cfg_args=(); for c in $CONFIG; do cfg_args+=(--config "$c"); done
# Each task maps Slurm's ids to torch.distributed's env contract, then runs the trainer.
srun --kill-on-bad-exit=1 bash -c '
  trap "" USR1
  export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS
  exec "$0" -m smaug.train "$@"' "$SMAUG_VENV/bin/python" "${cfg_args[@]}" --out "$OUT" "$@" &
wait $!
