"""Where a DaskRunner clean job's worker memory goes, over time: the diagnostic behind the RSS
figures of `benchmarks/data_scale.py`.

    .venv/bin/python benchmarks/dask_memory_timeline.py [--scale 16] [--corpus DIR] [--set KEY=VALUE ...] \
        [--beam-arg=--dask_group_fan_in=16 ...]

Runs `pipelines.clean` once on the data_scale corpus (`--scale` copies of it; built in `--corpus`
if missing) on a local cluster of 2 worker processes, with a thread inside each worker that
samples, every `--every` seconds: the worker's RSS, how many tasks it knows, how many results
it holds and their size as dask counts it (`stored MB`), the task prefixes of those results and
the task it is executing. It prints every sample where a worker's RSS moved by `--step` MB or
more, and each worker's peak with what ran then, so growth can be told apart by phase: reading
and cleaning (`from_sequence-apply_dofn_to_bundle`), a GroupByKey's shuffle holding its input
(`shuffle` results), the tasks after a shuffle (`from_buckets`), the job's last task.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_scale  # noqa: E402

MB = 1 << 20


def _prefix(key) -> str:
    name = key[0] if isinstance(key, tuple) else str(key)
    return name.rsplit("-", 1)[0] if "-" in name else name


def _sample(worker) -> dict:
    import psutil

    st = worker.state
    held = collections.Counter(_prefix(ts.key) for ts in st.tasks.values() if ts.state == "memory")
    return {"rss_mb": psutil.Process().memory_info().rss // MB, "tasks": len(st.tasks),
            "results": sum(held.values()), "stored_mb": round(st.nbytes / MB, 1),
            "held": held.most_common(3), "executing": [_prefix(ts.key) for ts in st.executing],
            "arrow_pool": _arrow_pool()}


def _arrow_pool() -> str | None:
    try:  # only once the jobs' code has imported Arrow (the sampler must not import it first)
        return sys.modules["pyarrow"].default_memory_pool().backend_name
    except (KeyError, AttributeError):  # not imported, or being imported right now
        return None


def start_sampler(path: str, every: float, dask_worker=None) -> str:
    """Run in every worker (client.run): append one JSON sample per tick to PATH-<pid>.jsonl."""
    out = f"{path}-{os.getpid()}.jsonl"
    t0 = time.time()

    def loop():
        with open(out, "w") as f:
            while True:
                f.write(json.dumps([round(time.time() - t0, 2), _sample(dask_worker)]) + "\n")
                f.flush()
                time.sleep(every)

    threading.Thread(target=loop, daemon=True, name="memory-timeline").start()
    return out


def report(path: str, step: int) -> dict:
    rows = [json.loads(line) for line in open(path)]
    moved, prev = [], 0
    for t, s in rows:
        if abs(s["rss_mb"] - prev) >= step:
            moved.append((t, s))
        prev = s["rss_mb"]
    t_peak, peak = max(rows, key=lambda r: r[1]["rss_mb"])
    return {"samples": len(rows), "moved": moved, "peak_t": t_peak, "peak": peak}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=16)
    ap.add_argument("--base-mb", type=float, default=96)
    ap.add_argument("--file-mb", type=float, default=8)
    ap.add_argument("--corpus", help="data_scale corpus directory (built if missing; default: a temporary one)")
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    ap.add_argument("--step", type=int, default=4, help="print samples where RSS moved by this many MB")
    ap.add_argument("--set", action="append", default=[], help="clean config override (dedup.near=false ...)")
    ap.add_argument("--beam-arg", action="append", default=[],
                    help="extra Beam pipeline option (--dask_group_fan_in=16 ...); repeatable")
    a = ap.parse_args(argv)

    import distributed

    from pipelines import clean
    from pipelines.cleaning.config import build

    with tempfile.TemporaryDirectory(prefix="dask-timeline-") as tmp:
        corpus = a.corpus or os.path.join(tmp, "corpus")
        if not Path(corpus, f"copy-{a.scale - 1:03d}").is_dir():  # a bigger corpus built earlier serves too
            data_scale.build_corpus(corpus, a.base_mb, a.scale, a.file_mb)
        files = data_scale.inputs_for(corpus, a.scale)
        with data_scale.worker_environment(), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                         memory_limit=a.memory_limit) as cluster, \
                distributed.Client(cluster) as client:
            logs = client.run(start_sampler, os.path.join(tmp, "timeline"), a.every)
            cfg = build(tuple(files), os.path.join(tmp, "clean"), "auto", None,
                        ["out.shard_mb=1", "out.block_input_mb=2", *a.set])
            t0 = time.perf_counter()
            m = clean.run(cfg, [f"--runner={data_scale.DASK_RUNNER}",
                                f"--dask_client_address={cluster.scheduler_address}", *a.beam_arg])
            wall = time.perf_counter() - t0
        print(f"clean at {a.scale}x: {len(files)} files, kept {m['counters']['kept']}, {wall:.0f} s")
        for worker, path in sorted(logs.items()):
            r = report(path, a.step)
            print(f"\nworker {worker} (Arrow pool {r['peak']['arrow_pool']}): {r['samples']} samples, "
                  f"peak {r['peak']['rss_mb']} MB at {r['peak_t']} s "
                  f"executing {r['peak']['executing']}, holding {r['peak']['results']} results "
                  f"({r['peak']['stored_mb']} MB stored)")
            print("   t s | RSS MB | tasks | results | stored MB | executing | most held")
            for t, s in r["moved"]:
                print(f"{t:7.1f} | {s['rss_mb']:6d} | {s['tasks']:5d} | {s['results']:7d} | {s['stored_mb']:9.1f} | "
                      f"{','.join(s['executing']) or '-'} | {s['held']}")


if __name__ == "__main__":
    main()
