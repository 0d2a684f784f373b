"""The Slurm side of flows.cluster without a cluster: what the template renders to, what the batch script does
after srun (requeue or not), and how job states are read, with stand-in scontrol/srun/sacct/squeue on PATH.

The same script and code run on a real 2-node Slurm in tests/test_slurm.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from common import manifest as manifests
from common import storage
from flows import cluster
from flows.params import ClusterParams, LauncherParams, RunSpec, TrainParams
from pretraining import checkpoint as ckpt

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = "infra/slurm/pretrain.sbatch"


def _spec(root: Path, **launcher) -> RunSpec:
    ln = {"mode": "cluster", "num_nodes": 2, "cluster": ClusterParams(kind="slurm", template=TEMPLATE, poll_seconds=1)}
    return RunSpec(size="tiny", run_name="r1", storage_root=str(root),
                   train=TrainParams(deepspeed_config="ds_configs/cpu.json", max_steps=10,
                                     launcher=LauncherParams(**(ln | launcher))))


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/bash\n" + body)
    (bin_dir / name).chmod(0o755)


def _checkpoint(run: str, step: int) -> None:
    d = storage.join(run, "checkpoints", ckpt.tag(step))
    storage.write_text(storage.join(d, "zero_pp_rank_0_mp_rank_00_model_states.pt"), "w")
    manifests.write(d, manifests.build("checkpoint", inputs=[], config={}, step=step, tokens_seen=step * 64, shards=[
        {"path": "zero_pp_rank_0_mp_rank_00_model_states.pt", "bytes": 1, "sha256": "x"}]))


# ----------------------------------------------------------------------------- rendering


def test_cpu_run_asks_for_no_gpus_and_runs_num_procs_ranks(tmp_path):
    values = cluster.template_values(_spec(tmp_path, num_procs=3), "s3://b/pack", 10)
    text = cluster.render(TEMPLATE, values)
    assert "--gpus" not in text.replace("# CPU ranks (launcher.num_procs): no GPUs", "")
    assert "--nproc-per-node=3" in text and "DS_ACCELERATOR=cpu" in text
    assert "TARGET_STEP=10" in text and f'RUN_URI="{tmp_path}/r1/pretrain"' in text
    assert values["K8S_RESOURCES"] == "{}"


def test_gpu_defaults_to_a_whole_node_and_grace_sets_the_signal_lead(tmp_path):
    spec = _spec(tmp_path, cluster=ClusterParams(kind="slurm", template=TEMPLATE, checkpoint_grace_s=300,
                                                 log_dir=str(tmp_path / "logs")))
    text = cluster.render(TEMPLATE, cluster.template_values(spec, "p", 10))
    assert "#SBATCH --gpus-per-node=8" in text and "--nproc-per-node=8" in text
    assert f"#SBATCH --signal=TERM@{300 + cluster.SIGNAL_MARGIN_S}" in text and "--grace-s=300" in text
    assert f"#SBATCH --output={tmp_path}/logs/%x-%j.out" in text


# ----------------------------------------------------------------------------- the batch script after srun


def _run_script(tmp_path: Path, *, srun_step: int | None, srun_rc: int, home: Path = REPO,
                restarts: int | None = None) -> tuple[subprocess.CompletedProcess, str, str]:
    """Render the template for a 2-node CPU run (target step 10) and run it with stand-ins for srun and scontrol:
    srun writes a checkpoint of `srun_step` (if any) into the run and exits `srun_rc`."""
    spec = _spec(tmp_path / "store", num_procs=1)
    script = tmp_path / "job.sbatch"
    script.write_text(cluster.render(TEMPLATE, cluster.template_values(spec, "s3://b/pack", 10)))
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    _fake(bin_dir, "scontrol", f'echo "scontrol $*" >> {calls}\n'
                               'case "$1 $2" in\n'
                               '  "show hostnames") printf "node1\\nnode2\\n";;\n'
                               '  "show node") echo "NodeName=node1 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=n1";;\n'
                               'esac\n')
    _fake(bin_dir, "srun", f'printf "srun %s\\n" "$*" >> {calls}\n'
                           f'{"" if srun_step is None else f"cp -r {tmp_path}/ready/* {spec.pretrain_uri}/checkpoints/"}'
                           f'\nexit {srun_rc}\n')
    if srun_step is not None:
        _checkpoint(str(tmp_path / "ready-run"), srun_step)
        (tmp_path / "ready").mkdir()
        os.rename(tmp_path / "ready-run" / "checkpoints" / ckpt.tag(srun_step), tmp_path / "ready" / ckpt.tag(srun_step))
        Path(spec.pretrain_uri, "checkpoints").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ELECTRA_PYTHON", "SLURM_RESTART_COUNT")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", ELECTRA_FORGE_HOME=str(home), SLURM_JOB_ID="42",
               SLURM_JOB_NODELIST="node[1-2]", SLURM_NNODES="2")
    if restarts is not None:
        env["SLURM_RESTART_COUNT"] = str(restarts)
    out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return out, calls.read_text() if calls.exists() else "", spec.pretrain_uri


def test_a_checkpointed_attempt_short_of_the_target_requeues_the_job(tmp_path):
    out, calls, run = _run_script(tmp_path, srun_step=5, srun_rc=75, restarts=2)
    assert out.returncode == 0, out.stderr
    assert "scontrol requeue 42" in calls
    assert "attempt 3 of job 42 on node[1-2], master 10.1.2.3: step 0 of 10 done" in out.stdout
    assert "srun exited 75 at step 5 of 10, checkpointed: requeueing job 42 to resume" in out.stdout
    srun = next(line for line in calls.splitlines() if line.startswith("srun "))
    assert srun.startswith("srun --kill-on-bad-exit=1 bash -c exec \"$0\" pretraining/launch.py "
                           "--node-rank=\"$SLURM_NODEID\" \"$@\" " + str(REPO / ".venv" / "bin" / "python"))
    assert "--nnodes=2 --nproc-per-node=1 --master-addr=10.1.2.3" in srun
    assert f"pretraining/train.py --deepspeed ds_configs/cpu.json --config tiny data.pack=s3://b/pack run={run}" in srun


def test_the_target_checkpoint_ends_the_job_even_if_srun_was_killed_after_it(tmp_path):
    out, calls, _ = _run_script(tmp_path, srun_step=10, srun_rc=137)
    assert out.returncode == 0, out.stderr
    assert "requeue" not in calls and "the checkpoint of step 10 is complete: done" in out.stdout


def test_no_progress_is_a_failure_not_a_requeue(tmp_path):
    out, calls, _ = _run_script(tmp_path, srun_step=None, srun_rc=1)
    assert out.returncode == 1 and "requeue" not in calls
    assert "srun exited 1 and the newest complete checkpoint is still step 0: not requeued" in out.stderr


def test_without_the_project_python_the_job_stops_with_one_line(tmp_path):
    home = tmp_path / "checkout-without-venv"
    home.mkdir()
    out, calls, _ = _run_script(tmp_path, srun_step=None, srun_rc=0, home=home)
    assert out.returncode == 2 and "srun" not in calls
    assert out.stderr.strip().splitlines()[-1].startswith("pretrain.sbatch: no Python with electra-forge")


# ----------------------------------------------------------------------------- job state


@pytest.fixture
def slurm_bin(tmp_path, monkeypatch):
    """Stand-ins answering from files: scontrol.out/.err/.rc, sacct.out/.err/.rc, squeue.out."""
    bin_dir = tmp_path / "bin"
    for tool in ("scontrol", "sacct", "squeue"):
        _fake(bin_dir, tool, f'cat {tmp_path}/{tool}.out 2>/dev/null; cat {tmp_path}/{tool}.err >&2 2>/dev/null\n'
                             f'exit $(cat {tmp_path}/{tool}.rc 2>/dev/null || echo 0)\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def answer(tool: str, out: str = "", err: str = "", rc: int = 0) -> None:
        for ext, v in (("out", out), ("err", err), ("rc", str(rc))):
            (tmp_path / f"{tool}.{ext}").write_text(v)
    return answer


@pytest.mark.parametrize("state, phase", [
    ("PENDING Reason=BeginTime", cluster.Phase.RUNNING), ("RUNNING Reason=None", cluster.Phase.RUNNING),
    ("REQUEUED Reason=None", cluster.Phase.RUNNING), ("COMPLETING Reason=None", cluster.Phase.RUNNING),
    ("COMPLETED Reason=None", cluster.Phase.SUCCEEDED), ("FAILED Reason=NonZeroExitCode", cluster.Phase.FAILED),
    ("TIMEOUT Reason=TimeLimit", cluster.Phase.FAILED), ("CANCELLED Reason=None", cluster.Phase.FAILED)])
def test_state_from_scontrol_without_accounting(slurm_bin, state, phase):
    slurm_bin("scontrol", f"JobId=7 JobName=electra-r1 JobState={state} Dependency=(null) Requeue=1 Restarts=2 "
                          "StdOut=/shared/logs/electra-r1-7.out\n")
    slurm_bin("sacct", err="Slurm accounting storage is disabled\n", rc=1)
    got = cluster.slurm_status("7")
    assert got.phase is phase and got.restarts == 2 and got.log == "/shared/logs/electra-r1-7.out"
    assert got.detail.split()[0] == state.split()[0]


def test_a_purged_job_falls_back_to_sacct_or_is_gone(slurm_bin):
    slurm_bin("scontrol", err="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    slurm_bin("sacct", "COMPLETED\n")
    assert cluster.slurm_status("7").phase is cluster.Phase.SUCCEEDED
    slurm_bin("sacct", "CANCELLED by 0\n")
    assert cluster.slurm_status("7").phase is cluster.Phase.FAILED
    slurm_bin("sacct", err="Slurm accounting storage is disabled\n", rc=1)
    assert cluster.slurm_status("7").phase is cluster.Phase.GONE


def test_an_unreachable_controller_is_not_a_failure(slurm_bin):
    slurm_bin("scontrol", err="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", rc=1)
    assert cluster.slurm_status("7").phase is cluster.Phase.UNKNOWN


def test_run_job_follows_a_queued_job_of_the_run_instead_of_submitting(slurm_bin, tmp_path, monkeypatch):
    _fake(tmp_path / "bin", "sbatch", f"touch {tmp_path}/submitted; echo 99\n")
    slurm_bin("squeue", "7\n")
    slurm_bin("scontrol", "JobId=7 JobState=PENDING Reason=BeginTime Restarts=1 StdOut=/x\n")
    spec = _spec(tmp_path / "store", num_procs=1)
    _checkpoint(spec.pretrain_uri, 10)
    ref = cluster.run_job(spec, "p", 10, logging.getLogger("test"))
    assert ref.slurm_id == "7" and not (tmp_path / "submitted").exists()


def test_run_job_fails_when_the_job_fails_short_of_the_target(slurm_bin, tmp_path):
    _fake(tmp_path / "bin", "sbatch", "echo 99\n")
    slurm_bin("squeue", "")
    slurm_bin("scontrol", "JobId=99 JobState=FAILED Reason=NonZeroExitCode Restarts=0 StdOut=/x\n")
    spec = _spec(tmp_path / "store", num_procs=1)
    _checkpoint(spec.pretrain_uri, 4)
    with pytest.raises(Exception, match=r"electra-r1 \(99\) failed \(FAILED \(NonZeroExitCode\)\) at step 4"):
        cluster.run_job(spec, "p", 10, logging.getLogger("test"))
