"""The C4 line and document rules (Raffel et al. 2020; TFDS `c4_utils.clean_page`).

Line rules remove lines; document rules drop the page. Only lines that survive the cheap
line rules are checked for "{" and "lorem ipsum", exactly as C4 orders them, so a code
block (whose lines rarely end in a full stop) removes itself instead of the whole page.
C4's bad-words rule runs when `c4.bad_words_file` names a list (none ships with the project).
"""

from __future__ import annotations

import functools
import re

from common import storage
from pipelines.cleaning.config import C4Config

LOREM_IPSUM = "c4_lorem_ipsum"
CURLY_BRACKET = "c4_curly_bracket"
TOO_FEW_SENTENCES = "c4_too_few_sentences"
BAD_WORDS = "c4_bad_words"

_END_MARKS = (".", "?", "!", '"', "\u201d", "'")
_ELLIPSIS = "..."
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d)]*(?=\s|$)")


@functools.lru_cache(maxsize=4)
def bad_words_pattern(uri: str) -> re.Pattern:
    """One regex for the whole list, matched on word boundaries as C4 does (once per worker)."""
    words = sorted({w.strip().lower() for w in storage.read_text(uri).splitlines() if w.strip()})
    if not words:
        raise ValueError(f"bad-words list {uri} is empty")
    return re.compile(r"(?:\W|^)(" + "|".join(re.escape(w) for w in words) + r")(?:\W|$)")


def clean(text: str, cfg: C4Config) -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, drop reason)."""
    kept: list[str] = []
    for line in text.split("\n"):
        line = _CITATION.sub("", line).strip()
        if not line:
            continue
        if cfg.terminal_punct_lines and (not line.endswith(_END_MARKS) or line.endswith(_ELLIPSIS)):
            continue
        words = line.split()
        if len(words) < cfg.min_words_per_line:
            continue
        if cfg.max_word_length and any(len(w) > cfg.max_word_length for w in words):
            continue
        low = line.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in low:
            return None, LOREM_IPSUM
        if cfg.drop_javascript_lines and "javascript" in low:
            continue
        if cfg.drop_curly_bracket and "{" in line:
            return None, CURLY_BRACKET
        if cfg.drop_policy_lines and any(p in low for p in _POLICY):
            continue
        kept.append(line)
    out = "\n".join(kept)
    if len(_SENTENCE_END.findall(out)) < cfg.min_sentences:
        return None, TOO_FEW_SENTENCES
    if cfg.bad_words_file and bad_words_pattern(cfg.bad_words_file).search(out.lower()):
        return None, BAD_WORDS
    return out, None
