"""The Beam stages of the pack job: work units that follow the data, blocks of rows, shards cut by size.

    input shard j       -> SplitShard: from the Parquet footer alone, its row groups in runs of
                           at most `unit_mb` of text (a larger row group cut into runs of rows):
                           the work units
    unit                -> PackUnit: read those row groups' text column (UTF-8 bytes); batch encode
                           (encode.py: SentencePiece or an HF tokenizer, loaded in setup); pack, with Bling Fire run only on
                           windows around each example's middle and end; write the rows as one
                           block under _work/shards/ -> a BlockInfo with the unit's counts
    blocks              -> sharding.WriteShards: laid out in (j, lo) order and cut into shards of
                           exactly shard_mb // row bytes examples, each streamed to shards/part-k-of-n.bin
    shards + totals     -> one summary file, which the driver turns into the manifest

A unit's documents and their order are a function of the input layout (its shards and their row
groups) and `unit_mb`; its random draws are seeded by (seed, its place in the input). So
every output byte is a function of (documents, tokenizer, config) whatever the runner's bundling,
ordering or worker count. No text crosses a shuffle, only unit and block descriptions. Concatenated
in shard order, the rows hold every document's tokens in the input's order.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from common import packformat, storage
from pipelines import documents, sharding
from pipelines.packing.config import PackConfig
from pipelines.packing.encode import Encoder
from pipelines.packing.examples import pack, unit_rng
from pipelines.packing.segment import WindowSegmenter

NS = "pack"
KIND = packformat.SHARDS_DIR
SUMMARY = sharding.work_path("summary", "summary.json")  # what the pipeline hands the driver
MB = 1 << 20
COUNTERS = ("docs_read", "docs", "docs_empty", "tokens_encoded", "examples", "examples_single_segment",
            "examples_short", "tokens_packed", "padding_tokens", "sentences_split", "examples_cross_document",
            "tokens_truncated", "bytes_segmented")


@dataclasses.dataclass(frozen=True)
class Unit:
    """Row groups [lo, hi) of input shard `shard` (`path` relative to the documents output);
    with `rows`, only rows [rows[0], rows[1]) of row group `lo` (then hi == lo + 1)."""

    shard: int
    path: str
    lo: int
    hi: int
    rows: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        """Its place in the input: seeds its random draws and names its block."""
        return f"{self.path}:{self.lo}" + (f":{self.rows[0]}" if self.rows else "")


def units_of(shard: int, path: str, groups: list[tuple[int, int]], unit_bytes: int) -> list[Unit]:
    """Consecutive row groups, as many as fit in `unit_bytes` of text; a row group with more text
    than that is cut into equal runs of rows, as many as its size needs. Only the footer decides:
    the same input layout and unit size give the same units."""
    out, lo, size = [], 0, 0
    for i, (n, rows) in enumerate(groups):
        if i > lo and size + n > unit_bytes:
            out.append(Unit(shard, path, lo, i))
            lo, size = i, 0
        if n > unit_bytes and rows > 1:  # alone: cut it
            if i > lo:
                out.append(Unit(shard, path, lo, i))
            parts = min(rows, -(-n // unit_bytes))
            bounds = [rows * k // parts for k in range(parts + 1)]
            out += [Unit(shard, path, i, i + 1, (a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
            lo, size = i + 1, 0
            continue
        size += n
    if lo < len(groups):
        out.append(Unit(shard, path, lo, len(groups)))
    return out


# Bytes a blank text can start with: ASCII whitespace by `str.isspace`, and any non-ASCII lead.
_BLANK_LEAD = re.compile(rb"[\t-\r\x1c-\x20\x80-\xff]")


def is_blank(text: bytes) -> bool:
    """`text.decode().isspace()` (a blank document has nothing to learn from), decoding only
    the rare text that starts with whitespace or a non-ASCII character."""
    return bool(text) and _BLANK_LEAD.match(text) is not None and text.decode("utf-8").isspace()


class _SplitShardFn(beam.DoFn):
    def __init__(self, input_uri: str, unit_bytes: int, settings: storage.StorageSettings | None):
        self.input_uri, self.unit_bytes, self.settings = input_uri, unit_bytes, settings

    def process(self, item):
        shard, path = item
        yield from units_of(shard, path, documents.row_groups(storage.join(self.input_uri, path), self.settings),
                            self.unit_bytes)


class PackUnit(beam.DoFn):
    """Unit -> its rows, written as one block, and a BlockInfo with its counts.

    Encodes the unit's documents, `encode_batch_docs` per call, each whole, exactly as the
    tokenizer encodes a text (`encode.py`), so the pack holds the document's own tokens; then
    packs them, running the segmenter only on the windows of text where an example's A/B split
    may fall.
    """

    def __init__(self, cfg: PackConfig, input_uri: str, encoder: Encoder, special_ids: dict, dtype: str,
                 settings: storage.StorageSettings | None):
        self.cfg, self.input_uri, self.special_ids = cfg, input_uri, special_ids
        self.encoder, self.dtype, self.settings = encoder, np.dtype(dtype), settings
        self.counters = {n: Metrics.counter(NS, n) for n in COUNTERS}

    def setup(self):
        self.encoder.setup()

    def process(self, unit: Unit):
        texts = documents.read_texts(storage.join(self.input_uri, unit.path), self.settings, range(unit.lo, unit.hi),
                                     unit.rows)
        docs_read = len(texts)
        # A blank document has no text to learn from; it is counted (docs_empty), not packed.
        texts = [b"" if is_blank(t) else t for t in texts]
        enc = self.encoder.encode(texts)
        del texts
        tokens, lengths = enc.tokens, enc.lengths
        empty = lengths.count(0)
        doc_ends = np.cumsum([n for n in lengths if n], dtype=np.int64)
        sentences = WindowSegmenter(enc.text, enc.token_starts)
        rng = unit_rng(self.cfg.seed, unit.key)
        rows, st = pack(tokens, doc_ends, sentences, self.cfg, rng, self.special_ids, self.dtype)
        data = rows.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        del rows
        path, size = None, 0
        if st.examples:
            path = sharding.work_path(KIND, f"u-{unit.shard:05d}-{unit.lo:05d}-{unit.rows[0] if unit.rows else 0:06d}.bin")
            size = sharding.write_block(self.cfg.output, path, lambda f: f.write(data), self.settings)
        counts = {
            "docs_read": docs_read, "docs": len(lengths), "docs_empty": empty,
            "bytes_segmented": sentences.segmented_bytes, "tokens_in": int(len(tokens)),
            "tokens_packed": st.tokens, "tokens_truncated": int(len(tokens)) - st.tokens,
            "examples": st.examples, "examples_single_segment": st.single_segment, "examples_short": st.short,
            "padding_tokens": st.padding, "sentences_split": st.sentences_split,
            "examples_cross_document": st.cross_document,
        }
        for name, counter in self.counters.items():
            counter.inc(counts["tokens_in"] if name == "tokens_encoded" else counts[name])
        yield sharding.BlockInfo(KIND, (unit.shard, unit.lo, unit.rows[0] if unit.rows else 0), path, size,
                                 st.examples, counts)


def assemble_rows(dtype: str, not_tokens: tuple[int, ...], pieces, sink, output, settings) -> dict:
    """Shard assembler: the blocks' rows end to end, counting the text tokens they hold."""
    tokens = 0
    for data in sharding.read_pieces(pieces, output, settings):  # chunks are whole ids (8 MiB)
        ids = np.frombuffer(data, dtype)
        # One comparison per special id: np.isin would sort the chunk (~16 bytes per id of scratch).
        tokens += len(ids) - sum(int(np.count_nonzero(ids == t)) for t in not_tokens)
        sink.write(data)
    return {"tokens": tokens}


def layout(cfg: PackConfig, dtype: str, special_ids: dict) -> sharding.Layout:
    dt = np.dtype(dtype).newbyteorder("<")
    not_tokens = tuple(sorted({special_ids[k] for k in ("pad", "cls", "sep", "mask")}))
    return sharding.Layout(KIND, packformat.SHARDS_DIR, ".bin", int(cfg.shard_mb * MB),
                           cfg.max_seq_length * dt.itemsize, functools.partial(assemble_rows, dt.str, not_tokens))


class _SummaryWriter:
    """Writes what the driver needs for the manifest: every shard and the summed unit counts."""

    def __init__(self, output: str, settings: storage.StorageSettings | None):
        self.output, self.settings = output, settings

    def __call__(self, items: list) -> None:
        shards, counts = sharding.shards_and_counts(items)
        summary = {"counts": counts, "shards": [
            {"path": s.path, "examples": s.records, "tokens": s.extra["tokens"], "sha256": s.sha256, "bytes": s.bytes}
            for s in shards]}
        storage.write_text(storage.join(self.output, SUMMARY), json.dumps(summary, sort_keys=True), self.settings)


class PackDocuments(beam.PTransform):
    """(index, path) of every input document shard -> packed shards under cfg.output, and SUMMARY."""

    def __init__(self, cfg: PackConfig, input_uri: str, encoder: Encoder, special_ids: dict, dtype: str,
                 settings: storage.StorageSettings | None):
        super().__init__()
        self.cfg, self.input_uri, self.encoder = cfg, input_uri, encoder
        self.special_ids, self.dtype, self.settings = special_ids, dtype, settings

    def expand(self, input_shards):
        cfg = self.cfg
        blocks = (input_shards
                  | "SpreadShards" >> beam.Reshuffle()
                  | "SplitShards" >> beam.ParDo(_SplitShardFn(self.input_uri, int(cfg.unit_mb * MB), self.settings))
                  | "SpreadUnits" >> beam.Reshuffle()
                  | "PackUnits" >> beam.ParDo(PackUnit(cfg, self.input_uri, self.encoder, self.special_ids,
                                                       self.dtype, self.settings)))
        written = blocks | "WriteShards" >> sharding.WriteShards(
            cfg.output, [layout(cfg, self.dtype, self.special_ids)], self.settings)
        return written | "Summary" >> sharding.Finalize(_SummaryWriter(cfg.output, self.settings))
