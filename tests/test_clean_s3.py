"""The clean job against a real S3 endpoint (the session's SeaweedFS gateway): s3:// in and out."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from common import storage
from pipelines import clean, documents, inspect
from pipelines.cleaning.config import CleanConfig
from clean_inputs import good_corpus

pytestmark = pytest.mark.integration
FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_s3_input_and_output(s3_bucket, tmp_path, capsys):
    info = good_corpus(tmp_path / "in")
    storage.upload_dir(str(tmp_path / "in"), f"{s3_bucket}/raw")
    # a name that says nothing: the format comes from the content
    storage.write_bytes(f"{s3_bucket}/raw/noext", gzip.compress(b'{"text": "x"}\n{"text": ""}\n', mtime=0))
    out = f"{s3_bucket}/clean"
    m = clean.run(CleanConfig(inputs=(f"{s3_bucket}/raw/*",), output=out), FAST)
    assert {i["uri"].rsplit("/", 1)[-1]: i["format"] for i in m["inputs"]}["noext"] == "jsonl"
    c = m["counters"]
    assert c["records_read"] == info["records"] + 2
    assert c["records_read"] == c["kept"] + sum(c["dropped"].values()) + sum(c["rejected"].values())
    assert c["rejected"] == {"empty_document": 1}
    docs = list(documents.iter_documents(out))
    assert len(docs) == c["kept"] and all(d["source"].startswith(s3_bucket) for d in docs)
    for s in m["shards"]:
        assert storage.sha256_uri(storage.join(out, s["path"])) == s["sha256"]
    assert inspect.main([out, "--sample", "2"]) == 0
    assert len(capsys.readouterr().out.strip().split("\n")) == 2


def test_s3_empty_glob_and_missing_bucket_fail_before_work(s3_bucket, capsys):
    assert clean.main(["--input", f"{s3_bucket}/nothing/*.warc.gz", "--output", f"{s3_bucket}/o"]) == 2
    assert "matched no files" in capsys.readouterr().err
    assert clean.main(["--input", "s3://no-such-bucket-zz/x.jsonl", "--output", f"{s3_bucket}/o"]) == 2
    err = capsys.readouterr().err
    assert "no-such-bucket-zz" in err and err.count("\n") == 1
    assert not storage.list_files(f"{s3_bucket}/o")


def test_common_crawl_paths_file_with_relative_keys(s3_bucket, tmp_path, capsys):
    """--input-list takes a wet.paths.gz-style file: one key per line, relative to --input-prefix."""
    info = good_corpus(tmp_path / "in")
    keys = [f"crawl-data/CC-TEST/segments/{i}/wet/part-{i}.warc.wet.gz" for i in range(3)]
    for i, key in enumerate(keys):  # three copies of the WET file under Common Crawl's layout
        storage.write_bytes(f"{s3_bucket}/{key}", (tmp_path / "in" / "cc.warc.wet.gz").read_bytes())
    listing = tmp_path / "wet.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(keys) + "\n").encode(), mtime=0))
    out = f"{s3_bucket}/clean-cc"
    assert clean.main(["--input-list", str(listing), "--input-prefix", f"{s3_bucket}/", "--output", out,
                       *FAST]) == 0
    m = documents.manifest.read(out, kind="documents")
    assert m["counters"]["records_read"] == 9
    assert m["inputs"] == [{"uri": str(listing), "format": "input-list", "prefix": f"{s3_bucket}/", "files": 3,
                            "sha256": hashlib.sha256(("\n".join(keys) + "\n").encode()).hexdigest()}]
    assert m["counters"]["kept"] == 3 and m["counters"]["dropped"]["exact_duplicate"] == 6  # the same pages thrice
    assert info["records"] > 9

    listing.write_bytes(gzip.compress(f"{keys[0]}\ncrawl-data/CC-TEST/missing.warc.wet.gz\n".encode(), mtime=0))
    assert clean.main(["--input-list", str(listing), "--input-prefix", f"{s3_bucket}/", "--output", out]) == 2
    err = capsys.readouterr().err
    assert "missing.warc.wet.gz" in err and "no such file" in err and err.count("\n") == 1
