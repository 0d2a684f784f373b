"""Finding the evaluation reports of a run: `<run_root>/reports/<model>/<timestamp>/` with a report manifest."""

from __future__ import annotations

from common import manifest as manifests
from common import storage


def find_reports(run_root: str, model_hash: str | None = None, tier: str | None = None) -> list[tuple[str, dict]]:
    """Finished reports under <run_root>/reports/, oldest first; only those of `model_hash` and `tier` when given
    (reports from before tiers existed are full-tier)."""
    base = storage.join(run_root, "reports")
    found = []
    for uri in storage.list_files(base):
        if storage.basename(uri) != manifests.MANIFEST_NAME:
            continue
        out = storage.parent(uri)
        try:
            m = manifests.read(out, kind="report")
        except manifests.ManifestError:
            continue
        if model_hash and model_hash not in {i.get("manifest_hash") for i in m.get("inputs", [])}:
            continue
        if tier and (m.get("tier") or "full") != tier:
            continue
        found.append((out, m))
    # <model>/<timestamp>/: the timestamp sorts in time order.
    return sorted(found, key=lambda t: storage.basename(t[0]))
