"""A deterministic, bounded sample of cleaned documents, streamed as sentences.

Bottom-k sampling on a hash of the document id: the `k` documents with the smallest
hash(seed, id). The sample is the same whatever the shard layout or reading order,
is uniform over documents, and needs only the `id` column in a first pass, so no text
is held beyond what the trainer itself keeps.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Iterator

from common import storage
from pipelines import documents
from pipelines.tokenizer.sentences import split_sentences


def _key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def select_ids(input_uri: str, k: int, seed: int, settings: storage.StorageSettings | None = None) -> tuple[set[str], int]:
    """The ids of the sampled documents, and how many documents the input has."""
    heap: list[tuple[int, str]] = []  # max-heap of the k smallest keys, as negated keys
    total = 0
    for row in documents.iter_documents(input_uri, columns=["id"], settings=settings):
        total += 1
        key = (-_key(seed, row["id"]), row["id"])
        if len(heap) < k:
            heapq.heappush(heap, key)
        elif key > heap[0]:
            heapq.heapreplace(heap, key)
    return {doc_id for _, doc_id in heap}, total


def iter_sample_sentences(input_uri: str, ids: set[str], stats: dict,
                          settings: storage.StorageSettings | None = None) -> Iterator[str]:
    """Sentences of the sampled documents in the input's (deterministic) order; counts into `stats`."""
    for row in documents.iter_documents(input_uri, columns=["id", "text"], settings=settings):
        if row["id"] not in ids:
            continue
        stats["docs"] = stats.get("docs", 0) + 1
        for sentence in split_sentences(row["text"]):
            stats["sentences"] = stats.get("sentences", 0) + 1
            stats["chars"] = stats.get("chars", 0) + len(sentence)
            yield sentence
