"""Pretraining as a cluster job: render an `infra/` template, submit it, wait for its checkpoints.

The flow (running on a small Prefect worker) does not train; it submits the multi-node
job (`infra/k8s/deepspeed-job.yaml`, an indexed Job with one DeepSpeed launcher per node
started with `--no_ssh --node_rank=$JOB_COMPLETION_INDEX`; or `infra/slurm/pretrain.sbatch`,
`srun` starting one launcher per node with `--node_rank=$SLURM_NODEID`), then polls the
job's state and the run's checkpoints in object storage. Completion is the checkpoint
manifest at the target step, the same marker a local run ends with, so the export stage
does not care where training happened. A job that fails is resubmitted by the task's
retries and resumes from its newest complete checkpoint.

Templates use `${NAME}` placeholders (string.Template); the values are `template_values()`.
"""

from __future__ import annotations

import shlex
import string
import subprocess
import tempfile
import time
from pathlib import Path

from flows import stages
from flows.params import RunSpec


def template_values(spec: RunSpec, pack_uri: str, target: int) -> dict[str, str]:
    ln = spec.train.launcher
    # The per-node command: the launcher flags that differ per node come from the scheduler's env.
    overrides = stages.train_overrides(spec, pack_uri)
    if not spec.train.max_steps:
        overrides.append(f"max_steps={target}")
    ds_cfg = spec.train.deepspeed_config
    train_args = ["pretraining/train.py", "--deepspeed", ds_cfg, "--config", spec.size, *overrides]
    job = f"electra-{spec.run_name}".replace("_", "-").replace(".", "-")[:52]
    return {
        "JOB_NAME": job,
        "NAMESPACE": ln.cluster.namespace,
        "IMAGE": ln.cluster.image,
        "NUM_NODES": str(ln.num_nodes),
        "GPUS_PER_NODE": str(ln.num_gpus or 8),
        "MASTER_PORT": str(ln.master_port),
        "TRAIN_ARGS": shlex.join(train_args),
        "RUN_URI": spec.pretrain_uri,
        "TARGET_STEP": str(target),
    }


def render(template_path: str, values: dict[str, str]) -> str:
    path = Path(template_path)
    if not path.is_absolute():
        path = stages.REPO / path
    return string.Template(path.read_text()).substitute(values)


def submit_command(kind: str, rendered_path: str, namespace: str) -> list[str]:
    if kind == "kubernetes":
        return ["kubectl", "apply", "-n", namespace, "-f", rendered_path]
    return ["sbatch", "--parsable", rendered_path]


def job_state(kind: str, job: str, namespace: str, slurm_id: str | None) -> str:
    """'running', 'succeeded' or 'failed', from kubectl or sacct."""
    if kind == "kubernetes":
        out = subprocess.run(["kubectl", "get", "job", job, "-n", namespace, "-o",
                              "jsonpath={.status.succeeded}/{.status.failed}/{.spec.completions}"],
                             capture_output=True, text=True, check=True).stdout
        succeeded, failed, completions = (out.split("/") + ["", "", ""])[:3]
        if failed and int(failed) > 0:
            return "failed"
        if succeeded and completions and int(succeeded) >= int(completions):
            return "succeeded"
        return "running"
    out = subprocess.run(["sacct", "-j", str(slurm_id), "-X", "-n", "-o", "State"], capture_output=True, text=True,
                         check=True).stdout.split()
    state = out[0] if out else "PENDING"
    if state in ("COMPLETED",):
        return "succeeded"
    if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"):
        return "failed"
    return "running"


def run_job(spec: RunSpec, pack_uri: str, target: int, logger) -> None:
    c = spec.train.launcher.cluster
    values = template_values(spec, pack_uri, target)
    text = render(c.template, values)
    with tempfile.NamedTemporaryFile("w", suffix=Path(c.template).suffix, delete=False) as f:
        f.write(text)
    cmd = submit_command(c.kind, f.name, c.namespace)
    if c.kind == "kubernetes":
        # A Job's pod template is immutable: a resubmission (the task's retry) replaces the failed Job.
        subprocess.run(["kubectl", "delete", "job", values["JOB_NAME"], "-n", c.namespace, "--ignore-not-found"],
                       capture_output=True, text=True)
    logger.info("submitting: %s", " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise stages.StageError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    slurm_id = out.stdout.strip().split(";")[0] if c.kind == "slurm" else None
    while True:
        time.sleep(c.poll_seconds)
        got = stages.latest_checkpoint(spec.pretrain_uri)
        step = stages.checkpoint_step(got[1]) if got else 0
        state = job_state(c.kind, values["JOB_NAME"], c.namespace, slurm_id)
        logger.info("cluster job %s: %s, newest complete checkpoint step %d of %d",
                    values["JOB_NAME"], state, step, target)
        if step >= target:
            return
        if state == "failed":
            raise stages.StageError(f"cluster job {values['JOB_NAME']} failed at step {step}; "
                                    "the retry resumes from it")
        if state == "succeeded":
            raise stages.StageError(f"cluster job {values['JOB_NAME']} finished without a checkpoint at step {target}")
