"""The `glue-squad-report` flow: evaluate a run's newest checkpoint (or model) and publish the report.

    prefect deployment run glue-squad-report/glue-squad-report      # also on a cron (prefect.yaml)

Runs beside a long pretraining run: it exports the newest complete checkpoint when no
model of that step exists yet, evaluates it, and republishes the model card with the new
scores. Everything is cached like the main flow, so a scheduled run that finds no new
checkpoint reuses the last report and costs a few storage reads.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from common import manifest as manifests
from common import storage
from flows import stages
from flows.electra_pretraining import evaluate_stage, export_stage, publish_stage, write_summary
from flows.params import EvalParams, PublishParams, RunSpec, Size


def newest_model(spec: RunSpec) -> tuple[str, dict] | None:
    """The exported model with the highest step under <run_root>/model/."""
    base = storage.join(spec.run_root, "model")
    found = []
    for uri in storage.list_files(base.rstrip("/") + "/"):
        if storage.basename(uri) == manifests.MANIFEST_NAME:
            out = storage.parent(uri)
            try:
                m = manifests.read(out, kind="model")
            except manifests.ManifestError:
                continue
            found.append((int(m.get("step") or 0), out, m))
    if not found:
        return None
    _, out, m = max(found)
    return out, m


def _as_result(stage: str, out: str, m: dict) -> dict:
    return {"stage": stage, "output": out, "manifest_hash": m["manifest_hash"], "kind": m.get("kind"),
            "skipped": True, "seconds": 0.0, "key": "", "counters": m.get("counters", {})}


@flow(name="glue-squad-report", log_prints=True, persist_result=False)
def glue_squad_report(storage_root: str, run_name: str, size: Size = "small",
                      evaluation: EvalParams = EvalParams(), publish: PublishParams = PublishParams()) -> dict:
    """Export the newest checkpoint if needed, evaluate it, publish the card with the report."""
    spec = RunSpec(size=size, run_name=run_name, storage_root=storage_root, evaluation=evaluation, publish=publish)
    logger = get_run_logger()
    ckpt = stages.latest_checkpoint(spec.pretrain_uri)
    model = newest_model(spec)
    ckpt_step = stages.checkpoint_step(ckpt[1]) if ckpt else -1
    model_step = int(model[1].get("step") or 0) if model else -1
    if ckpt and ckpt_step > model_step:
        logger.info("checkpoint step %d is newer than the newest model (step %d): exporting it", ckpt_step, model_step)
        model_res = export_stage(spec, _as_result("checkpoint", *ckpt))
    elif model:
        model_res = _as_result("export", *model)
    else:
        raise stages.StageError(f"nothing to evaluate: no complete checkpoint under {spec.pretrain_uri} "
                                f"and no model under {spec.run_root}/model")
    report = evaluate_stage(spec, model_res)
    published = publish_stage(spec, model_res, report) if spec.publish.enabled else None
    return write_summary(spec, {"model": model_res, "report": report, "published": published},
                         name="report-summary")
