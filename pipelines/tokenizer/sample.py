"""A deterministic, bounded sample of cleaned documents, streamed as sentences.

Reads a bounded number of shards, not the corpus: the shards are taken in the order of
blake2b(seed, shard path) until they hold `k` documents (the manifest says how many each
has), and the sample is the `k` documents among them with the smallest blake2b(seed, id)
(bottom-k). `pipelines.clean` puts a document in a shard by a hash of its id (contiguous hash
ranges), so each shard is a uniform random part of the corpus and so is the sample; the cost
is about max(k, one shard's documents) ids and texts, whatever the corpus size. A first pass
reads only the `id` column; the sampled documents are then read again, split into sentences
and streamed to the trainer, so nothing but the trainer's own sentence store is held.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Iterator

from common import manifest, storage
from pipelines import documents
from pipelines.tokenizer.sentences import split_sentences


def _key(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "big")


def sample_shards(input_uri: str, k: int, seed: int,
                  settings: storage.StorageSettings | None = None) -> tuple[list[str], int]:
    """URIs of the shards the sample is drawn from, and how many documents the whole input has."""
    m = manifest.read(input_uri, kind="documents", settings=settings)
    shards = sorted(m["shards"], key=lambda s: (_key(seed, s["path"]), s["path"]))
    total = sum(int(s["records"]) for s in shards)
    chosen, held = [], 0
    for s in shards:
        if held >= k:
            break
        chosen.append(storage.join(input_uri, s["path"]))
        held += int(s["records"])
    return chosen, total


def select_ids(input_uri: str, k: int, seed: int, settings: storage.StorageSettings | None = None
               ) -> tuple[set[str], int, list[str]]:
    """The ids of the sampled documents, how many documents the input has, and the shards read."""
    uris, total = sample_shards(input_uri, k, seed, settings)
    heap: list[tuple[int, str]] = []  # max-heap of the k smallest keys, as negated keys
    for uri in uris:
        for row in documents.iter_shard(uri, ["id"], settings):
            key = (-_key(seed, row["id"]), row["id"])
            if len(heap) < k:
                heapq.heappush(heap, key)
            elif key > heap[0]:
                heapq.heapreplace(heap, key)
    return {doc_id for _, doc_id in heap}, total, uris


def iter_sample_sentences(uris: list[str], ids: set[str], stats: dict,
                          settings: storage.StorageSettings | None = None) -> Iterator[str]:
    """Sentences of the sampled documents, in the sampled shards' (deterministic) order; counts into `stats`."""
    for uri in uris:
        for row in documents.iter_shard(uri, ["id", "text"], settings):
            if row["id"] not in ids:
                continue
            stats["docs"] = stats.get("docs", 0) + 1
            for sentence in split_sentences(row["text"]):
                stats["sentences"] = stats.get("sentences", 0) + 1
                stats["chars"] = stats.get("chars", 0) + len(sentence)
                yield sentence
