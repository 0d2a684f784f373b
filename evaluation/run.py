"""Fine-tune a pretrained ELECTRA discriminator on GLUE and SQuAD and write a report.

    python -m evaluation.run --model s3://bucket/runs/small/model --output s3://bucket/runs/small \
        [--tier full|quick] [--tasks glue,squad_v1,squad_v2] [--seeds 3] [--data-dir s3://bucket/mirror] \
        [--set finetune.max_steps=100 report.regression_margin=0.5]

The report lands in <output>/reports/<name>/<timestamp>/ (results.json, report.md, report.html,
manifest.json). The flow runs `main(argv)` like every job; code that wants the manifest calls `run(cfg)`.
See docs/evaluation.md.
"""

from __future__ import annotations

import argparse

from common.cli import add_overrides, run_job
from common.configs import apply_overrides
from evaluation.config import EvalConfig
from evaluation.evaluate import evaluate
from evaluation.glue_data import DataFormatError
from evaluation.model_io import ModelError
from evaluation.tasks import TaskError
from evaluation.tiers import TIERS

USER_ERRORS = (TaskError, ModelError, DataFormatError)  # besides common.cli's config, manifest and storage errors


def parse(argv: list[str] | None = None) -> EvalConfig:
    ap = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="exported model dir (with discriminator/) or HF dir; local or s3://")
    ap.add_argument("--tier", choices=sorted(TIERS), default="full",
                    help="full: the paper's recipe (final reports); quick: MNLI, SST-2, SQuAD 2.0, 1 seed, "
                         "<= 1000 steps (scheduled checks)")
    ap.add_argument("--tasks", default="", help="comma list of tasks or groups (glue, squad); default: the tier's")
    ap.add_argument("--output", required=True, help="root URI; the report goes to <output>/reports/<name>/<timestamp>/")
    ap.add_argument("--seeds", type=int, default=0, help="fine-tuning runs per task, median reported; default: the tier's")
    ap.add_argument("--data-dir", default="", help="local/s3 mirror in official formats; default: the HF hub")
    add_overrides(ap, "finetune.max_steps=5 report.regression_margin=0.5")
    a = ap.parse_args(argv)
    cfg = EvalConfig(model=a.model, output=a.output, tier=a.tier, tasks=tuple(t for t in a.tasks.split(",") if t),
                     seeds=a.seeds, data_dir=a.data_dir)
    return apply_overrides(cfg, a.set)


def run(cfg: EvalConfig) -> dict:
    """Library entry: the report manifest (`report_uri` = the report dir)."""
    return evaluate(cfg)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 and the report URI printed, or 2 and one `error:` line for a problem the user can fix."""
    return run_job(lambda: run(parse(argv))["report_uri"], USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
