"""The pack job as a library call: validate inputs, run the Beam pipeline, publish the manifest."""

from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
import numpy as np

from common import claims, manifest, packformat, storage
from pipelines import beam as beam_opts
from pipelines import sharding
from pipelines.packing.config import PackConfig
from pipelines.packing.encode import encoder_for
from pipelines.packing.transforms import SUMMARY, PackDocuments
from pipelines.tokenizer.load import load_for_pack
from pipelines.tokenizer.pretrained import HFTokenizer

TOKENIZER_COPY = "tokenizer"  # <pack>/tokenizer/: an HF tokenizer's files, for the export

log = logging.getLogger(__name__)


class EmptyInputError(ValueError):
    """The documents output holds no text to pack."""


def run(cfg: PackConfig, beam_args: list[str] | None = None, *, break_claim: bool = False) -> dict:
    """Pack `cfg.input` with `cfg.tokenizer` into `cfg.output`; returns the manifest (written last).
    ClaimHeld when another run writes the output (common/claims.py)."""
    job = beam_opts.job(beam_args, name="pack")
    storage.check_reachable(cfg.output, job.settings)
    with claims.hold(cfg.output, "pack", job.settings, break_claim=break_claim) as claim:
        return _run(cfg, job, claim)


def _run(cfg: PackConfig, job: beam_opts.BeamJob, claim: claims.Claim) -> dict:
    options, settings = job.options, job.settings
    docs_manifest = manifest.read(cfg.input, kind="documents", settings=settings)
    paths = [s["path"] for s in docs_manifest["shards"]]
    if not paths:
        raise EmptyInputError(f"{cfg.input} lists no document shards: nothing to pack")
    # This project's tokenizer output (its hash and special tokens verified) or an existing HF tokenizer.
    tok = load_for_pack(cfg.tokenizer, settings)
    specials = tok.special_ids.as_dict()
    dtype = packformat.dtype_for_vocab(tok.vocab_size).str
    work = storage.join(cfg.output, sharding.WORK_DIR) + "/"

    # A rerun must never leave an older manifest describing newer (or half-written) shards.
    storage.delete(manifest.manifest_uri(cfg.output), settings)
    storage.delete_prefix(work, settings)
    storage.delete_prefix(storage.join(cfg.output, TOKENIZER_COPY) + "/", settings)
    storage.abort_stale_uploads(cfg.output.rstrip("/") + "/", settings)

    encoder = encoder_for(tok, cfg.encode_batch_docs, dtype)
    p = beam.Pipeline(options=options)
    _ = (p | "InputShards" >> beam.Create(list(enumerate(paths)))
         | "Pack" >> PackDocuments(cfg, cfg.input, encoder, specials, dtype, settings))
    job.run(p)

    try:
        summary = json.loads(storage.read_text(storage.join(cfg.output, SUMMARY), settings))
    except FileNotFoundError:  # no input shard had a row group: nothing reached the summary
        summary = {"counts": {}, "shards": []}
    counters, shards = summary["counts"], summary["shards"]
    counters = {k: counters.get(k, 0) for k in sorted(set(counters) | {"tokens_packed", "docs", "examples"})}
    if counters["tokens_packed"] == 0:
        storage.delete_prefix(work, settings)
        raise EmptyInputError(f"{cfg.input} has {counters['docs']} documents but no text to pack; "
                              "no manifest written")
    _remove_stale_shards(cfg.output, {s["path"] for s in shards}, settings)
    storage.delete_prefix(work, settings)

    examples = counters["examples"]
    inputs = [manifest.input_ref(cfg.input, docs_manifest)]
    if isinstance(tok, HFTokenizer):  # no manifest to name: the pack keeps a copy and records its hash
        copy = storage.join(cfg.output, TOKENIZER_COPY)
        for name, data in tok.files.items():
            storage.write_bytes(storage.join(copy, name), data, settings)
        tokenizer_ref = tok.ref(copy)
    else:
        inputs.append(manifest.input_ref(cfg.tokenizer, tok.manifest))
        tokenizer_ref = tok.ref()
    m = manifest.build(
        "pack",
        inputs=inputs,
        config=dataclasses.asdict(cfg),
        shards=shards,
        counters=counters,
        format=packformat.FORMAT,
        dtype=np.dtype(dtype).name,  # "uint16" | "uint32", always little-endian on disk
        seq_len=cfg.max_seq_length,
        vocab_size=tok.vocab_size,
        special_ids=specials,  # the tokenizer's own: the trainer's model config takes them from here
        tokenizer=tokenizer_ref,
        padding_fraction=round(counters["padding_tokens"] / (examples * cfg.max_seq_length), 6),
        seed=cfg.seed,
    )
    claim.check()
    manifest.write(cfg.output, m, settings)
    log.info("packed %d examples (%d tokens, padding %.4f) into %d shards",
             examples, counters["tokens_packed"], m["padding_fraction"], len(shards))
    return m


def _remove_stale_shards(output: str, keep: set[str], settings) -> None:
    """Shards of an earlier run with another shard count would otherwise sit beside ours."""
    prefix = storage.join(output, packformat.SHARDS_DIR) + "/"
    for uri in storage.list_files(prefix, settings):
        rel = uri[len(output.rstrip("/")) + 1:]
        if rel not in keep:
            storage.delete(uri, settings)
