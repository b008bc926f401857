#!/usr/bin/env bash
# Convert a corpus on many machines: a Slurm job array, each task writing its share of the shards.
#
#   sbatch --array=0-15 --cpus-per-task=32 launch/make_shards_slurm.sh \
#       --webvid-csv results_10M_train.csv --video-root /data/webvid/videos \
#       --out shards/webvid10m --prefix webvid10m --frames 8 --resize-short-side 224
#
# Submit from the repository root (the tasks run there: $SLURM_SUBMIT_DIR) with the arguments of
# tools/make_shards.py; the listing, the media and --out must be on a filesystem every node sees.
# Array task I of N (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT; the ids must be 0..N-1) writes the
# shards I, I+N, I+2N, ... with the names and bytes one machine writes, using --workers
# $SLURM_CPUS_PER_TASK unless the arguments give --workers. The last task to finish writes
# manifest.json, summary.json (the skips of all tasks, per reason) and PREFIX.yaml (the corpus YAML);
# until then `python tools/make_shards.py --out DIR --merge` names the tasks not done.
# A task that was killed (time limit, node failure, scancel) resumes where it stopped when submitted
# again; a resubmission of some tasks names the array's size:
#   sbatch --array=3,7 launch/make_shards_slurm.sh --num-tasks 16 <the same arguments>
# Foreign shards (tools/index_shards.py, split by input tar) the same way:
#   TOOL=index_shards sbatch --array=0-7 --cpus-per-task=16 launch/make_shards_slurm.sh /data/my_v2d_shards
# Env knobs (defaults in brackets):
#   TOOL        make_shards or index_shards                                   [make_shards]
#   SMAUG_VENV  virtualenv to use (on every node; run launch/setup_env.sh once) [<repo>/.venv]
#SBATCH --job-name=make_shards
#SBATCH --output=make_shards-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
[ -f tools/make_shards.py ] || { echo "make_shards_slurm.sh: submit from the smaug repository root (job dir: $PWD)" >&2; exit 2; }
[ -n "${SLURM_ARRAY_TASK_ID:-}" ] || { echo "make_shards_slurm.sh: submit it as a job array: sbatch --array=0-(N-1) launch/make_shards_slurm.sh ARGS" >&2; exit 2; }
TOOL="${TOOL:-make_shards}"
case "$TOOL" in
  make_shards) extra=(--no-progress) ;;  # a progress bar only garbles the job's log file
  index_shards) extra=() ;;
  *) echo "make_shards_slurm.sh: TOOL=$TOOL: use make_shards or index_shards" >&2; exit 2 ;;
esac
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
  extra+=(--workers "$SLURM_CPUS_PER_TASK")  # before the arguments: a --workers there comes later and wins
fi
SMAUG_VENV="${SMAUG_VENV:-$PWD/.venv}"
echo "[make_shards_slurm] $TOOL: array task $SLURM_ARRAY_TASK_ID (ids $SLURM_ARRAY_TASK_MIN-$SLURM_ARRAY_TASK_MAX) on $(hostname)"
exec "$SMAUG_VENV/bin/python" "tools/$TOOL.py" ${extra[@]+"${extra[@]}"} "$@"
