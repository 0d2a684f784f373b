"""Shared fixtures. One SeaweedFS S3 gateway per test session, on a free loopback port."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from test_train_support import real_pack  # noqa: F401  (a fixture, needed by `reference`)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint (SeaweedFS) for the whole session; env vars point boto3 at it."""
    from common.seaweedfs import LocalS3

    from common.processes import env_overlay

    server = LocalS3(str(tmp_path_factory.mktemp("seaweedfs"))).start()
    try:
        with env_overlay(server.settings.to_env()):
            yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket URI (`s3://test-xxxx`) on the session's S3 server."""
    from common import storage

    uri = f"s3://test-{uuid.uuid4().hex[:10]}"
    storage.make_bucket(uri, s3_server.settings)
    return uri


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def reference(real_pack, tmp_path_factory) -> dict:  # noqa: F811
    """The uninterrupted 2-rank ZeRO-3 run of the reference recipe (DeepSpeed's launcher, one node): the losses
    the preemption, S3, two-node and Slurm runs must reproduce step for step."""
    from test_train_support import deepspeed_cmd, free_port, overrides, run_launcher

    from pretraining.metrics import read_losses

    base = tmp_path_factory.mktemp("reference")
    run = base / "run"
    log = base / "launcher.log"
    port = free_port()  # kept: the /dev/shm check looks for entries named by this run's master port
    rc = run_launcher(deepspeed_cmd(overrides(real_pack["pack"], str(run)), port=port), log)
    assert rc == 0, log.read_text()[-5000:]
    return {"run": run, "log": log, "pack": real_pack["pack"], "losses": read_losses(str(run / "metrics.jsonl")),
            "info": json.loads((run / "run_info.json").read_text()), "port": port}
