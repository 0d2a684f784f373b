"""Shared fixtures. One SeaweedFS S3 gateway per test session, on a free loopback port."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

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
