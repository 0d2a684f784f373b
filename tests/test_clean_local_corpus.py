"""pipelines.local_corpus: real text from this machine's documentation, deterministic."""

from __future__ import annotations

import hashlib

import pytest

from pipelines import local_corpus
from pipelines.cleaning import readers
from pipelines.cleaning.config import ReaderConfig
from pipelines.cleaning.records import Tag


def _digest(files):
    return [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files]


def test_warc_corpus_is_real_html_and_deterministic(tmp_path):
    if next(local_corpus.html_sources(), None) is None:
        pytest.skip("no HTML documentation on this machine")
    a = local_corpus.build(str(tmp_path / "a"), max_mb=0.5, file_mb=0.2)
    b = local_corpus.build(str(tmp_path / "b"), max_mb=0.5, file_mb=0.2)
    assert len(a["files"]) >= 2 and a["bytes"] >= 0.5 * (1 << 20)
    assert _digest(a["files"]) == _digest(b["files"])
    recs = [r for f in a["files"] for r in readers.read_file(f, "warc", ReaderConfig())]
    assert len(recs) == a["pages"] and all(r.tag is Tag.HTML for r in recs)
    assert all(r.url.startswith("file:///") for r in recs)
    # a smaller rerun into the same directory leaves no stale files
    c = local_corpus.build(str(tmp_path / "a"), max_mb=0.1, file_mb=0.2)
    assert sorted(str(p) for p in (tmp_path / "a").iterdir()) == sorted(c["files"])


def test_jsonl_corpus(tmp_path):
    info = local_corpus.build(str(tmp_path), max_mb=0.2, fmt="jsonl")
    recs = [r for f in info["files"] for r in readers.read_file(f, "jsonl", ReaderConfig())]
    assert recs and all(r.tag in (Tag.DOC, Tag.REJECT) for r in recs)
    assert sum(r.tag is Tag.DOC for r in recs) >= len(recs) // 2
