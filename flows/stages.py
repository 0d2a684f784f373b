"""How the flow calls each stage: the stage's typed config, its library function, and the command a user would type.

The stages are the product; this module only turns a `RunSpec` into the config each job's CLI
would build, so a flow run and a hand-run stage do exactly the same thing:

    job = stages.tokenizer_job(spec, documents_uri)   # TokenizerConfig + pipelines.tokenizer.train.run
    manifest = stages.run(job)                        # logs `running python -m pipelines.train_tokenizer ...`

Beam jobs, export and evaluation run in the flow's process through their `run(cfg)`; the
`corpus.extra_args` and `pack.extra_args` parameters are those jobs' own command-line flags
(`--config clean.yaml`, `--seed 3`, Beam options), so the job's own parser turns them into its
config. Pretraining runs under the DeepSpeed launcher (`pretrain_command`) in a supervised child
process group (flows/supervise.py).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
from pathlib import Path
from typing import Callable

from common import cli, configs, storage
from common.ports import free_port, port_free
from common.processes import REPO, child_env
from flows.params import RunSpec
from flows.results import StageError

log = logging.getLogger("flows.stages")


@dataclasses.dataclass(frozen=True)
class Job:
    """One stage run in the flow's process."""

    module: str  # the job's CLI module: `python -m <module>` runs the same by hand
    config: object  # the typed config the CLI would build (CleanConfig, TokenizerConfig, PackConfig, ...)
    argv: tuple[str, ...]  # the CLI arguments that build that config: the logged command
    call: Callable[[], dict]  # the job's library function on that config; returns the manifest it wrote
    user_errors: tuple[type[BaseException], ...] = ()  # the job's own "fix the input" errors (exit 2)
    debug: bool = False  # --debug among the user's flags: full tracebacks, Beam workers log here

    @property
    def command(self) -> str:
        return f"python -m {self.module} {shlex.join(self.argv)}"


def run(job: Job) -> dict:
    """Run a job; an error it classifies (common/cli.py) becomes a StageError with its exit code, so the flow
    retries an outage (75) and not a bad input (2). A bug keeps its traceback."""
    cli.setup_logging()  # as when the job runs by hand
    log.info("running %s", job.command)
    try:
        with cli.debugging(job.debug):
            return job.call()
    except Exception as exc:  # noqa: BLE001 - classified below; bugs re-raise
        code = cli.exit_code(exc, job.user_errors)
        if code is None:
            raise
        raise StageError(f"{job.command} exited with {code}: {cli.one_line(exc)}", code) from exc


def _parsed(module: str, parse: Callable[[list[str]], tuple], argv: list[str]) -> tuple:
    """The job's own parser on the command (for the user's extra flags); a flag it refuses is a StageError."""
    try:
        return parse(argv)
    except SystemExit:  # argparse printed why
        raise StageError(f"python -m {module} {shlex.join(argv)}: the arguments were refused", 2) from None


# ----------------------------------------------------------------------------- data stages


def clean_job(spec: RunSpec) -> Job:
    from pipelines import clean

    argv: list[str] = []
    for pattern in spec.corpus.inputs:
        argv += ["--input", pattern]
    argv += ["--output", spec.clean_uri]
    if spec.corpus.format:
        argv += ["--format", spec.corpus.format]
    argv += list(spec.corpus.extra_args) + spec.beam.args()
    cfg, beam_args, flags = _parsed("pipelines.clean", clean.parse, argv)
    return Job("pipelines.clean", cfg, tuple(argv), lambda: clean.run(cfg, beam_args, break_claim=flags.break_claim),
               clean.USER_ERRORS, flags.debug)


def tokenizer_job(spec: RunSpec, documents_uri: str) -> Job:
    from pipelines import train_tokenizer
    from pipelines.tokenizer.config import TokenizerConfig

    t = spec.tokenizer
    cfg = TokenizerConfig(input=documents_uri, output=spec.tokenizer_uri, vocab_size=t.vocab_size,
                          model_type=t.model_type, sample_docs=t.sample_docs or TokenizerConfig.sample_docs)
    argv = ["--input", cfg.input, "--output", cfg.output, "--vocab-size", str(cfg.vocab_size),
            "--model-type", cfg.model_type, "--sample-docs", str(cfg.sample_docs)]
    return Job("pipelines.train_tokenizer", cfg, tuple(argv), lambda: train_tokenizer.run(cfg),
               train_tokenizer.USER_ERRORS)


def pack_job(spec: RunSpec, documents_uri: str, tokenizer_uri: str) -> Job:
    from pipelines import pack

    argv = (["--input", documents_uri, "--tokenizer", tokenizer_uri, "--output", spec.pack_uri,
             "--max-seq-length", str(spec.pack.max_seq_length)] + list(spec.pack.extra_args) + spec.beam.args())
    cfg, beam_args, flags = _parsed("pipelines.pack", pack.parse_all, argv)
    return Job("pipelines.pack", cfg, tuple(argv), lambda: pack.run(cfg, beam_args, break_claim=flags.break_claim),
               pack.USER_ERRORS, flags.debug)


def export_job(checkpoint_uri: str, output: str) -> Job:
    from pretraining import export

    cfg = export.ExportConfig(checkpoint=checkpoint_uri, output=output)
    return Job("pretraining.export", cfg, ("--checkpoint", cfg.checkpoint, "--output", cfg.output),
               lambda: export.run(cfg))


def eval_job(spec: RunSpec, model_uri: str) -> Job:
    from evaluation import run as evaluation
    from evaluation.config import EvalConfig

    e = spec.evaluation
    cfg = EvalConfig(model=model_uri, output=spec.run_root, tier=e.tier, tasks=tuple(e.tasks or ()),
                     seeds=e.seeds or 0, data_dir=e.data_dir or "")
    cfg = configs.apply_overrides(cfg, list(e.overrides))
    argv = ["--model", cfg.model, "--output", cfg.output, "--tier", cfg.tier]
    if cfg.tasks:
        argv += ["--tasks", ",".join(cfg.tasks)]
    if cfg.seeds:
        argv += ["--seeds", str(cfg.seeds)]
    if cfg.data_dir:
        argv += ["--data-dir", cfg.data_dir]
    if e.overrides:
        argv += ["--set", *e.overrides]
    return Job("evaluation.run", cfg, tuple(argv), lambda: evaluation.run(cfg), evaluation.USER_ERRORS)


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
    """`deepspeed [launcher flags] pretraining/train.py --deepspeed CFG --config SIZE key=value...` (no_ssh: the
    same through pretraining/launch.py, this node's ranks only).

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
        kwargs.update(no_ssh=True, num_nodes=ln.num_nodes, node_rank=ln.node_rank)
    return launcher_command(train_overrides(spec, pack_uri), size=spec.size, ds_config=deepspeed_config_path(spec),
                            deepspeed_bin=deepspeed_bin or _deepspeed_bin(), **kwargs)


def _deepspeed_bin() -> str:
    beside = Path(sys.executable).with_name("deepspeed")
    return str(beside) if beside.exists() else "deepspeed"


def launcher_env() -> dict[str, str]:
    """The launcher and its ranks see the same object store as the flow and import this checkout."""
    env = child_env(storage.StorageSettings.from_env().to_env())
    env.setdefault("PYTHONUNBUFFERED", "1")  # rank output reaches the flow's log line by line
    return env
