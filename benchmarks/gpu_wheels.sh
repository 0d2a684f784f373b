#!/usr/bin/env bash
# Fetch the wheels listed in benchmarks/gpu_wheels.txt into .whl/ (or the folder given), for Python 3.12 on
# x86-64 Linux, so benchmarks/gpu.sh can install them on a CUDA machine with no package index.
#
#   bash benchmarks/gpu_wheels.sh [DEST]      # PYTHON=... for pip; BUILD_PYTHON=... a Python with torch
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
py=${PYTHON:-python3}
build_py=${BUILD_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo "$py" )}
mkdir -p "$dest"
pins=$(grep -v '^#' benchmarks/gpu_wheels.txt | grep -v '^$')
binary=$(echo "$pins" | grep -v '^deepspeed==')
ds=$(echo "$pins" | grep '^deepspeed==')
# shellcheck disable=SC2086  # one argument per pin
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" $binary
if ! ls "$dest"/deepspeed-"${ds#deepspeed==}"-*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$py" -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "$ds"
    # No ops compiled: training uses torch's fused AdamW, so nothing of DeepSpeed's needs nvcc.
    DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$build_py" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" \
        "$tmp"/deepspeed-*.tar.gz
fi
count=$(ls "$dest"/*.whl | wc -l)
want=$(echo "$pins" | wc -l)
[ "$count" -eq "$want" ] || { echo "expected $want wheels in $dest, found $count (one version of each)" >&2; exit 1; }
du -ch "$dest"/*.whl | tail -1 | sed "s|total|$count wheels in $dest|"
