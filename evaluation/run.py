"""Fine-tune a pretrained ELECTRA discriminator on GLUE and SQuAD and write a report.

    python -m evaluation.run --model s3://bucket/runs/small/model --tasks glue,squad_v1,squad_v2 \
        --output s3://bucket/runs/small [--seeds 3] [--data-dir s3://bucket/mirror] \
        [--set finetune.max_steps=100 report.regression_margin=0.5]

The report lands in <output>/reports/<name>/<timestamp>/ (results.json, report.md, report.html,
manifest.json). Flows call `run(cfg)` directly; see docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common.configs import ConfigError, apply_overrides
from common.manifest import ManifestError
from common.storage import StorageError
from evaluation.config import EvalConfig
from evaluation.evaluate import evaluate
from evaluation.glue_data import DataFormatError
from evaluation.model_io import ModelError
from evaluation.tasks import TaskError

USER_ERRORS = (TaskError, ModelError, DataFormatError, ConfigError, ManifestError, StorageError)


def parse(argv: list[str] | None = None) -> EvalConfig:
    ap = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="exported model dir (with discriminator/) or HF dir; local or s3://")
    ap.add_argument("--tasks", default="glue,squad_v1,squad_v2", help="comma list of tasks or groups (glue, squad)")
    ap.add_argument("--output", required=True, help="root URI; the report goes to <output>/reports/<name>/<timestamp>/")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning runs per task; the median is reported")
    ap.add_argument("--data-dir", default="", help="local/s3 mirror in official formats; default: the HF hub")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. finetune.max_steps=5 report.regression_margin=0.5")
    a = ap.parse_args(argv)
    cfg = EvalConfig(model=a.model, output=a.output, tasks=tuple(a.tasks.split(",")), seeds=a.seeds,
                     data_dir=a.data_dir)
    return apply_overrides(cfg, a.set)


def run(cfg: EvalConfig) -> dict:
    """Library entry for flows and tests: the report manifest (`report_uri` = the report dir)."""
    return evaluate(cfg)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        m = run(parse(argv))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(m["report_uri"])
    return m


if __name__ == "__main__":
    main()
