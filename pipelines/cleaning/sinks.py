"""The last step: stats.json, then manifest.json, from the shard descriptions and counts."""

from __future__ import annotations

import json

from common import manifest, storage
from pipelines import documents

FORMAT = "electra-documents-v1"


def build_stats(counts: dict[str, int], kept: int) -> dict:
    """{"records_read", "kept", "dropped": {rule: n}, "rejected": {reason: n}} with sorted keys."""
    dropped = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dropped:")}
    rejected = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("rejected:")}
    return {"records_read": counts.get("records_read", 0), "kept": kept, "dropped": dropped, "rejected": rejected}


def reconciles(stats: dict) -> bool:
    return stats["records_read"] == stats["kept"] + sum(stats["dropped"].values()) + sum(stats["rejected"].values())


class ManifestWriter:
    """Picklable callable run once, on one worker, with every shard description and count."""

    def __init__(self, output: str, rules: dict, inputs: list[dict], code_version: str,
                 settings: storage.StorageSettings | None = None, claim=None):
        self.output, self.rules, self.inputs = output, rules, inputs
        self.code_version, self.settings = code_version, settings
        self.claim = claim  # common.claims.Claim: checked before anything is published

    def __call__(self, items: list[tuple[str, object]]) -> dict:
        shards = sorted((s for tag, s in items if tag == "shard"), key=lambda s: s["path"])
        counts = dict(kv for tag, kv in items if tag == "count")
        doc_shards = [{k: s[k] for k in ("path", "records", "bytes", "sha256")} for s in shards
                      if s["kind"] == "documents"]
        rej_shards = [{k: s[k] for k in ("path", "records", "bytes", "sha256")} for s in shards
                      if s["kind"] == "rejects"]
        stats = build_stats(counts, kept=sum(s["records"] for s in doc_shards))
        if not reconciles(stats):
            # Never publish numbers that do not add up: no manifest means the run failed.
            raise RuntimeError(f"counters do not reconcile: {stats}")
        if self.claim is not None:
            self.claim.check()  # another writer took the output over: publish nothing
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
