#!/usr/bin/env bash
# The whole test suite on CPU: creates/refreshes .venv (launch/setup_env.sh), lints (ruff check +
# ruff format --check, config in pyproject.toml), then pytest; prints the suite's wall time.
#   bash tests/run.sh [pytest args]        e.g. bash tests/run.sh -k loader -x
#   SMAUG_SKIP_LINT=1 bash tests/run.sh    pytest only
#   SMAUG_TEST_WORKERS=N                   pytest-xdist workers (default 2, one per core of the CI machine;
#                                          0 = one process). The session fixtures (corpus, shards, pre-trained
#                                          run) are built once and shared by the workers (conftest.built_once)
#   SMAUG_TEST_PREFORK=0                   children that tests/prefork.py forks from a preloaded server (bench,
#                                          SIGKILL/SIGTERM runs, fine-tuning tool steps) start as plain
#                                          interpreters instead, and 2-rank tool runs under torchrun
#   SMAUG_TEST_COMPILE_BACKEND=inductor    the compiled-step test (tests/test_compile.py) runs inductor's generated
#                                          C++ kernels instead of its graph passes on aten's kernels (~2 min more
#                                          on an empty inductor cache)
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/setup_env.sh
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -z "${SMAUG_SKIP_LINT:-}" ]; then
  echo "[ci] ruff check + ruff format --check"
  ruff check --no-cache .
  ruff format --no-cache --check .
fi
start=$SECONDS
rc=0
# --maxschedchunk 1: each worker is handed its next test as it ends one (with the `slow` tests first, tests/conftest.py),
# instead of chunks of ~40 tests queued per worker, which left one worker on a long test while the other was done
python -m pytest -q tests -n "${SMAUG_TEST_WORKERS:-2}" --maxschedchunk 1 --durations=10 "$@" || rc=$?
echo "[ci] pytest wall time: $((SECONDS - start)) s (exit $rc)"
exit $rc
