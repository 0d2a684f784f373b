"""The cleaned-documents format: what `pipelines.clean` writes and every later stage reads.

Layout under an output URI:
    documents/part-00000-of-00008.parquet   cleaned documents (Parquet, zstd)
    rejects/part-00000-of-00008.jsonl.gz    every rejected input record with its reason
    stats.json                              counters (records_read = kept + dropped + rejected)
    manifest.json                           written last; kind "documents"

A rejects line is JSON: {reason, source, position, url, size, sha256, preview, detail}
(sha256 and size are of the raw record bytes, so a reject can be found again in its input).

Parquet with zstd: columnar (a reader that wants only `text` skips the rest), splittable
by row group for Beam/Spark/Dask, typed, and ~3-4x smaller than JSONL.gz on web text.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from common import manifest, storage

DOCUMENTS_DIR = "documents"
REJECTS_DIR = "rejects"
STATS_NAME = "stats.json"

# Field order is the on-disk column order.
SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),  # stable: a hash of (source, record position)
    pa.field("text", pa.string(), nullable=False),
    pa.field("url", pa.string()),  # source URL when the input has one (WARC/WET/JSONL field)
    pa.field("source", pa.string()),  # input file URI the record came from
    pa.field("lang", pa.string()),
    pa.field("lang_score", pa.float32()),
])
ROW_GROUP_SIZE = 2048  # rows per group: readers can split and range-read a shard


def shard_name(index: int, count: int, suffix: str = ".parquet") -> str:
    return f"part-{index:05d}-of-{count:05d}{suffix}"


def encode_shard(rows: list[dict]) -> bytes:
    """Parquet bytes for one shard; deterministic for the same rows in the same order."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_SIZE,
                   write_statistics=False, store_schema=False)
    return buf.getvalue()


def encode_rejects(rows: list[dict]) -> bytes:
    """gzip'd JSONL for one rejects shard; mtime 0 and no file name, so bytes are reproducible."""
    body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    return gzip.compress(body, compresslevel=6, mtime=0)


def iter_rejects(output: str, settings: storage.StorageSettings | None = None) -> Iterator[dict]:
    """Every rejected record of a finished output."""
    m = manifest.read(output, kind="documents", settings=settings)
    for s in m.get("rejects", []):
        data = gzip.decompress(storage.read_bytes(storage.join(output, s["path"]), settings))
        for line in data.decode("utf-8").splitlines():
            yield json.loads(line)


def read_stats(output: str, settings: storage.StorageSettings | None = None) -> dict:
    return json.loads(storage.read_text(storage.join(output, STATS_NAME), settings))


def iter_shard(uri: str, columns: list[str] | None = None,
               settings: storage.StorageSettings | None = None) -> Iterator[dict]:
    data = storage.read_bytes(uri, settings)
    pf = pq.ParquetFile(io.BytesIO(data))
    for rg in range(pf.num_row_groups):
        yield from pf.read_row_group(rg, columns=columns).to_pylist()


def shard_uris(output: str, settings: storage.StorageSettings | None = None) -> list[str]:
    """Shard URIs of a finished documents output, in manifest order (refuses an unfinished one)."""
    m = manifest.read(output, kind="documents", settings=settings)
    return [storage.join(output, s["path"]) for s in m["shards"]]


def iter_documents(output: str, columns: list[str] | None = None,
                   settings: storage.StorageSettings | None = None) -> Iterator[dict]:
    """Every kept document of a finished `pipelines.clean` output, in a deterministic order."""
    for uri in shard_uris(output, settings):
        yield from iter_shard(uri, columns, settings)


def read_texts(uri: str, settings: storage.StorageSettings | None = None) -> list[bytes]:
    """The `text` column of one shard as UTF-8 bytes, in row order.

    Arrow's string column already is UTF-8, so the values are sliced straight out of its data
    buffer: no decode to `str` and re-encode for readers (SentencePiece, Bling Fire) that take bytes.
    """
    data = storage.read_bytes(uri, settings)
    col = pq.read_table(io.BytesIO(data), columns=["text"]).column("text").combine_chunks()
    if col.null_count:
        col = col.fill_null("")
    offsets_buf, data_buf = col.buffers()[1:3]
    width = 8 if pa.types.is_large_string(col.type) else 4
    offsets = memoryview(offsets_buf).cast("q" if width == 8 else "i")[col.offset:col.offset + len(col) + 1]
    raw = data_buf.to_pybytes() if data_buf is not None else b""
    bounds = offsets.tolist()
    return [raw[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
