"""A real-text corpus from documentation already on this machine, as WARC / JSONL / text.

    python -m pipelines.local_corpus --output /tmp/corpus --max-mb 20 [--format warc] [--file-mb 4]

No network: the pages are the HTML books shipped with installed toolchains (the Rust
book, reference, nomicon, Rust by Example, ... in ~/.rustup; prose before API pages),
Python's HTML docs and /usr/share/doc HTML when present, then plain-text docs
(/usr/share/doc, licenses) as a fallback. Each page becomes an HTTP response record with
its honest `file://` URL, so the clean job exercises the real WARC + HTML path.
The same machine and arguments give the same bytes (sorted walk, file-mtime WARC dates,
gzip mtime 0).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import gzip
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

# Book-like prose first: the clean job's rules are built for prose, API pages are mostly signatures.
RUST_PROSE = ("book", "reference", "nomicon", "rust-by-example", "edition-guide", "rustc", "cargo",
              "embedded-book", "style-guide", "rustdoc", "unstable-book", "error_codes")
RUST_API = ("std", "core", "alloc", "proc_macro", "test")
SKIP_NAMES = {"print.html", "toc.html", "404.html", "search.html", "sidebar-items.html", "all.html"}


def _toolchains() -> list[Path]:
    root = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup")) / "toolchains"
    found = sorted(root.glob("*/share/doc/rust/html"))
    # the stable toolchain first; other toolchains mostly repeat it (fine: the dedup has work)
    return sorted(found, key=lambda p: (not p.parts[-5].startswith("stable"), str(p)))


def _html_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html") if p.name not in SKIP_NAMES and p.is_file())


def html_sources() -> Iterator[Path]:
    seen: set[Path] = set()
    roots: list[Path] = []
    for tc in _toolchains():
        roots += [tc / d for d in RUST_PROSE] + [tc / d for d in RUST_API]
    roots += [Path(p) for p in sorted(glob.glob("/usr/share/doc/python3*/html"))]
    roots += [Path("/usr/share/doc")]
    for root in roots:
        if not root.is_dir():
            continue
        for p in _html_under(root):
            if p not in seen:
                seen.add(p)
                yield p


def text_sources() -> Iterator[Path]:
    pats = ["/usr/share/doc/**/*.txt", "/usr/share/doc/**/README*", "/usr/share/common-licenses/*",
            "/usr/share/doc/*/copyright"]
    seen: set[str] = set()
    for pat in pats:
        for p in sorted(glob.glob(pat, recursive=True)):
            if p not in seen and os.path.isfile(p) and not p.endswith(".gz"):
                seen.add(p)
                yield Path(p)


def _warc_date(path: Path) -> str:
    ts = datetime.datetime.fromtimestamp(int(path.stat().st_mtime), datetime.timezone.utc)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def warc_response(path: Path, body: bytes, content_type: str) -> bytes:
    url = path.resolve().as_uri()
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
    rid = uuid.uuid5(uuid.NAMESPACE_URL, url)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\n"
            f"WARC-Date: {_warc_date(path)}\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Payload-Digest: sha1:{hashlib.sha1(body).hexdigest()}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    # One gzip member per record, as in Common Crawl: readers can seek to any record.
    return gzip.compress(head + http + b"\r\n\r\n", compresslevel=6, mtime=0)


def pages(max_bytes: int) -> Iterator[tuple[Path, bytes, str]]:
    """(path, bytes, content type) until max_bytes of payload; HTML first, then plain text."""
    total = 0
    for kind, source in (("text/html; charset=utf-8", html_sources()), ("text/plain; charset=utf-8", text_sources())):
        for path in source:
            try:
                body = path.read_bytes()
            except OSError:
                continue
            if not body.strip() or len(body) > 2 << 20:
                continue
            yield path, body, kind
            total += len(body)
            if total >= max_bytes:
                return


def build(output: str, max_mb: float = 20, fmt: str = "warc", file_mb: float = 4) -> dict:
    """Write the corpus; returns {"files", "pages", "bytes"} (payload bytes, before compression)."""
    from pipelines.cleaning.extract import html_to_text

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("corpus-*"):
        old.unlink()  # a rerun with a smaller --max-mb must not leave extra files behind
    max_bytes, file_bytes = int(max_mb * (1 << 20)), int(file_mb * (1 << 20))
    files: list[str] = []
    n_pages = total = 0
    buf: list[bytes] = []
    buffered = 0

    def flush():
        nonlocal buf, buffered
        if not buf:
            return
        suffix = {"warc": ".warc.gz", "jsonl": ".jsonl.gz", "text": ".txt"}[fmt]
        name = out / f"corpus-{len(files):05d}{suffix}"
        data = b"".join(buf)
        name.write_bytes(gzip.compress(data, mtime=0) if fmt == "jsonl" else data)
        files.append(str(name))
        buf, buffered = [], 0

    for path, body, ctype in pages(max_bytes):
        n_pages += 1
        total += len(body)
        if fmt == "warc":
            buf.append(warc_response(path, body, ctype))
        else:
            text = html_to_text(body.decode("utf-8", "replace")) if ctype.startswith("text/html") else \
                body.decode("utf-8", "replace")
            if fmt == "jsonl":
                buf.append((json.dumps({"id": hashlib.sha1(str(path).encode()).hexdigest()[:16],
                                        "url": path.resolve().as_uri(), "text": text}) + "\n").encode())
            else:  # one document per line (run the clean job with reader.text_unit=line)
                buf.append((" ".join(text.split()) + "\n").encode())
        buffered += len(body)
        if buffered >= file_bytes:
            flush()
    flush()
    if not files:
        raise SystemExit("local_corpus: found no documentation on this machine (looked in ~/.rustup, /usr/share/doc)")
    return {"files": files, "pages": n_pages, "bytes": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.local_corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True, help="local directory for corpus-00000.* files (numbered from 00000)")
    ap.add_argument("--max-mb", type=float, default=20, help="stop after this many MB of page payload")
    ap.add_argument("--format", choices=("warc", "jsonl", "text"), default="warc")
    ap.add_argument("--file-mb", type=float, default=4, help="payload MB per output file (parallelism unit)")
    a = ap.parse_args(argv)
    info = build(a.output, a.max_mb, a.format, a.file_mb)
    print(json.dumps({"output": a.output, "files": len(info["files"]), "pages": info["pages"],
                      "mb": round(info["bytes"] / (1 << 20), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
