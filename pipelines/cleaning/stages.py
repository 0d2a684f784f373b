"""The per-document cleaning steps, in order, as plain objects.

Each stage maps a document to (document, None) or (None, drop reason). The Beam transforms
wrap them one ParDo each; the benchmark's plain loop calls the same objects, so the two
paths run identical code and their outputs can be compared.
"""

from __future__ import annotations

import abc
import dataclasses

from pipelines.cleaning import c4, gopher, langid
from pipelines.cleaning.config import CleanConfig
from pipelines.cleaning.normalize import normalize
from pipelines.cleaning.records import Document

EMPTY_AFTER_NORMALIZE = "empty_after_normalize"


class Stage(abc.ABC):
    name = "stage"

    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg

    def setup(self) -> None:
        """Heavy state, once per worker (nothing for most stages)."""

    @abc.abstractmethod
    def apply(self, doc: Document) -> tuple[Document | None, str | None]:
        """(the document, possibly edited, None) to keep it, or (None, drop reason)."""


class Normalize(Stage):
    name = "Normalize"

    def apply(self, doc):
        text = normalize(doc.text, self.cfg.normalize)
        if not text:
            return None, EMPTY_AFTER_NORMALIZE
        return dataclasses.replace(doc, text=text), None


class LanguageId(Stage):
    name = "LanguageId"

    def apply(self, doc):
        lang, score, reason = langid.check(doc.text, self.cfg.langid)
        if reason:
            return None, reason
        return dataclasses.replace(doc, lang=lang, lang_score=round(score, 4)), None


class GopherRepetition(Stage):
    name = "GopherRepetition"

    def apply(self, doc):
        reason = gopher.repetition(doc.text, self.cfg.gopher_repetition)
        return (None, reason) if reason else (doc, None)


class GopherQuality(Stage):
    name = "GopherQuality"

    def apply(self, doc):
        reason = gopher.quality(doc.text, self.cfg.gopher_quality)
        return (None, reason) if reason else (doc, None)


class C4Filter(Stage):
    name = "C4"

    def apply(self, doc):
        text, reason = c4.clean(doc.text, self.cfg.c4)
        return (None, reason) if reason else (dataclasses.replace(doc, text=text), None)


def build(cfg: CleanConfig) -> list[Stage]:
    """The enabled stages in pipeline order: cheap and most-selective first, C4 (which edits text) last."""
    out: list[Stage] = [Normalize(cfg)]
    if cfg.langid.enabled:
        out.append(LanguageId(cfg))
    if cfg.gopher_repetition.enabled:
        out.append(GopherRepetition(cfg))
    if cfg.gopher_quality.enabled:
        out.append(GopherQuality(cfg))
    if cfg.c4.enabled:
        out.append(C4Filter(cfg))
    return out
