"""The `electra-pretraining` flow: clean → tokenizer → pack → pretrain → export → evaluate → publish.

    prefect deployment run electra-pretraining/electra-large          # deployments: prefect.yaml
    python -m flows.electra_pretraining --params run.json              # the same flow, no server needed

Every task computes a cache key from its inputs' manifest hashes and its config
(flows/caching.py) and skips itself when that output already exists in storage, so a
rerun after a failure redoes only what did not finish; pretraining resumes from its
newest complete checkpoint. Each stage's counters become Prefect artifacts.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE

from common import manifest as manifests
from common import storage
from common.cli import EXIT_FIX, EXIT_RETRY
from common.progress import fmt_duration
from flows import caching, checkpoints, reports, stages, supervise
from flows.params import (BeamParams, CorpusParams, EvalParams, PackParams, PublishParams, RunSpec, Size,
                          TokenizerParams, TrainParams)
from flows.results import StageError, StageResult


def _transient(task, task_run, state) -> bool:
    """Retry crashes, I/O errors and a stage that exited 75 (its store was unreachable: an outage); not a stage
    that exited with another error (same input, same error)."""
    try:
        state.result()
    except StageError as exc:
        return exc.returncode == EXIT_RETRY
    except Exception:  # noqa: BLE001 - anything else (connection reset, worker crash) is worth another try
        return True
    return False


def _resumable(task, task_run, state) -> bool:
    """Retry a launcher that crashed or was preempted (it resumes); not one that refused its config (exit 2)
    or stopped on a non-finite loss (exit 3: the same recipe would diverge the same way)."""
    from pretraining.launch import DIVERGED_EXIT

    try:
        state.result()
    except StageError as exc:
        return exc.returncode not in (EXIT_FIX, DIVERGED_EXIT)
    except Exception:  # noqa: BLE001
        return True
    return False


# Object-store and cluster hiccups are retried (boto3 already retries each request); a stage's own
# error exit is not: it would fail the same way again.
IO_RETRIES = dict(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient)


# ----------------------------------------------------------------------------- helpers


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def _artifact_key(spec: RunSpec, stage: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{spec.run_name}-{stage}".lower()).strip("-")[:100]


def stage_artifacts(spec: RunSpec, stage: str, result: StageResult) -> None:
    """A markdown summary and a counters table per stage, keyed per run so the UI shows their history."""
    counters = _flatten(result.counters)
    verb = "reused (cache hit)" if result.skipped else f"ran in {result.seconds:.0f}s"
    md = [f"### {stage}: {verb}", "", f"- output: `{result.output}`",
          f"- manifest hash: `{result.manifest_hash}`", f"- cache key: `{result.key[:16]}`"]
    if counters:
        md += ["", "| counter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in counters.items()]
    key = _artifact_key(spec, stage)
    create_markdown_artifact(markdown="\n".join(md), key=key, description=f"{stage} of run {spec.run_name}")
    if counters:
        create_table_artifact(table=[{"counter": k, "value": v} for k, v in counters.items()],
                              key=f"{key}-counters", description=f"{stage} counters of run {spec.run_name}")


def cached_stage(spec: RunSpec, stage: str, config: object, inputs: list[StageResult],
                 run: Callable[[], tuple[str, dict]]) -> StageResult:
    """Skip when the output recorded for this key is intact; else run the stage and record its output."""
    logger = get_run_logger()
    key = caching.cache_key(stage, config, [r.manifest_hash for r in inputs])
    t0 = time.monotonic()
    hit = caching.lookup(spec.state_uri, stage, key)
    if hit:
        output, m = hit
        logger.info("%s: reusing %s (inputs and config unchanged, manifest %s)", stage, output, m["manifest_hash"][:12])
    else:
        output, m = run()
        caching.record(spec.state_uri, stage, key, output, m)
    result = StageResult.of(stage, output, m, skipped=bool(hit), seconds=time.monotonic() - t0, key=key)
    stage_artifacts(spec, stage, result)
    return result


def _read(output: str, kind: str) -> tuple[str, dict]:
    return output, manifests.read(output, kind=kind)


# ----------------------------------------------------------------------------- tasks


@task(name="clean", cache_policy=NO_CACHE, **IO_RETRIES)
def clean_stage(spec: RunSpec) -> StageResult:
    if spec.corpus is None:
        raise ValueError("the clean stage needs corpus.inputs")
    # Raw inputs have no manifests: their URIs and sizes stand in for input hashes.
    files = sorted({f for p in spec.corpus.inputs for f in storage.glob(p)})
    listing = [[f, storage.size(f)] for f in files]
    config = {"inputs": listing, "format": spec.corpus.format, "extra_args": spec.corpus.extra_args}

    def run():
        stages.run(stages.clean_job(spec))
        return _read(spec.clean_uri, "documents")

    return cached_stage(spec, "clean", config, [], run)


@task(name="train-tokenizer", cache_policy=NO_CACHE, **IO_RETRIES)
def tokenizer_stage(spec: RunSpec, documents: StageResult) -> StageResult:
    def run():
        stages.run(stages.tokenizer_job(spec, documents.output))
        return _read(spec.tokenizer_uri, "tokenizer")

    return cached_stage(spec, "tokenizer", spec.tokenizer.model_dump(), [documents], run)


@task(name="pack", cache_policy=NO_CACHE, **IO_RETRIES)
def pack_stage(spec: RunSpec, documents: StageResult, tokenizer: StageResult) -> StageResult:
    def run():
        stages.run(stages.pack_job(spec, documents.output, tokenizer.output))
        return _read(spec.pack_uri, "pack")

    return cached_stage(spec, "pack", spec.pack.model_dump(), [documents, tokenizer], run)


def _pretrain_config(spec: RunSpec) -> dict:
    ds_cfg = stages.deepspeed_config_path(spec)
    return {"size": spec.size, "max_steps": checkpoints.target_steps(spec), "overrides": spec.train.overrides,
            "deepspeed_config": caching.file_digest(ds_cfg)}


# A preempted or crashed launcher is retried: the retry resumes from the newest complete checkpoint.
@task(name="pretrain", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30, retry_condition_fn=_resumable)
def pretrain_stage(spec: RunSpec, pack_out: StageResult) -> StageResult:
    """DeepSpeed pretraining; a rerun (or this task's retry) resumes from the newest complete checkpoint."""
    logger = get_run_logger()
    target = checkpoints.target_steps(spec)

    def finished() -> tuple[str, dict] | None:
        got = checkpoints.latest(spec.pretrain_uri)
        return (got.uri, got.raw) if got and got.step >= target else None

    def run():
        done = finished()
        if done:
            logger.info("pretrain: %s already reached step %d", done[0], target)
            return done
        got = checkpoints.latest(spec.pretrain_uri)
        if got:
            logger.info("pretrain: resuming from %s (step %d of %d)", got.uri, got.step, target)
        if spec.train.launcher.mode == "cluster":
            from flows import cluster

            cluster.run_job(spec, pack_out.output, target, logger)
        else:
            _launch(spec, pack_out.output, target, logger)
        done = finished()
        if not done:
            raise StageError(f"pretraining ended without a complete checkpoint at step {target} "
                             f"under {spec.pretrain_uri}/checkpoints")
        return done

    try:
        return cached_stage(spec, "pretrain", _pretrain_config(spec), [pack_out], run)
    finally:  # a run stopped by a non-finite loss is exactly when its health record matters
        try:
            training_artifacts(spec)
        except Exception as exc:  # noqa: BLE001 - a missing artifact must not hide the stage's own outcome
            logger.warning("pretrain: no validation/health artifacts: %s", exc)


def training_artifacts(spec: RunSpec) -> None:
    """Pretraining's held-out validation at each checkpoint (a table) and its training-health warnings
    (markdown), from the run's metrics.jsonl (pretraining/metrics.py)."""
    from pretraining.metrics import HEALTH, VALIDATION, read_records

    uri = storage.join(spec.pretrain_uri, "metrics.jsonl")
    validation = {r["step"]: r for r in read_records(uri, VALIDATION)}  # a step validated twice: the last wins
    if validation:
        keys = ("mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "disc_precision", "disc_recall", "disc_auc")
        create_table_artifact(
            table=[{"step": step, **{k: None if r.get(k) is None else round(float(r[k]), 4) for k in keys}}
                   for step, r in sorted(validation.items())],
            key=_artifact_key(spec, "pretrain-validation"),
            description=f"held-out validation at each checkpoint of {spec.run_name}")
    seen: dict[str, dict] = {}
    for r in read_records(uri, HEALTH):
        got = seen.setdefault(r["check"], {"first": r["step"], "last": r["step"], "intervals": 0,
                                           "message": r["message"]})
        got["last"], got["intervals"] = r["step"], got["intervals"] + 1
    if seen:
        md = [f"### pretraining health of {spec.run_name}: {len(seen)} warning(s)", "",
              "| warning | first step | last step | intervals | what it means |", "|---|---|---|---|---|"]
        md += [f"| **{c}** | {v['first']} | {v['last']} | {v['intervals']} | {v['message']} |" for c, v in seen.items()]
    else:
        md = [f"### pretraining health of {spec.run_name}: no warnings", "",
              "No non-finite loss, loss spike, stalled generator or discriminator, or collapsed task."]
    create_markdown_artifact(markdown="\n".join(md), key=_artifact_key(spec, "pretrain-health"),
                             description=f"training-health warnings of {spec.run_name}")


_STEP = re.compile(r"\bstep[ =:]+(\d+)")


def _launch(spec: RunSpec, pack_uri: str, target: int, logger) -> None:
    cmd = stages.pretrain_command(spec, pack_uri)
    logger.info("launching: %s", " ".join(cmd))
    progress = create_progress_artifact(progress=0.0, key=_artifact_key(spec, "pretrain-progress"),
                                        description=f"pretraining steps of {spec.run_name}")
    lines = supervise.LineLogger(logger)
    last = [0.0]

    def on_line(line: str) -> None:
        lines(line)
        m = _STEP.search(line)
        if m:
            pct = min(100.0, 100.0 * int(m.group(1)) / target)
            if pct - last[0] >= 1.0:
                last[0] = pct
                update_progress_artifact(artifact_id=progress, progress=pct)

    rc = supervise.run_streaming(cmd, on_line, env=stages.launcher_env())
    if rc != 0:
        raise StageError(f"the DeepSpeed launcher exited with {rc}; last lines:\n" + "\n".join(lines.tail[-15:]),
                         rc)
    update_progress_artifact(artifact_id=progress, progress=100.0)


@task(name="export", cache_policy=NO_CACHE, **IO_RETRIES)
def export_stage(spec: RunSpec, checkpoint: StageResult) -> StageResult:
    out = spec.model_uri(storage.basename(checkpoint.output))

    def run():
        stages.run(stages.export_job(checkpoint.output, out))
        return _read(out, "model")

    return cached_stage(spec, "export", {"output": out}, [checkpoint], run)


class EvalProgressArtifact(logging.Handler):
    """Mirrors the evaluation's progress (the `eval_progress` event on its log records) into a progress artifact.

    The evaluation runs in this process (`evaluation.run.run(cfg)`), so its records pass through here; updates
    are sent at whole-percent steps, with the current run and the overall ETA as the description.
    """

    def __init__(self, spec: RunSpec):
        super().__init__(logging.INFO)
        self.artifact = create_progress_artifact(progress=0.0, key=_artifact_key(spec, "evaluate-progress"),
                                                 description=f"evaluation of {spec.run_name} ({spec.evaluation.tier})")
        self.last = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "eval_progress", None)
        if event is None:
            return
        pct = round(100.0 * event.fraction, 1)
        if pct - self.last < 1.0 and pct < 100.0:
            return
        self.last = pct
        eta = fmt_duration(event.eta_s) if event.eta_s is not None else "?"
        where = f"{event.task} seed {event.seed}, step {event.step}/{event.total}; " if event.task else ""
        try:
            update_progress_artifact(artifact_id=self.artifact, progress=pct, description=f"{where}overall ETA {eta}")
        except Exception:  # noqa: BLE001 - a lost progress update must never fail the evaluation
            pass


@task(name="evaluate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30, retry_condition_fn=_transient)
def evaluate_stage(spec: RunSpec, model: StageResult) -> StageResult:
    config = spec.evaluation.model_dump(exclude={"enabled"})

    def run():
        progress = EvalProgressArtifact(spec)
        evaluation_log = logging.getLogger("evaluation")
        level = evaluation_log.level
        evaluation_log.addHandler(progress)
        evaluation_log.setLevel(logging.INFO)  # progress records are INFO: they must be created to be mirrored
        try:
            stages.run(stages.eval_job(spec, model.output))
        finally:
            evaluation_log.removeHandler(progress)
            evaluation_log.setLevel(level)
        # the newest report of this model and tier is the one just written
        found = reports.find_reports(spec.run_root, model.manifest_hash, spec.evaluation.tier)
        if not found:
            raise StageError(f"evaluation wrote no report under {spec.run_root}/reports")
        return found[-1]

    result = cached_stage(spec, "evaluate", config, [model], run)
    _report_artifact(spec, result.output)
    return result


def _report_artifact(spec: RunSpec, report_uri: str) -> None:
    """The report's task scores as a table (median over seeds), beside the paper's score."""
    try:
        res = json.loads(storage.read_text(storage.join(report_uri, "results.json")))
    except (FileNotFoundError, json.JSONDecodeError):
        return
    rows = []
    for key, t in res.get("tasks", {}).items():
        for metric, value in (t.get("median") or {}).items():
            rows.append({"task": key, "metric": metric, "median": round(float(value), 4),
                         "primary": metric == t.get("primary"), "paper": t.get("paper")})
    if rows:
        create_table_artifact(table=rows, key=_artifact_key(spec, "scores"),
                              description=f"scores of {res.get('name', spec.run_name)} ({report_uri})")


@task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
def publish_stage(spec: RunSpec, model: StageResult, report: StageResult | None) -> StageResult:
    from flows import publish as publishing

    version = storage.basename(model.output)
    out = spec.published_uri(version)
    inputs = [model] + ([report] if report else [])
    config = {**spec.publish.model_dump(), "output": out}

    def run():
        m = publishing.publish(model.output, out, name=spec.model_name, version=spec.publish.version or version,
                               report_uri=report.output if report else None, license=spec.publish.license,
                               language=spec.publish.language)
        if spec.publish.hub_repo:
            publishing.push_to_hub(out, spec.publish.hub_repo, get_run_logger())
        return out, m

    return cached_stage(spec, "publish", config, inputs, run)


# ----------------------------------------------------------------------------- flow


@flow(name="electra-pretraining", log_prints=True, persist_result=False)
def electra_pretraining(
    storage_root: str,
    corpus: CorpusParams,
    size: Size = "small",
    run_name: str = "electra",
    beam: BeamParams = BeamParams(),
    tokenizer: TokenizerParams = TokenizerParams(),
    pack: PackParams = PackParams(),
    train: TrainParams = TrainParams(),
    evaluation: EvalParams = EvalParams(),
    publish: PublishParams = PublishParams(),
) -> dict:
    """Raw web text to a published, evaluated ELECTRA encoder; finished stages are reused on a rerun."""
    spec = RunSpec(size=size, run_name=run_name, storage_root=storage_root, corpus=corpus, beam=beam,
                   tokenizer=tokenizer, pack=pack, train=train, evaluation=evaluation, publish=publish)
    logger = get_run_logger()
    logger.info("run %s: size %s, outputs under %s", spec.run_name, spec.size, spec.run_root)
    if storage.is_s3(spec.storage_root):
        storage.check_reachable(spec.storage_root)

    docs = clean_stage(spec)
    tok = tokenizer_stage(spec, docs)
    packed = pack_stage(spec, docs, tok)
    ckpt = pretrain_stage(spec, packed)
    model = export_stage(spec, ckpt)
    report = evaluate_stage(spec, model) if spec.evaluation.enabled else None
    published = publish_stage(spec, model, report) if spec.publish.enabled else None

    results = {"documents": docs, "tokenizer": tok, "pack": packed, "checkpoint": ckpt, "model": model,
               "report": report, "published": published}
    return write_summary(spec, results)


def write_summary(spec: RunSpec, results: dict[str, StageResult | None], name: str = "summary") -> dict:
    """Where each output is and whether it was reused: an artifact, a log block, and `_flow/summary.json`."""
    rows = ["| stage | output | |", "|---|---|---|"]
    for k, v in results.items():
        if v:
            how = "reused" if v.skipped else f"ran ({v.seconds:.0f}s)"
            rows.append(f"| {k} | `{v.output}` | {how} |")
    md = f"## ELECTRA run `{spec.run_name}`\n\n" + "\n".join(rows)
    create_markdown_artifact(markdown=md, key=_artifact_key(spec, name),
                             description=f"where the outputs of {spec.run_name} are")
    get_run_logger().info("\n%s", md)
    summary = {"run_root": spec.run_root,
               "stages": {k: v.summary() if v else None for k, v in results.items()}}
    storage.write_text(storage.join(spec.state_uri, f"{name}.json"), json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the flow without a deployment (a temporary local Prefect API is used if none is configured)."""
    ap = argparse.ArgumentParser(prog="python -m flows.electra_pretraining", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", required=True, help="JSON file with the flow's parameters (as in prefect.yaml)")
    a = ap.parse_args(argv)
    with open(a.params) as f:
        params = json.load(f)
    print(json.dumps(electra_pretraining(**params), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
