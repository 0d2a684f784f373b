"""What the clean job writes: blocks, shards (sharding.py cuts them), then stats.json and manifest.json."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq

from common import manifest, storage
from pipelines import documents, sharding

FORMAT = "electra-documents-v1"
DOCUMENTS, REJECTS = documents.DOCUMENTS_DIR, documents.REJECTS_DIR  # the two outputs, and their directories
READ = "read"  # a kind with no output: the records each input file held, summed (records_read)
MB = 1 << 20


def write_documents_block(docs: list, sink) -> None:
    """Sorted documents -> one Parquet block (row groups as in the final shard)."""
    w = documents.ShardWriter(sink)
    w.write(documents.table_from_documents(docs))
    w.close()


def write_rejects_block(rejects: list, sink) -> None:
    """Sorted rejects -> one gzip member of JSON lines. Members concatenate into a valid .gz,
    so a rejects shard is its blocks' bytes end to end. mtime 0, no name: reproducible bytes."""
    body = "".join(json.dumps(r.as_json(), sort_keys=True, ensure_ascii=False) + "\n" for r in rejects)
    sink.write(gzip.compress(body.encode("utf-8"), compresslevel=6, mtime=0))


def assemble_parquet(pieces, sink, output: str, settings) -> dict:
    """Rewrites the blocks' row groups, in order, into one Parquet file (Parquet files do not
    concatenate): one row group in memory at a time."""
    w = documents.ShardWriter(sink)
    for p in pieces:
        with storage.open_seekable(storage.join(output, p.path), settings) as f:
            pf = pq.ParquetFile(f)
            for rg in range(pf.num_row_groups):
                w.write(pf.read_row_group(rg))
    w.close()
    return {}


def layouts(shard_mb: float) -> list[sharding.Layout]:
    target = int(shard_mb * MB)
    return [sharding.Layout(DOCUMENTS, DOCUMENTS, ".parquet", target, 0, assemble_parquet),
            sharding.Layout(REJECTS, REJECTS, ".jsonl.gz", target, 0, sharding.concatenate)]


def build_stats(counts: dict[str, int], kept: int) -> dict:
    """{"records_read", "kept", "dropped": {rule: n}, "rejected": {reason: n}} with sorted keys."""
    dropped = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dropped:")}
    rejected = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("rejected:")}
    return {"records_read": counts.get("records_read", 0), "kept": kept, "dropped": dropped, "rejected": rejected}


def reconciles(stats: dict) -> bool:
    return stats["records_read"] == stats["kept"] + sum(stats["dropped"].values()) + sum(stats["rejected"].values())


def _shard_entry(s: sharding.ShardInfo) -> dict:
    return {"path": s.path, "records": s.records, "bytes": s.bytes, "sha256": s.sha256}


class ManifestWriter:
    """Picklable callable run once, on one worker, with every ShardInfo and the Totals of each kind
    (documents, rejects, files read). Removes the blocks, then writes stats.json and, last, manifest.json."""

    def __init__(self, output: str, rules: dict, inputs: list[dict], code_version: str,
                 settings: storage.StorageSettings | None = None, claim=None):
        self.output, self.rules, self.inputs = output, rules, inputs
        self.code_version, self.settings = code_version, settings
        self.claim = claim  # common.claims.Claim: checked before anything is published

    def __call__(self, items: list) -> dict:
        shards, counts = sharding.shards_and_counts(items)
        doc_shards = [_shard_entry(s) for s in shards if s.kind == DOCUMENTS]
        rej_shards = [_shard_entry(s) for s in shards if s.kind == REJECTS]
        stats = build_stats(counts, kept=sum(s["records"] for s in doc_shards))
        written = (counts.get("kept", 0), sum(stats["rejected"].values()))
        if not reconciles(stats) or written != (stats["kept"], sum(s["records"] for s in rej_shards)):
            # Never publish numbers that do not add up: no manifest means the run failed.
            raise RuntimeError(f"counters do not reconcile: {stats} (blocks kept/rejected {written})")
        if self.claim is not None:
            self.claim.check()  # another writer took the output over: publish nothing
        storage.delete_prefix(storage.join(self.output, sharding.WORK_DIR) + "/", self.settings)
        stats_bytes = (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode()
        storage.write_bytes(storage.join(self.output, documents.STATS_NAME), stats_bytes, self.settings)
        m = manifest.build(
            "documents", inputs=self.inputs, config=self.rules, shards=doc_shards, counters=stats,
            rejects=rej_shards, format=FORMAT, stats={"path": documents.STATS_NAME,
                                                      "sha256": storage.sha256_bytes(stats_bytes)},
            num_documents=stats["kept"], code_version=self.code_version,
        )
        manifest.write(self.output, m, self.settings)
        return m
