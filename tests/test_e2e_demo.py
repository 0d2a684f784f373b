"""End to end: the `electra-demo` deployment on a real Prefect server, a process worker and SeaweedFS.

The test starts a Prefect server (temporary PREFECT_HOME, SQLite, free port) and a process
worker with flows.localstack, uses the session's SeaweedFS fixture as the object store,
deploys `electra-demo` from prefect.yaml with `prefect deploy`, and runs it with
`prefect deployment run`, with the deployment's own parameters (only the run name and the
step count changed). It checks every stage's output, then runs it again and checks that
every stage is reused. The slow test kills the flow run mid-pretraining and reruns it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from common import manifest as manifests
from common import storage
from flows import demo, lineage
from flows.localstack import REPO, LocalStack

pytestmark = pytest.mark.integration


def demo_parameters() -> dict:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    dep = next(d for d in spec["deployments"] if d["name"] == "electra-demo")
    return json.loads(json.dumps(dep["parameters"]))


@pytest.fixture(scope="module")
def stack(s3_server, tmp_path_factory):
    s3_env = s3_server.settings.to_env()
    st = LocalStack(tmp_path_factory.mktemp("stack"), s3_port=0, api_port=0, external_s3=s3_env)
    try:
        st.start()
        demo.prepare_inputs(st, corpus_mb=15)
        st.deploy("electra-demo")
        yield st
    finally:
        _kill_flow_runs(st)
        st.stop()


def _flow_run_pids(st: LocalStack) -> list[int]:
    """The worker's children: the flow-run processes it started."""
    worker = int((st.base / "worker.pid").read_text())
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == worker:
                out.append(int(d.name))
    return out


def _trainers(marker: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "train.py" in cmd and marker in cmd:
                out.append(int(d.name))
    return out


def _kill_flow_runs(st: LocalStack) -> None:
    try:
        for pid in _flow_run_pids(st):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _run(st: LocalStack, params: dict, timeout: float = 1500, deployment: str = demo.DEPLOYMENT,
         summary: str = "summary") -> tuple[str, dict]:
    run_id = demo.start_run(st, params, deployment)
    final = demo.watch(st, run_id, timeout)
    assert final == "Completed", (final, (st.base / "worker.log").read_text()[-5000:])
    got = json.loads(storage.read_text(f"{demo.BUCKET}/{params['run_name']}/_flow/{summary}.json"))
    return run_id, got


def test_demo_deployment_end_to_end_then_reused(stack):
    params = demo_parameters()
    params["run_name"] = "e2e"
    params["train"]["max_steps"] = 60
    t0 = time.monotonic()
    run_id, summary = _run(stack, params)
    first_s = time.monotonic() - t0
    st = {k: v for k, v in summary["stages"].items()}
    assert not any(v["skipped"] for v in st.values())

    docs = manifests.read(st["documents"]["output"], kind="documents")
    c = docs["counters"]
    assert c["kept"] > 50
    assert c["records_read"] == c["kept"] + sum(c["dropped"].values()) + sum(c["rejected"].values())
    assert storage.exists(storage.join(st["documents"]["output"], "stats.json"))
    tok = manifests.read(st["tokenizer"]["output"], kind="tokenizer")
    assert storage.exists(storage.join(st["tokenizer"]["output"], "spm.model"))
    pack = manifests.read(st["pack"]["output"], kind="pack")
    assert pack["seq_len"] == 128 and sum(s["examples"] for s in pack["shards"]) > 100
    assert {i["manifest_hash"] for i in pack["inputs"]} == {docs["manifest_hash"], tok["manifest_hash"]}
    ck = manifests.read(st["checkpoint"]["output"], kind="checkpoint")
    assert ck["step"] == 60 and ck["tokens_seen"] > 0
    model_uri = st["model"]["output"]
    model = manifests.read(model_uri, kind="model")
    assert storage.basename(model_uri) == "step-000000060"
    for sub in ("discriminator", "generator"):
        assert storage.exists(storage.join(model_uri, sub, "config.json"))
    report_uri = st["report"]["output"]
    report = manifests.read(report_uri, kind="report")
    assert model["manifest_hash"] in {i["manifest_hash"] for i in report["inputs"]}
    for f in ("results.json", "report.md", "report.html"):
        assert storage.exists(storage.join(report_uri, f)), f
    results = json.loads(storage.read_text(storage.join(report_uri, "results.json")))
    assert {"sst2", "mrpc", "squad_v1"} <= {t["task"] for t in results["tasks"].values()}

    pub = st["published"]["output"]
    assert pub == f"{demo.BUCKET}/models/electra-tiny-demo/step-000000060"
    card = storage.read_text(storage.join(pub, "README.md"))
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {r["dataset"].get("config") for r in meta["model-index"][0]["results"]} >= {"sst2", "mrpc"}
    assert meta["lineage"]["steps"] == 60
    assert meta["lineage"]["documents"][0]["manifest_hash"] == docs["manifest_hash"]
    published = manifests.read(pub, kind="model")
    assert {i["uri"] for i in published["inputs"]} == {model_uri, report_uri}
    node = lineage.walk(pub)
    kinds = {n.kind for n in node.iter()}
    assert {"model", "report", "checkpoint", "pack", "tokenizer", "documents", "input"} <= kinds
    assert not any(n.status == "mismatch" for n in node.iter())

    # Pretraining on CPU left nothing in /dev/shm (entries named by this run's master port; other runs on the
    # machine use other ports).
    ports = set(re.findall(r"--master_port (\d+)", (stack.base / "worker.log").read_text()))
    assert ports and not [p for port in ports for p in Path("/dev/shm").glob(f"deepspeed_*_{port}_*")]

    # The exported discriminator is a real HF model.
    from transformers import AutoModel, AutoTokenizer

    with storage.local_copy(storage.join(model_uri, "discriminator")) as d:
        enc = AutoTokenizer.from_pretrained(d)("ELECTRA reads the web.", return_tensors="pt")
        assert AutoModel.from_pretrained(d)(**enc).last_hidden_state.shape[-1] == 64

    # Each stage's counters and results are Prefect artifacts on the server.
    from prefect.artifacts import Artifact
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        for key in ("e2e-clean", "e2e-clean-counters", "e2e-pack-counters", "e2e-pretrain", "e2e-scores",
                    "e2e-summary", "e2e-pretrain-health"):
            assert Artifact.get(key) is not None, key
        assert "kept" in json.dumps(Artifact.get("e2e-clean-counters").data)
        # The trainer's held-out validation at its checkpoints (every 50 steps and the last), read from S3.
        validation = json.loads(Artifact.get("e2e-pretrain-validation").data)
        assert [r["step"] for r in validation] == [50, 60] and all(0 <= r["disc_auc"] <= 1 for r in validation)
        assert validation[-1]["disc_auc"] > validation[0]["disc_auc"], validation  # the run is still learning

    # Second run of the same deployment: every stage reused, the same outputs.
    t1 = time.monotonic()
    _, again = _run(stack, params)
    assert all(v["skipped"] for v in again["stages"].values()), again
    assert {k: v["output"] for k, v in again["stages"].items()} == {k: v["output"] for k, v in st.items()}
    print(f"first run {first_s:.0f}s, rerun {time.monotonic() - t1:.0f}s")

    # The scheduled report deployment (moved onto the local pool) finds nothing newer: it reuses the report.
    stack.deploy("glue-squad-report", pool="local-process")
    report_params = {"storage_root": params["storage_root"], "run_name": "e2e", "size": "tiny",
                     "evaluation": params["evaluation"], "publish": params["publish"]}
    _, rep = _run(stack, report_params, deployment="glue-squad-report/glue-squad-report", summary="report-summary")
    assert rep["stages"]["report"]["output"] == report_uri and rep["stages"]["report"]["skipped"]
    assert rep["stages"]["published"]["output"] == pub

    # No credential in anything the runs wrote: the Prefect database and logs, every object (manifests, rejects,
    # checkpoints, model card, metrics), decompressed where compressed. Only the stack's env file holds it: with
    # an external store (this fixture) it is the credentials file `source` reads, so it is private.
    import stat

    from secret_search import where_secret_is

    secret = stack.external_s3["AWS_SECRET_ACCESS_KEY"].encode()
    env_file = stack.base / "env"
    assert list(stack.prefect_home.glob("prefect.db*")) and (stack.base / "worker.log").exists()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    files = [p for p in stack.base.rglob("*") if p != env_file]
    assert where_secret_is(secret, {}, files, storage.list_files(demo.BUCKET + "/")) == []


@pytest.mark.slow
def test_killed_mid_pretraining_resumes_and_skips_finished_stages(stack):
    params = demo_parameters()
    params["run_name"] = "e2e-kill"
    params["train"]["max_steps"] = 80
    overrides = params["train"]["overrides"]
    params["train"]["overrides"] = [o for o in overrides if not o.startswith("checkpoint.every_steps")]
    params["train"]["overrides"].append("checkpoint.every_steps=20")
    params["evaluation"]["enabled"] = False
    ck_root = f"{demo.BUCKET}/e2e-kill/pretrain/checkpoints"
    run_id = demo.start_run(stack, params)
    deadline = time.monotonic() + 1200
    from pretraining import checkpoint

    while True:  # wait for the first complete checkpoint, then kill the flow run's process
        got = checkpoint.latest_complete(ck_root, mode="size")
        if got:
            break
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(2)
    killed_at = got[1]["step"]
    pids = _flow_run_pids(stack)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    final = demo.watch(stack, run_id, 300)
    assert final in ("Crashed", "Failed"), final
    # The launcher tree died with the flow process (flows/supervise.py): nothing else trains into this run.
    deadline = time.monotonic() + 90
    while _trainers("run=s3://electra-demo/e2e-kill/pretrain") and time.monotonic() < deadline:
        time.sleep(1)
    assert not _trainers("run=s3://electra-demo/e2e-kill/pretrain")
    newest = checkpoint.latest_complete(ck_root, mode="size")[1]["step"]
    assert newest < 80, "the run finished before it was killed: nothing to resume"

    log_mark = (stack.base / "worker.log").stat().st_size
    _, summary = _run(stack, params)
    st = summary["stages"]
    assert st["documents"]["skipped"] and st["tokenizer"]["skipped"] and st["pack"]["skipped"]
    assert not st["checkpoint"]["skipped"]
    assert manifests.read(st["checkpoint"]["output"])["step"] == 80
    with open(stack.base / "worker.log", "rb") as f:
        f.seek(log_mark)
        rerun_log = f.read().decode(errors="replace")
    assert f"resuming from {ck_root}/step-{newest:09d}" in rerun_log, rerun_log[-3000:]
    assert "starting from step 0" not in rerun_log
    assert killed_at <= newest


REPORT_DEPLOYMENT = "glue-squad-report/glue-squad-report"


def _flow_state(st: LocalStack, run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: st.api_url}), get_client(sync_client=True) as client:
        fr = client.read_flow_run(run_id)
        return fr.state.name if fr.state else "?"


def _task_states(st: LocalStack, run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: st.api_url}), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        return {tr.name.rsplit("-", 1)[0]: (tr.state.name if tr.state else "?") for tr in runs}


def test_scheduled_report_never_overlaps_and_skips_an_evaluated_model(stack, tmp_path):
    """The report deployment's concurrency rule on a real server: a second run of the same run name is
    cancelled while an evaluation is running, and a later run finds the model evaluated at that tier."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from evaluation.testing import corpus_from_mirror, make_tiny_model
    from flows.reports import find_reports

    run = "e2e-sched"
    local = make_tiny_model(str(tmp_path / "model"), corpus_from_mirror(str(REPO / "tests" / "data")), step=100,
                            name=run, size="small")
    model_uri = f"{demo.BUCKET}/{run}/model/step-000000100"
    storage.upload_dir(local, model_uri)
    model_hash = manifests.read(model_uri, kind="model")["manifest_hash"]
    stack.deploy("glue-squad-report", pool="local-process")
    params = {"storage_root": demo.BUCKET, "run_name": run, "size": "small", "publish": {"enabled": False},
              "evaluation": {"tier": "quick", "data_dir": demo.EVAL_DATA,
                             "overrides": ["device=cpu", "finetune.batch_size=8", "finetune.squad_max_seq_length=128",
                                           "finetune.doc_stride=32", "finetune.max_query_length=32"]}}
    first = demo.start_run(stack, params, REPORT_DEPLOYMENT)
    deadline = time.monotonic() + 600
    while _task_states(stack, first).get("evaluate") != "Running":  # the first run is evaluating
        assert time.monotonic() < deadline and _flow_state(stack, first) not in ("Failed", "Crashed", "Completed"), \
            (_flow_state(stack, first), (stack.base / "worker.log").read_text()[-3000:])
        time.sleep(1)

    with temporary_settings({PREFECT_API_URL: stack.api_url}):  # what the schedule does: a new run of the deployment
        second = run_deployment(REPORT_DEPLOYMENT, parameters=params, timeout=0).id
    assert demo.watch(stack, str(second), 180) == "Cancelled"
    assert _flow_state(stack, first) == "Running"  # cancelled while the first one was still at work
    assert _task_states(stack, second) == {}  # it never started a task, let alone an evaluation

    assert demo.watch(stack, first, 900) == "Completed"
    reports = find_reports(f"{demo.BUCKET}/{run}", model_hash, "quick")
    assert len(reports) == 1
    results = json.loads(storage.read_text(storage.join(reports[0][0], "results.json")))
    assert results["tier"]["name"] == "quick" and {t["task"] for t in results["tasks"].values()} == \
        {"mnli", "sst2", "squad_v2"}

    # The next scheduled run finds the same model already reported at this tier: no second evaluation.
    third = demo.start_run(stack, params, REPORT_DEPLOYMENT)
    assert demo.watch(stack, third, 600) == "Completed"
    summary = json.loads(storage.read_text(f"{demo.BUCKET}/{run}/_flow/report-summary.json"))
    assert summary["stages"]["report"] == {**summary["stages"]["report"], "output": reports[0][0], "skipped": True}
    assert "evaluate" not in _task_states(stack, third)
    assert len(find_reports(f"{demo.BUCKET}/{run}", model_hash, "quick")) == 1


def test_make_deploy_registers_every_deployment_on_a_fresh_server(stack):
    """`make deploy` (python -m flows.deploy) on a server that has only the demo's pool: it creates the pools
    prefect.yaml names and registers all its deployments; a second run creates nothing. (Last in this module:
    it moves glue-squad-report back onto its own pool.)"""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import deploy

    want = deploy.plan()
    cmd = [sys.executable, "-m", "flows.deploy"]
    first = subprocess.run(cmd, cwd=REPO, env=stack.child_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{len(want.deployments)} deployments registered" in first.stdout
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        pools = {p.name: p.type for p in client.read_work_pools()}
        registered = {d.name for d in client.read_deployments()}
    assert {name: pools.get(name) for name in want.pools} == want.pools
    assert want.deployments and set(want.deployments) <= registered
    again = subprocess.run(cmd, cwd=REPO, env=stack.child_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 work pools created" in again.stdout, again.stderr[-3000:]


def test_deploy_refuses_a_pool_it_has_no_type_for(tmp_path):
    from flows import deploy

    spec = tmp_path / "prefect.yaml"
    spec.write_text(yaml.safe_dump({"deployments": [{"name": "x", "work_pool": {"name": "mystery-pool"}}]}))
    with pytest.raises(deploy.DeployError, match="mystery-pool"):
        deploy.plan(spec)
