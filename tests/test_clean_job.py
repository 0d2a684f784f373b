"""End-to-end runs of `pipelines.clean` on local files: outputs, bad input, determinism,
reconciliation, failure and error messages."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path

import pytest

from common import manifest
from pipelines import clean, documents, inspect
from pipelines.cleaning import records as R
from pipelines.cleaning import sinks
from pipelines.cleaning.config import CleanConfig, DedupConfig, OutputConfig
from clean_inputs import good_corpus, html_page, prose, warc_response, write_jsonl, write_warc_gz

# One in-process worker: the same code path as multi-processing, without spawning workers per test.
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


# Small shards and blocks, so even the tiny fixtures make several of each.
SMALL = OutputConfig(shard_mb=0.004, block_input_mb=0.002)


def run(inputs, output, **kw) -> dict:
    cfg = CleanConfig(inputs=tuple(str(i) for i in inputs), output=str(output), **{"out": SMALL, **kw})
    return clean.run(cfg, FAST)


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- good input


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    info = good_corpus(root / "in")
    m = run([root / "in" / "*"], root / "out")
    return root, info, m


def test_writes_documented_layout(good):
    root, info, m = good
    out = root / "out"
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    n = len(m["shards"])
    assert n > 2, "shards follow the size target: this corpus at 4 KB a shard makes several"
    assert names == ["documents/" + documents.shard_name(i, n) for i in range(n)] + ["manifest.json", "stats.json"]
    assert m["kind"] == "documents" and m == manifest.read(str(out), kind="documents")
    assert [s["path"] for s in m["shards"]] == names[:n] and m["rejects"] == []
    for s in m["shards"]:
        assert hashlib.sha256((out / s["path"]).read_bytes()).hexdigest() == s["sha256"]
    assert {i["format"] for i in m["inputs"]} == {"warc", "wet", "jsonl"}
    assert m["config_hash"] == manifest.config_hash(m["config"])


def test_counters_reconcile_against_the_outputs(good):
    root, info, m = good
    out = str(root / "out")
    stats = documents.read_stats(out)
    assert stats == m["counters"]
    docs = list(documents.iter_documents(out))
    rejects = list(documents.iter_rejects(out))
    assert stats["records_read"] == info["records"]  # every generated record was read
    assert stats["kept"] == len(docs)
    assert sum(stats["rejected"].values()) == len(rejects)
    assert stats["records_read"] == stats["kept"] + sum(stats["dropped"].values()) + sum(stats["rejected"].values())
    assert stats["dropped"]["exact_duplicate"] == info["exact"]
    assert stats["dropped"]["near_duplicate"] == info["near"]
    assert len({d["id"] for d in docs}) == len(docs)
    kept_ids = {d["id"] for d in docs}
    assert "j0" in kept_ids and "jz-exact" not in kept_ids  # the smallest id of the pair is kept
    assert "j1" in kept_ids and "jz-near" not in kept_ids
    assert all(d["lang"] == "en" and d["lang_score"] > 0 for d in docs)
    assert {d["url"].split("/")[2] for d in docs} == {"example.test", "jsonl.test", "wet.test"}


def test_inspect_summary_and_sample(good, capsys):
    root, _, m = good
    assert inspect.main([str(root / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "documents" and summary["shard_records"] == m["counters"]["kept"]
    assert inspect.main([str(root / "out"), "--sample", "3"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 3 and all(json.loads(x)["text"] for x in lines)


def test_inspect_has_an_extension_point(tmp_path, capsys, monkeypatch):
    m = manifest.build("pack", inputs=[], config={}, shards=[{"path": "s/0.bin", "records": 4}])
    manifest.write(str(tmp_path), m)
    # monkeypatch puts the real `pack` handler back for the rest of the session.
    monkeypatch.setitem(inspect.HANDLERS, "pack", inspect.Handler(sample=lambda out, m: iter([{"example": 0}])))
    assert inspect.main([str(tmp_path), "--sample", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"example": 0}


# ----------------------------------------------------------------------------- bad input

BAD_KINDS = {
    "corrupt_gzip": R.CORRUPT_COMPRESSION,
    "truncated_warc": R.TRUNCATED_WARC_RECORD,
    "truncated_gz_warc": R.TRUNCATED_WARC_RECORD,
    "empty_file": R.EMPTY_FILE,
    "invalid_utf8": R.INVALID_UTF8,
    "not_json": R.INVALID_JSON,
    "missing_text": R.MISSING_TEXT_FIELD,
    "empty_doc": R.EMPTY_DOCUMENT,
    "huge_line": R.TOO_LARGE,
    "image_response": R.NON_HTML_RESPONSE,
    "pdf_response": R.NON_HTML_RESPONSE,
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """One input file per bad kind, each with a good record before the bad one."""
    root = tmp_path_factory.mktemp("bad")
    d = root / "in"
    d.mkdir()
    good_line = json.dumps({"text": prose(1)})
    data = gzip.compress((good_line + "\n" + json.dumps({"text": prose(2)}) + "\n").encode() * 50, mtime=0)
    (d / "corrupt_gzip.jsonl.gz").write_bytes(data[: len(data) // 2])
    warc = warc_response("http://ok", html_page(prose(3))) + warc_response("http://cut", html_page(prose(4)))
    (d / "truncated_warc.warc").write_bytes(warc[:-300])
    # One gzip member per record, cut in the third: both complete records before it must survive.
    members = [gzip.compress(warc_response(f"http://gz/{i}", html_page(prose(20 + i))), mtime=0) for i in range(3)]
    (d / "truncated_gz_warc.warc.gz").write_bytes(b"".join(members)[: -len(members[2]) // 2])
    (d / "empty_file.jsonl").write_bytes(b"")  # 0 bytes: said in rejects/, not skipped
    write_jsonl(d / "invalid_utf8.jsonl", [good_line, b'{"text": "caf\xe9 au lait"}'])
    write_jsonl(d / "not_json.jsonl", [good_line, "{this is not json"])
    write_jsonl(d / "missing_text.jsonl", [good_line, {"body": "wrong field"}])
    write_jsonl(d / "empty_doc.jsonl", [good_line, {"text": "   "}])
    write_jsonl(d / "huge_line.jsonl", [good_line, {"text": "word " * (2 * 1024 * 1024)}])  # 10 MiB, one line
    write_warc_gz(d / "image_response.warc.gz", [warc_response("http://ok", html_page(prose(5))),
                                                 warc_response("http://x/a.png", b"\x89PNG\r\n\x1a\n", "image/png")])
    write_warc_gz(d / "pdf_response.warc.gz", [warc_response("http://ok", html_page(prose(6))),
                                               warc_response("http://x/a.pdf", b"%PDF-1.7 ...", "application/pdf")])
    m = run([d / "*"], root / "out", dedup=DedupConfig(exact=False, near=False))
    return root, m, list(documents.iter_rejects(str(root / "out")))


# Kinds whose file has a good record before the damage (all but the empty file).
AFTER_A_GOOD_RECORD = sorted(set(BAD_KINDS) - {"empty_file"})
# Kinds whose rejected record has bytes of its own to size and preview (a cut gzip stream has none).
WHOLE_RECORD = sorted(set(AFTER_A_GOOD_RECORD) - {"corrupt_gzip"})


def _rejects_of(bad, kind: str) -> list[dict]:
    return [r for r in bad[2] if Path(r["source"]).name.startswith(kind)]


def _kept_of(bad, kind: str) -> list[dict]:
    return [d for d in documents.iter_documents(str(bad[0] / "out")) if Path(d["source"]).name.startswith(kind)]


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_input_goes_to_rejects_with_reason(bad, kind):
    mine = _rejects_of(bad, kind)
    assert [r["reason"] for r in mine] == [BAD_KINDS[kind]], mine


@pytest.mark.parametrize("kind", AFTER_A_GOOD_RECORD)
def test_damage_keeps_the_good_record_before_it(bad, kind):
    (r,) = _rejects_of(bad, kind)
    assert r["position"] >= 1 and len(r["sha256"]) == 64 and "detail" in r
    assert _kept_of(bad, kind), f"the good record of {kind} was lost"


@pytest.mark.parametrize("kind", WHOLE_RECORD)
def test_rejected_record_has_size_and_preview(bad, kind):
    (r,) = _rejects_of(bad, kind)
    assert r["size"] > 0 and r["preview"]


def test_empty_file_is_rejected_at_position_0(bad):
    (r,) = _rejects_of(bad, "empty_file")
    assert r["position"] == 0 and r["size"] == 0 and r["detail"]


def test_truncated_gz_warc_keeps_every_complete_record(bad):
    """fastwarc reads ahead: the damage must not swallow the last complete record."""
    (r,) = _rejects_of(bad, "truncated_gz_warc")
    assert sorted(d["url"] for d in _kept_of(bad, "truncated_gz_warc")) == ["http://gz/0", "http://gz/1"]
    assert r["position"] == 2


def test_bad_input_counters_reconcile(bad):
    _, m, rejects = bad
    c = m["counters"]
    assert sinks.reconciles(c) and sum(c["rejected"].values()) == len(rejects) == len(BAD_KINDS)


# ----------------------------------------------------------------------------- determinism, reruns, failure


def test_same_input_same_bytes_and_idempotent_rerun(tmp_path):
    good_corpus(tmp_path / "in", n_docs=6)
    inputs = [tmp_path / "in" / "*"]
    m1 = run(inputs, tmp_path / "a")
    # the second run uses the default multi-processing runner with 2 workers: bytes must not change
    cfg = CleanConfig(inputs=(str(inputs[0]),), output=str(tmp_path / "b"), out=SMALL)
    m2 = clean.run(cfg, ["--direct_num_workers=2"])
    assert m1 == m2 and len(m1["shards"]) > 1
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    # rerun into a used output with fewer, larger shards: old shards are gone, bytes match a fresh run
    run(inputs, tmp_path / "a", out=OutputConfig())
    run(inputs, tmp_path / "c", out=OutputConfig())
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "c")
    assert len(list((tmp_path / "a" / "documents").iterdir())) == 1


def test_failed_run_leaves_no_manifest(tmp_path, monkeypatch):
    good_corpus(tmp_path / "in", n_docs=3)
    run([tmp_path / "in" / "*"], tmp_path / "out")
    assert (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(sinks, "reconciles", lambda stats: False)  # the in-process runner sees the patch
    with pytest.raises(Exception, match="reconcile"):
        run([tmp_path / "in" / "*"], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(manifest.ManifestError):
        list(documents.iter_documents(str(tmp_path / "out")))


# ----------------------------------------------------------------------------- clear errors before work


def _cli_error(argv, capsys, code: int = 2) -> str:
    assert clean.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


def test_missing_input_is_one_clear_line(tmp_path, capsys):
    err = _cli_error(["--input", str(tmp_path / "nope.warc.gz"), "--output", str(tmp_path / "o")], capsys)
    assert "nope.warc.gz" in err and "no such file" in err
    assert not (tmp_path / "o").exists()


def test_empty_glob_is_one_clear_line(tmp_path, capsys):
    err = _cli_error(["--input", str(tmp_path / "*.jsonl"), "--output", str(tmp_path / "o")], capsys)
    assert "matched no files" in err


def test_unreachable_endpoint_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    t0 = time.monotonic()
    # An unreachable store may be an outage: exit 75 (EX_TEMPFAIL), which the flow retries.
    err = _cli_error(["--input", "s3://raw/*.warc.gz", "--output", str(tmp_path / "o")], capsys, code=75)
    assert "cannot reach the S3 endpoint" in err and "AWS_ENDPOINT_URL" in err
    assert time.monotonic() - t0 < 30


def test_unknown_config_key_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"c4": {"min_sentence": 3}}')
    err = _cli_error(["--input", "x", "--output", "y", "--config", str(tmp_path / "c.json")], capsys)
    assert "min_sentence" in err and "min_sentences" in err


def test_cli_runs_with_format_override(tmp_path, capsys):
    (tmp_path / "doc.data").write_text(prose(9))
    assert clean.main(["--input", str(tmp_path / "doc.data"), "--output", str(tmp_path / "o"), "--format", "text",
                       *FAST]) == 0
    assert "kept 1" in capsys.readouterr().out


@pytest.mark.slow
def test_real_local_corpus_through_the_cli(tmp_path, capsys):
    """The demo's path: real documentation as WARC, the CLI with the default multi-processing runner."""
    from pipelines import local_corpus

    local_corpus.build(str(tmp_path / "corpus"), max_mb=5, file_mb=1)
    assert clean.main(["--input", str(tmp_path / "corpus" / "*.warc.gz"), "--output", str(tmp_path / "out")]) == 0
    stats = documents.read_stats(str(tmp_path / "out"))
    assert stats["kept"] > 10 and sinks.reconciles(stats)
