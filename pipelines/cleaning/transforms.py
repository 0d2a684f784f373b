"""Beam transforms of the clean job, one PTransform per stage.

Every record that enters leaves exactly once: as a kept document (DOC), a drop reason
(DROP, the rule's name) or a reject record (REJECT). Counts travel as data, (key, n) pairs
summed by a combiner, so stats.json is exact on every runner (the DaskRunner has no
metrics); Beam Metrics counters of the same names are incremented alongside for runner UIs.
"""

from __future__ import annotations

import apache_beam as beam
import xxhash
from apache_beam.metrics import Metrics

from common import storage
from pipelines import documents
from pipelines.cleaning import extract as extract_mod
from pipelines.cleaning import readers
from pipelines.cleaning import records as R
from pipelines.cleaning import stages as stages_mod
from pipelines.cleaning.config import CleanConfig, DedupConfig, ReaderConfig
from pipelines.cleaning.minhash import MinHasher
from pipelines.cleaning.normalize import dedup_key

NS = "clean"
# Every element is a (tag, value) pair on ONE output. Single-output ParDos (no with_outputs)
# because Beam's DaskRunner merges a ParDo's tagged outputs into one bag; selecting by tag
# downstream works the same on every runner.
DOC, HTML, DROP, REJECT, COUNT, SHARD = "doc", "html", "drop", "reject", "count", "shard"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


def uid(doc: dict) -> str:
    """Unique and totally ordered even when a dataset repeats its own ids."""
    return f"{doc['id']}\t{doc['source']}\t{doc['position']:012d}"


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NS, name).inc(n)


class Select(beam.PTransform):
    """The values of the (tag, value) elements whose tag is one of `tags`."""

    def __init__(self, *tags: str):
        super().__init__()
        self.tags = frozenset(tags)

    def expand(self, pcoll):
        tags = self.tags
        return pcoll | beam.FlatMap(lambda item: [item[1]] if item[0] in tags else [])


# ----------------------------------------------------------------------------- read + extract


class _ReadFileFn(beam.DoFn):
    def __init__(self, cfg: ReaderConfig, settings: storage.StorageSettings | None):
        self.cfg, self.settings = cfg, settings

    def process(self, item):
        uri, fmt = item
        n = 0
        for tagged in readers.read_file(uri, fmt, self.cfg, self.settings):
            n += 1
            yield tagged
        _count("records_read", n)
        _count("files_read")
        yield COUNT, ("records_read", n)


class _ExtractFn(beam.DoFn):
    def __init__(self, cfg: ReaderConfig):
        self.cfg = cfg

    def process(self, item):
        if item[0] == HTML:
            item = extract_mod.extract(item[1], self.cfg)
        if item[0] == REJECT:
            _count(f"rejected_{item[1]['reason']}")
        yield item


class ReadInputs(beam.PTransform):
    """(uri, format) pairs -> (tag, value): DOC documents, REJECT records, COUNT records_read."""

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

    def process(self, item):
        if item[0] != DOC:
            yield item  # rejects, drops and counts ride along untouched
            return
        doc = item[1]
        try:
            out, reason = self.stage.apply(doc)
        except Exception as exc:  # noqa: BLE001 - one odd document must not kill a 10-hour job
            _count(f"rejected_{R.RULE_ERROR}")
            yield REJECT, R.reject(R.RULE_ERROR, doc["source"], doc["position"], doc["text"],
                                   f"{self.stage.name}: {type(exc).__name__}: {exc}", url=doc.get("url"))
            return
        if reason:
            _count(f"dropped_{reason}")
            yield DROP, reason
        else:
            yield DOC, out


class ApplyStage(beam.PTransform):
    """One cleaning stage on (tag, value) elements: a DOC stays a DOC or becomes a DROP reason."""

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
# Dedup shuffles only small (key, id) pairs and emits (id, reason) flags. The documents
# themselves move once, to their output shard, where flagged ones are dropped (WriteShards).


def _flag_all_but_smallest(kv, reason: str):
    _, uids = kv
    uids = sorted(set(uids))
    for u in uids[1:]:
        yield u, reason


class ExactDuplicateFlags(beam.PTransform):
    """Documents -> (uid, "exact_duplicate") for every document whose normalised text (case and
    spacing ignored) equals that of a document with a smaller id."""

    def expand(self, docs):
        return (docs
                | "KeyByText" >> beam.Map(lambda d: (xxhash.xxh3_128_hexdigest(dedup_key(d["text"]).encode()),
                                                     uid(d)))
                | "GroupByText" >> beam.GroupByKey()
                | "FlagAllButSmallest" >> beam.FlatMap(_flag_all_but_smallest, EXACT_DUPLICATE))


class _BandKeysFn(beam.DoFn):
    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def setup(self):
        self.hasher = MinHasher(self.cfg)  # permutation constants, once per worker

    def process(self, doc):
        u = uid(doc)
        for key in self.hasher.band_keys(doc["text"]):
            yield key, u


class NearDuplicateFlags(beam.PTransform):
    """Documents -> (uid, "near_duplicate"), by MinHash LSH. Documents sharing a band bucket are
    candidates; in each bucket every document but the smallest id is flagged (once per shared
    bucket; the shard writer reads flags as a set). So no two kept
    documents share a bucket, and the smallest id of every connected cluster is kept.
    Exact duplicates share all their buckets with their smallest twin, so running this on
    the same documents as ExactDuplicateFlags gives what running it after exact dedup would."""

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, docs):
        return (docs
                | "BandKeys" >> beam.ParDo(_BandKeysFn(self.cfg))
                | "GroupByBand" >> beam.GroupByKey()
                | "FlagAllButSmallest" >> beam.FlatMap(_flag_all_but_smallest, NEAR_DUPLICATE))


# ----------------------------------------------------------------------------- sinks

_REASON_ORDER = (EXACT_DUPLICATE, NEAR_DUPLICATE)  # a document flagged by both counts as exact


def _shard_of(key: str, count: int) -> int:
    return xxhash.xxh64_intdigest(key.encode()) % count


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, kind: str, count: int, settings: storage.StorageSettings | None):
        self.output, self.kind, self.count, self.settings = output, kind, count, settings

    def process(self, kv):
        index, values = kv
        rows, flags = [], {}
        for tag, v in values:
            if tag == "row":
                rows.append(v)
            elif tag == "flag":
                flags.setdefault(v[0], set()).add(v[1])
        if flags:
            kept = []
            for r in rows:
                reasons = flags.get(uid(r))
                if reasons:
                    reason = min(reasons, key=_REASON_ORDER.index)
                    _count(f"dropped_{reason}")
                    yield DROP, reason
                else:
                    kept.append(r)
            rows = kept
        rows.sort(key=R.sort_key)
        if self.kind == "documents":
            data = documents.encode_shard(rows)
            path = f"{documents.DOCUMENTS_DIR}/{documents.shard_name(index, self.count, '.parquet')}"
            _count("kept", len(rows))
        else:
            data = documents.encode_rejects(rows)
            path = f"{documents.REJECTS_DIR}/{documents.shard_name(index, self.count, '.jsonl.gz')}"
        storage.write_bytes(storage.join(self.output, path), data, self.settings)
        _count(f"{self.kind}_shards_written")
        yield SHARD, {"kind": self.kind, "path": path, "records": len(rows), "bytes": len(data),
                      "sha256": storage.sha256_bytes(data)}


def _reject_key(r: dict) -> str:
    return f"{r['source']}\t{r['position']}"


class WriteShards(beam.PTransform):
    """Records (and, for documents, dedup flags) -> `count` shards chosen by a hash of a stable
    key, each filtered, sorted and written by one DoFn call under a deterministic name (every
    index, even when empty) -> SHARD descriptions, plus a DROP for each flagged document."""

    def __init__(self, output: str, kind: str, count: int, settings: storage.StorageSettings | None = None):
        super().__init__()
        if kind not in ("documents", "rejects"):
            raise ValueError(kind)
        self.output, self.kind, self.count, self.settings = output, kind, count, settings

    def expand(self, inputs):
        recs, flags = inputs if isinstance(inputs, tuple) else (inputs, None)
        count = self.count
        key = uid if self.kind == "documents" else _reject_key
        parts = [recs | "AssignShard" >> beam.Map(lambda r: (_shard_of(key(r), count), ("row", r))),
                 recs.pipeline | "AllShardIds" >> beam.Create([(i, ("empty", None)) for i in range(count)])]
        if flags is not None:
            parts.append(flags | "FlagsToShard" >> beam.Map(lambda f: (_shard_of(f[0], count), ("flag", f))))
        return (tuple(parts)
                | "WithEmptyAndFlags" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self.output, self.kind, count, self.settings)))


class Finalize(beam.PTransform):
    """SHARD and COUNT elements -> one group -> stats.json, then manifest.json. It runs only
    after every shard exists, because it consumes every shard's description. (A GroupByKey on
    one key rather than CombineGlobally: no side inputs, which the DaskRunner lacks.)"""

    def __init__(self, finalize):
        super().__init__()
        self.finalize = finalize

    def expand(self, items):
        shards = items | "Shards" >> Select(SHARD)
        summed = (items | "Counts" >> Select(COUNT)
                  | "SumCounts" >> beam.CombinePerKey(sum)
                  | "TagCounts" >> beam.Map(lambda kv: (COUNT, kv)))
        finalize = self.finalize
        return ((shards | "TagShards" >> beam.Map(lambda s: (SHARD, s)), summed)
                | "Everything" >> beam.Flatten()
                | "OneKey" >> beam.Map(lambda x: (0, x))
                | "AsOneGroup" >> beam.GroupByKey()
                | "WriteStatsAndManifest" >> beam.Map(lambda kv: finalize(list(kv[1]))))
