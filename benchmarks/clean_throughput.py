"""Clean-job throughput: the Beam job against the same work as a plain Python loop.

    .venv/bin/python benchmarks/clean_throughput.py [--mb 60] [--corpus DIR] [--workers N] [--json OUT]

Builds >= 50 MB of real HTML (the documentation on this machine, pipelines.local_corpus) as
WARC.gz, then
  1. runs the same reader, extraction, rules, exact dedup, MinHash LSH and shard encoding
     as a plain loop in this process (one core), and
  2. runs `pipelines.clean` on the DirectRunner (multi-processing, N workers).
Reports input MB/s and documents/s per core for both, and Beam's overhead as the ratio
of CPU-seconds per input MB (Beam / loop). CPU time is counted over this process and all
its children (the Beam SDK workers), so the ratio does not depend on what else the
machine is doing; wall-clock rates per core are printed beside it with the load average.
Starting the DirectRunner's worker processes costs a fixed few CPU-seconds whatever the
input size; a third run on one input file measures it, and the steady-state overhead is
(Beam CPU - that fixed cost) / loop CPU, the figure that holds for a large corpus.
Targets: >= 5 MB/s of input per core, overhead <= 1.3x.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine  # noqa: E402
from pipelines import documents, local_corpus  # noqa: E402
from pipelines.cleaning import extract, readers, stages  # noqa: E402
from pipelines.cleaning.config import CleanConfig  # noqa: E402
from pipelines.cleaning.minhash import MinHasher  # noqa: E402
from pipelines.cleaning.normalize import dedup_key  # noqa: E402
from pipelines.cleaning.records import Tag, key_hash  # noqa: E402

MB = 1 << 20


def plain_loop(files: list[str], cfg: CleanConfig) -> dict:
    """The job's work without Beam: same functions, dicts instead of GroupByKey."""
    chain = stages.build(cfg)
    for s in chain:
        s.setup()
    hasher = MinHasher(cfg.dedup)
    read = kept_rules = 0
    by_text: dict[str, object] = {}
    for f in files:
        for rec in readers.read_file(f, "warc", cfg.reader):
            read += 1
            if rec.tag is Tag.HTML:
                rec = extract.extract(rec, cfg.reader)
            if rec.tag is not Tag.DOC:
                continue
            for s in chain:
                rec, reason = s.apply(rec)
                if reason:
                    break
            else:
                kept_rules += 1
                k = dedup_key(rec.text)
                if k not in by_text or rec.uid < by_text[k].uid:
                    by_text[k] = rec
    buckets: dict[str, str] = {}
    flagged: set[str] = set()
    for d in by_text.values():
        u = d.uid
        for key in hasher.band_keys(d.text):
            other = buckets.get(key)
            if other is None:
                buckets[key] = u
            else:
                lo, hi = sorted((u, other))
                buckets[key] = lo
                flagged.add(hi)
    kept = sorted((d for d in by_text.values() if d.uid not in flagged), key=lambda d: (key_hash(d.uid), d.uid))
    buf = io.BytesIO()
    w = documents.ShardWriter(buf)  # the output in the job's order, as one stream of row groups
    w.write(documents.table_from_documents(kept))
    w.close()
    out_bytes = len(buf.getvalue())
    return {"records_read": read, "kept": len(kept), "after_rules": kept_rules, "out_bytes": out_bytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=400, help="MB of HTML payload to build (>= 50 for the record)")
    ap.add_argument("--corpus", help="reuse/build the corpus here instead of a temp dir")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DirectRunner worker processes")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)

    from pipelines import clean  # after sys.path is set; Beam import is slow, keep it out of --help

    tmp = tempfile.TemporaryDirectory(prefix="clean-bench-")
    corpus = a.corpus or os.path.join(tmp.name, "corpus")
    info = local_corpus.build(corpus, max_mb=a.mb, fmt="warc", file_mb=4)
    files = info["files"]
    in_mb = info["bytes"] / MB
    file_mb = sum(os.path.getsize(f) for f in files) / MB
    cfg = CleanConfig(inputs=(os.path.join(corpus, "*.warc.gz"),), output=os.path.join(tmp.name, "out"))
    m0 = machine.describe()
    print(f"machine: {m0['cpu']}, {m0['cores']} cores, load average {m0['load_avg']}")
    print(f"corpus: {len(files)} WARC.gz files, {info['pages']} pages, {in_mb:.1f} MB HTML ({file_mb:.1f} MB gzip)")

    c0, t0 = machine.cpu_seconds(), time.perf_counter()
    loop = plain_loop(files, cfg)
    loop_wall, loop_cpu = time.perf_counter() - t0, machine.cpu_seconds() - c0

    c0, t0 = machine.cpu_seconds(), time.perf_counter()
    beam_args = [f"--direct_num_workers={a.workers}", "--direct_running_mode=multi_processing"]
    m = clean.run(cfg, beam_args)
    beam_wall, beam_cpu = time.perf_counter() - t0, machine.cpu_seconds() - c0
    c = m["counters"]
    assert c["kept"] == loop["kept"], f"Beam kept {c['kept']}, the loop kept {loop['kept']}"

    # the fixed cost: the same job on one file, minus the loop's time for that file
    c0 = machine.cpu_seconds()
    plain_loop(files[-1:], cfg)
    loop_one = machine.cpu_seconds() - c0
    c0 = machine.cpu_seconds()
    clean.run(dataclasses.replace(cfg, inputs=(files[-1],), output=os.path.join(tmp.name, "out1")), beam_args)
    fixed = max(machine.cpu_seconds() - c0 - loop_one, 0.0)

    docs = c["records_read"]
    res = {
        "machine": {**m0, "load_avg_after": machine.load_avg()},
        "input": {"files": len(files), "documents": docs, "html_mb": round(in_mb, 2), "gzip_mb": round(file_mb, 2)},
        "kept": c["kept"],
        "loop": {"wall_s": round(loop_wall, 2), "cpu_s": round(loop_cpu, 2),
                 "mb_per_s_per_core": round(in_mb / loop_cpu, 2), "docs_per_s_per_core": round(docs / loop_cpu, 1)},
        "beam": {"workers": a.workers, "wall_s": round(beam_wall, 2), "cpu_s": round(beam_cpu, 2),
                 "mb_per_s_per_core_cpu": round(in_mb / beam_cpu, 2),
                 "docs_per_s_per_core_cpu": round(docs / beam_cpu, 1),
                 "mb_per_s_per_core_wall": round(in_mb / (beam_wall * a.workers), 2),
                 "docs_per_s_per_core_wall": round(docs / (beam_wall * a.workers), 1)},
        "beam_fixed_cpu_s": round(fixed, 2),
        "overhead_cpu": round(beam_cpu / loop_cpu, 2),
        "overhead_cpu_steady": round((beam_cpu - fixed) / loop_cpu, 2),
        "overhead_wall": round(beam_wall * a.workers / loop_wall, 2),
    }
    b, lp = res["beam"], res["loop"]
    print(f"plain loop : {lp['wall_s']:6.1f} s wall, {lp['cpu_s']:6.1f} CPU-s -> {lp['mb_per_s_per_core']:.2f} MB/s "
          f"and {lp['docs_per_s_per_core']:.0f} docs/s per core")
    print(f"beam job   : {b['wall_s']:6.1f} s wall x {a.workers} workers, {b['cpu_s']:6.1f} CPU-s -> "
          f"{b['mb_per_s_per_core_cpu']:.2f} MB/s and {b['docs_per_s_per_core_cpu']:.0f} docs/s per CPU-second; "
          f"{b['mb_per_s_per_core_wall']:.2f} MB/s and {b['docs_per_s_per_core_wall']:.0f} docs/s per core by wall clock")
    print(f"beam overhead: {res['overhead_cpu']:.2f}x CPU-seconds per MB in total, "
          f"{res['overhead_cpu_steady']:.2f}x without the {fixed:.1f} CPU-s fixed start-up (target <= 1.3x); "
          f"{res['overhead_wall']:.2f}x by wall clock x workers")
    print(f"kept {c['kept']} of {docs} documents; load average after: {res['machine']['load_avg_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
