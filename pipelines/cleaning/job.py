"""The clean job's pieces behind `pipelines.clean.run`: input checks, output reset, the Beam graph."""

from __future__ import annotations

import dataclasses
import os

import apache_beam as beam

from common import manifest, storage
from pipelines import documents
from pipelines.cleaning import transforms
from pipelines.cleaning.config import CleanConfig
from pipelines.cleaning.sinks import ManifestWriter


class InputError(ValueError):
    """An input or output the user must fix before any work starts."""


def resolve_inputs(patterns: tuple[str, ...], settings: storage.StorageSettings) -> list[str]:
    """Expand every --input (glob, file, local directory); fail on the first that names nothing."""
    if not patterns:
        raise InputError("no --input given: pass at least one file, directory or glob")
    quick = dataclasses.replace(settings, max_attempts=1)  # a wrong endpoint should fail in seconds
    files: list[str] = []
    for pattern in patterns:
        check_bucket(pattern, quick, "--input")
        if not storage.is_s3(pattern) and os.path.isdir(pattern):
            found = storage.list_files(pattern)
        else:
            found = storage.glob(pattern, settings)
        if not found:
            what = "glob matched no files" if any(c in pattern for c in "*?[") else "no such file"
            raise InputError(f"--input {pattern}: {what}. Check the path (quote globs so the shell leaves them).")
        files.extend(storage.normalize(f) for f in found)
    return sorted(set(files))


def check_bucket(uri: str, settings: storage.StorageSettings, flag: str) -> None:
    try:
        storage.check_reachable(uri, settings)
    except FileNotFoundError:
        bucket = storage.split_s3(uri)[0]
        raise InputError(f"{flag} {uri}: bucket {bucket!r} does not exist at this endpoint "
                         f"(check the URI, AWS_ENDPOINT_URL and credentials)") from None


def input_refs(files: list[tuple[str, str]], settings: storage.StorageSettings) -> list[dict]:
    """How the manifest names its raw inputs: uri, format, size, and sha256 when local."""
    out = []
    for uri, fmt in files:
        ref = {"uri": uri, "format": fmt, "size": storage.size(uri, settings)}
        if not storage.is_s3(uri):
            ref["sha256"] = storage.sha256_uri(uri)
        out.append(ref)
    return out


def clear_output(output: str, settings: storage.StorageSettings) -> None:
    """Manifest first: from here until the new one is written, the output reads as unfinished."""
    storage.delete(manifest.manifest_uri(output), settings)
    storage.delete(storage.join(output, documents.STATS_NAME), settings)
    for sub in (documents.DOCUMENTS_DIR, documents.REJECTS_DIR):
        storage.delete_prefix(storage.join(output, sub) + ("/" if storage.is_s3(output) else ""), settings)


def build_pipeline(p: beam.Pipeline, cfg: CleanConfig, files: list[tuple[str, str]], refs: list[dict],
                   settings: storage.StorageSettings | None, claim=None) -> None:
    T = transforms
    items = (p | "Read" >> T.ReadInputs(files, cfg.reader, settings)
               | "Clean" >> T.CleanDocuments(cfg))
    docs = items | "Documents" >> T.Select(T.DOC)
    flags = []
    if cfg.dedup.exact:
        flags.append(docs | "ExactDedup" >> T.ExactDuplicateFlags())
    if cfg.dedup.near:
        flags.append(docs | "NearDedup" >> T.NearDuplicateFlags(cfg.dedup))
    to_write = (docs, tuple(flags) | "AllFlags" >> beam.Flatten()) if flags else docs
    written = to_write | "WriteDocuments" >> T.WriteShards(cfg.output, "documents", cfg.out.num_shards,
                                                                    settings)
    rejects = items | "Rejects" >> T.Select(T.REJECT)
    drops = (items, written) | "AllOutcomes" >> beam.Flatten() | "Drops" >> T.Select(T.DROP)
    counts = (items | "ReadCounts" >> T.Select(T.COUNT),
              drops | "DropCounts" >> beam.Map(lambda reason: (f"dropped:{reason}", 1)),
              rejects | "RejectCounts" >> beam.Map(lambda r: (f"rejected:{r['reason']}", 1)))
    shards = (written,
              rejects | "WriteRejects" >> T.WriteShards(cfg.output, "rejects", cfg.out.reject_shards, settings),
              counts | "AllCounts" >> beam.Flatten() | "TagCounts" >> beam.Map(lambda kv: (T.COUNT, kv)))
    writer = ManifestWriter(cfg.output, cfg.rules(), refs, manifest.code_version(), settings, claim)
    _ = shards | "Collect" >> beam.Flatten() | "Finalize" >> T.Finalize(writer)
