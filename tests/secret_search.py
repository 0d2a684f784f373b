"""The search for a credential in what a run printed and wrote (test_secrets.py on the data jobs, test_e2e_demo.py
on the whole demo's Prefect database, logs and objects); test_secrets.py also proves it sees through compression."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

from common import storage


def where_secret_is(secret: bytes, printed: dict[str, str], files: Iterable[Path], objects: list[str]) -> list[str]:
    """Every place the secret shows: printed text, local files and stored objects (decompressed too)."""
    found = [what for what, text in printed.items() if secret in text.encode()]
    found += [str(p) for p in files if p.is_file() and any(secret in view for view in _readable(p.read_bytes()))]
    return found + [o for o in objects if any(secret in view for view in _readable(storage.read_bytes(o)))]


def _readable(data: bytes) -> list[bytes]:
    """The bytes as stored, and decoded when compressed (gzip, zstd, Parquet) so a secret inside would show."""
    views = [data]
    if data[:2] == b"\x1f\x8b":
        views.append(gzip.decompress(data))
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        views.append(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    elif data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        views.append(json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str).encode())
    return views
