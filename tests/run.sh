#!/usr/bin/env bash
# The whole test suite on CPU: creates/refreshes .venv (launch/setup_env.sh), then pytest.
#   bash tests/run.sh [pytest args]        e.g. bash tests/run.sh -k loader -x
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/setup_env.sh
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec python -m pytest -q tests "$@"
