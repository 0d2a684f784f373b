"""Manifests: the last file every job writes, and the only proof that an output is complete.

A manifest is JSON with a `kind` (documents, tokenizer, pack, checkpoint, model,
report), the `inputs` it was made from (each with that input's manifest hash),
the `config` and its hash, the `shards` with counts and sha256, `counters`, and
the code version. Its own `manifest_hash` is the sha256 of the canonical JSON of
everything else, so downstream manifests can name it and lineage can be checked.
No timestamps go in: the same inputs and config give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from common import storage

MANIFEST_NAME = "manifest.json"
KINDS = ("documents", "tokenizer", "pack", "checkpoint", "model", "report")


class ManifestError(RuntimeError):
    """A manifest is missing, malformed, or disagrees with what it describes."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Any) -> str:
    """sha256 of a config's canonical JSON; dataclasses are converted first."""
    import dataclasses

    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of this checkout (with -dirty), or the package version outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout (installed wheel, container)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "electra-forge " + version("electra-forge")
        except PackageNotFoundError:
            return "unknown"


def manifest_uri(output: str) -> str:
    return storage.join(output, MANIFEST_NAME)


def build(kind: str, *, inputs: list[dict], config: Any, shards: list[dict] | None = None,
          counters: dict | None = None, **extra: Any) -> dict:
    """Assemble a manifest dict and stamp its hash."""
    if kind not in KINDS:
        raise ValueError(f"unknown manifest kind {kind!r}; expected one of {KINDS}")
    import dataclasses

    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    body = {
        "kind": kind,
        "inputs": inputs,
        "config": cfg,
        "config_hash": config_hash(cfg),
        "shards": shards or [],
        "counters": counters or {},
        "code_version": code_version(),
        **extra,
    }
    body["manifest_hash"] = hash_of(body)
    return body


def hash_of(manifest: dict) -> str:
    # code_version is left out: rebuilding with a new commit but identical output keeps the hash.
    body = {k: v for k, v in manifest.items() if k not in ("manifest_hash", "code_version")}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def write(output: str, manifest: dict, settings: storage.StorageSettings | None = None) -> str:
    """Publish `output/manifest.json` atomically. Call it last."""
    if manifest.get("manifest_hash") != hash_of(manifest):
        manifest = {**manifest, "manifest_hash": hash_of(manifest)}
    uri = manifest_uri(output)
    body = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    storage.publish_atomic(uri, body.encode(), settings)
    return uri


def read(output: str, kind: str | None = None, settings: storage.StorageSettings | None = None,
         verify: bool = True) -> dict:
    """Load `output/manifest.json` (or a manifest URI itself), checking kind and hash."""
    uri = output if output.endswith(".json") else manifest_uri(output)
    try:
        m = json.loads(storage.read_text(uri, settings))
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest at {uri}: the job that writes {output} has not finished (or failed). Run it first."
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {uri} is not valid JSON: {exc}") from None
    if kind is not None and m.get("kind") != kind:
        raise ManifestError(f"{uri} is a {m.get('kind')!r} manifest, expected {kind!r}. Check the URI you passed.")
    if verify and m.get("manifest_hash") != hash_of(m):
        raise ManifestError(f"manifest {uri} does not match its own hash: it was edited or corrupted.")
    return m


def exists(output: str, settings: storage.StorageSettings | None = None) -> bool:
    return storage.exists(manifest_uri(output), settings)


def input_ref(output: str, manifest: dict) -> dict:
    """How a downstream manifest names one of its inputs."""
    return {"uri": output, "kind": manifest.get("kind"), "manifest_hash": manifest["manifest_hash"]}
