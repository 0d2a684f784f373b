"""Reports: results.json, report.md and report.html under `<output>/reports/<name>/<timestamp>/`."""

from __future__ import annotations

import json
import logging
import os
import tempfile

from common import manifest, storage
from evaluation.report import curves, history, render

RESULTS, MARKDOWN, HTML = "results.json", "report.md", "report.html"
MODELS = "models"  # fine-tuned models (finetune.save_models): models/<task>-seed<N>/

log = logging.getLogger(__name__)


def _curves(uri: str | None) -> curves.PretrainCurves | None:
    if not uri:
        return None
    try:
        return curves.load(uri)
    except (FileNotFoundError, storage.StorageError) as exc:
        log.warning("no pretraining curves: cannot read %s (%s)", uri, exc)
        return None


def write(output: str, results: dict, *, margin: float, inputs: list[dict], config,
          pretrain_metrics: str | None = None, models_dir: str | None = None) -> dict:
    """Add history, regression flags and pretraining curves to `results`, publish the report dir, manifest last.

    Only earlier reports of the same tier are history: a quick report never regresses against a
    full one. Returns the report manifest (its `report_uri` says where the report landed).
    """
    name, stamp = results["name"], results["created_id"]
    tier = history.tier_of(results)
    earlier = [r for r in history.earlier_results(output, name)
               if r.get("created_id") != stamp and history.tier_of(r) == tier]
    results["regressions"] = history.regressions(results["tasks"], earlier[-1] if earlier else None, margin)
    results["regression_margin"] = margin
    results["previous_report"] = earlier[-1]["_uri"] if earlier else None
    series = history.series(earlier, results)
    pretrain = _curves(pretrain_metrics)
    results["pretraining"] = ({"metrics_uri": pretrain.uri, "records": pretrain.lines, "curves": list(pretrain.series),
                               "missing": pretrain.missing} if pretrain else None)
    dest = storage.join(history.reports_prefix(output, name), stamp)
    results["report_uri"] = dest
    with tempfile.TemporaryDirectory(prefix="eval-report-") as tmp:
        files = {RESULTS: json.dumps(results, indent=1, sort_keys=True) + "\n",
                 MARKDOWN: render.markdown(results, series, pretrain), HTML: render.html(results, series, pretrain)}
        for fname, text in files.items():
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
                f.write(text)
        storage.upload_dir(tmp, dest)
    if models_dir and os.path.isdir(models_dir):
        storage.upload_dir(models_dir, storage.join(dest, MODELS))
    shards = [{"path": f, "bytes": len(t.encode()), "sha256": storage.sha256_bytes(t.encode())}
              for f, t in sorted(files.items())]
    m = manifest.build("report", inputs=inputs, config=config, shards=shards,
                       counters={"tasks": len(results["tasks"]), "regressions": len(results["regressions"])},
                       report_uri=dest, name=name, step=results["model"].get("step"), tier=tier,
                       scores={k: history.primary_score(e) for k, e in results["tasks"].items()})
    manifest.write(dest, m)
    return m
