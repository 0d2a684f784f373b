"""Outputs cut by size: blocks written by many workers, planned into shards, shards streamed.

A job writes its records as *blocks*: bounded groups of records (a hash range of documents,
a run of a pack's input row groups), each sorted and written under OUTPUT/_work/ by one DoFn
call. The plan, one small group holding every block's size and counts (never its data), lays
the blocks out in their order and cuts them into shards of about `shard_bytes`; each shard is
then written by streaming its blocks, in order, into one object (an S3 multipart upload, or a
local temp file renamed at the end). So

* no worker holds more than one block (or one row group of it) at a time;
* the shard count follows the data: total bytes / shard_bytes;
* every byte is a function of the data and the config: a block's contents and its place come
  from sort keys and hash ranges, never from the order in which a runner delivers elements.

Why not let each block be a shard: blocks are sized for a worker's memory (tens of MB), shards
for storage and readers (hundreds of MB; docs/clean.md "Sizing shards"). Why not S3
UploadPartCopy to splice blocks server-side: the manifest records every shard's sha256, so the
bytes pass through a worker anyway.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Callable, Iterable, Iterator

import apache_beam as beam

from common import storage

WORK_DIR = "_work"  # blocks and other scratch under the output; removed before the manifest
COPY_CHUNK = 8 << 20  # bytes per read when a shard copies its blocks


def work_path(kind: str, name: str) -> str:
    return f"{WORK_DIR}/{kind}/{name}"


def shard_name(index: int, count: int, suffix: str) -> str:
    return f"part-{index:05d}-of-{count:05d}{suffix}"


def block_of(key_hash: int, blocks: int) -> int:
    """Block of a 64-bit hash: `blocks` contiguous, equal ranges of the hash space, so the
    concatenation of blocks 0..n-1 is ordered by hash."""
    return (key_hash * blocks) >> 64


# ----------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class BlockInfo:
    """One written block (or, with path None, a block with no records, which only counts)."""

    kind: str  # which output it belongs to ("documents", "rejects", "shards")
    order: tuple  # its place in that output: blocks are laid out sorted by this
    path: str | None  # relative to the output, under _work/
    bytes: int
    records: int
    counts: dict  # counters its records add up to; summed over all blocks into Totals


@dataclasses.dataclass(frozen=True)
class Piece:
    """Bytes [offset, offset + length) of a block file, holding `records` records."""

    path: str
    offset: int
    length: int
    records: int


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    kind: str
    index: int
    count: int
    pieces: tuple[Piece, ...]


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """A finished shard, as the manifest lists it."""

    kind: str
    index: int
    path: str
    records: int
    bytes: int
    sha256: str
    extra: dict  # what the layout's assembler reported (pack: token count)


@dataclasses.dataclass(frozen=True)
class Totals:
    kind: str
    counts: dict  # summed over every block of the kind
    blocks: int


def add_counts(into: dict, counts: dict) -> dict:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v
    return into


def shards_and_counts(items: list) -> tuple[list[ShardInfo], dict]:
    """What Finalize receives, split: the shards in (kind, index) order and every kind's counts summed."""
    shards = sorted((s for s in items if isinstance(s, ShardInfo)), key=lambda s: (s.kind, s.index))
    counts: dict = {}
    for t in items:
        if isinstance(t, Totals):
            add_counts(counts, t.counts)
    return shards, counts


# ----------------------------------------------------------------------------- layouts

Assembler = Callable[[Iterable[Piece], "HashingSink", str, "storage.StorageSettings | None"], dict]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one output is cut and written."""

    kind: str
    directory: str  # shards go to OUTPUT/<directory>/part-XXXXX-of-YYYYY<suffix>
    suffix: str
    shard_bytes: int  # target shard size
    # > 0: records have this fixed size and a shard is exactly shard_bytes // record_bytes records
    # (pack rows); 0: shards are cut between blocks (Parquet, gzip members), never inside one.
    record_bytes: int
    assemble: Assembler  # writes the pieces, in order, into the sink; returns `extra`

    def shard_path(self, index: int, count: int) -> str:
        return f"{self.directory}/{shard_name(index, count, self.suffix)}"


def plan(blocks: list[BlockInfo], layout: Layout) -> list[tuple[Piece, ...]]:
    """The pieces of every shard, in shard order. A pure function of the blocks' order and sizes."""
    blocks = sorted((b for b in blocks if b.path and b.records), key=lambda b: b.order)
    shards: list[list[Piece]] = []
    if layout.record_bytes:
        per_shard = max(1, layout.shard_bytes // layout.record_bytes)
        room = 0
        for b in blocks:
            done = 0
            while done < b.records:
                if room == 0:
                    shards.append([])
                    room = per_shard
                n = min(room, b.records - done)
                shards[-1].append(Piece(b.path, done * layout.record_bytes, n * layout.record_bytes, n))
                done += n
                room -= n
        return [tuple(s) for s in shards]
    size = 0
    for b in blocks:
        if not shards or (size and size + b.bytes > layout.shard_bytes):
            shards.append([])
            size = 0
        shards[-1].append(Piece(b.path, 0, b.bytes, b.records))
        size += b.bytes
    return [tuple(s) for s in shards]


# ----------------------------------------------------------------------------- writing


class HashingSink(io.RawIOBase):
    """A write-through wrapper that counts and sha256-hashes what passes (the manifest needs both)."""

    def __init__(self, raw):
        self.raw, self.sha, self.n = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.n

    def write(self, b) -> int:
        self.raw.write(b)
        self.sha.update(b)
        self.n += len(b)
        return len(b)


def read_pieces(pieces: Iterable[Piece], output: str, settings: storage.StorageSettings | None,
                chunk: int = COPY_CHUNK) -> Iterator[bytes]:
    """The bytes of the pieces, in order, `chunk` bytes at a time (a multiple of any record size
    that divides `chunk`)."""
    for p in pieces:
        with storage.open_seekable(storage.join(output, p.path), settings) as f:
            f.seek(p.offset)
            left = p.length
            while left:
                data = f.read(min(chunk, left))
                if not data:
                    raise IOError(f"{p.path}: block shorter than planned ({left} bytes missing)")
                left -= len(data)
                yield data


def concatenate(pieces, sink, output, settings) -> dict:
    """Assembler for formats whose files concatenate (raw rows, gzip members)."""
    for data in read_pieces(pieces, output, settings):
        sink.write(data)
    return {}


def write_block(output: str, path: str, write: Callable[[HashingSink], None],
                settings: storage.StorageSettings | None) -> int:
    """Stream one block to OUTPUT/path; returns its size in bytes."""
    with storage.open_write(storage.join(output, path), settings) as raw:
        sink = HashingSink(raw)
        write(sink)
    return sink.n


class _PlanFn(beam.DoFn):
    def __init__(self, layouts: dict[str, Layout]):
        self.layouts = layouts

    def process(self, kv):
        kind, blocks = kv
        blocks = list(blocks)  # small records: one per block, no data
        totals: dict = {}
        for b in blocks:
            add_counts(totals, b.counts)
        yield Totals(kind, totals, len(blocks))
        if kind in self.layouts:  # a kind without a layout only counts (the clean job's files read)
            shards = plan(blocks, self.layouts[kind])
            for i, pieces in enumerate(shards):
                yield ShardPlan(kind, i, len(shards), pieces)


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, layouts: dict[str, Layout], settings: storage.StorageSettings | None):
        self.output, self.layouts, self.settings = output, layouts, settings

    def process(self, p):
        if not isinstance(p, ShardPlan):
            yield p  # Totals ride along to Finalize
            return
        layout = self.layouts[p.kind]
        path = layout.shard_path(p.index, p.count)
        with storage.open_write(storage.join(self.output, path), self.settings) as raw:
            sink = HashingSink(raw)
            extra = layout.assemble(p.pieces, sink, self.output, self.settings)
        yield ShardInfo(p.kind, p.index, path, sum(x.records for x in p.pieces), sink.n, sink.sha.hexdigest(), extra)


class Spread(beam.PTransform):
    """Elements grouped by `key(element)` and let out again: a Reshuffle that also spreads them on
    Beam's DaskRunner, where Reshuffle does nothing and a GroupByKey hashes keys over all the
    partitions of its input (elements that came out of one group sit in one partition)."""

    def __init__(self, key: Callable):
        super().__init__()
        self.key = key

    def expand(self, pcoll):
        key = self.key
        return (pcoll
                | "Key" >> beam.Map(lambda x: (key(x), x))
                | "Group" >> beam.GroupByKey()
                | "Ungroup" >> beam.FlatMap(lambda kv: kv[1]))


class WriteShards(beam.PTransform):
    """BlockInfo elements -> every shard written -> ShardInfo elements, and one Totals per kind.

    The plan is one group per kind of small block descriptions (never data); its shard plans
    are spread over the workers and each written by one call, streaming its blocks in order.
    """

    def __init__(self, output: str, layouts: list[Layout], settings: storage.StorageSettings | None = None):
        super().__init__()
        self.output, self.settings = output, settings
        self.layouts = {lay.kind: lay for lay in layouts}

    def expand(self, blocks):
        return (blocks
                | "ByKind" >> beam.Map(lambda b: (b.kind, b))
                | "GroupByKind" >> beam.GroupByKey()
                | "Plan" >> beam.ParDo(_PlanFn(self.layouts))
                | "SpreadPlans" >> Spread(lambda x: (x.kind, getattr(x, "index", -1)))
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self.output, self.layouts, self.settings)))


class Finalize(beam.PTransform):
    """A PCollection (or a tuple of them) of small records (ShardInfo, Totals) -> `finalize(list of
    all of them)`, run once. It runs only after every shard exists, because it consumes every shard's
    description. (A GroupByKey on one key rather than CombineGlobally or a side input: the
    DaskRunner has no side inputs.) The group is small: one element per shard, per input file
    and per output kind, never one per record."""

    def __init__(self, finalize: Callable[[list], object]):
        super().__init__()
        self.finalize = finalize

    def expand(self, items):
        finalize = self.finalize
        if isinstance(items, tuple):
            items = items | "Everything" >> beam.Flatten()
        return (items
                | "OneKey" >> beam.Map(lambda x: (0, x))
                | "AsOneGroup" >> beam.GroupByKey()
                | "Finalize" >> beam.Map(lambda kv: finalize(list(kv[1]))))
