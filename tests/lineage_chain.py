"""A small but complete chain of stage outputs with manifests (documents → tokenizer → pack → checkpoint → model →
report), on a local path or S3; used by the lineage and publish tests."""

from __future__ import annotations

import json

from common import manifest as manifests
from common import storage


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
