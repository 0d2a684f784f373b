"""The electra-pretraining flow's own logic, with stand-in stages: parameters, cache keys, skip, resume, artifacts.

The stages themselves are tested by their own suites; here each is replaced by a function
that writes a manifest of the right kind the way the real one does, so these tests run in
seconds under `prefect_test_harness` and pin down what the flow decides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from common import manifest as manifests
from common import storage
from flows import caching, checkpoints, stages
from flows.results import StageError
from common.processes import REPO
from flows.params import CorpusParams, LauncherParams, RunSpec, TrainParams


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


# ----------------------------------------------------------------------------- params


def test_runspec_layout_and_validation(tmp_path):
    spec = RunSpec(size="tiny", run_name="r1", storage_root="s3://bucket/prefix/",
                   corpus=CorpusParams(inputs=["s3://bucket/raw/*.warc.gz"]))
    assert spec.run_root == "s3://bucket/prefix/r1"
    assert spec.pack_uri == "s3://bucket/prefix/r1/pack"
    assert spec.model_uri("step-000000010") == "s3://bucket/prefix/r1/model/step-000000010"
    assert spec.published_uri("step-000000010") == "s3://bucket/prefix/models/electra-tiny-r1/step-000000010"
    with pytest.raises(ValidationError, match="size"):
        RunSpec(size="huge", storage_root=str(tmp_path))
    with pytest.raises(ValidationError, match="run_name"):
        RunSpec(run_name="Bad Name", storage_root=str(tmp_path))
    with pytest.raises(ValidationError, match="placeholder"):
        RunSpec(storage_root="{{ $ELECTRA_STORAGE_ROOT }}")
    with pytest.raises(ValidationError, match="extra"):
        RunSpec(storage_root=str(tmp_path), colour="blue")
    with pytest.raises(ValidationError, match="set by the flow"):
        TrainParams(overrides=["run=s3://elsewhere"])
    with pytest.raises(ValidationError, match="hostfile"):
        LauncherParams(mode="hostfile")
    with pytest.raises(ValidationError, match="no_ssh"):
        LauncherParams(mode="no_ssh", num_nodes=1)


def test_launcher_commands(tmp_path):
    base = dict(size="large", storage_root="s3://b/p", corpus=CorpusParams(inputs=["x"]))
    single = RunSpec(**base, train=TrainParams(deepspeed_config="ds_configs/zero3.json",
                                               launcher=LauncherParams(num_gpus=8)))
    cmd = stages.pretrain_command(single, "s3://b/p/electra/pack", deepspeed_bin="deepspeed")
    assert cmd[0] == "deepspeed" and cmd[cmd.index("--num_gpus") + 1] == "8"
    assert cmd[cmd.index("--config") + 1] == "large"
    assert "data.pack=s3://b/p/electra/pack" in cmd and "run=s3://b/p/electra/pretrain" in cmd
    assert cmd[cmd.index("--deepspeed") + 1].endswith("ds_configs/zero3.json")
    hosts = LauncherParams(mode="hostfile", hostfile="/job/hosts", num_nodes=4)
    hf = RunSpec(**base, train=TrainParams(launcher=hosts))
    assert "--hostfile" in stages.pretrain_command(hf, "p", deepspeed_bin="deepspeed")
    ns = RunSpec(**base, train=TrainParams(max_steps=7, launcher=LauncherParams(
        mode="no_ssh", num_nodes=2, node_rank=1, master_addr="node0", num_gpus=8)))
    cmd = stages.pretrain_command(ns, "p", deepspeed_bin="deepspeed")
    assert cmd[1].endswith("pretraining/launch.py") and "deepspeed" not in cmd[:2]  # this project's node launcher
    assert cmd[cmd.index("--node-rank") + 1] == "1" and cmd[cmd.index("--nproc-per-node") + 1] == "8"
    assert cmd[cmd.index("--nnodes") + 1] == "2" and "max_steps=7" in cmd


def test_cluster_templates_render():
    import yaml

    from flows import cluster

    spec = RunSpec(size="large", storage_root="s3://b/p", corpus=CorpusParams(inputs=["x"]),
                   train=TrainParams(max_steps=100, launcher=LauncherParams(mode="cluster", num_nodes=4, num_gpus=8)))
    values = cluster.template_values(spec, "s3://b/p/electra/pack", 100)
    k8s = cluster.render("infra/k8s/deepspeed-job.yaml", values)
    service, job = yaml.safe_load_all(k8s)
    assert job["spec"]["completions"] == 4 and job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > spec.train.launcher.cluster.checkpoint_grace_s
    container = pod["containers"][0]
    args = container["args"][0]
    assert args.startswith("exec python pretraining/launch.py") and "--node-rank=$JOB_COMPLETION_INDEX" in args
    assert "run=s3://b/p/electra/pretrain" in args and "--nproc-per-node=8" in args
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onExitCodes": {"containerName": "train", "operator": "In", "values": [75]}}
    assert not any("${%s}" % k in k8s for k in values)
    slurm = cluster.render("infra/slurm/pretrain.sbatch", values)
    assert "#SBATCH --nodes=4" in slurm and '--node-rank="$SLURM_NODEID"' in slurm
    assert "#SBATCH --gpus-per-node=8" in slurm and "--nproc-per-node=8" in slurm and "DS_ACCELERATOR=cuda" in slurm
    assert "#SBATCH --open-mode=append" in slurm and "#SBATCH --signal=TERM@" in slurm
    assert not any("${%s}" % k in slurm for k in values)


# ----------------------------------------------------------------------------- cache keys


def test_cache_key_depends_on_inputs_and_config_only():
    k = caching.cache_key("pack", {"max_seq_length": 128}, ["a", "b"])
    assert k == caching.cache_key("pack", {"max_seq_length": 128}, ["b", "a"])  # order-free inputs
    assert k != caching.cache_key("pack", {"max_seq_length": 512}, ["a", "b"])
    assert k != caching.cache_key("pack", {"max_seq_length": 128}, ["a", "c"])
    assert k != caching.cache_key("tokenizer", {"max_seq_length": 128}, ["a", "b"])


def test_lookup_needs_the_recorded_manifest(tmp_path):
    out = str(tmp_path / "out")
    m = manifests.build("pack", inputs=[], config={"x": 1})
    manifests.write(out, m)
    state = str(tmp_path / "_flow")
    caching.record(state, "pack", "k1", out, m)
    assert caching.lookup(state, "pack", "k1")[0] == out
    assert caching.lookup(state, "pack", "k2") is None  # another key: a miss
    manifests.write(out, manifests.build("pack", inputs=[], config={"x": 2}))  # rebuilt by hand
    assert caching.lookup(state, "pack", "k1") is None
    os.unlink(manifests.manifest_uri(out))  # deleted
    assert caching.lookup(state, "pack", "k1") is None


# ----------------------------------------------------------------------------- the flow, with stand-in stages


class FakeStages:
    """Stand-ins that write manifests of the right kinds, and count their calls."""

    def __init__(self, crash_at_step: int | None = None):
        self.calls: dict[str, int] = {}
        self.crash_at_step = crash_at_step
        self.resumed_from: list[int] = []

    def run(self, job: stages.Job):
        """Stands in for stages.run: reads the job's typed config, as the real job would."""
        module, cfg = job.module, job.config
        self.calls[module] = self.calls.get(module, 0) + 1
        if module == "pipelines.clean":
            inputs = [{"uri": f, "size": os.path.getsize(f)} for p in cfg.inputs for f in storage.glob(p)]
            manifests.write(cfg.output, manifests.build("documents", inputs=inputs, config={},
                                                        counters={"records_read": 3, "kept": 2,
                                                                  "dropped": {"c4": 1}, "rejected": {}}))
        elif module == "pipelines.train_tokenizer":
            self._derive(cfg.output, "tokenizer", [cfg.input])
            Path(cfg.output, "tokenizer.json").write_text("{}")
        elif module == "pipelines.pack":
            self._derive(cfg.output, "pack", [cfg.input, cfg.tokenizer], counters={"examples": 10})
        elif module == "pretraining.export":
            out = cfg.output
            for sub in ("discriminator", "generator"):
                Path(out, sub).mkdir(parents=True, exist_ok=True)
                Path(out, sub, "config.json").write_text("{}")
            ck = manifests.read(cfg.checkpoint)
            self._derive(out, "model", [cfg.checkpoint], step=ck["step"])
        elif module == "evaluation.run":
            from evaluation.progress import EvalProgress, PlannedRun

            progress = EvalProgress([PlannedRun("sst2", 1, 4, 1.0)])  # the real progress events, as a run logs them
            progress.start()
            progress.run("sst2", 1)
            progress.finish("sst2", 1, {"sst2": {"accuracy": 50.0}}, "accuracy", 1.0)
            report = storage.join(cfg.output, "reports", "m", f"2026010{self.calls[module]}T000000Z")
            results = {"name": "m", "seeds": 1, "tasks": {"sst2": {"task": "sst2", "primary": "accuracy",
                                                                   "median": {"accuracy": 0.5}, "paper": 91.2}}}
            storage.write_text(storage.join(report, "results.json"), json.dumps(results))
            storage.write_text(storage.join(report, "report.md"), "# report")
            self._derive(report, "report", [cfg.model], tier=cfg.tier)
        return manifests.read(report if module == "evaluation.run" else cfg.output)

    def _derive(self, out: str, kind: str, input_uris: list[str], **extra) -> dict:
        inputs = [manifests.input_ref(u, manifests.read(u)) for u in input_uris]
        m = manifests.build(kind, inputs=inputs, config={}, **extra)
        manifests.write(out, m)
        return m

    def launch(self, spec, pack_uri, target, logger):
        from pretraining import checkpoint

        start = checkpoints.latest_step(spec.pretrain_uri)
        self.resumed_from.append(start)
        for step in range(start + 5, target + 1, 5):
            d = storage.join(spec.pretrain_uri, "checkpoints", checkpoint.tag(step))
            storage.write_text(storage.join(d, "mp_rank_00_model_states.pt"), "w" * step)
            m = manifests.build("checkpoint", inputs=[manifests.input_ref(pack_uri, manifests.read(pack_uri))],
                                config={"size": spec.size}, shards=[{"path": "mp_rank_00_model_states.pt",
                                                                     "bytes": step, "sha256": "x"}],
                                step=step, tokens_seen=step * 100)
            manifests.write(d, m)
            # What the trainer appends to <run>/metrics.jsonl at a checkpoint (and when a check fires).
            lines = [{"step": step, "kind": "validation", "examples": 64, "mlm_loss": 7.0 - step / 10,
                      "mlm_acc": 0.01 * step, "disc_loss": 0.6, "disc_acc": 0.85, "disc_precision": 0.0,
                      "disc_recall": 0.0, "disc_auc": 0.5 + step / 100}]
            if step == 10:
                lines.append({"step": step, "kind": "health", "check": "discriminator_recall_zero", "value": 0.0,
                              "threshold": 0.0, "message": "discriminator_recall_zero: it flags nothing"})
            metrics = storage.join(spec.pretrain_uri, "metrics.jsonl")
            old = storage.read_text(metrics) if storage.exists(metrics) else ""
            storage.write_text(metrics, old + "".join(json.dumps(x) + "\n" for x in lines))
            if self.crash_at_step is not None and step >= self.crash_at_step:
                self.crash_at_step = None
                raise StageError("killed")


def _params(tmp_path: Path) -> dict:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "a.txt").write_text("some text\n")
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    return {"storage_root": str(tmp_path / "store"), "size": "tiny", "run_name": "unit",
            "corpus": {"inputs": [str(raw / "*.txt")]},
            "train": {"deepspeed_config": str(ds), "max_steps": 20},
            "evaluation": {"tasks": ["sst2"], "seeds": 1}}


@pytest.fixture
def fake(monkeypatch):
    def make(**kw):
        f = FakeStages(**kw)
        monkeypatch.setattr(stages, "run", f.run)
        import flows.electra_pretraining as ep

        monkeypatch.setattr(ep, "_launch", f.launch)
        return f
    return make


def test_rerun_skips_every_finished_stage(harness, fake, tmp_path):
    from flows.electra_pretraining import electra_pretraining

    params = _params(tmp_path)
    f1 = fake()
    first = electra_pretraining(**params)
    assert first["stages"]["published"]["skipped"] is False
    assert f1.calls == {"pipelines.clean": 1, "pipelines.train_tokenizer": 1, "pipelines.pack": 1,
                        "pretraining.export": 1, "evaluation.run": 1}
    f2 = fake()
    second = electra_pretraining(**params)
    assert f2.calls == {} and f2.resumed_from == []
    assert all(v["skipped"] for v in second["stages"].values() if v)
    assert second["stages"]["published"]["output"] == first["stages"]["published"]["output"]

    # A config change reruns that stage and everything downstream of it, nothing upstream.
    f3 = fake()
    params["pack"] = {"max_seq_length": 64}
    third = electra_pretraining(**params)
    assert "pipelines.clean" not in f3.calls and "pipelines.train_tokenizer" not in f3.calls
    assert f3.calls["pipelines.pack"] == 1
    assert not third["stages"]["pack"]["skipped"]


def test_pretrain_retry_resumes_from_the_newest_checkpoint(harness, fake, tmp_path, monkeypatch):
    import flows.electra_pretraining as ep

    monkeypatch.setattr(ep, "pretrain_stage", ep.pretrain_stage.with_options(retries=1, retry_delay_seconds=0))
    params = _params(tmp_path)
    f = fake(crash_at_step=10)
    out = ep.electra_pretraining(**params)
    assert f.resumed_from == [0, 10]  # the task's retry picked up at step 10, not at 0
    assert manifests.read(out["stages"]["checkpoint"]["output"])["step"] == 20


def test_killed_run_resumes_on_rerun_and_reuses_earlier_stages(harness, fake, tmp_path, monkeypatch):
    import flows.electra_pretraining as ep

    original = ep.pretrain_stage
    monkeypatch.setattr(ep, "pretrain_stage", original.with_options(retries=0))
    params = _params(tmp_path)
    fake(crash_at_step=10)
    with pytest.raises(Exception, match="killed"):
        ep.electra_pretraining(**params)
    monkeypatch.setattr(ep, "pretrain_stage", original)
    f = fake()
    out = ep.electra_pretraining(**params)
    assert f.resumed_from == [10]
    assert "pipelines.clean" not in f.calls and "pipelines.pack" not in f.calls
    assert out["stages"]["pack"]["skipped"] and not out["stages"]["checkpoint"]["skipped"]
    assert manifests.read(out["stages"]["checkpoint"]["output"])["step"] == 20


def test_stage_artifacts_are_created(harness, fake, tmp_path):
    from prefect.artifacts import Artifact

    from flows.electra_pretraining import electra_pretraining

    params = _params(tmp_path)
    params["run_name"] = "arts"
    fake()
    electra_pretraining(**params)
    for key in ("arts-clean", "arts-clean-counters", "arts-pack", "arts-pretrain", "arts-scores", "arts-summary",
                "arts-evaluate-progress"):
        assert Artifact.get(key) is not None, key
    progress = Artifact.get("arts-evaluate-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert "overall ETA" in progress.description
    md = Artifact.get("arts-clean").data
    assert "### clean: ran" in md and "dropped.c4" in md
    # Pretraining's held-out validation per checkpoint, and its training-health warnings.
    validation = json.loads(Artifact.get("arts-pretrain-validation").data)
    assert [r["step"] for r in validation] == [5, 10, 15, 20] and validation[-1]["disc_auc"] == 0.7
    health = Artifact.get("arts-pretrain-health").data
    assert "1 warning(s)" in health and "| **discriminator_recall_zero** | 10 | 10 | 1 |" in health
    table = Artifact.get("arts-clean-counters").data
    assert "dropped.c4" in json.dumps(table)


def test_report_flow_evaluates_the_newest_checkpoint_once(harness, fake, tmp_path):
    from pretraining import checkpoint

    from flows.electra_pretraining import electra_pretraining
    from flows.report_schedule import glue_squad_report

    params = _params(tmp_path)
    params["run_name"] = "sched"
    f = fake()
    electra_pretraining(**params)
    # Training went on (a longer run): a newer checkpoint than the exported model.
    spec = RunSpec(size="tiny", run_name="sched", storage_root=params["storage_root"])
    pack_uri = spec.pack_uri
    d = storage.join(spec.pretrain_uri, "checkpoints", checkpoint.tag(25))
    storage.write_text(storage.join(d, "mp_rank_00_model_states.pt"), "w" * 25)
    manifests.write(d, manifests.build("checkpoint", inputs=[manifests.input_ref(pack_uri, manifests.read(pack_uri))],
                                       config={}, shards=[{"path": "mp_rank_00_model_states.pt", "bytes": 25,
                                                           "sha256": "x"}], step=25, tokens_seen=2500))
    report_params = {"storage_root": params["storage_root"], "run_name": "sched", "size": "tiny",
                     "evaluation": params["evaluation"]}
    out = glue_squad_report(**report_params)
    assert out["stages"]["model"]["output"].endswith("model/step-000000025")
    assert not out["stages"]["model"]["skipped"] and not out["stages"]["report"]["skipped"]
    assert out["stages"]["published"]["output"].endswith("models/electra-tiny-sched/step-000000025")
    calls = dict(f.calls)
    again = glue_squad_report(**report_params)  # no new checkpoint: nothing is redone
    assert all(v["skipped"] for v in again["stages"].values() if v)
    assert f.calls == calls

    # The quick tier is another evaluation of the same model; once done, a model is not evaluated at it again,
    # even with other settings.
    quick = {**report_params, "evaluation": {"tier": "quick", "overrides": ["finetune.max_steps=5"]}}
    first_quick = glue_squad_report(**quick)
    assert f.calls["evaluation.run"] == calls["evaluation.run"] + 1 and not first_quick["stages"]["report"]["skipped"]
    quick["evaluation"]["overrides"] = ["finetune.max_steps=7"]
    again_quick = glue_squad_report(**quick)
    assert f.calls["evaluation.run"] == calls["evaluation.run"] + 1 and again_quick["stages"]["report"]["skipped"]
    assert again_quick["stages"]["report"]["output"] == first_quick["stages"]["report"]["output"]


def test_launcher_tree_dies_with_the_flow_process(tmp_path):
    """A killed flow process leaves no trainer behind (flows/supervise.py), so a rerun never races one."""
    import signal
    import subprocess
    import sys
    import time

    marker = "347.25"  # an unusual duration: how this test finds its own sleeps
    parent = subprocess.Popen([sys.executable, "-c", (
        "from flows import supervise\n"
        f"supervise.run_streaming(['bash', '-c', 'sleep {marker} & sleep {marker}; wait'], print)\n")],
        cwd=str(REPO), start_new_session=True)

    def tree() -> list[str]:
        out = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout.split()
        return [p for p in out if int(p) != parent.pid]

    deadline = time.monotonic() + 60
    while len(tree()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(tree()) >= 2
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while tree() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tree() == []


def test_cluster_mode_submits_and_waits_for_the_target_checkpoint(tmp_path, monkeypatch):
    """cluster mode: render, `kubectl apply`, poll job state and checkpoints (kubectl faked on PATH)."""
    import logging

    from pretraining import checkpoint

    from flows import cluster

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    applied = tmp_path / "applied"
    (bin_dir / "kubectl").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f'case "$1" in apply) touch {applied};;\n'
        f'  get) if [ -e {applied} ]; then echo \'{{"status": {{"active": 4}}}}\'; '
        f'else echo \'Error from server (NotFound): jobs.batch "electra-big" not found\' >&2; exit 1; fi;;\nesac\n')
    (bin_dir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    spec = RunSpec(size="large", storage_root=str(tmp_path / "store"), run_name="big",
                   train=TrainParams(max_steps=10, launcher=LauncherParams(
                       mode="cluster", num_nodes=4, num_gpus=8, cluster={"poll_seconds": 1})))
    d = storage.join(spec.pretrain_uri, "checkpoints", checkpoint.tag(10))
    storage.write_text(storage.join(d, "mp_rank_00_model_states.pt"), "w")
    manifests.write(d, manifests.build("checkpoint", inputs=[], config={}, step=10, tokens_seen=1280,
                                       shards=[{"path": "mp_rank_00_model_states.pt", "bytes": 1, "sha256": "x"}]))
    cluster.run_job(spec, "s3://b/pack", 10, logging.getLogger("test"))
    log = calls.read_text()
    assert "delete job electra-big" in log and "apply -n default -f" in log and "get job electra-big" in log
    assert cluster.kubernetes_status("electra-big", "default").phase is cluster.Phase.RUNNING
    # A second submission while that Job runs (the flow process was restarted) follows it: no delete, no apply.
    calls.write_text("")
    cluster.run_job(spec, "s3://b/pack", 10, logging.getLogger("test"))
    assert "apply" not in calls.read_text() and "delete" not in calls.read_text()
