"""The clean job's pieces behind `pipelines.clean.run`: input checks, output reset, the Beam graph."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os

import apache_beam as beam

from common import manifest, storage
from pipelines import documents, sharding
from pipelines.cleaning import readers, sinks, transforms
from pipelines.cleaning.config import CleanConfig
from pipelines.cleaning.records import Tag
from pipelines.cleaning.sinks import ManifestWriter


class InputError(ValueError):
    """An input or output the user must fix before any work starts."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    files: list[tuple[str, str]]  # (uri, format) of every input file, sorted
    refs: list[dict]  # how the manifest names them (a paths file names its files as one entry)
    bytes: int  # their stored size in all: how many blocks the documents are grouped into


def gather_inputs(cfg: CleanConfig, settings: storage.StorageSettings) -> Inputs:
    """Every --input (file, directory, glob) and every file an --input-list names, checked to exist."""
    globbed = resolve_inputs(cfg.inputs, settings)
    list_refs, listed = [], set()
    for uri in cfg.input_lists:
        named, ref = read_input_list(uri, cfg.input_prefix, settings)
        list_refs.append(ref)
        listed.update(storage.normalize(f) for f in named)
    paths = sorted(set(globbed) | listed)
    sizes = input_sizes(paths, settings)  # first: a missing listed file is a clear error, not a format guess
    files = [(f, cfg.format if cfg.format != "auto" else readers.detect_format(f, settings)) for f in paths]
    return Inputs(files, input_refs(files, sizes, listed - set(globbed)) + list_refs, sum(sizes.values()))


def resolve_inputs(patterns: tuple[str, ...], settings: storage.StorageSettings) -> list[str]:
    """Expand every --input (glob, file, local directory); fail on the first that names nothing."""
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


def read_input_list(uri: str, prefix: str, settings: storage.StorageSettings) -> tuple[list[str], dict]:
    """The files a paths file names (Common Crawl's `wet.paths.gz`: one key per line, gzip or plain),
    relative lines joined onto `prefix`; and how the manifest names the list itself."""
    check_bucket(uri, dataclasses.replace(settings, max_attempts=1), "--input-list")
    if not storage.exists(uri, settings):
        raise InputError(f"--input-list {uri}: no such file")
    sha = hashlib.sha256()
    files = []
    with readers.open_decompressed(uri, settings) as f:
        for raw in f:
            sha.update(raw)
            line = raw.decode("utf-8").strip()
            if not line or line.startswith("#"):
                continue
            absolute = storage.is_s3(line) or line.startswith("/")
            files.append(line if absolute else storage.join(prefix, line))
    if not files:
        raise InputError(f"--input-list {uri}: names no files")
    check_bucket(files[0], dataclasses.replace(settings, max_attempts=1), f"--input-list {uri}: line 1")
    ref = {"uri": uri, "format": "input-list", "prefix": prefix, "files": len(files), "sha256": sha.hexdigest()}
    return files, ref


def check_bucket(uri: str, settings: storage.StorageSettings, flag: str) -> None:
    try:
        storage.check_reachable(uri, settings)
    except FileNotFoundError:
        bucket = storage.split_s3(uri)[0]
        raise InputError(f"{flag} {uri}: bucket {bucket!r} does not exist at this endpoint "
                         f"(check the URI, AWS_ENDPOINT_URL and credentials)") from None


def input_sizes(files: list[str], settings: storage.StorageSettings) -> dict[str, int]:
    """Size of every input (HEAD requests in parallel: thousands of files are normal)."""
    def size(uri):
        try:
            return uri, storage.size(uri, settings)
        except FileNotFoundError:
            raise InputError(f"input {uri}: no such file (named by --input or --input-list)") from None

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return dict(pool.map(size, files))


def input_refs(files: list[tuple[str, str]], sizes: dict[str, int], listed: set[str]) -> list[dict]:
    """How the manifest names its raw inputs: uri, format, size, and sha256 when local. Files
    named by an --input-list are named by that list's own entry instead (thousands of them)."""
    out = []
    for uri, fmt in files:
        if uri in listed:
            continue
        ref = {"uri": uri, "format": fmt, "size": sizes[uri]}
        if not storage.is_s3(uri):
            ref["sha256"] = storage.sha256_uri(uri)
        out.append(ref)
    return out


def clear_output(output: str, settings: storage.StorageSettings) -> None:
    """Manifest first: from here until the new one is written, the output reads as unfinished.
    Then what an earlier run left: shards, blocks, and multipart uploads a killed run left open."""
    storage.delete(manifest.manifest_uri(output), settings)
    storage.delete(storage.join(output, documents.STATS_NAME), settings)
    for sub in (documents.DOCUMENTS_DIR, documents.REJECTS_DIR, sharding.WORK_DIR):
        storage.delete_prefix(storage.join(output, sub) + ("/" if storage.is_s3(output) else ""), settings)
    storage.abort_stale_uploads(output.rstrip("/") + "/", settings)


def build_pipeline(p: beam.Pipeline, cfg: CleanConfig, inputs: Inputs, settings: storage.StorageSettings | None,
                   claim=None) -> None:
    T = transforms
    items = (p | "Read" >> T.ReadInputs(inputs.files, cfg.reader, settings)
               | "Clean" >> T.CleanDocuments(cfg))
    docs = items | "Documents" >> T.Select(Tag.DOC)
    dedup = cfg.dedup.exact or cfg.dedup.near
    to_block = (items, docs | "Dedup" >> T.DuplicateFlags(cfg.dedup)) if dedup else items
    blocks = to_block | "WriteBlocks" >> T.WriteBlocks(cfg.output, cfg.out.blocks(inputs.bytes), settings)
    written = blocks | "WriteShards" >> sharding.WriteShards(cfg.output, sinks.layouts(cfg.out.shard_mb), settings)
    writer = ManifestWriter(cfg.output, cfg.rules(), inputs.refs, manifest.code_version(), settings, claim)
    _ = written | "Finalize" >> sharding.Finalize(writer)
