"""Look at any pipeline output: a manifest summary as JSON, or a sample of records as JSONL.

    python -m pipelines.inspect s3://corpus/clean              # summary (kind, counts, shards, hashes)
    python -m pipelines.inspect s3://corpus/clean --sample 5   # the first 5 records as JSONL

Each manifest kind has a handler in HANDLERS. A stage registers its own with
`register("pack", summarize=..., sample=...)`, or by adding an entry to HANDLERS here;
kinds without one get the generic summary and no sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from typing import Callable, Iterator

from common import cli, manifest, storage
from pipelines.packing import inspect as pack_inspect
from pipelines.tokenizer import inspect as tokenizer_inspect


@dataclasses.dataclass(frozen=True)
class Handler:
    # summary dict for a finished output: (output URI, manifest) -> JSON-able dict
    summarize: Callable[[str, dict], dict]
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


def _documents_summary(output: str, m: dict) -> dict:
    out = generic_summary(output, m)
    out["rejects"] = sum(int(s.get("records", 0)) for s in m.get("rejects", []))
    out["format"] = m.get("format")
    return out


def _documents_sample(output: str, m: dict) -> Iterator[dict]:
    from pipelines import documents

    for s in m["shards"]:
        yield from documents.iter_shard(storage.join(output, s["path"]))


HANDLERS: dict[str, Handler] = {
    "documents": Handler(_documents_summary, _documents_sample),
    "tokenizer": Handler(tokenizer_inspect.summarize, tokenizer_inspect.sample),
    "pack": Handler(pack_inspect.summarize, pack_inspect.sample),
}


def register(kind: str, summarize: Callable[[str, dict], dict] | None = None,
             sample: Callable[[str, dict], Iterator[dict]] | None = None) -> None:
    """Add or replace the handler for a manifest kind (e.g. "tokenizer", "pack")."""
    HANDLERS[kind] = Handler(summarize or generic_summary, sample)


def summarize(output: str) -> dict:
    m = manifest.read(output)
    handler = HANDLERS.get(m.get("kind"), Handler(generic_summary))
    return handler.summarize(output, m)


def sample(output: str, n: int) -> list[dict]:
    m = manifest.read(output)
    handler = HANDLERS.get(m.get("kind"))
    if handler is None or handler.sample is None:
        raise manifest.ManifestError(f"no record sampler for manifest kind {m.get('kind')!r}; "
                                     f"register one with pipelines.inspect.register()")
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
