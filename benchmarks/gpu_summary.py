"""The compact table of a `benchmarks/gpu.sh` run: one row per measured side, the ratios the targets are
stated in, each part's exit code and time.

    python benchmarks/gpu_summary.py SCRATCH_DIR OUT_DIR    # writes OUT_DIR/summary.md and results.json

SCRATCH_DIR holds what the parts wrote: NAME.json (benchmarks/train_step.py --json), NAME.status.json
({name, rc, seconds, cap} or {name, skipped}) and tests.xml (pytest's JUnit XML).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PARTS = ("large", "zero", "tests", "maxbatch", "small", "base", "compile")
TARGETS = "targets (Large, 512, bf16, 1 GPU): MFU >= 45% ours without ZeRO, >= 40% under ZeRO-3; ours >= 1.3x peer"


def load(scratch: Path, name: str) -> dict | None:
    f = scratch / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def tests_summary(xml: Path) -> dict | None:
    if not xml.exists():
        return None
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = f"{tag}: {(node.get('message') or '')[:120]}"
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0))})
    return {"cases": cases, "passed": sum(c["outcome"] == "passed" for c in cases), "total": len(cases)}


def fmt(v, spec: str, empty: str = "-") -> str:
    return empty if v is None else format(v, spec)


def summarize(scratch: Path) -> tuple[str, dict]:
    parts = {n: load(scratch, n) for n in PARTS}
    status = {n: load(scratch, f"{n}.status") for n in PARTS}
    tests = tests_summary(scratch / "tests.xml")
    machine = next((p["machine"] for p in parts.values() if p), {})
    lines = [f"machine: {json.dumps(machine)}", TARGETS, "",
             "| part | size, seq, micro-batch | side | tokens/s | MFU (989 TF) | MFU (measured matmul) | peak GiB |",
             "|---|---|---|---|---|---|---|"]
    for name in PARTS:
        p = parts[name]
        if not p:
            continue
        a = p["args"]
        shape = f"{a['size']}, {a['seq_len']}, {a['batch']}"
        for r in p["results"]:
            lines.append(f"| {name} | {shape} | {r['name']} | {r['tokens_per_s']:,.0f} | {fmt(r.get('mfu'), '.1%')} | "
                         f"{fmt(r.get('mfu_vs_matmul'), '.1%')} | {fmt(r.get('peak_memory_gib'), '.1f')} |")
    lines.append("")
    for name in ("large", "small", "base"):
        if parts[name] and parts[name].get("ratio"):
            lines.append(f"- {name}: ours / peer {parts[name]['ratio']:.2f}x (median of per-round ratios)")
    if parts["compile"] and parts["compile"].get("compiled_over_eager"):
        comp = next(r for r in parts["compile"]["results"] if r["name"] == "ours/compiled")
        lines.append(f"- compile: compiled / eager {parts['compile']['compiled_over_eager']:.2f}x; "
                     f"warm-up (with the compile) {comp['warmup_s']:.0f} s")
    if parts["maxbatch"] and parts["maxbatch"].get("max_batch"):
        mb, a = parts["maxbatch"]["max_batch"], parts["maxbatch"]["args"]
        lines.append(f"- largest micro-batch of ours for {a['size']} at {a['seq_len']}: {mb['batch']} (trials: "
                     + ", ".join(f"{b} {'ok' if ok else 'OOM'}" for b, ok in mb["trials"]) + ")")
    if tests:
        lines.append(f"- gpu tests: {tests['passed']}/{tests['total']} passed"
                     + "".join(f"; {c['test']} {c['outcome']}" for c in tests["cases"] if c["outcome"] != "passed"))
    lines.append("- parts: " + ", ".join(
        f"{n} skipped" if (s or {}).get("skipped") else
        f"{n} exit {s['rc']} in {s['seconds']}s (cap {s['cap']}s{', TIMED OUT' if s['rc'] in (124, 137) else ''})"
        if s else f"{n} not run" for n, s in status.items()))
    return "\n".join(lines) + "\n", {"machine": machine, "parts": parts, "status": status, "tests": tests}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    scratch, out = Path(args[0]), Path(args[1])
    text, data = summarize(scratch)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
