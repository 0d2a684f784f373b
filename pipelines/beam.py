"""Beam pipeline options shared by the data jobs, and how a job runs and fails.

Defaults: DirectRunner in multi-processing mode over all cores. Any Beam flag the
job's own parser does not know (`--runner`, `--flink_master`, `--project`, ...) is
passed through to `PipelineOptions` untouched, so the same command runs on Flink,
Spark, Dataflow or Dask. The S3 endpoint and region come from the flags or from the
environment and are written back as `S3Options` so Beam's own s3:// filesystem sees them too.

Credentials never enter the pipeline options: Beam logs every option when a worker starts
and ships them with the job graph. Workers take credentials from their own environment (or
boto3's provider chain: profile, instance or pod role). `--s3_access_key_id` /
`--s3_secret_access_key` / `--s3_session_token` are still accepted: they are taken out of the
options and handed to the workers this process starts (DirectRunner) through their environment;
workers on a cluster need the credentials in their own environment (docs/security.md).

`BeamJob.run(p)` sends everything Beam and its workers print to a private log file (named
in the error line when the job fails; `--debug` keeps it on the terminal) and turns a
worker's failure into the error it was (an S3 outage, refused credentials...), one line long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from common import cli
from common.processes import env_overlay
from common.storage import StorageSettings, beam_s3_args, settings_from_beam_options

log = logging.getLogger("pipelines.beam")

# Beam's S3Options credential flags -> the environment variables boto3 reads in a worker.
CREDENTIAL_FLAGS = {"--s3_access_key_id": "AWS_ACCESS_KEY_ID", "--s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
                    "--s3_session_token": "AWS_SESSION_TOKEN"}


class JobFailed(RuntimeError):
    """The Beam job failed in a way this project does not classify (a bug, or a runner problem)."""

    exit_code = 1  # printed as one line by common.cli, with the log that holds the traceback


def split_credentials(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the args without credential flags, {ENV_VAR: value} of the credentials they carried)."""
    rest: list[str] = []
    creds: dict[str, str] = {}
    it = iter(args)
    for a in it:
        flag, eq, value = a.partition("=")
        if flag in CREDENTIAL_FLAGS:
            creds[CREDENTIAL_FLAGS[flag]] = value if eq else next(it, "")
        else:
            rest.append(a)
    return rest, creds


def pipeline_options(beam_args: list[str] | None = None, *, job_name: str | None = None) -> PipelineOptions:
    """PipelineOptions with project defaults filled in where the user gave nothing; never credentials."""
    args, _ = split_credentials(list(beam_args or []))
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if "--runner" not in given:
        args.append("--runner=DirectRunner")
    runner = next((a.split("=", 1)[1] for a in args if a.startswith("--runner=")), "DirectRunner")
    if runner.endswith("DirectRunner") or runner == "direct":
        if "--direct_running_mode" not in given:
            args.append("--direct_running_mode=multi_processing")
        if "--direct_num_workers" not in given:
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if runner.endswith("DaskRunner") and not given & {"--dask_npartitions", "--dask_partition_size"}:
        # Beam's DaskRunner puts up to 128 elements of a Create in one partition (one task), and
        # partitions are what its ParDos and GroupByKeys run on: one input file (or input shard)
        # per partition makes parallelism and each task's memory follow the data.
        args.append("--dask_partition_size=1")
    # Fill the S3 endpoint and region from the environment for every field the user did not pass.
    for flag in beam_s3_args(StorageSettings.from_env()):
        if flag.split("=", 1)[0] not in given:
            args.append(flag)
    if job_name and "--job_name" not in given:
        args.append(f"--job_name={job_name}")
    opts = PipelineOptions(args)
    opts.view_as(StandardOptions)  # validate early
    opts.view_as(DirectOptions)
    return opts


def storage_settings(options: PipelineOptions) -> StorageSettings:
    """The StorageSettings of these options (endpoint, region) with the credentials of this environment."""
    return settings_from_beam_options(options)


@dataclasses.dataclass
class BeamJob:
    """One data job's Beam options, its storage settings, and how to run it."""

    name: str
    options: PipelineOptions  # what Beam sees, logs and ships: no credentials
    settings: StorageSettings  # this process's view: endpoint, region and credentials
    flag_credentials: dict[str, str]  # credentials given as --s3_* flags, for the workers this process starts

    def run(self, p) -> None:
        """Run `p` to the end. Worker output goes to a log file unless debugging; failures become one error."""
        if p.runner.__class__.__name__ == "DaskRunner":
            from pipelines import daskrunner

            daskrunner.install(self.options)  # bounded worker memory: see pipelines/daskrunner.py
        with env_overlay(self.flag_credentials), self._captured_output() as log_path:
            try:
                result = p.run()
                try:
                    result.wait_until_finish()
                finally:
                    client = getattr(result, "client", None)  # the DaskRunner opens a dask Client, never closes it
                    if client is not None:
                        client.close()
            except Exception as exc:  # noqa: BLE001 - re-raised as what it was, one line long
                raise worker_error(exc, self.name, log_path) from exc


    @contextlib.contextmanager
    def _captured_output(self) -> Iterator[str | None]:
        if cli.debug_enabled():
            yield None
            return
        fd, path = tempfile.mkstemp(prefix=f"electra-{self.name}-", suffix=".log")  # 0600, unpredictable name
        log.info("%s: Beam and worker output -> %s (kept if the job fails; --debug prints it here)", self.name, path)
        with _fds_redirected(fd):
            try:
                yield path
            except BaseException:
                os.close(fd)
                raise
        os.close(fd)
        os.unlink(path)


def job(beam_args: list[str] | None = None, *, name: str) -> BeamJob:
    """The BeamJob for a data job's leftover (Beam) arguments."""
    args, creds = split_credentials(list(beam_args or []))
    options = pipeline_options(args, job_name=name)
    settings = storage_settings(options)
    if creds:
        settings = dataclasses.replace(settings, access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
                                       secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                                       session_token=creds.get("AWS_SESSION_TOKEN"))
    return BeamJob(name, options, settings, creds)


@contextlib.contextmanager
def _fds_redirected(fd: int) -> Iterator[None]:
    """Point this process's stdout and stderr (and so every child's: DirectRunner workers) at `fd`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in saved:
            os.close(s)


def _known_errors() -> dict[str, type[BaseException]]:
    """Errors a worker may raise that have an exit code of their own, by qualified and plain name."""
    from common import claims

    out: dict[str, type[BaseException]] = {}
    for cls in (*cli.RETRY_ERRORS, *cli.USER_ERRORS, *claims.CLAIM_ERRORS):
        for sub in _subclasses(cls):
            out[f"{sub.__module__}.{sub.__qualname__}"] = sub
            out.setdefault(sub.__qualname__, sub)
    return out


def _subclasses(cls: type) -> list[type]:
    seen, todo = [], [cls]
    while todo:
        c = todo.pop()
        if c not in seen and c.__module__.split(".")[0] in ("common", "pipelines", "builtins"):
            seen.append(c)
            todo.extend(c.__subclasses__())
    return seen


def worker_error(exc: BaseException, job_name: str, log_path: str | None) -> BaseException:
    """The error a failed Beam job should surface: the classified one a worker raised, else JobFailed."""
    where = f" (Beam worker log: {log_path})" if log_path else ""
    known = _known_errors()
    if type(exc) in known.values():
        return exc
    text = "\n".join(str(e) for e in _chain(exc))
    names = sorted(known, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r"): (.+)")
    found = list(pattern.finditer(text))
    if found:
        name, message = found[-1].group(1), found[-1].group(2).strip()
        message = re.sub(r"\s*\[while running '[^']*'\]\s*$", "", message)
        cls = known[name]
        try:
            return cls(message + where)
        except TypeError:  # an error class with another constructor: keep its text
            pass
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), type(exc).__name__)
    return JobFailed(f"the {job_name} job failed: {last[:500]}{where or ' (rerun with --debug for the traceback)'}")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out
