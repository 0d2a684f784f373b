"""The `glue-squad-report` flow: evaluate a run's newest checkpoint (or model) and publish the report.

    prefect deployment run glue-squad-report/glue-squad-report      # also on a cron (prefect.yaml)

Runs beside a long pretraining run: it exports the newest complete checkpoint when no
model of that step exists yet, evaluates it, and republishes the model card with the new
scores. Its deployment runs the quick tier (evaluation/tiers.py) so a check costs minutes of
GPU, not hours, and it fits the schedule:
- a model that already has a report at this tier is not evaluated again (whatever the other
  evaluation settings), so a scheduled run that finds no new checkpoint costs a few storage reads;
- the deployment allows one run at a time and cancels a scheduled run that would overlap a
  running one (`concurrency_limit` with CANCEL_NEW in prefect.yaml): two evaluations of the
  same run never compete for the GPU pool, and the next schedule picks up what was skipped.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from common import manifest as manifests
from common import storage
from flows import checkpoints, reports
from flows.electra_pretraining import evaluate_stage, export_stage, publish_stage, write_summary
from flows.params import EvalParams, PublishParams, RunSpec, Size
from flows.results import StageError, StageResult


def newest_model(spec: RunSpec) -> tuple[int, str, dict] | None:
    """(step, output, manifest) of the exported model with the highest step under <run_root>/model/."""
    base = storage.join(spec.run_root, "model")
    found = []
    for uri in storage.list_files(base.rstrip("/") + "/"):
        if storage.basename(uri) == manifests.MANIFEST_NAME:
            out = storage.parent(uri)
            try:
                m = manifests.read(out, kind="model")
            except manifests.ManifestError:
                continue
            found.append((int(m.get("step") or 0), out, m))  # pretraining.export writes the checkpoint's step; 0 for a model without one
    return max(found, key=lambda f: (f[0], f[1])) if found else None


@flow(name="glue-squad-report", log_prints=True, persist_result=False)
def glue_squad_report(storage_root: str, run_name: str, size: Size = "small",
                      evaluation: EvalParams = EvalParams(tier="quick"), publish: PublishParams = PublishParams()) -> dict:
    """Export the newest checkpoint if needed, evaluate it, publish the card with the report."""
    spec = RunSpec(size=size, run_name=run_name, storage_root=storage_root, evaluation=evaluation, publish=publish)
    logger = get_run_logger()
    ckpt = checkpoints.latest(spec.pretrain_uri)
    model = newest_model(spec)
    ckpt_step = ckpt.step if ckpt else -1
    model_step = model[0] if model else -1
    if ckpt and ckpt_step > model_step:
        logger.info("checkpoint step %d is newer than the newest model (step %d): exporting it", ckpt_step, model_step)
        model_res = export_stage(spec, StageResult.found("checkpoint", ckpt.uri, ckpt.raw))
    elif model:
        model_res = StageResult.found("export", model[1], model[2])
    else:
        raise StageError(f"nothing to evaluate: no complete checkpoint under {spec.pretrain_uri} "
                         f"and no model under {spec.run_root}/model")
    done = reports.find_reports(spec.run_root, model_res.manifest_hash, spec.evaluation.tier)
    if done:
        logger.info("%s was already evaluated at tier %s (%s): not evaluating it again",
                    model_res.output, spec.evaluation.tier, done[-1][0])
        report = StageResult.found("evaluate", *done[-1])
    else:
        report = evaluate_stage(spec, model_res)
    published = publish_stage(spec, model_res, report) if spec.publish.enabled else None
    return write_summary(spec, {"model": model_res, "report": report, "published": published},
                         name="report-summary")
