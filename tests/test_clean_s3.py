"""The clean job against a real S3 endpoint (the session's SeaweedFS gateway): s3:// in and out."""

from __future__ import annotations

import gzip

import pytest

from common import storage
from pipelines import clean, documents, inspect
from pipelines.cleaning.config import CleanConfig
from test_clean_fixtures import good_corpus

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
