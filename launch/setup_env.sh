#!/usr/bin/env bash
# Creates (or reuses) the project virtualenv and installs smaug with its requirements.
# Idempotent: a stamp keyed on requirements.txt + constraints.txt + pyproject.toml skips work already done.
# Versions: the ranges of requirements.txt under constraints.txt (what the suite last passed with).
#   SMAUG_VENV   where the venv lives (default: <repo>/.venv)
#   PYTHON       interpreter used to create it (default: python3)
# Source it (`. launch/setup_env.sh`) to get the venv activated in your shell.
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMAUG_VENV="${SMAUG_VENV:-$_root/.venv}"
_py="${PYTHON:-python3}"
if [ ! -x "$SMAUG_VENV/bin/python" ]; then
  echo "[setup] creating venv at $SMAUG_VENV"
  "$_py" -m venv "$SMAUG_VENV"
fi
_stamp="$SMAUG_VENV/.smaug-installed"
_want="$(cat "$_root/requirements.txt" "$_root/constraints.txt" "$_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
_installed=0
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  _installed=1
  # pip -q still warns about this machine's local index mirrors; keep the log readable.
  _pipq() { "$SMAUG_VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
      | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; return "${PIPESTATUS[0]}"; }
  _pip=(_pipq)
  echo "[setup] installing torch (first time: ~1 min)"
  "${_pip[@]}" --upgrade pip setuptools wheel
  # torch first: DeepSpeed's sdist imports torch at build time.
  "${_pip[@]}" -c "$_root/constraints.txt" $(grep -E '^(torch|torchvision)[<>=! ]' "$_root/requirements.txt" | tr -d ' ')
  echo "[setup] installing requirements"
  "${_pip[@]}" --no-build-isolation -r "$_root/requirements.txt" -c "$_root/constraints.txt"
  "${_pip[@]}" --no-build-isolation --no-deps -e "$_root"
  echo "$_want" > "$_stamp"
fi
# torchcodec (data.decoder=torchcodec) loads the system FFmpeg shared libraries; decord and PyAV
# bundle their own. Installed once with apt-get where this shell can (root on Debian/Ubuntu).
_ffstamp="$SMAUG_VENV/.smaug-ffmpeg"
if [ ! -f "$_ffstamp" ]; then
  _ffcheck() { "$SMAUG_VENV/bin/python" -c "from torchcodec._core.ops import load_core_libraries as f; f()" >/dev/null 2>&1; }
  if _ffcheck; then
    touch "$_ffstamp"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing the FFmpeg libraries torchcodec loads (apt-get, ~40 s)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavdevice-dev libavfilter-dev; } \
      >/dev/null && _ffcheck && touch "$_ffstamp" || echo "[setup] warning: FFmpeg libraries for torchcodec not installed"
  else
    echo "[setup] note: torchcodec finds no FFmpeg libraries and this shell cannot apt-get them;" \
         "data.decoder=torchcodec is refused until libavcodec & co. are installed"
  fi
fi
export PATH="$SMAUG_VENV/bin:$PATH"
export VIRTUAL_ENV="$SMAUG_VENV"
# DeepSpeed JIT-compiles small ops on first use; keep them between runs.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$_root/.cache/torch_extensions}"
# On a CPU-only machine every process that starts DeepSpeed's comm layer loads its shared-memory op, which the
# first one compiles (~50 s on 2 cores, while the others wait for its lock): the quickstart's first run and a
# fresh clone's test suite would pay it mid-run. Built here instead, after each install (new torch headers make
# it stale) or when it is missing; on a GPU machine the CUDA accelerator has no such op and this does nothing.
_shm="$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/deepspeed_shm_comm.so"
_opstamp="$SMAUG_VENV/.smaug-ds-op"  # "built" or "none" (no such op on this machine's accelerator)
if [ "$_installed" = 1 ] || [ ! -f "$_opstamp" ] || { [ "$(cat "$_opstamp")" = built ] && [ ! -f "$_shm" ]; }; then
  echo "[setup] building DeepSpeed's CPU comm op where it has one (once, ~1 min)"
  "$SMAUG_VENV/bin/python" -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null 2>&1 \
    || echo "[setup] note: DeepSpeed's CPU comm op did not build here; the first CPU run will try again"
  if [ -f "$_shm" ]; then echo built > "$_opstamp"; else echo none > "$_opstamp"; fi
fi
# Offline by default: no hub, wandb off unless asked for.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
