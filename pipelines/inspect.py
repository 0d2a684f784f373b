"""Look at any pipeline output: a manifest summary as JSON, or a sample of records as JSONL.

    python -m pipelines.inspect s3://corpus/clean              # summary (kind, counts, shards, hashes)
    python -m pipelines.inspect s3://corpus/clean --sample 5   # the first 5 records as JSONL

Every summary has the fields all manifests share (`generic_summary`); a manifest kind with an
entry in HANDLERS, the one table of handlers, adds its own fields and a record sampler. The handler
modules (pipelines/<stage>/inspect.py) know nothing of this one: to add a kind, write its
`details(output, manifest) -> dict` and `sample(output, manifest) -> iterator` and add a line to
HANDLERS. Kinds without an entry get the generic summary and no sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from typing import Callable, Iterator

from common import cli, manifest, storage
from pipelines import documents
from pipelines.packing import inspect as pack_inspect
from pipelines.tokenizer import inspect as tokenizer_inspect


@dataclasses.dataclass(frozen=True)
class Handler:
    # the kind's own summary fields, added to generic_summary's: (output URI, manifest) -> JSON-able dict
    details: Callable[[str, dict], dict] | None = None
    # records of a finished output, in a stable order: (output URI, manifest) -> iterator of dicts
    sample: Callable[[str, dict], Iterator[dict]] | None = None


def generic_summary(output: str, m: dict) -> dict:
    """What every manifest has: kind, hashes, inputs, shard totals, counters."""
    shards = m.get("shards", [])
    return {
        "uri": output,
        "kind": m.get("kind"),
        "manifest_hash": m.get("manifest_hash"),
        "config_hash": m.get("config_hash"),
        "code_version": m.get("code_version"),
        "inputs": [i.get("uri") for i in m.get("inputs", [])],
        "shards": len(shards),
        "shard_records": sum(int(s.get("records", 0)) for s in shards),
        "shard_bytes": sum(int(s.get("bytes", 0)) for s in shards),
        "counters": m.get("counters", {}),
    }


def _documents_details(output: str, m: dict) -> dict:
    return {"rejects": sum(int(s.get("records", 0)) for s in m.get("rejects", [])), "format": m.get("format")}


def _documents_sample(output: str, m: dict) -> Iterator[dict]:
    for s in m["shards"]:
        yield from documents.iter_shard(storage.join(output, s["path"]))


HANDLERS: dict[str, Handler] = {
    "documents": Handler(_documents_details, _documents_sample),
    "tokenizer": Handler(tokenizer_inspect.details, tokenizer_inspect.sample),
    "pack": Handler(pack_inspect.details, pack_inspect.sample),
}


def summarize(output: str) -> dict:
    m = manifest.read(output)
    handler = HANDLERS.get(m.get("kind"), Handler())
    return {**generic_summary(output, m), **(handler.details(output, m) if handler.details else {})}


def sample(output: str, n: int) -> list[dict]:
    m = manifest.read(output)
    handler = HANDLERS.get(m.get("kind"))
    if handler is None or handler.sample is None:
        raise manifest.ManifestError(f"no record sampler for manifest kind {m.get('kind')!r}; "
                                     f"add one to pipelines.inspect.HANDLERS")
    return list(itertools.islice(handler.sample(output, m), n))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.inspect", description=__doc__.split("\n\n")[0])
    ap.add_argument("uri", help="an output directory / prefix holding manifest.json (or the manifest itself)")
    ap.add_argument("--sample", type=int, default=0, metavar="N", help="print N records as JSONL instead")
    cli.add_debug(ap)
    a = ap.parse_args(argv)
    output = storage.parent(a.uri) if a.uri.endswith(manifest.MANIFEST_NAME) else a.uri.rstrip("/")

    def body() -> str:
        if a.sample:
            return "\n".join(json.dumps(rec, ensure_ascii=False, default=str) for rec in sample(output, a.sample))
        return json.dumps(summarize(output), indent=1, ensure_ascii=False, default=str)

    return cli.run_job(body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
