"""Skip finished stages: a cache keyed on the input manifests' hashes and the stage config.

Prefect's own result cache lives in the Prefect server's database and result storage;
the outputs of this system live in object storage, and a rerun must skip finished work
even against a fresh Prefect server, or after someone deleted an output by hand. So the
cache is kept beside the outputs:

    <run_root>/_flow/<stage>-<key[:16]>.json   {"key": ..., "output": URI, "manifest_hash": ...}

One record per key, so a scheduled report flow exporting step 1000 and the main flow
exporting the final step do not evict each other.

A stage is skipped when its record's key equals the key computed now (same inputs, same
config) AND the output's manifest still exists with the recorded hash. Anything else runs
the stage again; stages are idempotent (same input and config give the same bytes), so a
rerun that was not needed costs time, never correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from common import manifest as manifests
from common import storage

log = logging.getLogger("flows.caching")


def cache_key(stage: str, config: Any, input_hashes: list[str]) -> str:
    """sha256 over the stage name, its canonical config and its inputs' manifest hashes (order-free)."""
    body = {"stage": stage, "config": config, "inputs": sorted(input_hashes)}
    return hashlib.sha256(manifests.canonical_json(body).encode()).hexdigest()


def record_uri(state_uri: str, stage: str, key: str) -> str:
    return storage.join(state_uri, f"{stage}-{key[:16]}.json")


def lookup(state_uri: str, stage: str, key: str) -> tuple[str, dict] | None:
    """(output URI, its manifest) when the stage already ran with this key and its output is intact."""
    try:
        rec = json.loads(storage.read_text(record_uri(state_uri, stage, key)))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        log.warning("ignoring an unreadable cache record for %s", stage)
        return None
    if rec.get("key") != key:
        return None
    output = rec.get("output", "")
    try:
        m = manifests.read(output)
    except manifests.ManifestError as exc:
        log.warning("cache record for %s names %s, which is gone or broken (%s): running it again", stage, output, exc)
        return None
    if m.get("manifest_hash") != rec.get("manifest_hash"):
        log.warning("%s was rewritten since the flow recorded it: running %s again", output, stage)
        return None
    return output, m


def record(state_uri: str, stage: str, key: str, output: str, manifest: dict) -> None:
    rec = {"stage": stage, "key": key, "output": output, "manifest_hash": manifest["manifest_hash"],
           "kind": manifest.get("kind")}
    body = json.dumps(rec, indent=1, sort_keys=True) + "\n"
    storage.publish_atomic(record_uri(state_uri, stage, key), body.encode())


def file_digest(path: str) -> str:
    """sha256 of a config file the stage reads (a DeepSpeed JSON), so editing it invalidates the cache."""
    return storage.sha256_uri(path)
