#!/usr/bin/env bash
# The main job on the built-in synthetic corpus, from a fresh machine, in one command:
#   venv + installs -> synthetic corpus -> shards -> WordPiece tokenizer -> tiny pre-training
#   (DeepSpeed ZeRO-2; CPU here, a GPU when one is visible) -> zero-shot retrieval on the
#   held-out split (colour-shape pairs never seen in training, with all four motions) -> eval.json, with
#   top-1 colour / shape / motion accuracy against chance and a frozen-frame control (motion needs time).
#
#   bash launch/quickstart.sh
#   QUICKSTART_DENSE=1 bash launch/quickstart.sh      # the dense baseline, same everything else
#
# Env knobs (defaults in brackets):
#   QUICKSTART_DENSE    1 = dense baseline (no masking, no sparsification, all frames)   [0]
#   QUICKSTART_VIDEOS   synthetic clips to generate (90% train, 10% held out)            [1000]
#   QUICKSTART_DATA     where the raw synthetic corpus goes                               [<repo>/data/synthetic]
#   SMAUG_SHARDS        shard root; the synthetic shards go to $SMAUG_SHARDS/synthetic    [<repo>/shards]
#   QUICKSTART_OUT      run directory                                                     [<repo>/runs/quickstart[_dense]]
#   Extra arguments are passed to smaug.train as overrides, e.g. train.steps=100.
# Each stage is skipped when its output already exists, so a rerun resumes the training.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
t_start=$(date +%s)
. launch/setup_env.sh
export SMAUG_SHARDS="${SMAUG_SHARDS:-$ROOT/shards}"
DATA="${QUICKSTART_DATA:-$ROOT/data/synthetic}"
VIDEOS="${QUICKSTART_VIDEOS:-1000}"
DENSE="${QUICKSTART_DENSE:-0}"
SH="$SMAUG_SHARDS/synthetic"
TOK="$DATA/tokenizer"
py=python

if [ ! -f "$DATA/eval.json" ]; then
  echo "[quickstart] synthetic corpus: $VIDEOS clips -> $DATA"
  $py tools/make_synthetic.py --out "$DATA" --num-videos "$VIDEOS" --seed 0 --workers 2
fi
if [ ! -f "$SH/train/manifest.json" ]; then
  $py tools/make_shards.py --webvid-csv "$DATA/results_2M_train.csv" --video-root "$DATA/videos" \
    --out "$SH/train" --prefix synthetic --samples-per-shard 100 --workers 2 --no-progress
fi
if [ ! -f "$SH/test/manifest.json" ]; then
  $py tools/make_shards.py --json "$DATA/eval.json" --video-root "$DATA/videos" \
    --out "$SH/test" --prefix synthetic_test --samples-per-shard 25 --workers 2 --no-progress
fi
if [ ! -f "$TOK/tokenizer.json" ]; then
  $py tools/build_tokenizer.py --shards corpus:synthetic --captions "$DATA/eval.json" \
    --out "$TOK" --vocab-size 1000
fi
t_data=$(date +%s)

cfgs=(--config smaug/configs/quickstart.yaml)
OUT="${QUICKSTART_OUT:-$ROOT/runs/quickstart}"
if [ "$DENSE" = 1 ]; then cfgs+=(--config smaug/configs/dense.yaml); OUT="${QUICKSTART_OUT:-$ROOT/runs/quickstart_dense}"; fi
echo "[quickstart] pre-training -> $OUT"
$py -m smaug.train "${cfgs[@]}" --out "$OUT" "model.tokenizer=$TOK" "$@"
t_train=$(date +%s)

echo "[quickstart] zero-shot retrieval on the held-out split"
$py tools/eval_retrieval.py --checkpoint "$OUT" --split synthetic_test --k 16 --labels "$DATA/labels.json" \
  --out "$OUT/eval.json"
t_end=$(date +%s)
echo
echo "[quickstart] checkpoint: $OUT/checkpoints/$(cat "$OUT/checkpoints/latest")"
echo "[quickstart] report:     $OUT/eval.json   training log: $OUT/log.jsonl"
echo "[quickstart] wall time:  set-up+data $((t_data - t_start)) s, training $((t_train - t_data)) s, eval $((t_end - t_train)) s, total $((t_end - t_start)) s"
