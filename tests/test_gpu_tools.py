"""The GPU run's tooling, checked without a GPU: the micro-batch search, the summary table, the carried-wheel
list, and benchmarks/gpu.sh up to its "no CUDA device" exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_summary import summarize
from benchmarks.train_step import largest_fitting

REPO = Path(__file__).resolve().parent.parent


def test_largest_fitting_doubles_then_bisects():
    tried = []

    def fits(b):
        tried.append(b)
        return b <= 200

    best, trials = largest_fitting(fits, 32, 1024)
    assert best == 192 and tried == [32, 64, 128, 256, 192, 224, 208]
    assert trials == [(b, b <= 200) for b in tried]
    assert largest_fitting(lambda b: False, 32, 1024) == (0, [(32, False)])
    assert largest_fitting(lambda b: True, 4, 16)[0] == 16  # stops at the limit, all fitting


def _result(name, tps, mfu=None):
    return {"name": name, "tokens_per_s": tps, "mfu": mfu, "mfu_vs_matmul": mfu and mfu * 1.25,
            "peak_memory_gib": 40.0, "warmup_s": 61.0}


def test_summary_table_has_every_side_ratio_and_part_status(tmp_path):
    args = {"size": "large", "seq_len": 512, "batch": 32}
    parts = {
        "large": {"machine": {"device": "NVIDIA H200"}, "args": args, "ratio": 1.41,
                  "results": [_result("ours", 180000.0, 0.395), _result("peer (sdpa attention)", 128000.0, 0.28)]},
        "maxbatch": {"args": args, "max_batch": {"batch": 192, "trials": [[32, True], [256, False], [192, True]]},
                     "results": [_result("ours @ micro-batch 192", 190000.0, 0.42)]},
        "compile": {"args": args, "compiled_over_eager": 1.12,
                    "results": [_result("ours", 180000.0), _result("ours/compiled", 201000.0)]},
    }
    for name, p in parts.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(p))
    statuses = {"large": {"rc": 0, "seconds": 41, "cap": 100}, "zero": {"rc": 124, "seconds": 130, "cap": 130},
                "small": {"skipped": True}}
    for name, s in statuses.items():
        (tmp_path / f"{name}.status.json").write_text(json.dumps({"name": name, **s}))
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite name="pytest"><testcase classname="tests.test_model" name="test_a" time="1.0"/>'
        '<testcase classname="tests.test_train_deepspeed" name="test_b" time="50">'
        '<failure message="assert 1 == 2">trace</failure></testcase></testsuite></testsuites>')
    text, data = summarize(tmp_path)
    assert "| large | large, 512, 32 | ours | 180,000 | 39.5% | 49.4% | 40.0 |" in text
    assert "ours / peer 1.41x" in text and "compiled / eager 1.12x" in text
    assert "largest micro-batch of ours for large at 512: 192 (trials: 32 ok, 256 OOM, 192 ok)" in text
    assert "gpu tests: 1/2 passed; tests.test_train_deepspeed::test_b failure: assert 1 == 2" in text
    assert "zero exit 124 in 130s (cap 130s, TIMED OUT)" in text and "small skipped" in text and "base not run" in text
    assert data["machine"]["device"] == "NVIDIA H200" and data["parts"]["zero"] is None


def test_carried_wheels_are_pinned_as_the_lock():
    """The wheels carried to the GPU machine are the versions the test suite runs here (requirements/cpu.lock)."""
    norm = lambda n: n.lower().replace("_", "-")  # noqa: E731
    lock = dict(norm(line).split("==") for line in (REPO / "requirements" / "cpu.lock").read_text().split()
                if "==" in line)
    pins = [line for line in (REPO / "benchmarks" / "gpu_wheels.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {"deepspeed", "pydantic", "pydantic-core", "boto3", "botocore", "hjson"} <= {norm(p.split("==")[0])
                                                                                         for p in pins}
    for pin in pins:
        name, version = norm(pin).split("==")
        assert lock.get(name) == version, pin


@pytest.mark.slow
def test_gpu_script_stops_cleanly_without_a_gpu(tmp_path):
    """benchmarks/gpu.sh imports everything the GPU path needs and collects the gpu tests, then exits 2."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_WHEELS_DIR": str(tmp_path / "no-wheels"),
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no CUDA device visible" in proc.stdout
    env_report = (out / "env.txt").read_text()
    assert "import deepspeed: ok" in env_report and "import pretraining.trainer: ok" in env_report
    assert "FAILED" not in env_report
    assert "test_zero3_on_one_gpu" in (out / "log.txt").read_text()
