"""The clean job's elements, in one place: a `Tag` per kind and one small dataclass each.

Every element of the job's main stream is one of these records; its class-level `tag` says
which (`transforms.Select(Tag.DOC)` picks the documents). What each becomes:

    reader ──▶ Html ──extract──▶ Document ──rules──▶ Document (kept) ─┐
       │                            └──────────────▶ Drop (rule name)  ├─▶ blocks ─▶ shards
       └─────▶ Reject (bad input; also a rule that raised)  ───────────┘
    reader ──▶ Count("records_read", n) per file ──────────────────────────▶ stats.json
    dedup  ──▶ Flag(uid, reason): this document duplicates one with a smaller id

Counts reconcile: records_read = kept + Σ dropped + Σ rejected (`sinks.reconciles`).
Records report their size (`__sizeof__`), so a runner that spills by size (Dask) sees what
they hold, text included.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import sys
from typing import ClassVar

import xxhash


class Tag(enum.Enum):
    DOC = "doc"  # Document: text still in the running
    HTML = "html"  # Html: a page waiting for main-text extraction
    DROP = "drop"  # Drop: a document a rule removed, with the rule's name
    REJECT = "reject"  # Reject: input that could not become a document
    FLAG = "flag"  # Flag: dedup marks a document as a duplicate of a smaller id
    COUNT = "count"  # Count: a named number (records read, per input file)


# Reject reasons: input that could not become a document. Dropped reasons live with their rules.
CORRUPT_COMPRESSION = "corrupt_compression"
TRUNCATED_WARC_RECORD = "truncated_warc_record"
WARC_PARSE_ERROR = "warc_parse_error"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
MISSING_TEXT_FIELD = "missing_text_field"
EMPTY_DOCUMENT = "empty_document"
TOO_LARGE = "too_large"
NON_HTML_RESPONSE = "non_html_response"
UNREADABLE_FILE = "unreadable_file"
EMPTY_FILE = "empty_file"  # an input file with no record at all (0 bytes, an empty archive): said, not skipped
RULE_ERROR = "rule_error"  # a cleaning rule raised on this document: a bug to fix, the record is kept here

_OBJECT = sys.getsizeof(object()) * 8  # slot and header overhead of a small record, roughly


def key_hash(key: str) -> int:
    """64-bit hash that places a record in a block (a contiguous hash range; sharding.py)."""
    return xxhash.xxh64_intdigest(key.encode())


def stable_id(source: str, position: int) -> str:
    """Same file and record position -> same id, on every run and every worker."""
    return hashlib.blake2b(f"{source}\n{position}".encode(), digest_size=10).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    """A document: the `pipelines.documents.SCHEMA` columns plus its position in the input file."""

    tag: ClassVar[Tag] = Tag.DOC
    id: str  # the record's own id when the input has one, else stable_id(source, position)
    text: str
    url: str | None
    source: str  # input file URI
    position: int  # record ordinal in that file: with source, a total order even when ids repeat
    lang: str | None = None
    lang_score: float | None = None

    @property
    def uid(self) -> str:
        """Unique and totally ordered even when a dataset repeats its own ids."""
        return f"{self.id}\t{self.source}\t{self.position:012d}"

    def __sizeof__(self) -> int:
        return _OBJECT + len(self.text) + len(self.id) + len(self.source) + len(self.url or "")


def document(source: str, position: int, text: str, url: str | None = None, doc_id: str | None = None) -> Document:
    return Document(id=doc_id if doc_id else stable_id(source, position), text=text, url=url, source=source,
                    position=position)


@dataclasses.dataclass(frozen=True, slots=True)
class Html:
    """A WARC response whose HTML still needs main-text extraction (extract.py)."""

    tag: ClassVar[Tag] = Tag.HTML
    source: str
    position: int
    url: str | None
    payload: bytes
    charset: str | None

    def __sizeof__(self) -> int:
        return _OBJECT + len(self.payload) + len(self.source) + len(self.url or "")


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    """Input that could not become a document: enough of it to find it again and judge it.

    size and sha256 are of the raw record bytes; preview is its first characters.
    """

    tag: ClassVar[Tag] = Tag.REJECT
    reason: str
    source: str
    position: int
    url: str | None
    size: int
    sha256: str
    preview: str
    detail: str

    @property
    def key(self) -> str:
        return f"{self.source}\t{self.position:012d}\t{self.reason}"

    def as_json(self) -> dict:
        """The documented rejects line: {reason, source, position, url, size, sha256, preview, detail}."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __sizeof__(self) -> int:
        return _OBJECT + len(self.preview) + len(self.detail) + len(self.source)


def reject(reason: str, source: str, position: int, raw: bytes | str = b"", detail: str = "",
           preview_chars: int = 500, url: str | None = None) -> Reject:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    return Reject(reason=reason, source=source, position=position, url=url, size=len(data),
                  sha256=hashlib.sha256(data).hexdigest(),
                  preview=data[: preview_chars * 4].decode("utf-8", "replace")[:preview_chars],
                  detail=detail[:500])


@dataclasses.dataclass(frozen=True, slots=True)
class Drop:
    """A document a rule removed. Carries only what the counts need: the rule and the document's
    block hash, so it is counted in the block its document would have been written to."""

    tag: ClassVar[Tag] = Tag.DROP
    reason: str
    hash: int  # key_hash(document uid)


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """Dedup's verdict on one document: a duplicate (`reason`) of a document with a smaller id."""

    tag: ClassVar[Tag] = Tag.FLAG
    uid: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Count:
    tag: ClassVar[Tag] = Tag.COUNT
    name: str
    n: int
