"""Builders for the clean job's test inputs (plain functions, no tests; imported by tests/test_clean_*.py).

Documents are generated from a seeded grammar so each one is distinct prose that passes
the C4 and Gopher rules, and near-duplicates can be made on purpose.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

ADJ = ["quiet", "bright", "careful", "ancient", "modern", "small", "northern", "patient", "clever", "simple",
       "busy", "gentle", "narrow", "famous", "local", "heavy", "early", "silver", "wooden", "curious"]
NOUN = ["farmer", "river", "teacher", "village", "engineer", "garden", "library", "bridge", "doctor", "market",
        "student", "harbor", "painter", "forest", "kitchen", "museum", "sailor", "valley", "writer", "station",
        "baker", "castle", "island", "pilot", "school", "tower", "meadow", "captain", "office", "theater"]
VERB = ["visited", "described", "repaired", "painted", "measured", "admired", "explored", "protected",
        "studied", "crossed", "cleaned", "opened", "followed", "noticed", "built", "carried"]
ADV = ["slowly", "yesterday", "again", "carefully", "together", "quickly", "twice", "early", "often", "later"]


def sentence(rng: random.Random) -> str:
    # a filler word at least every second position keeps repeated 5-grams (Gopher) rare
    c = rng.choice
    templates = [
        lambda: f"The {c(ADJ)} {c(NOUN)} {c(VERB)} a {c(NOUN)} near the {c(ADJ)} {c(NOUN)} {c(ADV)}.",
        lambda: f"Every {c(NOUN)} {c(VERB)} that {c(ADJ)} {c(NOUN)}, and the {c(NOUN)} {c(VERB)} it {c(ADV)}.",
        lambda: f"With {c(ADJ)} {c(NOUN)}s, one {c(NOUN)} {c(VERB)} the {c(ADJ)} {c(NOUN)} of {c(NOUN)}s.",
        lambda: f"Then a {c(NOUN)} from the {c(NOUN)} {c(VERB)} {c(ADJ)} {c(NOUN)}s to be {c(ADJ)}.",
    ]
    return c(templates)()


def prose(seed: int, sentences: int = 12) -> str:
    rng = random.Random(seed)
    lines = [sentence(rng) for _ in range(sentences)]
    half = sentences // 2
    return "\n".join(lines[:half]) + "\n\n" + "\n".join(lines[half:])


def html_page(text: str, title: str = "A page") -> bytes:
    paras = "".join(f"<p>{line}</p>\n" for line in text.split("\n") if line.strip())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><main><h1>{title}</h1>\n{paras}</main>"
            f"<footer>Copyright</footer></body></html>").encode()


def warc_response(url: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)) % 10**12:012d}>\r\n"
            f"WARC-Target-URI: {url}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def wet_conversion(url: str, text: str) -> bytes:
    body = text.encode()
    head = (f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: {url}\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body + b"\r\n\r\n"


def write_warc_gz(path: Path, records: list[bytes]) -> Path:
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records))
    return path


def write_jsonl(path: Path, rows: list[dict | str | bytes], compress: bool = False) -> Path:
    lines = []
    for r in rows:
        if isinstance(r, dict):
            lines.append(json.dumps(r).encode())
        elif isinstance(r, str):
            lines.append(r.encode())
        else:
            lines.append(r)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def good_corpus(root: Path, n_docs: int = 12) -> dict:
    """A WARC.gz with HTML pages, a JSONL.gz, a WET file, and one exact and one near duplicate."""
    root.mkdir(parents=True, exist_ok=True)
    pages = [warc_response(f"http://example.test/{i}", html_page(prose(i), f"Page {i}")) for i in range(n_docs)]
    write_warc_gz(root / "pages.warc.gz", pages)
    rows = [{"id": f"j{i}", "url": f"http://jsonl.test/{i}", "text": prose(100 + i)} for i in range(n_docs)]
    rows.append({"id": "jz-exact", "text": prose(100)})  # exact duplicate of j0
    near = prose(101).split("\n")
    near[0] = "An editor changed this first line of the page, and nothing else was changed at all."
    rows.append({"id": "jz-near", "text": "\n".join(near)})  # near duplicate of j1
    write_jsonl(root / "rows.jsonl.gz", rows, compress=True)
    (root / "cc.warc.wet.gz").write_bytes(gzip.compress(
        b"".join(wet_conversion(f"http://wet.test/{i}", prose(200 + i)) for i in range(3)), mtime=0))
    return {"records": n_docs + len(rows) + 3, "exact": 1, "near": 1}


def raw_prose(root: str, limit_chars: int) -> list[dict]:
    """The bundled English prose as web records (id, url, text) in one `<root>/raw/prose.jsonl.gz` (local or S3),
    the clean job's raw input; returns the records."""
    from common import storage
    from pipelines.packing import prose

    raw = [{"id": d["id"], "url": f"http://prose.test/{i}", "text": d["text"]}
           for i, d in enumerate(prose.documents(limit_chars=limit_chars, multilingual=False))]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw).encode()
    storage.write_bytes(f"{root}/raw/prose.jsonl.gz", gzip.compress(body, mtime=0))
    return raw
