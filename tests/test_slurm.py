"""Multi-node pretraining on a real Slurm: two slurmd on this host, the second with a private /tmp.

The cluster (tests/slurm_cluster.py: Debian's slurm-wlm 22.05 and munge, accounting off) runs jobs
rendered by `flows.cluster` from `infra/slurm/pretrain.sbatch`: a tiny 2-rank ZeRO-3 run on CPU, one rank
per node, pack and run in the session's SeaweedFS S3. The runs train with the reference recipe, so their
losses are compared step by step with the uninterrupted 2-rank run of DeepSpeed's launcher (`reference`,
conftest.py). Skips, with the reason, where slurmctld/slurmd/munge are not installed or a private /tmp
cannot be made (.ci/run installs them when it runs as root with apt-get).

    .venv/bin/python -m pytest tests/test_slurm.py -m slurm
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from slurm_cluster import LocalSlurm, SlurmUnavailable, check_available
from train_support import RECIPE, REPO, STEPS, free_port

from common import manifest as manifests
from common import storage
from flows import cluster
from flows.params import ClusterParams, LauncherParams, RunSpec, TrainParams
from pretraining import checkpoint as ckpt
from pretraining.metrics import read_losses

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.integration]

# What the jobs' processes inherit through sbatch (it exports the submitter's environment): the reference
# run's thread settings, so the losses can match to the last digit, and where the checkout is.
JOB_ENV = {"ELECTRA_FORGE_HOME": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def slurm_cluster(s3_server):
    try:
        check_available()
    except SlurmUnavailable as exc:
        pytest.skip(f"no local Slurm: {exc}")
    # Not under /tmp: the second node has its own /tmp and must still see the cluster's files.
    base = Path(tempfile.mkdtemp(prefix="electra-slurm-", dir="/var/tmp"))
    local = LocalSlurm(base)
    leftovers: list[str] = []
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the `monkeypatch` fixture is per test
        for k, v in {**local.env(), **JOB_ENV}.items():
            mp.setenv(k, v)
        try:
            local.start()
            _check_private_tmp(local)
            yield local
        finally:
            leftovers = local.stop()
            if not leftovers:
                shutil.rmtree(base, ignore_errors=True)
    assert leftovers == [], f"still running after the cluster stopped (killed now): {leftovers}"


@pytest.fixture
def slurm(slurm_cluster):
    """The module's cluster, with no job left behind by a test (a failed one would hold both nodes for the next)."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


def _check_private_tmp(local: LocalSlurm) -> None:
    """node2 is a separate machine as far as /tmp goes: a file this host writes there is not on node2."""
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="electra-slurm-probe-") as probe:
        out = local.run("srun", "-N2", "--ntasks-per-node=1", "-l", "sh", "-c",
                        f'test -e {probe.name} && echo "$SLURMD_NODENAME shared" || echo "$SLURMD_NODENAME private"')
    assert sorted(line.split(": ", 1)[1] for line in out.stdout.splitlines()) == ["node1 shared", "node2 private"]


def _spec(root: str, name: str, log_dir: Path, *extra: str, steps: int = STEPS) -> RunSpec:
    return RunSpec(size="tiny", run_name=name, storage_root=root, train=TrainParams(
        deepspeed_config="ds_configs/cpu.json", max_steps=steps, overrides=[*RECIPE, *extra],
        launcher=LauncherParams(mode="cluster", num_nodes=2, num_procs=1, master_port=free_port(),
                                cluster=ClusterParams(kind="slurm", template="infra/slurm/pretrain.sbatch",
                                                      poll_seconds=2, log_dir=str(log_dir)))))


def _pack(real_pack: dict, bucket: str) -> str:
    pack = f"{bucket}/pack"
    if not manifests.exists(pack):
        storage.upload_dir(real_pack["pack"], pack)
    return pack


def _wait_done(job_id: str, timeout: float = 180) -> cluster.JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.slurm_status(job_id)
        if status.phase is not cluster.Phase.RUNNING or time.monotonic() > deadline:
            return status
        time.sleep(1)


def _losses(run: str, tmp_path: Path) -> dict:
    local = tmp_path / "metrics.jsonl"
    storage.download_file(f"{run}/metrics.jsonl", str(local))
    return read_losses(str(local))


def _assert_two_nodes_one_rank_each(log: str, run: str, steps: int) -> None:
    assert "node 0 of 2 (node1): ranks 0..0 of 2" in log and "node 1 of 2 (node2): ranks 1..1 of 2" in log, log[-4000:]
    info = json.loads(storage.read_text(f"{run}/run_info.json"))
    assert info["world_size"] == 2 and info["zero_stage"] == 3
    uri, m = ckpt.latest_complete(run, mode="sha256")  # every file present and matching its hash
    assert m["step"] == steps and m["world_size"] == 2
    assert {f["path"] for f in m["shards"]} == {f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt"
                                                for r in (0, 1) for k in ("model", "optim")}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logger(name: str) -> tuple[logging.Logger, _Records]:
    logger, records = logging.getLogger(f"test_slurm.{name}"), _Records()
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    return logger, records


def test_scancel_term_checkpoints_requeues_and_resumes_to_the_same_losses(slurm, reference, real_pack, s3_bucket,
                                                                          tmp_path):
    """`scancel --signal=TERM` mid-run: the ranks checkpoint, the job requeues itself (Restarts 1), the next
    attempt resumes from that checkpoint and finishes with world size 2, one rank per node and complete
    checkpoints; the log keeps both attempts; flows.cluster follows the job through the requeue without
    accounting and without failing; the losses, before and after the requeue, are the uninterrupted run's."""
    staging = tmp_path / "staging"  # node1 is this host: rank 0's metrics appear here as it trains
    # No periodic checkpoint before the end: the requeued attempt can only resume from the signal's.
    spec = _spec(s3_bucket, "preempted", tmp_path, "checkpoint.every_steps=100", f"checkpoint.staging={staging}")
    logger, records = _logger("preempted")
    outcome: dict = {}

    def follow() -> None:
        try:
            outcome["ref"] = cluster.run_job(spec, _pack(real_pack, s3_bucket), STEPS, logger)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    assert slurm.run("sacct", check=False).stderr.strip() == "Slurm accounting storage is disabled"
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    job_id = _wait_for_step(slurm, "electra-preempted", staging / "metrics.jsonl", 5, follower)
    slurm.run("scancel", "--signal=TERM", job_id)
    follower.join(timeout=900)
    assert not follower.is_alive() and "error" not in outcome, outcome
    status = _wait_done(job_id)
    log = Path(status.log).read_text()
    assert status.phase is cluster.Phase.SUCCEEDED and status.restarts >= 1, (status, log[-6000:])
    assert f"attempt 1 of job {job_id}" in log and f"attempt 2 of job {job_id}" in log  # the first attempt's log
    stopped = int(re.search(r"stopped by signal after step (\d+); checkpoint saved", log).group(1))
    assert 5 <= stopped < STEPS
    assert f"at step {stopped} of {STEPS}, checkpointed: requeueing job {job_id}" in log
    assert f"resumed from {spec.pretrain_uri}/checkpoints/{ckpt.tag(stopped)}" in log
    assert any("requeued 1x" in r for r in records.lines), records.lines
    _assert_two_nodes_one_rank_each(log, spec.pretrain_uri, STEPS)
    losses = _losses(spec.pretrain_uri, tmp_path)
    for step in range(1, STEPS + 1):
        assert losses[step]["loss"] == pytest.approx(reference["losses"][step]["loss"], abs=1e-6), step


def _wait_for_step(slurm: LocalSlurm, name: str, metrics: Path, step: int, follower: threading.Thread,
                   timeout: float = 600) -> str:
    """The job's id once rank 0 has logged `step`."""
    deadline = time.monotonic() + timeout
    job_id = ""
    while time.monotonic() < deadline:
        assert follower.is_alive(), "flows.cluster.run_job ended before the job was signalled"
        job_id = job_id or slurm.run("squeue", "-h", "--name", name, "-o", "%i").stdout.strip()
        if job_id and metrics.exists():
            done = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.strip()]
            if done and max(done) >= step:
                return job_id
        time.sleep(0.3)
    raise AssertionError(f"job {job_id or name} did not reach step {step} in {timeout:.0f}s")


def test_flow_cluster_mode_runs_the_slurm_job_on_a_prefect_server(slurm, s3_server, s3_bucket, tmp_path_factory):
    """The electra-demo deployment (prefect.yaml) on a real Prefect server and process worker, with
    train.launcher.mode=cluster on this Slurm: clean, tokenizer and pack run in the flow; pretraining is the
    2-node Slurm job the flow submits and follows; export reads its last checkpoint."""
    import yaml

    from flows import demo
    from flows.localstack import LocalStack

    base = tmp_path_factory.mktemp("slurm-flow")
    corpus = base / "corpus"
    subprocess.run([sys.executable, "-m", "pipelines.local_corpus", "--output", str(corpus), "--max-mb", "6",
                    "--format", "warc", "--file-mb", "3"], check=True, cwd=str(REPO))
    storage.upload_dir(str(corpus), f"{s3_bucket}/corpus")
    stack = LocalStack(base / "stack", s3_port=0, api_port=0, external_s3=s3_server.settings.to_env())
    try:
        stack.start()  # its worker inherits this process's environment: SLURM_CONF, ELECTRA_FORGE_HOME
        stack.deploy("electra-demo")
        dep = next(d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == "electra-demo")
        params = json.loads(json.dumps(dep["parameters"]))
        steps = 8
        params.update(run_name="slurm-flow", storage_root=s3_bucket,
                      corpus={"inputs": [f"{s3_bucket}/corpus/*.warc.gz"], "format": "warc"},
                      evaluation={"enabled": False}, publish={"enabled": False})
        params["train"].update(max_steps=steps, overrides=[
            "data.train_batch=8", "data.micro_batch=4", "checkpoint.every_steps=4", "logging.every_steps=2"],
            launcher={"mode": "cluster", "num_nodes": 2, "num_procs": 1, "master_port": free_port(),
                      "cluster": {"kind": "slurm", "template": "infra/slurm/pretrain.sbatch", "poll_seconds": 2,
                                  "log_dir": str(base)}})
        run_id = demo.start_run(stack, params)
        final = demo.watch(stack, run_id, 1200)
        worker_log = (stack.base / "worker.log").read_text()
        assert final == "Completed", (final, worker_log[-6000:])
    finally:
        stack.stop()
    summary = json.loads(storage.read_text(f"{s3_bucket}/slurm-flow/_flow/summary.json"))
    st = summary["stages"]
    assert not any(v["skipped"] for v in st.values() if v)
    assert manifests.read(st["checkpoint"]["output"], kind="checkpoint")["step"] == steps
    assert manifests.read(st["model"]["output"], kind="model")["step"] == steps
    assert "submitting: sbatch --parsable" in worker_log
    job_id = re.search(r"cluster job electra-slurm-flow \((\d+)\)", worker_log).group(1)
    job_log = next(base.glob(f"electra-slurm-flow-{job_id}.out")).read_text()
    _assert_two_nodes_one_rank_each(job_log, f"{s3_bucket}/slurm-flow/pretrain", steps)
    assert f"cluster job electra-slurm-flow ({job_id}): RUNNING" in worker_log  # followed with scontrol, no sacct
    assert _wait_done(job_id).phase is cluster.Phase.SUCCEEDED
