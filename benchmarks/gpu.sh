#!/usr/bin/env bash
# Every GPU measurement of the project in one command, sized for one 10-minute call on a lent GPU:
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default runs/gpu-bench; PYTHON=... the interpreter with CUDA torch
#
# 0. setup: wheels carried in .whl/ (GPU_WHEELS_DIR; benchmarks/gpu_wheels.txt) go into a venv on top of the
#    machine's Python (its torch and transformers stay visible); every import of the GPU path is
#    checked; then, without a CUDA device, the script stops here with exit 2.
# 1. large      benchmarks/train_step.py: ELECTRA-Large, seq 512, bf16, micro-batch 32, ours vs the
#               stock-transformers peer (tokens/s, MFU, peak memory) and the measured matmul ceiling
# 2. zero       the same with ours in DeepSpeed engines, ZeRO 0, 2 and 3 (ds_configs/zero{2,3}.json)
# 3. tests      the `gpu` tests: no host sync in the step, bf16 autocast, a 1-GPU ZeRO-3 launcher run
# 4. maxbatch   the largest micro-batch of ours that fits for Large at 512, and tokens/s there
# 5. small/base ELECTRA-Small at 128 (micro 128) and Base at 512 (micro 64), ours vs the peer
# 6. compile    Large, ours eager vs ours with model.compile_towers (the warm-up holds the compile)
# Each part runs under its own time cap, and no part starts past the overall budget
# (GPU_BUDGET_S, default 450 s), so one slow part cannot eat the rest. OUT_DIR gets at most
# five files: summary.md (the compact table, also printed at the end), results.json (every
# part's JSON, exit code and time), log.txt (all output), nvidia-smi.txt and env.txt.
# GPU_DRY_RUN=1 runs every part on CPU with ELECTRA-tiny (seq 64, batch 4) instead: the script's
# own path, end to end, without a GPU (DS_ACCELERATOR=cpu; the compile part is left out there).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
budget=${GPU_BUDGET_S:-450}
scratch=$(mktemp -d)
start=$SECONDS
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log="$out/log.txt"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

# ----- 0. setup ------------------------------------------------------------------------------
wheels=${GPU_WHEELS_DIR:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    env_dir=${GPU_ENV_DIR:-/tmp/electra-forge-gpu-env}
    rm -rf "$env_dir"
    "$py" -m venv --without-pip "$env_dir" || { say "cannot create a venv with $py"; exit 3; }
    base=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    plat=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
    site=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # The machine's packages stay importable (after the carried ones), their own .pth files included.
    echo "import site; site.addsitedir('$base'); site.addsitedir('$plat')" >"$site/machine-packages.pth"
    "$env_dir/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$wheels"/*.whl 2>&1 \
        | tee -a "$log" || { say "installing the carried wheels failed"; exit 3; }
    py="$env_dir/bin/python"
    export PATH="$env_dir/bin:$PATH"
    say "carried wheels: $(ls "$wheels"/*.whl | wc -l) installed into $env_dir on top of $base"
fi
"$py" - <<'EOF' 2>&1 | tee "$out/env.txt" | tee -a "$log"
import importlib, platform, sys
mods = ["torch", "transformers", "tokenizers", "safetensors", "sentencepiece", "numpy", "pyarrow", "tensorboard",
        "pytest", "deepspeed", "pydantic", "hjson", "boto3", "botocore",
        "pretraining.trainer", "pretraining.model", "pretraining.data", "pretraining.export", "pretraining.launch",
        "benchmarks.train_step", "deepspeed.launcher.runner", "torch.utils.tensorboard"]
failed = []
for name in mods:
    try:
        m = importlib.import_module(name)
        print(f"import {name}: ok {getattr(m, '__version__', '')}")
    except Exception as exc:  # report every missing import, not only the first
        failed.append(name)
        print(f"import {name}: FAILED {type(exc).__name__}: {exc}")
import torch
print(f"python {platform.python_version()} at {sys.executable}; torch {torch.__version__} "
      f"cuda {torch.version.cuda}; CUDA devices: {torch.cuda.device_count()}")
sys.exit(1 if failed else 0)
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "the GPU path cannot import everything it needs (see $out/env.txt)"; exit 3; }
"$py" -m pytest --collect-only -q -p no:cacheprovider -o addopts="" -m gpu tests/test_model.py \
    tests/test_train_deepspeed.py >>"$log" 2>&1 || { say "the gpu tests do not collect (see $log)"; exit 3; }
dry=${GPU_DRY_RUN:-0}
if [ "$dry" = 1 ]; then
    export DS_ACCELERATOR=cpu
    say "GPU_DRY_RUN=1: every part on CPU with ELECTRA-tiny"
elif ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "no CUDA device visible to $py: this script measures the GPU path (setup and imports are fine)"
    exit 2
fi
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true

# ----- the parts ------------------------------------------------------------------------------
# part NAME CAP_S COMMAND...: run with a time cap, never past the budget; record exit code and seconds.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$(( budget - (SECONDS - start) ))
    if [ "$left" -lt 20 ]; then
        say "== $name: skipped, ${left}s of the budget left"
        echo "{\"name\": \"$name\", \"skipped\": true}" >"$scratch/$name.status.json"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    say "== $name (cap ${cap}s)"
    local t0=$SECONDS
    timeout --kill-after=15 "$cap" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    say "== $name: exit $rc in $(( SECONDS - t0 ))s"
    echo "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $(( SECONDS - t0 )), \"cap\": $cap}" \
        >"$scratch/$name.status.json"
}
ts=(benchmarks/train_step.py --dtype bf16 --rounds 5 --steps 5 --warmup 3)
large=(--size large --seq-len 512 --batch 32)
small=(--size small --seq-len 128 --batch 128)
base=(--size base --seq-len 512 --batch 64)
if [ "$dry" = 1 ]; then
    ts=(benchmarks/train_step.py --dtype bf16 --rounds 2 --steps 1 --warmup 1 --threads 1 --max-batch-limit 16)
    large=(--size tiny --seq-len 64 --batch 4) small=(--size tiny --seq-len 64 --batch 8) base=("${large[@]}")
fi
part large 100 "$py" "${ts[@]}" "${large[@]}" --modes torch --json "$scratch/large.json"
part zero 130 "$py" "${ts[@]}" "${large[@]}" --modes zero0,zero2,zero3 --rounds 3 --json "$scratch/zero.json"
part tests 110 "$py" -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/test_model.py \
    tests/test_train_deepspeed.py --junitxml "$scratch/tests.xml"
part maxbatch 80 "$py" "${ts[@]}" "${large[@]}" --modes maxbatch --rounds 3 --steps 3 --json "$scratch/maxbatch.json"
part small 45 "$py" "${ts[@]}" "${small[@]}" --modes torch --steps 10 --json "$scratch/small.json"
part base 55 "$py" "${ts[@]}" "${base[@]}" --modes torch --json "$scratch/base.json"
if [ "$dry" != 1 ]; then
    part compile 150 "$py" "${ts[@]}" "${large[@]}" --modes compile --rounds 3 --json "$scratch/compile.json"
fi

"$py" benchmarks/gpu_summary.py "$scratch" "$out" 2>&1 | tee -a "$log"
rm -rf "$scratch"
echo "total ${SECONDS}s; results in $out/"
