#!/usr/bin/env bash
# One prepared GPU check (issue 6), for an offline H100/H200 whose image has torch/timm/transformers:
#   carry .whl (bench/gpu_wheels.sh), optionally a copy of ../shared/probes in .probes/, and
#   optionally shards/synthetic + data/synthetic/tokenizer (from launch/quickstart.sh) for a short
#   run of the real trainer on the GPU (~41 MiB in all, under the 64 MiB carry limit)
#   command: bash bench/gpu_bench.sh        (writes $OUT/*.json, logs and profile tables)
#            bash bench/gpu_bench.sh compiled   (a second call: eager and train.compile=$COMPILE_MODE, default
#            "default", SMAUG and dense, engine and bare, at --batch and at each config's largest batch, side by
#            side; no profiles, no trainer run: compiling the base model's six regions takes ~1 min a config)
# Builds nothing but DeepSpeed's FusedAdam JIT op (~40 s). Order: our bench first (the targets),
# then the bare peer rendition at the same batch in the same call, so ratios share the machine,
# then the trainer. Timeouts (360 + 60 + 90 s) keep the call under the device's 600 s limit;
# the bench saves each number as it is measured, so a cut-off run still reports.
#   GPU_BENCH_DRYRUN=1 PYTHON=.venv/bin/python bash bench/gpu_bench.sh
#       the same script on CPU in an env that has everything (tiny preset, a few steps): checks
#       every phase before spending GPU time (not the cp312 wheels themselves)
set -uo pipefail
PHASE="${1:-eager}"
case "$PHASE" in eager|compiled) ;; *) echo "usage: bash bench/gpu_bench.sh [eager|compiled]"; exit 2 ;; esac
OUT="${OUT:-/tmp/smaug-gpu}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
t0=$(date +%s)
if [ "${GPU_BENCH_DRYRUN:-0}" = 1 ]; then  # the wheels are cp312 for the GPU image: use this env as it is
  export PYTHONPATH="$PWD"
else
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH" || exit 1  # bin: ninja, for the FusedAdam JIT build
fi
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"  # batch-size probes fragment the cache
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/torch_ext}"
"$PY" - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import importlib, sys
print("python", sys.version.split()[0])
need = ("torch", "deepspeed", "smaug.models", "smaug.train")  # the bench; the rest only for the trainer run
bad = []
for m in ("torch", "deepspeed", "timm", "transformers", "decord", "webdataset", "PIL", "yaml", "tokenizers",
          "smaug.models", "smaug.train", "smaug.data"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "ok"))
    except Exception as exn:  # noqa: BLE001 - report every missing piece at once
        print(m, "FAILED:", type(exn).__name__, exn)
        bad += [m] if m in need else []
sys.exit(1 if bad else 0)
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "imports the bench needs failed: see $OUT/versions.txt"; exit 1; }
if [ "${GPU_BENCH_DRYRUN:-0}" = 1 ]; then
  ARGS=(--device cpu --preset tiny --batch 4 --steps 1 --warmup 1 --profile-steps 1)
  export PROBE_TINY=1
else
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$OUT/versions.txt"  # <= 8 files in $OUT: a device call brings back no more
  # 64 clips both configs (engine + bare), each config's largest micro-batch within 80 GiB (the
  # issue's card size, also on an H200), the SMAUG engine under other ZeRO settings, then profiles
  # of all of them (last: a profiler session slows what is timed after it)
  ARGS=(--device cuda --preset base --batch 64 --steps 20 --warmup 5 --max-batch --mem-limit-gib 80 --dense-1f)
fi
if [ "$PHASE" = compiled ]; then
  # eager first (the reference), then the largest batches, then the same compiled: each number is saved as it
  # is measured, so a call cut short by the 600 s limit still reports what it reached
  if [ "${GPU_BENCH_DRYRUN:-0}" = 1 ]; then C=(--paths smaug:engine,dense:engine --compile-backend aot_eager)
  else C=(--paths smaug:engine,dense:engine,smaug:bare,dense:bare --steps 10 --warmup 3); fi
  A=(); for a in "${ARGS[@]}"; do [ "$a" = --dense-1f ] || A+=("$a"); done  # 1 frame: the first call's
  timeout 540 "$PY" bench/train_step.py "${A[@]}" "${C[@]}" --compile "${COMPILE_MODE:-default}" \
    --json "$OUT/train_step_compiled.json" 2>&1 | grep -v '^\[20' | tee "$OUT/train_step_compiled.log"
  echo "train_step (compiled) exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
  exit 0
fi
# one profiles.txt, not a file per path: a device call brings back only a few files
timeout 360 "$PY" bench/train_step.py "${ARGS[@]}" --profile "$OUT" --engine-variants \
  --json "$OUT/train_step.json" 2>&1 | grep -v '^\[20' | tee "$OUT/train_step.log"
echo "train_step exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
if [ -f .probes/step_ratio.py ]; then
  CLIPS=64 OUT="$OUT" timeout 60 "$PY" .probes/step_ratio.py 2>&1 | tail -20 | tee "$OUT/step_ratio.log"
fi
# The real trainer on this device: pinned batches + CUDA-stream prefetch, FusedAdam, bf16 and the
# grad-norm guard, a checkpoint, the final eval. Needs the quickstart's shards and tokenizer
# carried along (shards/synthetic, data/synthetic/tokenizer: ~10 MB; made by launch/quickstart.sh).
if [ -f shards/synthetic/train/manifest.json ] && [ -f data/synthetic/tokenizer/tokenizer.json ]; then
  if [ "${GPU_BENCH_DRYRUN:-0}" = 1 ]; then
    TR=(train.device=cpu train.precision=fp32 train.steps=4 data.batch_size=4 data.num_workers=1 ckpt.every=2)
  else
    TR=(train.device=cuda train.precision=bf16 train.steps=30 data.batch_size=64 data.num_workers=8 ckpt.every=15)
  fi
  run_dir="$(mktemp -d)/trainer_run"  # checkpoints stay out of $OUT (too many files to bring back)
  SMAUG_SHARDS="$PWD/shards" timeout 90 "$PY" -m smaug.train --config smaug/configs/quickstart.yaml \
    --out "$run_dir" "model.tokenizer=$PWD/data/synthetic/tokenizer" "${TR[@]}" \
    optim.warmup_steps=2 eval.every=0 log.every=10 log.progress=false 2>&1 | grep -v '^\[20' | tail -12 \
    | tee "$OUT/trainer_run.log"
  echo "trainer exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
  cp "$run_dir/log.jsonl" "$OUT/trainer_log.jsonl" 2>/dev/null || true
fi
echo "gpu_bench done after $(( $(date +%s) - t0 )) s; results in $OUT"
