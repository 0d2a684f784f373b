"""The run's pretraining curves, read from its `metrics.jsonl` for the report.

The trainer writes one JSON line per optimizer step (pretraining/metrics.py); later versions add
fields. This reader draws whatever numeric fields exist: the known ones in a fixed order, then any
other number (nested objects flattened as `a/b`), and skips lines it cannot read, counting them.
A line with a "kind" is its own family of curves, prefixed `kind/` (the held-out validation at each
checkpoint: `validation/disc_auc`, ...), so it never mixes into the per-step training curves of the
same name; "health" lines are events (a guardrail warning; the flow lists them), not curves.
Memory is bounded for a 1M-step run: the file is
streamed and the points are averaged into at most `2 x max_points` step buckets (when there are
more, neighbouring buckets merge and the bucket width doubles).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math

from common import storage

log = logging.getLogger(__name__)

# metrics.jsonl field -> chart title, in the order the report shows them.
KNOWN = {
    "loss": "total loss",
    "mlm_loss": "generator loss (MLM)",
    "rtd_loss": "discriminator loss (RTD)",
    "gen_acc": "generator accuracy",
    "disc_acc": "discriminator accuracy",
    "disc_precision": "discriminator precision",
    "disc_recall": "discriminator recall",
    "lr": "learning rate",
    "tokens_per_s": "tokens/s",
    "mfu": "MFU",
}
_SKIP = {"step", "tokens_seen", "examples_seen", "examples", "time", "timestamp"}  # counters and clocks: not curves


@dataclasses.dataclass
class PretrainCurves:
    uri: str
    series: dict[str, list[tuple[float, float]]]  # field -> (step, bucket mean), steps ascending
    missing: list[str]  # known fields this metrics.jsonl does not have
    lines: int  # records read
    bad_lines: int  # lines that were not a JSON object with a numeric step

    def title(self, key: str) -> str:
        return KNOWN.get(key, key.replace("_", " "))


_EVENTS = {"health"}  # line kinds that are not curves


def _numbers(rec: dict, prefix: str = ""):
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _numbers(v, key + "/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k not in _SKIP:
            yield key, float(v)


def load(uri: str, max_points: int = 300) -> PretrainCurves:
    """Curves of a metrics.jsonl (local or s3://); raises FileNotFoundError when there is none."""
    width = 1
    buckets: dict[int, dict[str, list[float]]] = {}  # step // width -> field -> [sum, count, max step]
    lines = bad = 0
    with storage.open_read(uri) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8", errors="replace"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step = int(rec["step"])
                kind = rec.get("kind")
            except (ValueError, KeyError, TypeError, AttributeError):
                bad += 1
                continue
            if kind in _EVENTS:
                continue
            lines += 1
            b = buckets.setdefault(step // width, {})
            for key, v in _numbers(rec, f"{kind}/" if kind else ""):
                acc = b.setdefault(key, [0.0, 0, step])
                acc[0] += v
                acc[1] += 1
                acc[2] = max(acc[2], step)
            if len(buckets) > 2 * max_points:
                width *= 2
                buckets = _merge(buckets)
    series: dict[str, list[tuple[float, float]]] = {}
    for _, fields in sorted(buckets.items()):
        for key, (total, n, step) in fields.items():
            series.setdefault(key, []).append((float(step), total / n))
    order = [k for k in KNOWN if k in series] + sorted(k for k in series if k not in KNOWN)
    if bad:
        log.warning("%s: %d lines skipped (not a JSON object with a step)", uri, bad)
    return PretrainCurves(uri, {k: series[k] for k in order}, [k for k in KNOWN if k not in series], lines, bad)


def _merge(buckets: dict[int, dict[str, list[float]]]) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {}
    for b, fields in buckets.items():
        target = out.setdefault(b // 2, {})
        for key, (total, n, step) in fields.items():
            acc = target.setdefault(key, [0.0, 0, step])
            acc[0] += total
            acc[1] += n
            acc[2] = max(acc[2], step)
    return out


def find(setting: str, model_manifest: dict | None) -> str | None:
    """The metrics.jsonl to draw: `setting` when given ("none" turns it off), else the one beside the
    checkpoints the model was exported from (`<run>/checkpoints/step-N` -> `<run>/metrics.jsonl`)."""
    if setting == "none":
        return None
    if setting:
        return setting
    for ref in (model_manifest or {}).get("inputs", []):
        if ref.get("kind") == "checkpoint" and ref.get("uri"):
            candidate = storage.join(storage.parent(storage.parent(ref["uri"])), "metrics.jsonl")
            if storage.exists(candidate):
                return candidate
    return None
