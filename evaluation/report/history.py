"""Earlier reports of the same run, scores over pretraining steps, and the regression check.

Every report keeps its `results.json` under `<output>/reports/<name>/<timestamp>/`; the
timestamps sort in time order, so the newest earlier one is the "previous report".
"""

from __future__ import annotations

import json

from common import storage


def reports_prefix(output: str, name: str) -> str:
    return storage.join(output, "reports", name)


def earlier_results(output: str, name: str) -> list[dict]:
    """results.json of every finished earlier report of this run, oldest first."""
    prefix = reports_prefix(output, name)
    found = [u for u in storage.list_files(prefix) if u.endswith("/results.json")]
    out = []
    for uri in sorted(found):
        try:
            r = json.loads(storage.read_text(uri))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a damaged old report must not stop today's
        r["_uri"] = storage.parent(uri)
        out.append(r)
    return sorted(out, key=lambda r: r.get("created_id") or storage.basename(r["_uri"]))  # the dir name: time order


def tier_of(results: dict) -> str:
    """The tier a report was made at; reports from before tiers existed ran the full recipe."""
    tier = results.get("tier")
    return (tier.get("name") if isinstance(tier, dict) else tier) or "full"


def primary_score(entry: dict) -> float | None:
    return entry.get("median", {}).get(entry.get("primary", ""))


def regressions(current: dict[str, dict], previous: dict | None, margin: float) -> list[dict]:
    """Tasks whose primary score fell by more than `margin` points since the previous report."""
    if not previous:
        return []
    flags = []
    for key, entry in current.items():
        before = previous.get("tasks", {}).get(key)
        if not before or before.get("primary") != entry.get("primary"):
            continue
        old, new = primary_score(before), primary_score(entry)
        if old is None or new is None:
            continue
        if old - new > margin:
            flags.append({"task": key, "metric": entry["primary"], "previous": old, "current": new,
                          "drop": old - new, "margin": margin, "previous_report": previous.get("_uri", "")})
    return flags


def series(history: list[dict], current: dict) -> dict[str, list[tuple[float, float]]]:
    """Per task: (x, primary score) over all reports, x = pretraining step (report number when unknown)."""
    runs = history + [current]
    use_steps = all(r.get("model", {}).get("step") is not None for r in runs)
    out: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(runs):
        x = float(r["model"]["step"]) if use_steps else float(i + 1)
        for key, entry in r.get("tasks", {}).items():
            s = primary_score(entry)
            if s is not None:
                out.setdefault(key, []).append((x, s))
    for key in out:
        out[key].sort()
    return out
