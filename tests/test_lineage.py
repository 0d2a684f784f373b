"""`python -m flows.lineage`: documents → tokenizer → pack → checkpoint → model → report, and its checks."""

from __future__ import annotations

import json

from lineage_chain import build_chain

from common import manifest as manifests
from common import storage
from flows import lineage


def test_lineage_prints_the_whole_chain(tmp_path, capsys):
    out = build_chain(str(tmp_path))
    assert lineage.main([out["report"]]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("report")
    for kind in ("model", "checkpoint", "pack", "tokenizer", "documents", "input"):
        assert any(line.lstrip("│├└─ ").startswith(kind) for line in lines), (kind, text)
    assert "part-0.warc.gz" in text and "step=20" in text and "MISMATCH" not in text


def test_lineage_json_and_chain(tmp_path, capsys):
    out = build_chain(str(tmp_path))
    assert lineage.main([storage.join(out["model"], "manifest.json"), "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["kind"] == "model" and tree["inputs"][0]["kind"] == "checkpoint"
    chain = lineage.chain(out["model"])
    assert [n.uri for n in chain["documents"]] == [out["clean"]]  # the diamond (pack, tokenizer) is one node


def test_lineage_flags_a_rebuilt_input(tmp_path, capsys):
    out = build_chain(str(tmp_path))
    # The tokenizer is rebuilt after the pack was made: the pack's record no longer matches.
    manifests.write(out["tokenizer"], manifests.build("tokenizer", inputs=[], config={"vocab_size": 1}))
    assert lineage.main([out["pack"]]) == 1
    assert "HASH MISMATCH" in capsys.readouterr().out


def test_lineage_missing_output(tmp_path, capsys):
    assert lineage.main([str(tmp_path / "nothing")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_lineage_over_s3(s3_bucket, capsys):
    out = build_chain(f"{s3_bucket}/run")
    assert lineage.main([out["report"]]) == 0
    assert f"{s3_bucket}/run/raw/part-0.warc.gz" in capsys.readouterr().out
