"""Publishing: HF directories, the model card's YAML (`model-index`, lineage) and the manifest."""

from __future__ import annotations

import json

import pytest
import yaml
from lineage_chain import build_chain

from common import manifest as manifests
from common import storage
from flows import publish


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_publish_writes_dirs_card_and_manifest(tmp_path):
    out = build_chain(str(tmp_path))
    dest = str(tmp_path / "models" / "electra-tiny-demo" / "step-000000020")
    m = publish.publish(out["model"], dest, name="electra-tiny-demo", version="step-000000020",
                        report_uri=out["report"])
    files = {p[len(dest) + 1:] for p in storage.list_files(dest)}
    assert {"discriminator/config.json", "discriminator/model.safetensors", "generator/config.json",
            "tokenizer/tokenizer.json", "tokenizer/spm.model", "eval/results.json", "README.md",
            "manifest.json"} <= files
    assert "tokenizer/manifest.json" not in files
    got = manifests.read(dest, kind="model")
    assert got == m and got["published"] is True and got["step"] == 20 and got["tokens_seen"] == 2560
    assert {i["kind"] for i in got["inputs"]} == {"model", "report"}

    meta = _front_matter(storage.read_text(storage.join(dest, "README.md")))
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    index = meta["model-index"][0]
    assert index["name"] == "electra-tiny-demo"
    by_task = {(r["dataset"]["type"], r["dataset"].get("config")): r for r in index["results"]}
    sst2 = by_task[("nyu-mll/glue", "sst2")]
    assert sst2["metrics"] == [{"type": "accuracy", "value": 0.75, "name": "Accuracy"}]
    assert by_task[("nyu-mll/glue", "mnli")]["dataset"]["split"] == "m"
    squad = by_task[("rajpurkar/squad", None)]
    assert {x["type"]: x["value"] for x in squad["metrics"]} == {"exact_match": 10.0, "f1": 12.5}
    lin = meta["lineage"]
    assert lin["steps"] == 20 and lin["tokens_seen"] == 2560
    docs_hash = manifests.read(out["clean"])["manifest_hash"]
    assert lin["documents"][0]["manifest_hash"] == docs_hash
    assert lin["tokenizer"][0]["manifest_hash"] == manifests.read(out["tokenizer"])["manifest_hash"]


def test_publish_without_report_says_so(tmp_path):
    out = build_chain(str(tmp_path))
    dest = str(tmp_path / "pub")
    publish.publish(out["model"], dest, name="n", version="v")
    card = storage.read_text(storage.join(dest, "README.md"))
    assert _front_matter(card)["model-index"] == [] and "Not evaluated yet." in card


def test_publish_refuses_a_model_without_weights(tmp_path):
    out = build_chain(str(tmp_path))
    storage.delete_prefix(storage.join(out["model"], "generator"))
    with pytest.raises(manifests.ManifestError, match="generator"):
        publish.publish(out["model"], str(tmp_path / "pub"), name="n", version="v")


def test_hub_push_is_a_no_op_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert publish.push_to_hub(str(tmp_path), "org/model") is False


def test_publish_over_s3_and_lineage_of_the_published_model(s3_bucket, capsys):
    from flows import lineage

    out = build_chain(f"{s3_bucket}/run")
    dest = f"{s3_bucket}/models/electra-tiny-demo/step-000000020"
    assert publish.main(["--model", out["model"], "--output", dest, "--report", out["report"]]) == 0
    assert manifests.read(dest, kind="model")["name"] == "electra-tiny-demo"
    assert lineage.main([dest]) == 0
    text = capsys.readouterr().out
    assert text.index("model") < text.index("checkpoint") < text.index("pack") < text.index("documents")
    assert json.loads(storage.read_text(f"{dest}/eval/results.json"))["tasks"]["sst2"]["median"]["accuracy"] == 0.75
