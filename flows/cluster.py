"""Pretraining as a cluster job: render an `infra/` template, submit it, follow it to its last checkpoint.

The flow (running on a small Prefect worker or a login node) does not train; it submits the multi-node
job and polls the job's state and the run's checkpoints in object storage:

- `infra/slurm/pretrain.sbatch`: `srun` starts `pretraining/launch.py` once per node
  (`--node-rank=$SLURM_NODEID`); a preempted or timed-out attempt checkpoints and the job requeues itself;
- `infra/k8s/deepspeed-job.yaml`: an indexed Job, one pod per node running the same launcher
  (`--node-rank=$JOB_COMPLETION_INDEX`); a pod that exits 75 (checkpointed on SIGTERM) or is evicted is
  replaced by the Job (podFailurePolicy) instead of failing it.

Completion is the checkpoint manifest at the target step, the same marker a local run ends with, so
the export stage does not care where training happened. A job that fails is resubmitted by the task's
retries and resumes from its newest complete checkpoint; a job of the same run still queued or running
(the flow process itself was restarted) is followed, never submitted twice.

Templates use `${NAME}` placeholders (string.Template); the values are `template_values()`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex
import string
import subprocess
import tempfile
import time
from pathlib import Path

from common.processes import REPO
from flows import checkpoints, stages
from flows.params import LauncherParams, RunSpec
from flows.results import StageError

DEFAULT_GPUS_PER_NODE = 8  # launcher.num_gpus unset in cluster mode: a whole 8-GPU node (A100/H100 servers)
SIGNAL_MARGIN_S = 60  # Slurm's TERM comes this much before the grace runs out: the batch script's requeue check
POD_MARGIN_S = 30  # the pod's grace beyond the launcher's: the launcher's own exit after SIGKILL-ing its ranks


class Phase(enum.Enum):
    RUNNING = "running"  # queued, running, requeued or held: keep polling
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    GONE = "gone"  # the scheduler no longer knows the job (purged) and keeps no accounting
    UNKNOWN = "unknown"  # the scheduler did not answer (controller down, API hiccup): keep polling


@dataclasses.dataclass(frozen=True)
class JobStatus:
    phase: Phase
    detail: str = ""  # the scheduler's own words (JobState, Reason, conditions) for the log
    restarts: int = 0  # Slurm requeues so far (each one resumed from a checkpoint)
    log: str = ""  # Slurm: the job's output file (StdOut)


@dataclasses.dataclass(frozen=True)
class JobRef:
    kind: str
    name: str
    namespace: str
    slurm_id: str | None = None


# ----------------------------------------------------------------------------- rendering


def ranks_per_node(ln: LauncherParams) -> tuple[int, bool]:
    """(ranks per node, on GPUs?): num_gpus wins; num_procs alone means CPU ranks; neither means a whole GPU node."""
    if ln.num_gpus:
        return ln.num_gpus, True
    if ln.num_procs:
        return ln.num_procs, False
    return DEFAULT_GPUS_PER_NODE, True


def template_values(spec: RunSpec, pack_uri: str, target: int) -> dict[str, str]:
    ln = spec.train.launcher
    c = ln.cluster
    overrides = stages.train_overrides(spec, pack_uri)
    if not spec.train.max_steps:
        overrides.append(f"max_steps={target}")
    train_args = ["pretraining/train.py", "--deepspeed", spec.train.deepspeed_config, "--config", spec.size, *overrides]
    job = f"electra-{spec.run_name}".replace("_", "-").replace(".", "-")[:52]
    procs, gpus = ranks_per_node(ln)
    return {
        "JOB_NAME": job,
        "NAMESPACE": c.namespace,
        "IMAGE": c.image,
        "NUM_NODES": str(ln.num_nodes),
        "PROCS_PER_NODE": str(procs),
        # A partition without GPU GRES rejects any --gpus request, so CPU runs ask for none.
        "SBATCH_GPUS": f"#SBATCH --gpus-per-node={procs}" if gpus else "# CPU ranks (launcher.num_procs): no GPUs",
        "K8S_RESOURCES": f"{{limits: {{nvidia.com/gpu: {procs}}}}}" if gpus else "{}",
        "DS_ACCELERATOR": "cuda" if gpus else "cpu",
        "MASTER_PORT": str(ln.master_port),
        "GRACE_S": str(c.checkpoint_grace_s),
        "SIGNAL_LEAD_S": str(c.checkpoint_grace_s + SIGNAL_MARGIN_S),
        "TERMINATION_GRACE_S": str(c.checkpoint_grace_s + POD_MARGIN_S),
        "TRAIN_ARGS": shlex.join(train_args),
        "RUN_URI": spec.pretrain_uri,
        "TARGET_STEP": str(target),
        "LOG_DIR": str(Path(c.log_dir).resolve()) + "/" if c.log_dir else "",
    }


def render(template_path: str, values: dict[str, str]) -> str:
    path = Path(template_path)
    if not path.is_absolute():
        path = REPO / path
    return string.Template(path.read_text()).substitute(values)


def submit_command(kind: str, rendered_path: str, namespace: str) -> list[str]:
    if kind == "kubernetes":
        return ["kubectl", "apply", "-n", namespace, "-f", rendered_path]
    return ["sbatch", "--parsable", rendered_path]


# ----------------------------------------------------------------------------- job state

# Slurm states that end a job for good; every other one (PENDING, RUNNING, REQUEUED, COMPLETING, SUSPENDED,
# REQUEUE_HOLD, ...) means it may still run.
_SLURM_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
                 "SPECIAL_EXIT", "REVOKED"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _slurm_phase(state: str) -> Phase:
    if state == "COMPLETED":
        return Phase.SUCCEEDED
    return Phase.FAILED if state in _SLURM_FAILED else Phase.RUNNING


def slurm_status(job_id: str) -> JobStatus:
    """From slurmctld (`scontrol show job`), which needs no accounting; `sacct` only once the job is purged."""
    out = _run(["scontrol", "show", "job", "-o", job_id])
    if out.returncode == 0 and "JobState=" in out.stdout:
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
        state = fields.get("JobState", "")
        detail = state + (f" ({fields['Reason']})" if fields.get("Reason", "None") != "None" else "")
        return JobStatus(_slurm_phase(state), detail, int(fields.get("Restarts", 0) or 0), fields.get("StdOut", ""))
    if "invalid job id" not in (out.stderr + out.stdout).lower():
        return JobStatus(Phase.UNKNOWN, (out.stderr or out.stdout).strip())
    # Purged from slurmctld's memory (MinJobAge after it ended): accounting, where there is any.
    acct = _run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"])
    states = acct.stdout.split()
    if acct.returncode != 0 or not states:
        return JobStatus(Phase.GONE, (acct.stderr or "no sacct record").strip())
    state = states[0].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return JobStatus(_slurm_phase(state), state)


def kubernetes_status(job: str, namespace: str) -> JobStatus:
    """From the Job's conditions: Complete or Failed; pods replaced under podFailurePolicy do not fail it."""
    out = _run(["kubectl", "get", "job", job, "-n", namespace, "-o", "json"])
    if out.returncode != 0:
        phase = Phase.GONE if "notfound" in out.stderr.replace(" ", "").lower() else Phase.UNKNOWN
        return JobStatus(phase, out.stderr.strip())
    status = json.loads(out.stdout).get("status", {})
    true = [c["type"] for c in status.get("conditions", []) if c.get("status") == "True"]
    detail = f"active {status.get('active', 0)}, succeeded {status.get('succeeded', 0)}, " \
             f"failed {status.get('failed', 0)}" + (f", {'/'.join(true)}" if true else "")
    if "Failed" in true:
        return JobStatus(Phase.FAILED, detail)
    if "Complete" in true:
        return JobStatus(Phase.SUCCEEDED, detail)
    return JobStatus(Phase.RUNNING, detail)


def job_status(ref: JobRef) -> JobStatus:
    if ref.kind == "kubernetes":
        return kubernetes_status(ref.name, ref.namespace)
    return slurm_status(str(ref.slurm_id))


def active_job(kind: str, job: str, namespace: str) -> JobRef | None:
    """A job of this run that is still queued or running (the flow was restarted while it ran): follow it."""
    if kind == "kubernetes":
        ref = JobRef(kind, job, namespace)
        return ref if kubernetes_status(job, namespace).phase is Phase.RUNNING else None
    out = _run(["squeue", "-h", "--me", "--name", job, "-o", "%i"])
    ids = out.stdout.split() if out.returncode == 0 else []
    return JobRef(kind, job, namespace, ids[0]) if ids else None


def submit(spec: RunSpec, values: dict[str, str], logger) -> JobRef:
    c = spec.train.launcher.cluster
    with tempfile.NamedTemporaryFile("w", suffix=Path(c.template).suffix, delete=False) as f:
        f.write(render(c.template, values))
    cmd = submit_command(c.kind, f.name, c.namespace)
    if c.kind == "kubernetes":
        # A Job's pod template is immutable: a resubmission (the task's retry) replaces the ended Job.
        _run(["kubectl", "delete", "job", values["JOB_NAME"], "-n", c.namespace, "--ignore-not-found"])
    logger.info("submitting: %s", " ".join(cmd))
    try:
        out = _run(cmd)
    finally:
        Path(f.name).unlink()  # sbatch and kubectl have read it; the job does not need the file
    if out.returncode != 0:
        raise StageError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    slurm_id = out.stdout.strip().split(";")[0] if c.kind == "slurm" else None
    return JobRef(c.kind, values["JOB_NAME"], c.namespace, slurm_id)


def run_job(spec: RunSpec, pack_uri: str, target: int, logger) -> JobRef:
    """Submit the run's job (or follow the one already queued) until the checkpoint of `target` is complete."""
    c = spec.train.launcher.cluster
    values = template_values(spec, pack_uri, target)
    ref = active_job(c.kind, values["JOB_NAME"], c.namespace)
    if ref:
        logger.info("cluster job %s (%s) of this run is already queued or running: following it instead of "
                    "submitting another", ref.name, ref.slurm_id or c.namespace)
    else:
        ref = submit(spec, values, logger)
    label = f"{ref.name} ({ref.slurm_id})" if ref.slurm_id else ref.name
    last, log_shown = None, False
    while True:
        time.sleep(c.poll_seconds)
        status = job_status(ref)  # before the checkpoints: a job seen ended has written its last one already
        step = checkpoints.latest_step(spec.pretrain_uri)
        if (status, step) != last:  # one line per change, not per poll
            logger.info("cluster job %s: %s%s, newest complete checkpoint step %d of %d", label, status.detail or
                        status.phase.value, f", requeued {status.restarts}x" if status.restarts else "", step, target)
            last = (status, step)
        if status.log and not log_shown:
            logger.info("cluster job %s writes its log to %s", label, status.log)
            log_shown = True
        if step >= target:
            return ref
        if status.phase is Phase.FAILED:
            raise StageError(f"cluster job {label} failed ({status.detail}) at step {step}; "
                             "the retry resumes from it")
        if status.phase is Phase.SUCCEEDED:
            raise StageError(f"cluster job {label} finished without a checkpoint at step {target}")
        if status.phase is Phase.GONE:
            raise StageError(f"cluster job {label} is no longer known to the scheduler ({status.detail}) "
                             f"and the run stopped at step {step}; the retry resumes from it")
