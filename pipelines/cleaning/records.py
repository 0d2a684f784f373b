"""The two record shapes that flow through the job: documents and rejects.

A document is a dict with the `pipelines.documents.SCHEMA` columns plus `position`
(its ordinal in the input file, for a total order). A reject is a dict that keeps
enough of the bad record to find it again and judge it: reason, source, position,
size, sha256 of the raw bytes and a preview.
"""

from __future__ import annotations

import hashlib

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


def stable_id(source: str, position: int) -> str:
    """Same file and record position -> same id, on every run and every worker."""
    return hashlib.blake2b(f"{source}\n{position}".encode(), digest_size=10).hexdigest()


def document(source: str, position: int, text: str, url: str | None = None, doc_id: str | None = None) -> dict:
    return {
        "id": doc_id if doc_id else stable_id(source, position),
        "text": text,
        "url": url,
        "source": source,
        "position": position,
        "lang": None,
        "lang_score": None,
    }


def reject(reason: str, source: str, position: int, raw: bytes | str = b"", detail: str = "",
           preview_chars: int = 500, url: str | None = None) -> dict:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    return {
        "reason": reason,
        "source": source,
        "position": position,
        "url": url,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "preview": data[: preview_chars * 4].decode("utf-8", "replace")[:preview_chars],
        "detail": detail[:500],
    }


def sort_key(rec: dict) -> tuple:
    """A total order on documents or rejects: ids can repeat when a dataset supplies its own."""
    return (rec.get("id") or "", rec["source"], rec["position"], rec.get("reason") or "")
