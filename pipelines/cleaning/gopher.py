"""The Gopher quality and repetition rules (Rae et al. 2021, MassiveText, Appendix A / Table A1).

Each check returns None (keep) or the drop reason. N-gram statistics are computed on
64-bit hashes of word n-grams with numpy, so a 10k-word page costs microseconds per n
instead of a Python loop per n-gram.
"""

from __future__ import annotations

import re

import numpy as np

from pipelines.cleaning.config import GopherQualityConfig, GopherRepetitionConfig

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("\u2022", "\u2023", "\u25cf", "\u25cb", "\u25aa", "\u2043", "-", "*", "\u00b7")
_HAS_LETTER = re.compile(r"[^\W\d_]").search
_PARAGRAPHS = re.compile(r"\n{2,}")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier: spreads small word ids over 64 bits


# ----------------------------------------------------------------------------- quality


def quality(text: str, cfg: GopherQualityConfig, words: list[str] | None = None) -> str | None:
    words = text.split() if words is None else words
    n = len(words)
    if not cfg.min_words <= n <= cfg.max_words:
        return "gopher_word_count"
    mean_len = sum(map(len, words)) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "gopher_mean_word_length"
    if text.count("#") / n > cfg.max_symbol_word_ratio or \
            (text.count("...") + text.count("\u2026")) / n > cfg.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    lines = [ln for ln in text.split("\n") if ln]
    if lines:
        if sum(ln.startswith(_BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines_frac:
            return "gopher_bullet_lines"
        if sum(ln.endswith(("...", "\u2026")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines_frac:
            return "gopher_ellipsis_lines"
    if sum(1 for w in words if _HAS_LETTER(w)) / n < cfg.min_alpha_words_frac:
        return "gopher_alpha_words"
    if len(STOP_WORDS.intersection(w.lower() for w in words)) < cfg.min_stop_words:
        return "gopher_stop_words"
    return None


# ----------------------------------------------------------------------------- repetition


def _dup_fraction(parts: list[str], total_chars: int) -> tuple[float, float]:
    """(share of parts that repeat an earlier part, share of characters in those repeats)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    return dup / max(len(parts), 1), dup_chars / max(total_chars, 1)


def word_hashes(words: list[str]) -> np.ndarray:
    """Per-document word ids, mixed to 64 bits (comparable within one document only)."""
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.uint64, count=len(words))
    return (ids + np.uint64(1)) * _MIX


def ngram_hashes(h: np.ndarray, n: int) -> np.ndarray:
    m = len(h) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    out = h[:m].copy()
    for k in range(1, n):
        out = (out ^ (out >> np.uint64(29))) * _MIX + h[k:k + m]  # order-sensitive, wraps mod 2^64
    return out


def repetition(text: str, cfg: GopherRepetitionConfig, words: list[str] | None = None) -> str | None:
    total = len(text)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    frac, chars = _dup_fraction(lines, total)
    if frac > cfg.max_dup_line_frac:
        return "gopher_dup_line_frac"
    if chars > cfg.max_dup_line_char_frac:
        return "gopher_dup_line_chars"
    paras = [p for p in _PARAGRAPHS.split(text) if p.strip()]
    frac, chars = _dup_fraction(paras, total)
    if frac > cfg.max_dup_para_frac:
        return "gopher_dup_para_frac"
    if chars > cfg.max_dup_para_char_frac:
        return "gopher_dup_para_chars"

    words = text.split() if words is None else words
    if len(words) < 2:
        return None
    h = word_hashes(words)
    wlen = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    wcum = np.concatenate(([0], np.cumsum(wlen)))
    word_chars = max(int(wcum[-1]), 1)
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_char_frac):
        g = ngram_hashes(h, n)
        if not len(g):
            break
        uniq, first, counts = np.unique(g, return_index=True, return_counts=True)
        top = int(np.argmax(counts))
        if counts[top] > 1:
            start = int(first[top])
            if (wcum[start + n] - wcum[start]) * int(counts[top]) / word_chars > limit:
                return f"gopher_top_{n}gram"
    for n, limit in zip(range(5, 11), cfg.max_dup_ngram_char_frac):
        g = ngram_hashes(h, n)
        if not len(g):
            break
        _, first = np.unique(g, return_index=True)
        repeat = np.ones(len(g), dtype=bool)
        repeat[first] = False
        if not repeat.any():
            break  # no repeated n-gram: no longer one repeats either
        starts = np.flatnonzero(repeat)
        cover = np.zeros(len(words) + 1, dtype=np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, starts + n, -1)
        covered = np.cumsum(cover[:-1]) > 0
        if int(wlen[covered].sum()) / word_chars > limit:
            return f"gopher_dup_{n}gram"
    return None
