# Two commands matter: `make test` and `make demo`. Both bootstrap .venv themselves.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# DeepSpeed JIT-builds ops (its CPU shm all-reduce among them) under TORCH_EXTENSIONS_DIR, and
# torch guards each build with a lock file that a killed build leaves behind: every later run
# then waits on it forever. Keeping the builds inside .venv ties them to this checkout, so a
# stale lock in ~/.cache (another checkout's, a killed run's) cannot hang these tests or the demo.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: venv test test-fast demo demo-stop deploy bench clean

venv: $(STAMP)

# torch first (the CPU wheel; on GPU hosts install the CUDA build before `make venv`),
# then DeepSpeed without build isolation so its setup.py sees that torch instead of
# pulling a second one, then the project pinned by requirements/cpu.lock, then the benchmark
# peer litdata without its dependencies (pyproject.toml's `bench` extra says why).
$(STAMP): pyproject.toml requirements/cpu.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q "torch>=2.3"
	$(BIN)/pip install -q --no-build-isolation -c requirements/cpu.lock deepspeed
	$(BIN)/pip install -q -c requirements/cpu.lock -e ".[dev]"
	$(BIN)/pip install -q --no-deps -c requirements/cpu.lock litdata lightning-utilities tifffile obstore
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# While iterating: everything but the slow tests (kill-and-resume flow, 2-rank ZeRO-3 comparison...).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

demo: $(STAMP)
	$(BIN)/python -m flows.demo

demo-stop:
	bash infra/local/stop.sh

# Every deployment of prefect.yaml on the server PREFECT_API_URL names, creating its work pools first.
deploy: $(STAMP)
	$(BIN)/python -m flows.deploy

bench: $(STAMP)
	$(BIN)/python benchmarks/clean_throughput.py
	$(BIN)/python benchmarks/pack_throughput.py
	$(BIN)/python benchmarks/data_scale.py
	$(BIN)/python benchmarks/loader_throughput.py
	$(BIN)/python benchmarks/loader_throughput.py --latency-ms 30 --peer-read 512
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/finetune_padding.py
	$(BIN)/python benchmarks/checkpoint_save.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
