"""Input readers: one file in, a stream of raw records out, never an exception.

`read_file(uri, fmt, cfg)` yields records (records.py): a `Document` for text that is ready,
`Html` for HTML that still needs extraction (extract.py), and a `Reject` for anything that
cannot become a document. A damaged file yields the
records before the damage and one reject for the rest, so nothing is lost silently.
Compression is detected from magic bytes (gzip, zstd), the format from the name and then
the content. Every reader streams: records, lines or Parquet row groups one at a time.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zlib
from typing import IO, Iterator, Union

from fastwarc.warc import ArchiveIterator, WarcRecordType

from common import storage
from pipelines.cleaning import records as R
from pipelines.cleaning.config import ReaderConfig

Record = Union[R.Document, R.Html, R.Reject]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain",)

_SUFFIXES = [  # longest first: ".warc.wet.gz" must win over ".gz"
    (".warc.wet.gz", "wet"), (".wet.gz", "wet"), (".wet.zst", "wet"), (".wet", "wet"),
    (".warc.gz", "warc"), (".warc.zst", "warc"), (".warc", "warc"), (".arc.gz", "warc"),
    (".jsonl.gz", "jsonl"), (".jsonl.zst", "jsonl"), (".json.gz", "jsonl"), (".ndjson", "jsonl"),
    (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet"),
    (".txt.gz", "text"), (".txt.zst", "text"), (".txt", "text"), (".md", "text"), (".text", "text"),
]


def _decompression_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


def format_from_name(uri: str) -> str | None:
    name = storage.basename(uri).lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def format_from_content(head: bytes) -> str:
    """Decide on the first decompressed bytes of a file."""
    stripped = head.lstrip()
    if head.startswith(b"PAR1"):
        return "parquet"
    if stripped.startswith(b"WARC/"):
        return "wet" if b"WARC-Type: conversion" in head or b"warc.wet" in head.lower() else "warc"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "text"


def detect_format(uri: str, settings: storage.StorageSettings | None = None) -> str:
    """Format from the file name, else from its first decompressed KB."""
    fmt = format_from_name(uri)
    if fmt:
        return fmt
    head = storage.read_range(uri, 0, 4, settings)
    if head.startswith(b"PAR1"):
        return "parquet"
    try:
        with open_decompressed(uri, settings) as f:
            return format_from_content(f.read(4096))
    except Exception:  # noqa: BLE001 - unreadable: the text reader will reject it with the reason
        return "text"


@contextlib.contextmanager
def open_decompressed(uri: str, settings: storage.StorageSettings | None = None) -> Iterator[IO[bytes]]:
    with storage.open_read(uri, settings) as raw:
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
        magic = buffered.peek(4)[:4]
        if magic.startswith(GZIP_MAGIC):
            yield gzip.GzipFile(fileobj=buffered, mode="rb")
        elif magic == ZSTD_MAGIC:
            import zstandard

            # BufferedReader adds readline/iteration, which the zstd stream reader lacks
            yield io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True),
                                    buffer_size=1 << 20)
        else:
            yield buffered


def read_file(uri: str, fmt: str, cfg: ReaderConfig,
              settings: storage.StorageSettings | None = None) -> Iterator[Record]:
    """Every record of one input file. Never raises on bad content."""
    reader = {"warc": _read_warc, "wet": _read_warc, "jsonl": _read_jsonl, "parquet": _read_parquet,
              "text": _read_text}[fmt]
    position = 0
    try:
        for rec in reader(uri, cfg, settings):
            position = rec.position + 1
            yield rec
        if position == 0:
            yield R.reject(R.EMPTY_FILE, uri, 0, detail="the file holds no record", preview_chars=cfg.preview_chars)
    except _decompression_errors() as exc:
        yield R.reject(R.CORRUPT_COMPRESSION, uri, position, detail=f"{type(exc).__name__}: {exc}",
                                 preview_chars=cfg.preview_chars)
    except Exception as exc:  # noqa: BLE001 - OSError/ValueError from parsers, or worse: never kill the job
        reason = R.WARC_PARSE_ERROR if fmt in ("warc", "wet") else R.UNREADABLE_FILE
        yield R.reject(reason, uri, position, detail=f"{type(exc).__name__}: {exc}",
                                 preview_chars=cfg.preview_chars)


def _decode(raw: bytes, source: str, position: int, cfg: ReaderConfig, url: str | None = None):
    """Strict UTF-8: a record that is not valid UTF-8 is rejected, not silently repaired."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, R.reject(R.INVALID_UTF8, source, position, raw, str(exc), cfg.preview_chars, url)


def _text_record(text: str, raw: bytes | str, source: str, position: int, cfg: ReaderConfig,
                 url: str | None = None, doc_id: str | None = None) -> R.Document | R.Reject:
    if not text.strip():
        return R.reject(R.EMPTY_DOCUMENT, source, position, raw, "", cfg.preview_chars, url)
    return R.document(source, position, text, url, doc_id)


def _too_large(raw: bytes | str, source: str, position: int, cfg: ReaderConfig, url=None):
    n = len(raw)
    if n > cfg.max_record_bytes:
        return R.reject(R.TOO_LARGE, source, position, raw, f"{n} bytes > reader.max_record_bytes="
                        f"{cfg.max_record_bytes}", cfg.preview_chars, url)
    return None


# ----------------------------------------------------------------------------- JSONL


def _read_jsonl(uri, cfg: ReaderConfig, settings) -> Iterator[Record]:
    with open_decompressed(uri, settings) as f:
        for position, line in enumerate(f):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                yield R.reject(R.EMPTY_DOCUMENT, uri, position, line, "blank line", cfg.preview_chars)
                continue
            rej = _too_large(line, uri, position, cfg)
            if rej:
                yield rej
                continue
            text_line, rej = _decode(line, uri, position, cfg)
            if rej:
                yield rej
                continue
            try:
                obj = json.loads(text_line)
            except json.JSONDecodeError as exc:
                yield R.reject(R.INVALID_JSON, uri, position, line, str(exc), cfg.preview_chars)
                continue
            yield _from_mapping(obj, line, uri, position, cfg)


def _from_mapping(obj, raw, uri: str, position: int, cfg: ReaderConfig) -> R.Document | R.Reject:
    if not isinstance(obj, dict) or not isinstance(obj.get(cfg.text_field), str):
        got = "not an object" if not isinstance(obj, dict) else f"keys {sorted(obj)[:10]}"
        return R.reject(R.MISSING_TEXT_FIELD, uri, position, raw,
                        f"no string field {cfg.text_field!r} ({got})", cfg.preview_chars)
    url = obj.get(cfg.url_field) if cfg.url_field else None
    doc_id = obj.get(cfg.id_field) if cfg.id_field else None
    url = str(url) if url is not None else None
    doc_id = str(doc_id) if doc_id not in (None, "") else None
    try:  # JSON "\ud800" escapes decode to lone surrogates, which no UTF-8 writer (Parquet) accepts
        for value in (obj[cfg.text_field], url, doc_id):
            if value:
                value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return R.reject(R.INVALID_UTF8, uri, position, raw, f"lone surrogate: {exc}", cfg.preview_chars)
    return _text_record(obj[cfg.text_field], raw, uri, position, cfg, url, doc_id)


# ----------------------------------------------------------------------------- Parquet


def _read_parquet(uri, cfg: ReaderConfig, settings) -> Iterator[Record]:
    import pyarrow.parquet as pq

    with storage.open_seekable(uri, settings) as f:  # footer + one row group at a time (ranged GETs on S3)
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        if cfg.text_field not in names:
            yield R.reject(R.MISSING_TEXT_FIELD, uri, 0, b"",
                           f"no column {cfg.text_field!r}; columns: {sorted(names)[:20]}", cfg.preview_chars)
            return
        columns = [c for c in (cfg.text_field, cfg.id_field, cfg.url_field) if c and c in names]
        position = 0
        for rg in range(pf.num_row_groups):
            for row in pf.read_row_group(rg, columns=columns).to_pylist():
                text = row.get(cfg.text_field)
                if not isinstance(text, str):
                    yield R.reject(R.MISSING_TEXT_FIELD, uri, position, json.dumps(row, default=str),
                                   f"{cfg.text_field!r} is {type(text).__name__}", cfg.preview_chars)
                else:
                    rej = _too_large(text.encode("utf-8", "surrogatepass"), uri, position, cfg)
                    yield rej if rej else _from_mapping(row, text, uri, position, cfg)
                position += 1


# ----------------------------------------------------------------------------- plain text


def _read_text(uri, cfg: ReaderConfig, settings) -> Iterator[Record]:
    with open_decompressed(uri, settings) as f:
        if cfg.text_unit == "line":
            for position, line in enumerate(f):
                yield _plain(line.rstrip(b"\r\n"), uri, position, cfg)
        else:
            yield _plain(f.read(), uri, 0, cfg)


def _plain(raw: bytes, uri: str, position: int, cfg: ReaderConfig) -> R.Document | R.Reject:
    rej = _too_large(raw, uri, position, cfg)
    if rej:
        return rej
    text, rej = _decode(raw, uri, position, cfg)
    if rej:
        return rej
    return _text_record(text, raw, uri, position, cfg, url=None)


# ----------------------------------------------------------------------------- WARC / WET


def _read_warc(uri, cfg: ReaderConfig, settings) -> Iterator[Record]:
    wanted = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
    with open_decompressed(uri, settings) as f:
        # We decompress ourselves: fastwarc's own gzip reader hides a truncated member. The stream ends
        # quietly where the damage starts, so fastwarc, which reads ahead, still yields every complete record
        # before it; the damage is raised after them (one reject, unless a truncated record already says it).
        stream = _UntilDamage(f)
        records = ArchiveIterator(stream, record_types=wanted,
                                  parse_http=True, stream_detect=False, fsspec_args=False)
        rec = None
        for position, r in enumerate(records):
            rec = _warc_record(r, uri, position, cfg)
            yield rec
        truncated = isinstance(rec, R.Reject) and rec.reason == R.TRUNCATED_WARC_RECORD
        if stream.damage is not None and not truncated:
            raise stream.damage


class _UntilDamage(io.RawIOBase):
    """A decompressed stream that ends at the first decompression error and keeps it in `damage`."""

    def __init__(self, inner: IO[bytes]):
        self.inner, self.damage, self.pos = inner, None, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Forward only (fastwarc skips record bodies), by reading: a decompressed stream cannot jump."""
        target = offset if whence == io.SEEK_SET else self.pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self.pos:
            raise io.UnsupportedOperation("forward seeks only")
        while self.pos < target and self.read(min(target - self.pos, 1 << 20)):
            pass
        return self.pos

    def readinto(self, b) -> int:
        if self.damage is not None:
            return 0
        try:  # read1: one underlying read, so data decoded before the damage is returned, not dropped with it
            data = self.inner.read1(len(b)) if hasattr(self.inner, "read1") else self.inner.read(len(b))
        except _decompression_errors() as exc:
            self.damage = exc
            return 0
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _warc_record(rec, uri: str, position: int, cfg: ReaderConfig) -> Record:
    url = rec.headers.get("WARC-Target-URI")
    expected = rec.content_length
    payload = rec.reader.read()
    if len(payload) < expected:
        return R.reject(R.TRUNCATED_WARC_RECORD, uri, position, payload,
                        f"payload {len(payload)} of {expected} bytes", cfg.preview_chars, url)
    rej = _too_large(payload, uri, position, cfg, url)
    if rej:
        return rej
    if rec.is_http:
        ctype = (rec.http_content_type or "").lower()
        charset = rec.http_charset
    else:
        ctype, _, params = (rec.headers.get("Content-Type") or "").lower().partition(";")
        charset = params.partition("charset=")[2].strip() or None
    ctype = ctype.strip()
    if ctype in HTML_TYPES:
        return R.Html(source=uri, position=position, url=url, payload=payload, charset=charset)
    if ctype in TEXT_TYPES or (not ctype and rec.record_type == WarcRecordType.conversion):
        text, rej = _decode(payload, uri, position, cfg, url)
        return rej if rej else _text_record(text, payload, uri, position, cfg, url)
    return R.reject(R.NON_HTML_RESPONSE, uri, position, payload, f"Content-Type {ctype or 'missing'}",
                    cfg.preview_chars, url)

