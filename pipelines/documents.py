"""The cleaned-documents format: what `pipelines.clean` writes and every later stage reads.

Layout under an output URI (the shard count follows the data: about total size / output.shard_mb):
    documents/part-00000-of-00012.parquet   cleaned documents (Parquet, zstd), ordered by a hash of their id
    rejects/part-00000-of-00001.jsonl.gz    every rejected input record with its reason
    stats.json                              counters (records_read = kept + dropped + rejected)
    manifest.json                           written last; kind "documents"

A rejects line is JSON: {reason, source, position, url, size, sha256, preview, detail}
(sha256 and size are of the raw record bytes, so a reject can be found again in its input).
A rejects shard is a concatenation of gzip members (one per block), which any gzip reader reads.

Parquet with zstd: columnar (a reader that wants only `text` skips the rest), splittable
by row group for Beam/Spark/Dask, typed, and ~3-4x smaller than JSONL.gz on web text.
Row groups hold at most ROW_GROUP_ROWS rows and ROW_GROUP_BYTES of text: the unit every
reader here streams (`iter_shard`, `read_texts`), so none holds a whole shard.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
ROW_GROUP_ROWS = 2048  # rows per group: readers split and range-read a shard by row group
ROW_GROUP_BYTES = 4 << 20  # and at most this much text per group: what a streaming reader holds, whatever the page lengths


def shard_name(index: int, count: int, suffix: str = ".parquet") -> str:
    return f"part-{index:05d}-of-{count:05d}{suffix}"


def table_from_documents(docs: Iterable) -> pa.Table:
    """An Arrow table of `pipelines.cleaning.records.Document`s, in their order."""
    docs = list(docs)
    cols = {f.name: [getattr(d, f.name) for d in docs] for f in SCHEMA}
    return pa.table(cols, schema=SCHEMA)


class ShardWriter:
    """Streams tables into one Parquet file, cut into row groups at ROW_GROUP_ROWS rows or
    ROW_GROUP_BYTES of text, whichever comes first. Where a group ends depends only on the
    rows, not on how they were handed in, so the same rows give the same bytes; at most one
    row group is buffered."""

    def __init__(self, sink):
        self.writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd", write_statistics=False,
                                       store_schema=False)
        self.pending: list[pa.Table] = []
        self.rows = self.bytes = 0

    def write(self, table: pa.Table) -> None:
        sizes = np.asarray(pc.binary_length(table.column("text")).fill_null(0), dtype=np.int64)
        start = 0
        while start < len(sizes):
            ends = np.cumsum(sizes[start:]) + self.bytes  # text bytes in the group after each row
            by_bytes = int(np.searchsorted(ends, ROW_GROUP_BYTES, "left")) + 1  # rows to reach the cap
            n = min(ROW_GROUP_ROWS - self.rows, by_bytes, len(sizes) - start)
            self.pending.append(table.slice(start, n))
            self.rows += n
            self.bytes = int(ends[n - 1])
            start += n
            if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
                self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.rows)
        self.pending, self.rows, self.bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def encode_shard(rows: list[dict]) -> bytes:
    """Parquet bytes for one small shard of dict rows (tests, benchmarks); same row groups as ShardWriter."""
    buf = io.BytesIO()
    w = ShardWriter(buf)
    w.write(pa.Table.from_pylist(rows, schema=SCHEMA))
    w.close()
    return buf.getvalue()


def iter_rejects(output: str, settings: storage.StorageSettings | None = None) -> Iterator[dict]:
    """Every rejected record of a finished output (streamed; a shard is several gzip members)."""
    m = manifest.read(output, kind="documents", settings=settings)
    for s in m.get("rejects", []):
        with storage.open_read(storage.join(output, s["path"]), settings) as raw, gzip.GzipFile(fileobj=raw) as f:
            for line in f:
                yield json.loads(line)


def read_stats(output: str, settings: storage.StorageSettings | None = None) -> dict:
    return json.loads(storage.read_text(storage.join(output, STATS_NAME), settings))


def iter_shard(uri: str, columns: list[str] | None = None,
               settings: storage.StorageSettings | None = None) -> Iterator[dict]:
    """The rows of one shard, one row group in memory at a time (ranged GETs on S3)."""
    with storage.open_seekable(uri, settings) as f:
        pf = pq.ParquetFile(f)
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


def row_groups(uri: str, settings: storage.StorageSettings | None = None) -> list[tuple[int, int]]:
    """(bytes of the `text` column, rows) of each row group, from the footer alone."""
    with storage.open_seekable(uri, settings) as f:
        md = pq.ParquetFile(f).metadata
    col = [md.schema.column(i).name for i in range(md.num_columns)].index("text")
    return [(md.row_group(i).column(col).total_uncompressed_size, md.row_group(i).num_rows)
            for i in range(md.num_row_groups)]


def read_texts(uri: str, settings: storage.StorageSettings | None = None,
               row_groups: Iterable[int] | None = None, rows: tuple[int, int] | None = None) -> list[bytes]:
    """The `text` column of one shard (or of some of its row groups; with `rows`, of rows
    [lo, hi) of the single row group given) as UTF-8 bytes, in row order.

    Arrow's string column already is UTF-8, so the values are sliced straight out of its data
    buffer: no decode to `str` and re-encode for readers (SentencePiece, Bling Fire) that take
    bytes, and only the wanted rows' bytes are copied.
    """
    with storage.open_seekable(uri, settings) as f:
        pf = pq.ParquetFile(f)
        groups = range(pf.num_row_groups) if row_groups is None else list(row_groups)
        out: list[bytes] = []
        for rg in groups:
            col = pf.read_row_group(rg, columns=["text"]).column("text").combine_chunks()
            if rows is not None:
                col = col.slice(rows[0], rows[1] - rows[0])
            out += _utf8_values(col)
    return out


def _utf8_values(col) -> list[bytes]:
    if col.null_count:
        col = col.fill_null("")
    offsets_buf, data_buf = col.buffers()[1:3]
    width = 8 if pa.types.is_large_string(col.type) else 4
    bounds = memoryview(offsets_buf).cast("q" if width == 8 else "i")[col.offset:col.offset + len(col) + 1].tolist()
    if not bounds or data_buf is None:
        return [b""] * len(col)
    raw = data_buf[bounds[0]:bounds[-1]].to_pybytes()  # only these rows' bytes
    base = bounds[0]
    return [raw[a - base:b - base] for a, b in zip(bounds[:-1], bounds[1:])]
