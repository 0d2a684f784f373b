"""MinHash signatures and LSH band keys for near-duplicate detection.

Shingles are word 5-grams hashed to 64 bits (xxh64 of each word, combined in order), so
every worker computes the same signature for the same text. Each of the bands x rows
permutations is a multiply-xorshift of the shingle hash with its own odd constant, drawn
from a seeded generator: the "heavy state" a DoFn builds once in setup().
"""

from __future__ import annotations

import numpy as np
import xxhash

from pipelines.cleaning.config import DedupConfig

_MIX = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 4096  # shingles per block: bounds memory at CHUNK x perms x 8 bytes


class MinHasher:
    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.num_perm = cfg.bands * cfg.rows
        rng = np.random.default_rng(cfg.seed)
        self.a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        words = text.lower().split()
        n = self.cfg.ngram
        if not words:
            return np.empty(0, dtype=np.uint64)
        h = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in words), dtype=np.uint64, count=len(words))
        if len(h) < n:  # a short text is its own single shingle
            n = len(h)
        m = len(h) - n + 1
        out = h[:m].copy()
        for k in range(1, n):
            out = (out ^ (out >> np.uint64(31))) * _MIX + h[k:k + m]
        return np.unique(out)

    def signature(self, text: str) -> np.ndarray:
        sh = self.shingles(text)
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        for i in range(0, len(sh), _CHUNK):
            block = sh[i:i + _CHUNK, None] * self.a[None, :] + self.b[None, :]
            block ^= block >> np.uint64(32)
            np.minimum(sig, block.min(axis=0), out=sig)
        return sig

    def band_keys(self, text: str) -> list[str]:
        """One key per band; two documents that share any key are near-duplicate candidates."""
        sig = self.signature(text)
        r = self.cfg.rows
        return [f"{b:03d}:{xxhash.xxh64_hexdigest(sig[b * r:(b + 1) * r].tobytes())}" for b in range(self.cfg.bands)]


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Exact shingle Jaccard, for tests and for judging the LSH threshold."""
    def grams(t):
        w = t.lower().split()
        return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}
    sa, sb = grams(a), grams(b)
    return len(sa & sb) / max(len(sa | sb), 1)
