"""No credential in anything the data jobs print or write: clean and pack against the SeaweedFS fixture, then a
search for the secret key in their stdout, stderr (Beam worker logs included), local temp files and objects."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clean_inputs import raw_prose
from secret_search import where_secret_is

from common import storage
from pipelines import train_tokenizer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
# Real worker processes (they log every pipeline option at start-up), kept to one for speed.
WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]


def _job(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def test_clean_and_pack_never_print_or_write_the_secret(s3_server, s3_bucket, tmp_path):
    settings = s3_server.settings
    secret = settings.secret_access_key.encode()
    raw_prose(s3_bucket, limit_chars=120_000)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp))

    # clean: credentials from the environment; --debug keeps the workers' own log lines on this stderr.
    cleaned = _job("pipelines.clean", ["--input", f"{s3_bucket}/raw/*.jsonl.gz", "--output", f"{s3_bucket}/clean",
                                       "--debug", *WORKERS], env)
    assert "Pipeline_options" in cleaned.stderr  # the worker's option dump is in what this test searches
    assert train_tokenizer.main(["--input", f"{s3_bucket}/clean", "--output", f"{s3_bucket}/tok",
                                 "--vocab-size", "600"]) == 0
    # pack: credentials only as Beam flags, none in the environment; --debug again (without it the worker
    # output goes to a private log file that is deleted when the job succeeds: nothing left to search).
    no_creds = {k: v for k, v in env.items() if k not in storage.CREDENTIAL_ENV}
    packed = _job("pipelines.pack", ["--input", f"{s3_bucket}/clean", "--tokenizer", f"{s3_bucket}/tok",
                                     "--output", f"{s3_bucket}/pack", "--max-seq-length", "64", "--debug", *WORKERS,
                                     f"--s3_access_key_id={settings.access_key_id}",
                                     f"--s3_secret_access_key={settings.secret_access_key}"], no_creds)
    assert "pack:" in packed.stdout and "Pipeline_options" in packed.stderr

    printed = {"clean stdout": cleaned.stdout, "clean stderr": cleaned.stderr, "pack stdout": packed.stdout,
               "pack stderr": packed.stderr}
    objects = storage.list_files(s3_bucket + "/")
    assert any(o.endswith("pack/manifest.json") for o in objects) and any("/documents/" in o for o in objects)
    assert where_secret_is(secret, printed, tmp.rglob("*"), objects) == []


def test_the_search_sees_through_compression(tmp_path):
    """The search must find a secret inside gzip, zstd and Parquet files, or the tests above prove nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    secret = b"s3cr3t-" + os.urandom(8).hex().encode()
    line = (b'{"text": "' + secret + b'"}\n') * 50
    (tmp_path / "a.gz").write_bytes(gzip.compress(line))
    (tmp_path / "b.zst").write_bytes(zstandard.ZstdCompressor().compress(line))
    pq.write_table(pa.table({"text": [secret.decode()] * 50}), tmp_path / "c.parquet", compression="zstd")
    (tmp_path / "clean.txt").write_bytes(b"nothing here")
    assert secret not in (tmp_path / "a.gz").read_bytes()  # Huffman-coded: only decompression shows it
    found = where_secret_is(secret, {"out": "ok", "err": f"key={secret.decode()}"}, tmp_path.iterdir(), [])
    assert sorted(Path(f).name for f in found[1:]) == ["a.gz", "b.zst", "c.parquet"] and found[0] == "err"
