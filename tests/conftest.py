"""Shared fixtures: one SeaweedFS S3 gateway per test session (on a free loopback port) and its buckets, a root
on both stores, the real-text pack and the reference 2-rank ZeRO-3 run of the pretraining tests, and the tiny
model the evaluation tests fine-tune.

Fixtures live here; plain helper functions live in modules without the test_ prefix beside the tests
(train_support.py, clean_inputs.py, lineage_chain.py, secret_search.py, slurm_cluster.py): a test module never
imports another test module.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint (SeaweedFS) for the whole session; env vars point boto3 at it."""
    from common.seaweedfs import LocalS3

    server = LocalS3(str(tmp_path_factory.mktemp("seaweedfs"))).start()
    try:
        with pytest.MonkeyPatch.context() as mp:  # session-scoped: the `monkeypatch` fixture is per test
            for k, v in server.settings.to_env().items():
                mp.setenv(k, v)
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
def tiny_model(tmp_path_factory) -> str:
    """A random-weight 2-layer ELECTRA discriminator with a tokenizer fitted to the GLUE/SQuAD mirror in tests/data
    and a model manifest (step 1000, name tiny-run, size small); the evaluation tests fine-tune it and only read it."""
    from evaluation.testing import corpus_from_mirror, make_tiny_model

    mirror = str(Path(__file__).parent / "data")
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-model")), corpus_from_mirror(mirror), step=1000,
                           name="tiny-run", size="small")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(params=["local", "s3"])
def local_and_s3(request, tmp_path) -> str:
    """A fresh directory URI, once on local disk and once in a fresh bucket of the session's S3 server: a test
    that takes it runs against both stores."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


@pytest.fixture(scope="session")
def real_pack(tmp_path_factory) -> dict:
    """{"pack": dir, "tokenizer": dir, "corpus_sha256": ...}: license prose, a SentencePiece model trained on it and
    a 3-shard pack (train_support.py builds them); built once per session."""
    from train_support import build_pack, build_tokenizer, prose

    base = tmp_path_factory.getbasetemp() / "real_pack"
    done = base / "info.json"
    if not done.exists():
        text, sha = prose()
        tm = build_tokenizer(text, base / "tokenizer")
        pm = build_pack(text, base / "tokenizer", tm, base / "pack")
        done.write_text(json.dumps({"pack": str(base / "pack"), "tokenizer": str(base / "tokenizer"),
                                    "corpus_sha256": sha, "vocab_size": pm["vocab_size"],
                                    "manifest_hash": pm["manifest_hash"]}))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def reference(real_pack, tmp_path_factory) -> dict:
    """The uninterrupted 2-rank ZeRO-3 run of the reference recipe (DeepSpeed's launcher, one node): the losses
    the preemption, S3, two-node and Slurm runs must reproduce step for step."""
    from train_support import deepspeed_cmd, free_port, overrides, run_launcher

    from pretraining.metrics import read_losses

    base = tmp_path_factory.mktemp("reference")
    run = base / "run"
    log = base / "launcher.log"
    port = free_port()  # kept: the /dev/shm check looks for entries named by this run's master port
    rc = run_launcher(deepspeed_cmd(overrides(real_pack["pack"], str(run)), port=port), log)
    assert rc == 0, log.read_text()[-5000:]
    return {"run": run, "log": log, "pack": real_pack["pack"], "losses": read_losses(str(run / "metrics.jsonl")),
            "info": json.loads((run / "run_info.json").read_text()), "port": port}
