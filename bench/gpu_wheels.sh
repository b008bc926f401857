#!/usr/bin/env bash
# Fetch the wheels an offline GPU image lacks (it has torch, timm, transformers) into .whl/,
# for the device machine's Python 3.12 x86_64 (see ../shared/GPU.md). Run here, then send .whl
# along with the command that runs bench/gpu_bench.sh.
#   bash bench/gpu_wheels.sh            # -> .whl/*.whl (~20 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/setup_env.sh
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
tmp=$(mktemp -d)
ver() { python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }  # same versions as here
# DeepSpeed is pure Python at install time (ops JIT-build on first use): wheel it from the sdist.
python -m pip download -q --no-deps --no-binary :all: "deepspeed==$(ver deepspeed)" -d "$tmp"
python -m pip wheel -q --no-deps --no-build-isolation "$tmp"/deepspeed-*.tar.gz -w .whl
for p in "decord2==$(ver decord2)" \
         "webdataset==$(ver webdataset)" \
         braceexpand hjson "pydantic==$(ver pydantic)" \
         "pydantic-core==$(ver pydantic-core)" \
         annotated-types typing-inspection msgpack ninja py-cpuinfo; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux_2_27_x86_64 -d .whl "$p"
done
rm -rf "$tmp"
du -sh .whl && ls .whl
