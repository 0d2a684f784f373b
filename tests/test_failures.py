"""Every failure a user meets is one line that says what to fix, with an exit code the flow can act on:
2 for something to change, 75 (EX_TEMPFAIL) for an outage it retries. No tracebacks; few stderr lines."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import storage
from common.cli import EXIT_FIX, EXIT_RETRY
from common.ports import free_port
from common.seaweedfs import LocalS3

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(REPO / "pretraining" / "train.py")]
MAX_STDERR_LINES = 3  # the error line, plus at most Beam's import-time apitools warning and one more


@dataclasses.dataclass
class Case:
    name: str
    argv: list[str]
    code: int
    says: tuple[str, ...]  # what the one error line must name
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def _run(case: Case, base_env: dict[str, str], popen: bool = False):
    env = dict(base_env, **case.env)
    if popen:
        return subprocess.Popen(case.argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(case.argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _check(case: Case, code: int, stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error: " in line]
    assert code == case.code, (case.name, code, stderr[-3000:])
    assert len(errors) == 1, (case.name, stderr[-3000:])
    assert all(s in errors[0] for s in case.says), (case.name, errors[0])
    assert "Traceback" not in stderr and len(lines) <= MAX_STDERR_LINES, (case.name, stderr[-3000:])


@pytest.fixture(scope="module")
def pack_on_s3(s3_server, tmp_path_factory) -> str:
    """A bucket with an object under pack/ (the credential and endpoint checks come before its content matters)."""
    bucket = "s3://failures-pack"
    storage.make_bucket(bucket, s3_server.settings)
    storage.write_bytes(f"{bucket}/pack/manifest.json", b"{}", s3_server.settings)
    return f"{bucket}/pack"


def test_each_failure_is_one_line_with_its_exit_code(s3_server, s3_bucket, pack_on_s3, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"zero_optimization": {"stage": 3},\n')
    storage.write_bytes(f"{s3_bucket}/raw/a.jsonl.gz", gzip.compress(b'{"text": "x"}\n', mtime=0))
    wrong_key = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    closed = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    tiny = ["--config", "tiny", f"run={tmp_path / 'run'}"]
    cases = [
        Case("missing ds_config", [*TRAIN, "--deepspeed", str(tmp_path / "nope.json"), *tiny,
                                   f"data.pack={pack_on_s3}"], EXIT_FIX, ("nope.json", "does not exist", "ds_configs/")),
        Case("ds_config not JSON", [*TRAIN, "--deepspeed", str(bad_json), *tiny, f"data.pack={pack_on_s3}"],
             EXIT_FIX, ("bad.json", "not valid JSON", "line 2")),
        Case("pack missing", [*TRAIN, "--deepspeed", "ds_configs/cpu.json", *tiny, f"data.pack={tmp_path / 'nopack'}"],
             EXIT_FIX, ("no manifest", "nopack")),
        Case("pack forbidden", [*TRAIN, "--deepspeed", "ds_configs/cpu.json", *tiny, f"data.pack={pack_on_s3}"],
             EXIT_FIX, ("refused the credentials", "AWS_SECRET_ACCESS_KEY"), wrong_key),
        Case("pack unreachable", [*TRAIN, "--deepspeed", "ds_configs/cpu.json", *tiny, f"data.pack={pack_on_s3}"],
             EXIT_RETRY, ("cannot reach the S3 endpoint", "AWS_ENDPOINT_URL", "retry"), closed),
        Case("output bucket missing", [sys.executable, "-m", "pipelines.pack", "--input", f"{s3_bucket}/clean",
                                       "--tokenizer", f"{s3_bucket}/tok", "--output", "s3://no-such-bucket-zz/pack"],
             EXIT_FIX, ("no-such-bucket-zz", "does not exist", "create it")),
        Case("clean credentials forbidden", [sys.executable, "-m", "pipelines.clean", "--input",
                                             f"{s3_bucket}/raw/*.jsonl.gz", "--output", f"{s3_bucket}/clean"],
             EXIT_FIX, ("refused the credentials", "AWS_ACCESS_KEY_ID"), wrong_key),
    ]
    for case in cases:
        out = _run(case, env)
        _check(case, out.returncode, out.stderr)


def test_s3_outage_in_the_middle_of_a_beam_job_is_one_line_exit_75(tmp_path):
    """The store dies once the Beam job runs (its worker log exists): exit 75, one line, the traceback in the log."""
    server = LocalS3(str(tmp_path / "sw")).start()
    try:
        settings = dataclasses.replace(server.settings, max_attempts=2)
        storage.make_bucket("s3://outage", settings)
        rows = [{"id": f"d{i}", "text": f"Document {i} says something. " * 40} for i in range(200)]
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        storage.write_bytes("s3://outage/raw/a.jsonl.gz", gzip.compress(body, mtime=0), settings)
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        env = dict(os.environ, **server.settings.to_env(), PYTHONPATH=str(REPO), TMPDIR=str(tmp))
        case = Case("outage mid-job", [sys.executable, "-m", "pipelines.clean", "--input", "s3://outage/raw/*",
                                       "--output", "s3://outage/clean", "--direct_num_workers=1"],
                    EXIT_RETRY, ("cannot reach the S3 endpoint", "retry", "Beam worker log"))
        job = _run(case, env, popen=True)
        deadline = time.monotonic() + 120
        while not list(tmp.glob("electra-clean-*.log")):
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.1)
        os.killpg(server.process.pid, signal.SIGKILL)  # the outage: the store is gone mid-job
        _, stderr = job.communicate(timeout=300)
        _check(case, job.returncode, stderr)
        log = Path(stderr.split("Beam worker log: ")[1].split(")")[0])
        assert "Traceback" in log.read_text()  # the details are kept, just not on the terminal
    finally:
        server.stop()

