"""How the flow calls each stage: argv for the stage's own `main(argv)`, or the DeepSpeed launcher command.

The stages are the product; this module only translates a `RunSpec` into the command
line a user would type, so a flow run and a hand-run stage do exactly the same thing.
Beam jobs, export and evaluation run in the flow's process through `main(argv)`;
pretraining runs under the DeepSpeed launcher in a supervised child process group
(flows/supervise.py), signalled (SIGTERM, then SIGKILL) when the flow is cancelled or dies,
so ranks checkpoint and exit and no trainer outlives the flow run.
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from common import manifest as manifests
from common import storage
from common.processes import kill_group
from common.seaweedfs import free_port, port_free
from flows.params import RunSpec

log = logging.getLogger("flows.stages")

REPO = Path(__file__).resolve().parent.parent


class StageError(RuntimeError):
    """A stage exited with an error; the message says which and how to rerun it by hand."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


def call_main(module: str, argv: list[str]) -> object:
    """Import `module` and call its `main(argv)`; a non-zero exit becomes a StageError."""
    mod = importlib.import_module(module)
    cmd = f"python -m {module} {shlex.join(argv)}"
    log.info("running %s", cmd)
    try:
        result = mod.main(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise StageError(f"{cmd} exited with {exc.code}", exc.code if isinstance(exc.code, int) else 1) from None
        return None
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise StageError(f"{cmd} returned {result}", result)
    return result


# ----------------------------------------------------------------------------- data stages


def clean_argv(spec: RunSpec) -> list[str]:
    argv: list[str] = []
    for pattern in spec.corpus.inputs:
        argv += ["--input", pattern]
    argv += ["--output", spec.clean_uri]
    if spec.corpus.format:
        argv += ["--format", spec.corpus.format]
    return argv + list(spec.corpus.extra_args) + spec.beam.args()


def tokenizer_argv(spec: RunSpec, documents_uri: str) -> list[str]:
    t = spec.tokenizer
    argv = ["--input", documents_uri, "--output", spec.tokenizer_uri,
            "--vocab-size", str(t.vocab_size), "--model-type", t.model_type]
    if t.sample_docs:
        argv += ["--sample-docs", str(t.sample_docs)]
    return argv


def pack_argv(spec: RunSpec, documents_uri: str, tokenizer_uri: str) -> list[str]:
    return (["--input", documents_uri, "--tokenizer", tokenizer_uri, "--output", spec.pack_uri,
             "--max-seq-length", str(spec.pack.max_seq_length)] + list(spec.pack.extra_args) + spec.beam.args())


def export_argv(checkpoint_uri: str, output: str) -> list[str]:
    return ["--checkpoint", checkpoint_uri, "--output", output]


def eval_argv(spec: RunSpec, model_uri: str) -> list[str]:
    e = spec.evaluation
    argv = ["--model", model_uri, "--output", spec.run_root, "--tier", e.tier]
    if e.tasks:
        argv += ["--tasks", ",".join(e.tasks)]
    if e.seeds:
        argv += ["--seeds", str(e.seeds)]
    if e.data_dir:
        argv += ["--data-dir", e.data_dir]
    if e.overrides:
        argv += ["--set", *e.overrides]
    return argv


# ----------------------------------------------------------------------------- pretraining


def train_overrides(spec: RunSpec, pack_uri: str) -> list[str]:
    out = [f"data.pack={pack_uri}", f"run={spec.pretrain_uri}"]
    if spec.train.max_steps:
        out.append(f"max_steps={spec.train.max_steps}")
    return out + list(spec.train.overrides)


def deepspeed_config_path(spec: RunSpec) -> str:
    p = Path(spec.train.deepspeed_config)
    return str(p if p.is_absolute() else REPO / p)


def pretrain_command(spec: RunSpec, pack_uri: str, deepspeed_bin: str | None = None) -> list[str]:
    """`deepspeed [launcher flags] pretraining/train.py --deepspeed CFG --config SIZE key=value...`.

    pretraining.launch owns the launcher flags; this maps the flow's launcher mode onto them.
    """
    from pretraining.launch import launcher_command

    ln = spec.train.launcher
    port = ln.master_port
    if ln.mode == "single_node" and not port_free(port):
        port = free_port()  # another job on this machine holds the default rendezvous port
    kwargs: dict = {"num_gpus": ln.num_gpus or ln.num_procs, "master_port": port, "master_addr": ln.master_addr}
    if ln.mode == "hostfile":
        kwargs["hostfile"] = ln.hostfile
    elif ln.mode == "no_ssh":
        kwargs.update(no_ssh=True, hostfile=ln.hostfile, num_nodes=ln.num_nodes, node_rank=ln.node_rank)
    return launcher_command(train_overrides(spec, pack_uri), size=spec.size, ds_config=deepspeed_config_path(spec),
                            deepspeed_bin=deepspeed_bin or _deepspeed_bin(), **kwargs)


def _deepspeed_bin() -> str:
    beside = Path(sys.executable).with_name("deepspeed")
    return str(beside) if beside.exists() else "deepspeed"


def child_env() -> dict[str, str]:
    """The launcher and its ranks see the same object store and find the repo's packages."""
    env = dict(os.environ)
    env.update(storage.StorageSettings.from_env().to_env())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_streaming(cmd: list[str], on_line: Callable[[str], None], cwd: str | None = None,
                  env: dict[str, str] | None = None) -> int:
    """Run a command in its own process group, passing each output line to `on_line`.

    If this thread is interrupted (flow cancelled, worker stopping), the group gets SIGTERM (ranks
    checkpoint at the next step boundary), then SIGKILL after a grace period. The command runs
    under flows.supervise, so if the flow process itself is killed the whole launcher tree is
    stopped too, and a rerun never races an orphaned trainer for the same run directory.
    """
    env = dict(env or child_env())
    env["ELECTRA_SUPERVISE_PARENT"] = str(os.getpid())
    proc = subprocess.Popen([sys.executable, "-m", "flows.supervise", "--", *cmd], cwd=cwd or str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait()
    except BaseException:
        terminate_group(proc)
        raise


def terminate_group(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Stop the launcher tree; the grace period lets the ranks write a checkpoint on SIGTERM."""
    kill_group(proc.pid, grace_s)


def latest_checkpoint(run_uri: str) -> tuple[str, dict] | None:
    """The newest complete checkpoint of a run (pretraining.checkpoint decides what complete means)."""
    from pretraining import checkpoint

    return checkpoint.latest_complete(run_uri, mode="size")


def checkpoint_step(m: dict) -> int:
    step = m.get("step", m.get("counters", {}).get("step"))
    if step is None:
        raise manifests.ManifestError("checkpoint manifest has no step")
    return int(step)


def target_steps(spec: RunSpec) -> int:
    """The step the run ends at: train.max_steps, else the size's (overridden) default."""
    if spec.train.max_steps:
        return spec.train.max_steps
    from pretraining.config import train_config

    return train_config(spec.size, list(spec.train.overrides)).max_steps


# ----------------------------------------------------------------------------- reports


def find_reports(run_root: str, model_hash: str | None = None, tier: str | None = None) -> list[tuple[str, dict]]:
    """Finished reports under <run_root>/reports/, oldest first; only those of `model_hash` and `tier` when given
    (reports from before tiers existed are full-tier)."""
    base = storage.join(run_root, "reports")
    found = []
    for uri in storage.list_files(base):
        if storage.basename(uri) != manifests.MANIFEST_NAME:
            continue
        out = storage.parent(uri)
        try:
            m = manifests.read(out, kind="report")
        except manifests.ManifestError:
            continue
        if model_hash and model_hash not in {i.get("manifest_hash") for i in m.get("inputs", [])}:
            continue
        if tier and (m.get("tier") or "full") != tier:
            continue
        found.append((out, m))
    # <model>/<timestamp>/: the timestamp sorts in time order.
    return sorted(found, key=lambda t: storage.basename(t[0]))


class LineLogger:
    """Forwards launcher output to a logger, keeping the last lines for the error message."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, keep: int = 40):
        self.logger, self.keep = logger, keep
        self.tail: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.tail = (self.tail + [line])[-self.keep:]
        self.logger.info(line)
