"""Publish an exported model: HF directories, a model card with `model-index` and lineage, a manifest.

    python -m flows.publish --model s3://bucket/run/model/step-000200000 \
        --output s3://bucket/models/electra-small-run/step-000200000 [--report URI] [--hub-repo org/name]

Layout written under the output URI (kind "model" manifest last):

    discriminator/   ElectraForPreTraining, safetensors + tokenizer (what users fine-tune)
    generator/       ElectraForMaskedLM + tokenizer
    tokenizer/       the run's tokenizer (spm.model + HF fast tokenizer)
    eval/            results.json and report.md of the report the card quotes
    README.md        the model card: YAML metadata (model-index, lineage) + prose
    manifest.json    inputs: the exported model and the report

The Hub push is optional: it runs only when HF_TOKEN is set and `huggingface_hub` is
importable, and never in tests or the demo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import manifest as manifests
from common import storage
from flows import lineage

CARD = "README.md"

# Hub dataset ids and metric names, so the card's model-index renders on the Hub.
_METRIC_NAMES = {"mcc": ("matthews_correlation", "Matthews correlation"), "accuracy": ("accuracy", "Accuracy"),
                 "f1": ("f1", "F1"), "pearson": ("pearsonr", "Pearson"), "spearman": ("spearmanr", "Spearman"),
                 "exact": ("exact_match", "Exact match")}


def _copy_tree(src: str, dst: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every file under `src` to `dst` (through a local copy when `src` is on S3), except names in `skip`."""
    from pathlib import Path

    written = []
    with storage.local_copy(src) as local:
        for p in sorted(Path(local).rglob("*")):
            if p.is_file() and p.name not in skip:
                dest = storage.join(dst, p.relative_to(local).as_posix())
                storage.upload_file(str(p), dest)
                written.append(dest)
    return written


def _tokenizer_uri(chain: dict[str, list[lineage.Node]]) -> str | None:
    toks = chain.get("tokenizer") or []
    return toks[0].uri if toks else None


def model_index(name: str, results: dict) -> list[dict]:
    """The `model-index` YAML block from a report's results.json (medians over seeds)."""
    entries = []
    for key, t in sorted((results or {}).get("tasks", {}).items()):
        task = t.get("task", key)
        median = t.get("median") or {}
        if not median:
            continue
        split = key[len(task):].lstrip("_/-") if key != task else ""
        if task.startswith("squad"):
            task_meta = {"type": "question-answering", "name": "Question Answering"}
            dataset = {"name": "SQuAD 2.0" if task == "squad_v2" else "SQuAD 1.1",
                       "type": "rajpurkar/squad_v2" if task == "squad_v2" else "rajpurkar/squad",
                       "split": "validation"}
        else:
            task_meta = {"type": "text-classification", "name": "Text Classification"}
            dataset = {"name": f"GLUE {task.upper()}", "type": "nyu-mll/glue", "config": task,
                       "split": split or "validation"}
        metrics = []
        for m, v in median.items():
            mtype, mname = _METRIC_NAMES.get(m, (m, m))
            metrics.append({"type": mtype, "value": round(float(v), 4), "name": mname})
        entries.append({"task": task_meta, "dataset": dataset, "metrics": metrics})
    return [{"name": name, "results": entries}] if entries else []


def lineage_block(model_uri: str) -> dict:
    """Hashes of everything the model came from: corpus, tokenizer, pack, checkpoint, model."""
    chain = lineage.chain(model_uri)
    out: dict = {}
    for kind in ("documents", "tokenizer", "pack", "checkpoint", "model"):
        nodes = chain.get(kind) or []
        if nodes:
            out[kind] = [{"uri": n.uri, "manifest_hash": n.manifest_hash} for n in nodes]
    ck = (chain.get("checkpoint") or [None])[0]
    if ck is not None:
        from pretraining.checkpoint import CheckpointManifest

        cm = CheckpointManifest.from_dict(ck.uri, manifests.read(ck.uri, verify=False))
        out["steps"], out["tokens_seen"], out["config"] = cm.step, cm.tokens_seen, cm.config
    return out


def render_card(name: str, version: str, results: dict | None, lin: dict, *, license: str, language: list[str],
                report_uri: str | None) -> str:
    import yaml

    meta = {
        "language": language,
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "fill-mask",
        "tags": ["electra", "pretraining", "replaced-token-detection"],
        "model-index": model_index(name, results or {}),
        "lineage": {k: v for k, v in lin.items() if k != "config"},
    }
    cfg = lin.get("config") or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name} ({version})", "",
             "An ELECTRA encoder (replaced-token detection, Clark et al. 2020) pretrained from raw web text by "
             "electra-forge. `discriminator/` is the model to fine-tune; `generator/` is the small masked LM "
             "it was trained against.", "",
             "```python", "from transformers import AutoModel, AutoTokenizer",
             f'tok = AutoTokenizer.from_pretrained("{name}", subfolder="discriminator")',
             f'model = AutoModel.from_pretrained("{name}", subfolder="discriminator")', "```", ""]
    if results and results.get("tasks"):
        seeds = results.get("seeds", "?")
        lines += ["## Evaluation", "", f"Median over {seeds} fine-tuning seeds; report: `{report_uri}`.", "",
                  "| task | metric | score | paper |", "|---|---|---|---|"]
        for key, t in sorted(results["tasks"].items()):
            prim = t.get("primary")
            val = (t.get("median") or {}).get(prim)
            if val is not None:
                paper = t.get("paper") if t.get("paper") is not None else "–"
                lines.append(f"| {key} | {prim} | {float(val):.4g} | {paper} |")
        lines.append("")
    else:
        lines += ["## Evaluation", "", "Not evaluated yet.", ""]
    lines += ["## Lineage", "", "| stage | manifest hash | uri |", "|---|---|---|"]
    for kind in ("documents", "tokenizer", "pack", "checkpoint", "model"):
        for n in lin.get(kind, []):
            lines.append(f"| {kind} | `{n['manifest_hash'][:16]}` | `{n['uri']}` |")
    lines += ["", f"Steps: {lin.get('steps')}; tokens seen: {lin.get('tokens_seen')}.", ""]
    if cfg:
        lines += ["## Pretraining config", "", "```json", json.dumps(cfg, indent=1, sort_keys=True), "```", ""]
    lines += ["Trace the full chain with `python -m flows.lineage <this directory>`.", ""]
    return "\n".join(lines)


def publish(model_uri: str, output: str, *, name: str, version: str, report_uri: str | None = None,
            license: str = "apache-2.0", language: list[str] | None = None) -> dict:
    """Copy the model's HF dirs and tokenizer under `output`, write the card, then the manifest (last)."""
    model_m = manifests.read(model_uri, kind="model")
    report_m = manifests.read(report_uri, kind="report") if report_uri else None
    chain = lineage.chain(model_uri)
    written: list[str] = []
    for sub in ("discriminator", "generator"):
        src = storage.join(model_uri, sub)
        if not storage.list_files(src.rstrip("/") + "/"):
            raise manifests.ManifestError(f"{model_uri} has no {sub}/: export the checkpoint first")
        written += _copy_tree(src, storage.join(output, sub))
    tok = _tokenizer_uri(chain)
    if tok:
        # The tokenizer's manifest stays with the run: the published one names it through the model's lineage.
        written += _copy_tree(tok, storage.join(output, "tokenizer"), skip=(manifests.MANIFEST_NAME,))
    results = None
    if report_uri:
        results = json.loads(storage.read_text(storage.join(report_uri, "results.json")))
        for f in ("results.json", "report.md"):
            src = storage.join(report_uri, f)
            if storage.exists(src):
                storage.write_bytes(storage.join(output, "eval", f), storage.read_bytes(src))
                written.append(storage.join(output, "eval", f))
    lin = lineage_block(model_uri)
    card = render_card(name, version, results, lin, license=license, language=language or ["en"], report_uri=report_uri)
    storage.write_text(storage.join(output, CARD), card)
    written.append(storage.join(output, CARD))
    base = output.rstrip("/") + "/"
    shards = [{"path": u[len(base):], "bytes": storage.size(u)} for u in sorted(written)]
    inputs = [manifests.input_ref(model_uri, model_m)]
    if report_m:
        inputs.append(manifests.input_ref(report_uri, report_m))
    m = manifests.build("model", inputs=inputs, config={"name": name, "version": version, "license": license},
                        shards=shards, counters={"files": len(shards)}, name=name, version=version,
                        step=lin.get("steps"), tokens_seen=lin.get("tokens_seen"), published=True)
    manifests.write(output, m)
    return m


def push_to_hub(output: str, repo_id: str, logger=None) -> bool:
    """Upload a published directory to the Hugging Face Hub; a no-op without HF_TOKEN or huggingface_hub."""
    token = os.environ.get("HF_TOKEN")
    say = (logger.info if logger else print)
    if not token:
        say(f"HF_TOKEN is not set: not pushing {output} to the Hub")
        return False
    try:
        from huggingface_hub import HfApi
    except ImportError:
        say("huggingface_hub is not installed: `pip install huggingface_hub` to push to the Hub")
        return False
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    with storage.local_copy(output) as local:
        api.upload_folder(folder_path=local, repo_id=repo_id,
                          commit_message=f"electra-forge: {storage.basename(output)}")
    say(f"pushed {output} to https://huggingface.co/{repo_id}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="exported model dir (pretraining.export output)")
    ap.add_argument("--output", required=True, help="models/<name>/<version>/ URI")
    ap.add_argument("--report", help="report dir whose scores go into the card")
    ap.add_argument("--name", help="model name (default: the output's parent directory name)")
    ap.add_argument("--version", help="version (default: the output's directory name)")
    ap.add_argument("--hub-repo", help="also push to this Hub repo (needs HF_TOKEN)")
    a = ap.parse_args(argv)
    name = a.name or storage.basename(storage.parent(a.output))
    m = publish(a.model, a.output, name=name, version=a.version or storage.basename(a.output), report_uri=a.report)
    if a.hub_repo:
        push_to_hub(a.output, a.hub_repo)
    print(f"published {name} -> {a.output} (manifest {m['manifest_hash'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
