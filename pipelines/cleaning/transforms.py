"""Beam transforms of the clean job, one PTransform per stage.

Every record that enters leaves exactly once: as a kept document, a drop (the rule's name) or
a reject (records.py has the record types and their tags). Each of those goes to a block
(`WriteBlocks`: a hash range of documents, or of rejects), and each block reports its counts;
the files report how many records they held. So stats.json is exact on every runner (the
DaskRunner has no metrics) and no count is one element per record; Beam Metrics counters of
the same names are incremented alongside for runner UIs.
"""

from __future__ import annotations

import apache_beam as beam
import xxhash
from apache_beam.metrics import Metrics

from common import storage
from pipelines import sharding
from pipelines.cleaning import extract as extract_mod
from pipelines.cleaning import readers
from pipelines.cleaning import records as R
from pipelines.cleaning import sinks
from pipelines.cleaning import stages as stages_mod
from pipelines.cleaning.config import CleanConfig, DedupConfig, ReaderConfig
from pipelines.cleaning.minhash import MinHasher
from pipelines.cleaning.normalize import dedup_key
from pipelines.cleaning.records import Tag

NS = "clean"
# Every element is a record (records.py) on ONE output. Single-output ParDos (no with_outputs)
# because Beam's DaskRunner merges a ParDo's tagged outputs into one bag; selecting by the
# record's tag downstream works the same on every runner.
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NS, name).inc(n)


class Select(beam.PTransform):
    """The records whose tag is one of `tags`."""

    def __init__(self, *tags: Tag):
        super().__init__()
        self.tags = frozenset(tags)

    def expand(self, pcoll):
        tags = self.tags
        return pcoll | beam.Filter(lambda rec: rec.tag in tags)


# ----------------------------------------------------------------------------- read + extract


class _ReadFileFn(beam.DoFn):
    def __init__(self, cfg: ReaderConfig, settings: storage.StorageSettings | None):
        self.cfg, self.settings = cfg, settings

    def process(self, item):
        uri, fmt = item
        n = 0
        for rec in readers.read_file(uri, fmt, self.cfg, self.settings):
            n += 1
            yield rec
        _count("records_read", n)
        _count("files_read")
        yield R.Count("records_read", n)


class _ExtractFn(beam.DoFn):
    def __init__(self, cfg: ReaderConfig):
        self.cfg = cfg

    def process(self, rec):
        if rec.tag is Tag.HTML:
            rec = extract_mod.extract(rec, self.cfg)
        if rec.tag is Tag.REJECT:
            _count(f"rejected_{rec.reason}")
        yield rec


class ReadInputs(beam.PTransform):
    """(uri, format) pairs -> Document, Reject and, per file, Count("records_read") records."""

    def __init__(self, files: list[tuple[str, str]], cfg: ReaderConfig,
                 settings: storage.StorageSettings | None = None):
        super().__init__()
        self.files, self.cfg, self.settings = files, cfg, settings

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self.files)
                # spread whole files over workers before the heavy, fused read+extract+clean stage
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(_ReadFileFn(self.cfg, self.settings))
                | "ExtractText" >> beam.ParDo(_ExtractFn(self.cfg)))


# ----------------------------------------------------------------------------- per-document rules


class _StageFn(beam.DoFn):
    def __init__(self, stage: stages_mod.Stage):
        self.stage = stage

    def setup(self):
        self.stage.setup()

    def process(self, doc):
        if doc.tag is not Tag.DOC:
            yield doc  # rejects, drops and counts ride along untouched
            return
        try:
            out, reason = self.stage.apply(doc)
        except Exception as exc:  # noqa: BLE001 - one odd document must not kill a 10-hour job
            _count(f"rejected_{R.RULE_ERROR}")
            yield R.reject(R.RULE_ERROR, doc.source, doc.position, doc.text,
                           f"{self.stage.name}: {type(exc).__name__}: {exc}", url=doc.url)
            return
        if reason:
            _count(f"dropped_{reason}")
            yield R.Drop(reason, R.key_hash(doc.uid))
        else:
            yield out


class ApplyStage(beam.PTransform):
    """One cleaning stage on records: a Document stays one or becomes a Drop with the rule's name."""

    def __init__(self, stage: stages_mod.Stage):
        super().__init__()
        self.stage = stage

    def expand(self, items):
        return items | beam.ParDo(_StageFn(self.stage))


class CleanDocuments(beam.PTransform):
    """Normalise, language id, Gopher repetition + quality, C4, one labelled ParDo each."""

    def __init__(self, cfg: CleanConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, items):
        for stage in stages_mod.build(self.cfg):
            items = items | stage.name >> ApplyStage(stage)
        return items


# ----------------------------------------------------------------------------- dedup
#
# Dedup shuffles only small (key, uid) pairs and emits Flag(uid, reason) records. The documents
# themselves move once, to their block, where flagged ones are dropped (WriteBlocks).


_EXACT_KEY, _NEAR_KEY = "exact:", "near:"  # one key space for both kinds of candidate groups


def _flag_all_but_smallest(kv):
    key, uids = kv
    reason = EXACT_DUPLICATE if key.startswith(_EXACT_KEY) else NEAR_DUPLICATE
    uids = sorted(set(uids))
    for u in uids[1:]:
        yield R.Flag(u, reason)


class _DedupKeysFn(beam.DoFn):
    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def setup(self):
        self.hasher = MinHasher(self.cfg) if self.cfg.near else None  # permutation constants, once per worker

    def process(self, doc):
        u = doc.uid
        if self.cfg.exact:
            yield _EXACT_KEY + xxhash.xxh3_128_hexdigest(dedup_key(doc.text).encode()), u
        if self.hasher is not None:
            for key in self.hasher.band_keys(doc.text):
                yield _NEAR_KEY + key, u


class DuplicateFlags(beam.PTransform):
    """Documents -> Flag(uid, reason) records, through one GroupByKey of (key, uid) pairs.

    exact: documents whose normalised text (case and spacing ignored) is the same share a key;
    near: MinHash LSH, one key per band, so documents sharing a band bucket are candidates. In
    every group all but the smallest uid are flagged (a document in several groups gets several
    flags; the block writer reads them as a set, exact first). So no two kept documents share a
    bucket, and the smallest id of every connected cluster is kept, on any runner and in any
    order. Exact duplicates share all their buckets with their smallest twin, so both kinds on
    the same documents give what near dedup after exact dedup would.
    """

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, docs):
        return (docs
                | "DedupKeys" >> beam.ParDo(_DedupKeysFn(self.cfg))
                | "GroupByKey" >> beam.GroupByKey()
                | "FlagAllButSmallest" >> beam.FlatMap(_flag_all_but_smallest))


# ----------------------------------------------------------------------------- sinks

_REASON_ORDER = (EXACT_DUPLICATE, NEAR_DUPLICATE)  # a document flagged by both counts as exact


def _block_key(rec, blocks: int):
    """Where a record is counted and written: documents (and their drops) by a hash of the
    document's uid, rejects by a hash of their place in the input."""
    if rec.tag is Tag.DOC:
        return [((sinks.DOCUMENTS, sharding.block_of(R.key_hash(rec.uid), blocks)), rec)]
    if rec.tag is Tag.DROP:
        return [((sinks.DOCUMENTS, sharding.block_of(rec.hash, blocks)), rec)]
    if rec.tag is Tag.REJECT:
        return [((sinks.REJECTS, sharding.block_of(R.key_hash(rec.key), blocks)), rec)]
    return [((sinks.READ, 0), rec)]  # the files' Counts: summed in one small group


class _WriteBlockFn(beam.DoFn):
    def __init__(self, output: str, settings: storage.StorageSettings | None):
        self.output, self.settings = output, settings

    def process(self, kv):
        (kind, block), values = kv
        if kind == sinks.READ:
            yield sharding.BlockInfo(kind, (block,), None, 0, 0, {"records_read": sum(c.n for c in values)})
            return
        if kind == sinks.REJECTS:
            rejects = sorted(values, key=lambda r: r.key)
            counts: dict = {}
            for r in rejects:
                sharding.add_counts(counts, {f"rejected:{r.reason}": 1})
            path = sharding.work_path(kind, f"block-{block:07d}.jsonl.gz")
            size = sharding.write_block(self.output, path, lambda f: sinks.write_rejects_block(rejects, f),
                                        self.settings)
            yield sharding.BlockInfo(kind, (block,), path, size, len(rejects), counts)
            return
        docs, flags, counts = [], {}, {}
        for rec in values:
            if rec.tag is Tag.DOC:
                docs.append(rec)
            elif rec.tag is Tag.FLAG:
                flags.setdefault(rec.uid, set()).add(rec.reason)
            else:  # a rule's drop, counted in its document's block
                sharding.add_counts(counts, {f"dropped:{rec.reason}": 1})
        keyed = []
        for d in docs:
            u = d.uid
            reasons = flags.get(u)
            if reasons:
                reason = min(reasons, key=_REASON_ORDER.index)
                _count(f"dropped_{reason}")
                sharding.add_counts(counts, {f"dropped:{reason}": 1})
            else:
                keyed.append((R.key_hash(u), u, d))
        # Ordered by hash, then uid: blocks are hash ranges, so every shard, and the output as a
        # whole, is in this order, whatever order the runner delivered the documents in.
        keyed.sort(key=lambda t: (t[0], t[1]))
        counts["kept"] = len(keyed)
        _count("kept", len(keyed))
        path, size = None, 0
        if keyed:
            path = sharding.work_path(kind, f"block-{block:07d}.parquet")
            size = sharding.write_block(self.output, path,
                                        lambda f: sinks.write_documents_block([t[2] for t in keyed], f), self.settings)
        yield sharding.BlockInfo(kind, (block,), path, size, len(keyed), counts)


class WriteBlocks(beam.PTransform):
    """Documents, Drops, Rejects and Counts (and dedup Flags) -> one BlockInfo per block that got any.

    A document's block is a contiguous range of a 64-bit hash of its uid (`blocks` of them, sized
    from the input by `output.block_input_mb`), so one block's documents are a bounded group,
    sorted by hash and written under _work/ by one call; flagged documents are dropped there.
    """

    def __init__(self, output: str, blocks: int, settings: storage.StorageSettings | None = None):
        super().__init__()
        self.output, self.blocks, self.settings = output, blocks, settings

    def expand(self, inputs):
        recs, flags = inputs if isinstance(inputs, tuple) else (inputs, None)
        blocks = self.blocks
        parts = [recs | "KeyByBlock" >> beam.FlatMap(_block_key, blocks)]
        if flags is not None:
            parts.append(flags | "FlagsByBlock" >> beam.Map(
                lambda f: ((sinks.DOCUMENTS, sharding.block_of(R.key_hash(f.uid), blocks)), f)))
        return (tuple(parts)
                | "WithFlags" >> beam.Flatten()
                | "GroupByBlock" >> beam.GroupByKey()
                | "WriteBlock" >> beam.ParDo(_WriteBlockFn(self.output, self.settings)))
