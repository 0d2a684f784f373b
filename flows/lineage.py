"""Lineage: follow an output's manifest `inputs` back to the raw documents.

    python -m flows.lineage s3://bucket/models/electra-small-demo/step-000000200
    python -m flows.lineage s3://bucket/demo/reports/<model>/<ts> --json

prints the chain, newest first, for example

    model    s3://.../models/electra-tiny-demo/step-000000200   3f2a9c1e04b7
    └─ model    s3://.../demo/model/step-000000200              91c0d2aa5f13
       └─ checkpoint s3://.../demo/pretrain/checkpoints/step-000000200  a7e0...
          └─ pack     s3://.../demo/pack                         5b1d...
             ├─ documents s3://.../demo/clean                    0c44...
             │  └─ input s3://.../corpus/part-0.warc.gz (2.1 MB)
             └─ tokenizer s3://.../demo/tokenizer                e9f3...

Every edge is checked: the input's manifest must still have the hash the child recorded,
otherwise the line says `HASH MISMATCH` (the input was rebuilt after the child was made).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from common import cli
from common import manifest as manifests
from common import storage


@dataclasses.dataclass
class Node:
    uri: str
    kind: str  # a manifest kind, or "input" for a raw file that has no manifest
    manifest_hash: str | None = None
    expected_hash: str | None = None  # what the child manifest recorded for this input
    status: str = "ok"  # ok | mismatch | missing | raw
    repeat: bool = False  # already shown in full elsewhere in the tree (pack and tokenizer both name the documents)
    detail: dict = dataclasses.field(default_factory=dict)
    inputs: list["Node"] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"] = [i.to_dict() for i in self.inputs]
        return d

    def iter(self):
        yield self
        for i in self.inputs:
            yield from i.iter()


def _summary(m: dict) -> dict:
    """The few fields a reader of a lineage wants per kind."""
    out: dict = {}
    for k in ("step", "tokens_seen", "seq_len", "vocab_size", "name", "version"):
        if k in m:
            out[k] = m[k]
    counters = m.get("counters") or {}
    for k in ("kept", "records_read", "examples", "tokens", "step", "tokens_seen"):
        if k in counters and k not in out:
            out[k] = counters[k]
    return out


def walk(uri: str, expected_hash: str | None = None, _seen: dict | None = None) -> Node:
    """The lineage tree rooted at `uri` (an output dir or its manifest.json)."""
    seen = _seen if _seen is not None else {}
    out = uri[: -len("/" + manifests.MANIFEST_NAME)] if uri.endswith(manifests.MANIFEST_NAME) else uri
    if not manifests.exists(out):
        raw = storage.exists(out) if storage.is_s3(out) else os.path.isfile(out)
        return Node(uri=out, kind="input" if raw else "missing", expected_hash=expected_hash,
                    status="raw" if raw else "missing")
    m = manifests.read(out, verify=False)
    node = Node(uri=out, kind=m.get("kind", "?"), manifest_hash=m.get("manifest_hash"), expected_hash=expected_hash,
                detail=_summary(m))
    if expected_hash and expected_hash != node.manifest_hash:
        node.status = "mismatch"
    if out in seen:  # a diamond (pack and tokenizer both name the documents): print it once in full
        node.repeat = True
        return node
    seen[out] = node
    for ref in m.get("inputs", []):
        child_uri = ref.get("uri") or ref.get("path")
        if not child_uri:
            continue
        if ref.get("manifest_hash") is None and not ref.get("kind"):
            # A raw input file (clean's inputs): uri, size, sha256 — a leaf.
            node.inputs.append(Node(uri=child_uri, kind="input", status="raw",
                                    detail={k: ref[k] for k in ("size", "bytes", "sha256") if k in ref}))
            continue
        node.inputs.append(walk(child_uri, ref.get("manifest_hash"), seen))
    return node


def chain(uri: str) -> dict[str, list[Node]]:
    """The nodes of a lineage grouped by kind, each list in walk order (nearest first)."""
    out: dict[str, list[Node]] = {}
    for n in walk(uri).iter():
        if n.uri not in {x.uri for x in out.get(n.kind, [])}:
            out.setdefault(n.kind, []).append(n)
    return out


def render(node: Node, max_inputs: int = 5) -> str:
    lines: list[str] = []

    def line(n: Node) -> str:
        h = (n.manifest_hash or "")[:12]
        extra = " ".join(f"{k}={v}" for k, v in n.detail.items() if k != "sha256")
        flag = {"mismatch": "  HASH MISMATCH", "missing": "  MISSING"}.get(n.status, "")
        if n.repeat:
            return f"{n.kind:<10} {n.uri}  {h}  (see above){flag}"
        return f"{n.kind:<10} {n.uri}  {h}{(' ' + extra) if extra else ''}{flag}"

    def rec(n: Node, prefix: str, last: bool, top: bool) -> None:
        lines.append(line(n) if top else f"{prefix}{'└─ ' if last else '├─ '}{line(n)}")
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        kids = n.inputs
        raw = [k for k in kids if k.kind == "input"]
        shown = [k for k in kids if k.kind != "input"] + raw[:max_inputs]
        for i, k in enumerate(shown):
            rec(k, child_prefix, i == len(shown) - 1 and len(raw) <= max_inputs, False)
        if len(raw) > max_inputs:
            lines.append(f"{child_prefix}└─ ... {len(raw) - max_inputs} more input files")

    rec(node, "", True, True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.lineage",
                                 description="Print the chain of manifests an output came from.")
    ap.add_argument("uri", help="an output directory (or its manifest.json), local or s3://")
    ap.add_argument("--json", action="store_true", help="print the tree as JSON")
    ap.add_argument("--max-inputs", type=int, default=5, help="raw input files shown per documents node")
    cli.add_debug(ap)
    a = ap.parse_args(argv)

    def body() -> int:
        node = walk(a.uri)
        if node.kind == "missing":
            raise manifests.ManifestError(f"no manifest at {a.uri}: check the URI (an output directory or its "
                                          "manifest.json)")
        print(json.dumps(node.to_dict(), indent=1) if a.json else render(node, a.max_inputs))
        return 1 if any(n.status in ("mismatch", "missing") for n in node.iter()) else 0

    return cli.run_job(body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
