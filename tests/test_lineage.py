"""`python -m flows.lineage`: documents → tokenizer → pack → checkpoint → model → report, and its checks."""

from __future__ import annotations

import json

from common import manifest as manifests
from common import storage
from flows import lineage


def build_chain(root: str) -> dict[str, str]:
    """A small but complete set of outputs, each manifest naming its inputs as the real stages do."""
    raw = storage.join(root, "raw", "part-0.warc.gz")
    storage.write_bytes(raw, b"WARC/1.0 ...")
    out = {k: storage.join(root, k) for k in ("clean", "tokenizer", "pack", "model")}
    out["checkpoint"] = storage.join(root, "pretrain", "checkpoints", "step-000000020")
    out["report"] = storage.join(root, "reports", "m", "20260101T000000Z")

    def write(kind: str, uri: str, inputs: list[dict], **extra) -> dict:
        m = manifests.build(kind, inputs=inputs, config={"kind": kind}, **extra)
        manifests.write(uri, m)
        return m

    docs = write("documents", out["clean"], [{"uri": raw, "size": 12, "sha256": storage.sha256_bytes(b"WARC/1.0 ...")}],
                 counters={"records_read": 3, "kept": 2})
    storage.write_text(storage.join(out["tokenizer"], "tokenizer.json"), "{}")
    storage.write_text(storage.join(out["tokenizer"], "spm.model"), "spm")
    tok = write("tokenizer", out["tokenizer"], [manifests.input_ref(out["clean"], docs)])
    pack_inputs = [manifests.input_ref(out["clean"], docs), manifests.input_ref(out["tokenizer"], tok)]
    pack = write("pack", out["pack"], pack_inputs, seq_len=128)
    ck = write("checkpoint", out["checkpoint"], [manifests.input_ref(out["pack"], pack)], step=20, tokens_seen=2560)
    for sub in ("discriminator", "generator"):
        storage.write_text(storage.join(out["model"], sub, "config.json"), json.dumps({"model_type": "electra"}))
        storage.write_text(storage.join(out["model"], sub, "model.safetensors"), "weights")
    model = write("model", out["model"], [manifests.input_ref(out["checkpoint"], ck)], step=20)
    results = {"name": "m", "seeds": 1, "tasks": {
        "sst2": {"task": "sst2", "primary": "accuracy", "median": {"accuracy": 0.75}, "paper": 91.2},
        "mnli_m": {"task": "mnli", "primary": "accuracy", "median": {"accuracy": 0.4}, "paper": 81.3},
        "squad_v1": {"task": "squad_v1", "primary": "f1", "median": {"exact": 10.0, "f1": 12.5}, "paper": 75.8}}}
    storage.write_text(storage.join(out["report"], "results.json"), json.dumps(results))
    storage.write_text(storage.join(out["report"], "report.md"), "# report")
    write("report", out["report"], [manifests.input_ref(out["model"], model)])
    return out


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
