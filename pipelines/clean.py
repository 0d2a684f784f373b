"""Raw web text to clean, deduplicated documents (Apache Beam).

    python -m pipelines.clean --input 'data/*.warc.gz' --input s3://raw/cc/*.wet.gz \
        --output s3://corpus/clean [--config clean.yaml] [--format auto] [--set dedup.bands=20] \
        [--runner FlinkRunner --flink_master=host:8081 ...]
    python -m pipelines.clean --input-list wet.paths.gz [--input-prefix s3://commoncrawl/] --output ...

Reads WARC / WET / JSONL(.gz/.zst) / Parquet / text, extracts main text from HTML
(resiliparse), normalises, applies language id, the Gopher and C4 rules, exact and
MinHash-LSH dedup, and writes `documents/`, `rejects/` (shards of about `output.shard_mb`, as
many as the data needs), `stats.json` and, last, `manifest.json` (layout: pipelines/documents.py;
rules, defaults and sizing: docs/clean.md).
Any flag this parser does not know is a Beam pipeline option.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import apache_beam as beam

from common import claims, manifest, storage
from common.cli import add_claim_flag, add_debug, add_overrides, run_job
from pipelines import beam as beam_opts
from pipelines.cleaning.config import FORMATS, CleanConfig, build
from pipelines.cleaning.job import InputError, Inputs, build_pipeline, check_bucket, clear_output, gather_inputs

log = logging.getLogger("pipelines.clean")

USER_ERRORS = (InputError,)  # besides common.cli's config, manifest and storage errors (exit 2)


def run(cfg: CleanConfig, beam_args: list[str] | None = None, *, break_claim: bool = False) -> dict:
    """Run the job; returns the manifest it wrote. Raises InputError / StorageError before any work
    when an input or the output cannot be reached, ClaimHeld when another run writes the output."""
    if not cfg.output:
        raise InputError("no --output given")
    if not cfg.inputs and not cfg.input_lists:
        raise InputError("no --input or --input-list given: pass at least one file, directory, glob or paths file")
    job = beam_opts.job(beam_args, name="clean")
    settings = job.settings
    inputs = gather_inputs(cfg, settings)
    check_bucket(cfg.output, dataclasses.replace(settings, max_attempts=1), "--output")
    output = storage.normalize(cfg.output)
    cfg = dataclasses.replace(cfg, output=output)
    with claims.hold(output, "clean", settings, break_claim=break_claim) as claim:
        return _run(cfg, job, inputs, claim)


def _run(cfg: CleanConfig, job: beam_opts.BeamJob, inputs: Inputs, claim: claims.Claim) -> dict:
    output, settings = cfg.output, job.settings
    log.info("clean: %d input files, %.1f MB -> %s", len(inputs.files), inputs.bytes / 2**20, output)
    clear_output(output, settings)
    p = beam.Pipeline(options=job.options)
    build_pipeline(p, cfg, inputs, settings, claim)
    job.run(p)
    m = manifest.read(output, kind="documents", settings=settings)
    claim.check()  # the manifest read above was written under this run's claim, so its counts are this run's
    return m


def parse_args(argv: list[str] | None) -> tuple[CleanConfig, list[str]]:
    cfg, beam_args, _ = parse(argv)
    return cfg, beam_args


def parse(argv: list[str] | None) -> tuple[CleanConfig, list[str], argparse.Namespace]:
    """(config, Beam arguments, the run-control flags: --break-claim, --debug)."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.clean", description=__doc__.split("\n\n")[0],
                                 epilog="Other flags are Beam pipeline options (--runner, --direct_num_workers...).")
    ap.add_argument("--input", action="append", default=[], help="file, directory or glob; local or s3://; repeatable")
    ap.add_argument("--input-list", action="append", default=[],
                    help="paths file (Common Crawl wet.paths.gz style: one key per line, gzip or plain); repeatable")
    ap.add_argument("--input-prefix", help="what relative lines of --input-list are joined onto "
                                           f"(default {CleanConfig.input_prefix})")
    ap.add_argument("--output", required=True, help="output URI (directory or s3://bucket/prefix)")
    ap.add_argument("--config", help="JSON or YAML file with CleanConfig fields (docs/clean.md)")
    ap.add_argument("--format", choices=FORMATS, help="force one reader for every input (default: detect)")
    add_claim_flag(ap)
    add_overrides(ap, "langid.languages=en,de dedup.bands=20")
    add_debug(ap)
    args, beam_args = ap.parse_known_args(argv)
    return build(args.input, args.output, args.format, args.config, args.set, args.input_list,
                 args.input_prefix), beam_args, args


def main(argv: list[str] | None = None) -> int:
    def body() -> str:
        cfg, beam_args, flags = parse(argv)
        c = run(cfg, beam_args, break_claim=flags.break_claim)["counters"]
        return (f"clean: read {c['records_read']}, kept {c['kept']}, dropped {sum(c['dropped'].values())}, "
                f"rejected {sum(c['rejected'].values())} -> {cfg.output}/manifest.json")

    return run_job(body, USER_ERRORS, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
