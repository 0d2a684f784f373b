"""Language id with resiliparse's `detect_fast`: 101 byte-profile models inside the wheel.

Nothing is downloaded at run time (fastText's lid.176 would be a 126 MB fetch), and it runs
in linear time in C++. Its output is an out-of-place rank (lower is better, above 1200
"usually false"); we map it to score = 1 - rank/1200 in [0, 1] so the threshold reads the
usual way round (higher keeps).
"""

from __future__ import annotations

from resiliparse.parse.lang import detect_fast

from pipelines.cleaning.config import LangIdConfig

RANK_CUTOFF = 1200
NOT_KEPT = "lang_not_kept"
LOW_SCORE = "lang_low_score"


def identify(text: str, max_chars: int = 5000) -> tuple[str, float]:
    lang, rank = detect_fast(text[:max_chars], cutoff=RANK_CUTOFF)
    return lang, max(0.0, 1.0 - rank / RANK_CUTOFF) if lang != "unknown" else 0.0


def check(text: str, cfg: LangIdConfig) -> tuple[str, float, str | None]:
    """(lang, score, drop reason or None)."""
    lang, score = identify(text, cfg.max_chars)
    if cfg.languages and lang not in cfg.languages:
        return lang, score, NOT_KEPT
    if score < cfg.min_score:
        return lang, score, LOW_SCORE
    return lang, score, None
