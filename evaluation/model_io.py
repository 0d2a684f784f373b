"""Find, check and fetch the model to evaluate, before any data is loaded or training starts.

Accepted layouts (local or s3://):
- an exported model dir (`pretraining.export`): `discriminator/` (HF ElectraForPreTraining with
  tokenizer files) and `manifest.json` of kind "model" naming the run, step and size;
- a plain HF model dir: `config.json`, weights and tokenizer files.
"""

from __future__ import annotations

import dataclasses
import json
import re

from common import manifest, storage

_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "vocab.txt", "spm.model", "spiece.model", "sentencepiece.bpe.model")
_HIDDEN_TO_SIZE = {256: "small", 768: "base", 1024: "large"}  # ELECTRA.md size table
_NAME_KEYS = ("name", "run_name", "model_name", "run")  # where a model manifest may keep the run's name
_STEP_DIR = re.compile(r"(?:step|checkpoint)[-_]?(\d+)")  # export dirs are named after the checkpoint step
_LAYOUT_DIRS = {"discriminator", "model", "models"}


class ModelError(ValueError):
    """A model URI that cannot be evaluated; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    uri: str  # what the user passed
    hf_uri: str  # the HF dir that is fine-tuned (the discriminator)
    name: str  # run name: reports of the same run share reports/<name>/
    size: str  # small/base/large, or "custom" for widths the paper has no row for
    step: int | None  # pretraining step of the checkpoint, for the score-over-steps plot
    manifest: dict | None  # the model manifest, when the exporter wrote one
    hidden_size: int
    num_layers: int


def _files(uri: str) -> set[str]:
    base = storage.normalize(uri).rstrip("/") + "/"
    return {f[len(base):] for f in storage.list_files(base)}


def inspect(uri: str, name: str = "", size: str = "") -> ModelInfo:
    """Check the layout and read config + manifest (small files only); raises ModelError."""
    uri = storage.normalize(uri).rstrip("/")
    files = _files(uri)
    if not files:
        raise ModelError(f"model {uri}: nothing there (expected a dir with discriminator/ or an HF config.json)")
    sub = "discriminator/" if any(f.startswith("discriminator/") for f in files) else ""
    if not sub and "config.json" not in files:
        raise ModelError(f"model {uri}: no discriminator/ directory and no config.json; pass the exported model dir "
                         "(with discriminator/) or an HF model dir")
    inner = {f[len(sub):] for f in files if f.startswith(sub) and "/" not in f[len(sub):]}
    where = f"{uri}/{sub}" if sub else uri
    if "config.json" not in inner:
        raise ModelError(f"model {where}: discriminator has no config.json")
    if not inner & set(_WEIGHTS):
        raise ModelError(f"model {where}: no weights ({' or '.join(_WEIGHTS[:2])})")
    if not inner & set(_TOKENIZER):
        raise ModelError(f"model {where}: no tokenizer files (one of {', '.join(_TOKENIZER)}); "
                         "the exporter saves the tokenizer beside the discriminator")
    hf_uri = storage.join(uri, sub.rstrip("/")) if sub else uri
    config = json.loads(storage.read_text(storage.join(hf_uri, "config.json")))
    if config.get("model_type") not in (None, "electra"):
        raise ModelError(f"model {where}: model_type {config.get('model_type')!r}, expected an ELECTRA discriminator")
    m = manifest.read(uri, kind="model") if "manifest.json" in files else None
    hidden = int(config.get("hidden_size", 0))
    name = name or next((str(m[k]) for k in _NAME_KEYS if m and m.get(k)), "") or _dir_name(uri)
    size = size or (m or {}).get("size") or _HIDDEN_TO_SIZE.get(hidden, "custom")
    step = (m or {}).get("step")
    step = step if step is not None else _step_from_path(uri)
    return ModelInfo(uri, hf_uri, name, str(size), int(step) if step is not None else None, m, hidden,
                     int(config.get("num_hidden_layers", 0)))


def _dir_name(uri: str) -> str:
    """The run's name from the path: `<root>/<run>/model/step-N[/discriminator]` -> `<run>`.

    Checkpoints of one run must share reports/<name>/ for the score-over-steps plot, so the
    step and layout directory names are skipped.
    """
    parts = [p for p in uri.rstrip("/").split("/") if p and p != "s3:"]
    while len(parts) > 1 and (parts[-1] in _LAYOUT_DIRS or _STEP_DIR.fullmatch(parts[-1])):
        parts.pop()
    return parts[-1] if parts else "model"


def _step_from_path(uri: str) -> int | None:
    for part in reversed(uri.rstrip("/").split("/")):
        m = _STEP_DIR.fullmatch(part)
        if m:
            return int(m.group(1))
    return None
