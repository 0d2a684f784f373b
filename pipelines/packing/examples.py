"""Pack a shard's token stream into fixed-length ELECTRA examples.

Official semantics (google-research/electra build_pretraining_dataset.py): sentences are
accumulated to a target length; 10% of examples are one segment, the rest are
`[CLS] A [SEP] B [SEP]` split at a sentence boundary near the middle (a sentence joins A
while A is under half the target, and with probability 1/2 when it would overshoot);
5% of examples get a shorter random target. Deviations, all so that no token is lost
and the padding fraction stays small (docs/tokenizer_and_packing.md):

* Every example is filled to exactly its target. The sentence that overflows is split on
  a token boundary and its rest starts the next example; official truncates the overflow
  (it loses tokens on nearly every example). Nothing is dropped, so nothing is truncated.
* Segments stay in text order: once B has started, later sentences go to B (official can
  put a later short sentence back into A).
* With `cross_document` (default) an example continues into the next document instead of
  being flushed at every document end.
* A pair example whose content is one sentence is split at the token level near the middle,
  rather than becoming a single segment with one slot of padding.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import random

import numpy as np

from pipelines.packing.config import PackConfig


CHUNK = 1024


def shard_rng(seed: int, shard: int, num_shards: int) -> random.Random:
    """The RNG of one output shard: a function of (seed, shard, num_shards) only."""
    digest = hashlib.sha256(f"electra-pack:{seed}:{shard}:{num_shards}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclasses.dataclass
class PackStats:
    examples: int = 0
    single_segment: int = 0
    short: int = 0
    tokens: int = 0  # non-special tokens placed in examples
    padding: int = 0
    sentences_split: int = 0  # sentences cut across two examples (the rest opens the next one)
    cross_document: int = 0  # examples holding text of more than one document


def pack(tokens: np.ndarray, sentence_ends: np.ndarray, doc_ends: np.ndarray, cfg: PackConfig,
         rng: random.Random, special_ids: dict[str, int], dtype: np.dtype) -> tuple[np.ndarray, PackStats]:
    """Rows [examples, max_seq_length] from a flat token stream.

    `sentence_ends` and `doc_ends` are increasing exclusive end offsets into `tokens`
    (every document end is also a sentence end).
    """
    L = cfg.max_seq_length
    total = len(tokens)
    cls, sep, pad = special_ids["cls"], special_ids["sep"], special_ids["pad"]
    # Python lists and bisect: per-example scalar lookups are ~10x cheaper than numpy calls.
    sents, docs = sentence_ends.tolist(), doc_ends.tolist()
    chunks: list[np.ndarray] = []  # rows are written into blocks of CHUNK, not one array per row
    st = PackStats()
    pos = 0
    while pos < total:
        single = rng.random() < cfg.single_segment_prob
        short = rng.random() < cfg.short_seq_prob
        target = rng.randint(cfg.short_min_length, L) if short else L
        capacity = max(1, target - (2 if single else 3))
        limit = total if cfg.cross_document else docs[bisect.bisect_right(docs, pos)]
        end = min(pos + capacity, limit)
        # Sentence boundaries strictly inside (pos, end) cut the content into chunks.
        lo, hi = bisect.bisect_right(sents, pos), bisect.bisect_left(sents, end)
        at = hi
        if end < total and (at >= len(sents) or sents[at] != end):
            st.sentences_split += 1
        if single or end - pos < 2:
            a_end, single = end, True
        else:
            a_end = _split_point([pos, *sents[lo:hi], end], (target - 3) // 2, rng)
        if st.examples % CHUNK == 0:
            chunks.append(np.full((CHUNK, L), pad, dtype=dtype))
        row = chunks[-1][st.examples % CHUNK]
        row[0] = cls
        n_a = a_end - pos
        row[1:1 + n_a] = tokens[pos:a_end]
        row[1 + n_a] = sep
        used = 2 + n_a
        if not single:
            n_b = end - a_end
            row[used:used + n_b] = tokens[a_end:end]
            row[used + n_b] = sep
            used += n_b + 1
        st.examples += 1
        st.single_segment += single
        st.short += short
        st.tokens += end - pos
        st.padding += L - used
        st.cross_document += bisect.bisect_right(docs, end - 1) > bisect.bisect_right(docs, pos)
        pos = end
    if not chunks:
        return np.zeros((0, L), dtype=dtype), st
    return np.concatenate(chunks)[:st.examples], st


def _split_point(cuts: list[int], first_target: int, rng: random.Random) -> int:
    """End of segment A: official rule over whole sentences, kept in order; B never empty."""
    start = cuts[0]
    a_end = start
    for c0, c1 in zip(cuts[:-1], cuts[1:]):
        a_len, n = a_end - start, c1 - c0
        if a_len == 0 or a_len + n < first_target or (a_len < first_target and rng.random() < 0.5):
            a_end = c1
        else:
            break
    if a_end == cuts[-1]:  # everything went to A: give B the last sentence, or half of a lone one
        a_end = cuts[-2] if len(cuts) > 2 else start + max(1, min(first_target, cuts[-1] - start - 1))
    return a_end
