"""Reports: results.json, report.md and report.html under `<output>/reports/<name>/<timestamp>/`."""

from __future__ import annotations

import json
import os
import tempfile

from common import manifest, storage
from evaluation.report import history, render

RESULTS, MARKDOWN, HTML = "results.json", "report.md", "report.html"


def write(output: str, results: dict, *, margin: float, inputs: list[dict], config) -> dict:
    """Add history and regression flags to `results`, publish the report dir, manifest last.

    Returns the report manifest (its `report_uri` says where the report landed).
    """
    name, stamp = results["name"], results["created_id"]
    earlier = [r for r in history.earlier_results(output, name) if r.get("created_id") != stamp]
    results["regressions"] = history.regressions(results["tasks"], earlier[-1] if earlier else None, margin)
    results["regression_margin"] = margin
    results["previous_report"] = earlier[-1]["_uri"] if earlier else None
    series = history.series(earlier, results)
    dest = storage.join(history.reports_prefix(output, name), stamp)
    results["report_uri"] = dest
    with tempfile.TemporaryDirectory(prefix="eval-report-") as tmp:
        files = {RESULTS: json.dumps(results, indent=1, sort_keys=True) + "\n",
                 MARKDOWN: render.markdown(results, series), HTML: render.html(results, series)}
        for fname, text in files.items():
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
                f.write(text)
        storage.upload_dir(tmp, dest)
    shards = [{"path": f, "bytes": len(t.encode()), "sha256": storage.sha256_bytes(t.encode())}
              for f, t in sorted(files.items())]
    m = manifest.build("report", inputs=inputs, config=config, shards=shards,
                       counters={"tasks": len(results["tasks"]), "regressions": len(results["regressions"])},
                       report_uri=dest, name=name, step=results["model"].get("step"),
                       scores={k: history.primary_score(e) for k, e in results["tasks"].items()})
    manifest.write(dest, m)
    return m
