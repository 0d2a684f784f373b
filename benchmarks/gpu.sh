#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for a machine with one or more CUDA devices:
#   1. the `gpu`-marked tests (bf16 autocast, a 1-GPU ZeRO-3 run through the real launcher);
#   2. benchmarks/train_step.py with its GPU defaults: ELECTRA-Large, seq 512, bf16; ours vs the
#      stock-transformers peer, then ours under DeepSpeed ZeRO 0 / 2 / 3; tokens/s, MFU, peak memory.
# Logs and the benchmark's JSON go to the folder given (default runs/gpu-bench); record the
# table in docs/benchmarks.md with the machine line it prints.
#
#   bash benchmarks/gpu.sh [OUT_DIR]            # PYTHON=... to pick the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-bench}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to $py: this script measures the GPU path (see docs/benchmarks.md for CPU)" >&2
    exit 2
fi
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
"$py" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" 2>&1 | tee "$out/pytest-gpu.log"
tests=${PIPESTATUS[0]}
"$py" benchmarks/train_step.py --json "$out/train_step.json" 2>&1 | tee "$out/train_step.log"
bench=${PIPESTATUS[0]}
echo "gpu tests: exit $tests; train_step benchmark: exit $bench; results in $out/"
exit $(( tests || bench ))
