"""Beam pipeline options shared by the data jobs.

Defaults: DirectRunner in multi-processing mode over all cores. Any Beam flag the
job's own parser does not know (`--runner`, `--flink_master`, `--project`, ...) is
passed through to `PipelineOptions` untouched, so the same command runs on Flink,
Spark, Dataflow or Dask. S3 settings come from the flags or from the environment,
and are written back as `S3Options` so Beam's own s3:// filesystem sees them too.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from common.storage import StorageSettings, beam_s3_args, settings_from_beam_options


def pipeline_options(beam_args: list[str] | None = None, *, job_name: str | None = None) -> PipelineOptions:
    """PipelineOptions with project defaults filled in where the user gave nothing."""
    args = list(beam_args or [])
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
    # Fill S3Options from the environment for every field the user did not pass.
    env_settings = StorageSettings.from_env()
    for flag in beam_s3_args(env_settings):
        if flag.split("=", 1)[0] not in given:
            args.append(flag)
    if job_name and "--job_name" not in given:
        args.append(f"--job_name={job_name}")
    opts = PipelineOptions(args)
    opts.view_as(StandardOptions)  # validate early
    opts.view_as(DirectOptions)
    return opts


def storage_settings(options: PipelineOptions) -> StorageSettings:
    """The StorageSettings DoFns should carry (they may run where the environment differs)."""
    return settings_from_beam_options(options)


def run(pipeline) -> None:
    """Run a pipeline to the end, and close the dask Client the DaskRunner opens (it never does)."""
    if pipeline.runner.__class__.__name__ == "DaskRunner":
        from pipelines import daskrunner

        daskrunner.install()  # bounded worker memory: see pipelines/daskrunner.py
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()
