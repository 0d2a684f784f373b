"""Raw web text to clean, deduplicated documents (Apache Beam).

    python -m pipelines.clean --input 'data/*.warc.gz' --input s3://raw/cc/*.wet.gz \
        --output s3://corpus/clean [--config clean.yaml] [--format auto] [--set dedup.bands=20] \
        [--runner FlinkRunner --flink_master=host:8081 ...]

Reads WARC / WET / JSONL(.gz/.zst) / Parquet / text, extracts main text from HTML
(resiliparse), normalises, applies language id, the Gopher and C4 rules, exact and
MinHash-LSH dedup, and writes `documents/`, `rejects/`, `stats.json` and, last,
`manifest.json` (layout: pipelines/documents.py; rules and defaults: docs/clean.md).
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
from pipelines.cleaning import readers
from pipelines.cleaning.config import FORMATS, CleanConfig, build
from pipelines.cleaning.job import InputError, build_pipeline, check_bucket, clear_output, input_refs, resolve_inputs

log = logging.getLogger("pipelines.clean")


def run(cfg: CleanConfig, beam_args: list[str] | None = None, *, break_claim: bool = False) -> dict:
    """Run the job; returns the manifest it wrote. Raises InputError / StorageError before any work
    when an input or the output cannot be reached, ClaimHeld when another run writes the output."""
    if not cfg.output:
        raise InputError("no --output given")
    job = beam_opts.job(beam_args, name="clean")
    settings = job.settings
    paths = resolve_inputs(cfg.inputs, settings)
    check_bucket(cfg.output, dataclasses.replace(settings, max_attempts=1), "--output")
    output = storage.normalize(cfg.output)
    cfg = dataclasses.replace(cfg, output=output)
    with claims.hold(output, "clean", settings, break_claim=break_claim) as claim:
        return _run(cfg, job, paths, claim)


def _run(cfg: CleanConfig, job: beam_opts.BeamJob, paths: list[str], claim: claims.Claim) -> dict:
    output, settings = cfg.output, job.settings
    files = [(f, cfg.format if cfg.format != "auto" else readers.detect_format(f, settings)) for f in paths]
    refs = input_refs(files, settings)
    log.info("clean: %d input files -> %s", len(files), output)
    clear_output(output, settings)
    p = beam.Pipeline(options=job.options)
    build_pipeline(p, cfg, files, refs, settings, claim)
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
    ap.add_argument("--output", required=True, help="output URI (directory or s3://bucket/prefix)")
    ap.add_argument("--config", help="JSON or YAML file with CleanConfig fields (docs/clean.md)")
    ap.add_argument("--format", choices=FORMATS, help="force one reader for every input (default: detect)")
    add_claim_flag(ap)
    add_overrides(ap, "langid.languages=en,de dedup.bands=20")
    add_debug(ap)
    args, beam_args = ap.parse_known_args(argv)
    return build(args.input, args.output, args.format, args.config, args.set), beam_args, args


def main(argv: list[str] | None = None) -> int:
    def body() -> str:
        cfg, beam_args, flags = parse(argv)
        c = run(cfg, beam_args, break_claim=flags.break_claim)["counters"]
        return (f"clean: read {c['records_read']}, kept {c['kept']}, dropped {sum(c['dropped'].values())}, "
                f"rejected {sum(c['rejected'].values())} -> {cfg.output}/manifest.json")

    return run_job(body, (InputError,), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
