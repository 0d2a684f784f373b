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

Since examples are filled exactly, where an example starts and ends never depends on
sentences: only the split point of A and B does, and only through the two boundaries
around the middle (the last before it and the first at or after it). So the packer first
lays out every example, then asks a `SentenceIndex` for sentence starts in a window on
one side of each middle (and at each example end, for the `sentences_split` count), all
examples in one batched query per round, widening only the windows that found nothing.
The job's index runs the segmenter on those windows only (`pipelines/packing/segment.py`);
`KnownSentences` answers from precomputed ends.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import random
from typing import Protocol

import numpy as np

from pipelines.packing.config import PackConfig


# Tokens searched for a sentence start on one side of an example's middle in the first round
# (real prose: median sentence ~20 tokens), doubled each later round. Each window also costs
# 2 x segment.CONTEXT tokens of context: 16 then 2x measured fewest segmented bytes at 512.
SPLIT_WINDOW = 16
WIDEN = 2


def unit_rng(seed: int, unit: str) -> random.Random:
    """The RNG of one work unit: a function of (seed, the unit's place in the input) only."""
    digest = hashlib.sha256(f"electra-pack:{seed}:{unit}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class SentenceIndex(Protocol):
    def starts(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sorted token indices t where a sentence starts, for t in any [lo[k], hi[k]) (disjoint ranges)."""


class KnownSentences:
    """A `SentenceIndex` over precomputed, increasing sentence end offsets (= starts of the next)."""

    def __init__(self, sentence_ends: np.ndarray):
        self.ends = np.asarray(sentence_ends, dtype=np.int64)

    def starts(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        a, b = np.searchsorted(self.ends, lo, "left"), np.searchsorted(self.ends, hi, "left")
        return np.concatenate([self.ends[i:j] for i, j in zip(a.tolist(), b.tolist())] or [np.zeros(0, np.int64)])


@dataclasses.dataclass
class PackStats:
    examples: int = 0
    single_segment: int = 0
    short: int = 0
    tokens: int = 0  # non-special tokens placed in examples
    padding: int = 0
    sentences_split: int = 0  # sentences cut across two examples (the rest opens the next one)
    cross_document: int = 0  # examples holding text of more than one document


def pack(tokens: np.ndarray, doc_ends: np.ndarray, sentences: SentenceIndex, cfg: PackConfig,
         rng: random.Random, special_ids: dict[str, int], dtype: np.dtype) -> tuple[np.ndarray, PackStats]:
    """Rows [examples, max_seq_length] from a flat token stream.

    `doc_ends` are the increasing exclusive end offsets of the documents in `tokens`; every
    document start is a sentence start whatever `sentences` says.
    """
    L = cfg.max_seq_length
    total = len(tokens)
    docs = doc_ends.tolist()
    st = PackStats()
    # 1. Layout: content [pos, end) of every example, and its random draws (a pair example
    # always draws its coin, so the layout, and every later draw, is independent of sentences).
    starts, ends, pairs, middles, coins = [], [], [], [], []
    pos = 0
    while pos < total:
        single = rng.random() < cfg.single_segment_prob
        short = rng.random() < cfg.short_seq_prob
        target = rng.randint(cfg.short_min_length, L) if short else L
        capacity = max(1, target - (2 if single else 3))
        limit = total if cfg.cross_document else docs[bisect.bisect_right(docs, pos)]
        end = min(pos + capacity, limit)
        pair = not single and end - pos >= 2
        starts.append(pos)
        ends.append(end)
        pairs.append(pair)
        middles.append(pos + (target - 3) // 2 if pair else pos)
        coins.append(pair and rng.random() < 0.5)
        st.single_segment += not pair
        st.short += short
        st.cross_document += bisect.bisect_right(docs, end - 1) > bisect.bisect_right(docs, pos)
        pos = end
    st.examples = n = len(starts)
    if not n:
        return np.zeros((0, L), dtype=dtype), st
    s, e, m = np.array(starts, np.int64), np.array(ends, np.int64), np.array(middles, np.int64)
    pair, coin = np.array(pairs, bool), np.array(coins, bool)
    doc_starts = np.asarray(doc_ends, np.int64)[:-1]

    # 2. Sentence starts around each middle and at each example end (for sentences_split). The
    # split needs the first start at or after the middle when the coin says the crossing sentence
    # joins A, else the last one before it (split_point); the other side only when that one has
    # none. So each pair example searches outward from its middle on the side it needs, in
    # growing steps, and stops once its split point is known: [lo, hi) is what it has searched.
    at_end = (e < total) & ~np.isin(e, doc_starts)  # a document start is a sentence start anyway
    lo = hi = mid = np.minimum(m, e)  # the middle may lie past a document's end (cross_document=false)
    right, left = pair & coin, pair & ~coin
    found, width, first = doc_starts, SPLIT_WINDOW, True
    while True:
        new_lo = np.where(left, np.maximum(s + 1, mid - width), lo)
        new_hi = np.where(right, np.minimum(e, mid + width), hi)
        q_lo, q_hi = np.concatenate([new_lo, hi]), np.concatenate([lo, new_hi])
        if first:
            q_lo, q_hi, first = np.concatenate([q_lo, e[at_end]]), np.concatenate([q_hi, e[at_end] + 1]), False
        found = np.union1d(found, sentences.starts(*_disjoint(q_lo, q_hi)))
        lo, hi = new_lo, new_hi
        bp, bn = _neighbours(found, mid, s, e)
        # Found inside the searched range (a document start further out does not count), or none exists.
        bn_known = ((bn >= 0) & (bn < hi)) | (hi >= e)
        bp_known = (bp >= lo) | (lo <= s + 1)
        todo = pair & np.where(coin, ~(((bn >= 0) & (bn < hi)) | ((hi >= e) & bp_known)),
                               ~((bp >= lo) | ((lo <= s + 1) & bn_known)))
        if not todo.any():
            break
        right, left = todo & (coin | (lo <= s + 1)), todo & (~coin | (hi >= e))
        width *= WIDEN
    st.sentences_split = int(at_end.sum()) - int(np.isin(e[at_end], found, assume_unique=True).sum())

    # 3. End of A (official rule, see split_point) and the rows.
    rows = np.full((n, L), special_ids["pad"], dtype=dtype)
    rows[:, 0] = special_ids["cls"]
    sep = special_ids["sep"]
    a_ends = [split_point(*args) for args in zip(starts, ends, middles, pairs, coins, bp.tolist(), bn.tolist())]
    for i, (p, a, q, two) in enumerate(zip(starts, a_ends, ends, pairs)):
        row = rows[i]
        n_a = a - p
        row[1:1 + n_a] = tokens[p:a]
        row[1 + n_a] = sep
        if two:
            row[2 + n_a:2 + n_a + q - a] = tokens[a:q]
            row[2 + n_a + q - a] = sep
    st.tokens = total
    st.padding = n * L - total - 2 * n - int(pair.sum())
    return rows, st


def split_point(start: int, end: int, middle: int, pair: bool, coin: bool, bp: int, bn: int) -> int:
    """End of segment A. Official: whole sentences join A while A ends before `middle`, the one
    crossing it joins on a coin flip; B is never empty (it gets the last sentence, or half of a
    lone one). `bp`/`bn`: the last sentence start before `middle` and the first at or after it,
    inside (start, end), or -1."""
    if not pair:
        return end
    if bp >= 0:  # A holds the sentences up to bp; the one crossing the middle joins on the coin
        return bn if coin and bn >= 0 else bp
    if bn >= 0:  # the first sentence crosses the middle: it is A
        return bn
    return start + max(1, min(middle - start, end - start - 1))  # one sentence: split its tokens


def _neighbours(found: np.ndarray, m: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example, the last start in (s, m) and the first in [m, e) among `found`, else -1 (m <= e)."""
    i = np.searchsorted(found, m, "left")
    before = found[np.maximum(i - 1, 0)] if len(found) else np.zeros_like(m)
    after = found[np.minimum(i, len(found) - 1)] if len(found) else np.zeros_like(m)
    bp = np.where((i > 0) & (before > s), before, -1)
    bn = np.where((i < len(found)) & (after < e) & (after > s), after, -1)
    return bp, bn


def _disjoint(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty ranges, sorted (they never overlap: each lies inside its own example or at its end)."""
    keep = hi > lo
    order = np.argsort(lo[keep], kind="stable")
    return lo[keep][order], hi[keep][order]
