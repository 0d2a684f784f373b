"""Scale benchmark: clean, then pack, on the DaskRunner at 1x, 4x and 16x of a real-text corpus.

    .venv/bin/python benchmarks/data_scale.py [--base-mb 96] [--scales 1,4,16] [--repeat 3] [--corpus DIR] [--json OUT]

The corpus is real HTML from the documentation on this machine (`pipelines.local_corpus`: the
Rust books, Python's docs, ... as WARC.gz HTTP responses), `--base-mb` of it at 1x. This machine
holds a few hundred MB of distinct pages, so the larger sizes add copies of the same pages with
the words of every HTML text node shuffled (copy k of a page is a new page to every rule: same
words, lengths, lines and end marks, but almost no 5-word shingle in common, so dedup keeps it).
Each size runs `pipelines.clean` and then `pipelines.pack` on Beam's DaskRunner against a local
`dask.distributed` cluster of 2 worker processes with a memory limit (dask's spilling on, as a
cluster runs them; Arrow on jemalloc and 2 malloc arenas, as docs/clean.md asks of workers),
with small shard targets so every size makes many shards. For each size it records CPU-seconds
per input MB (this process, which hosts the scheduler, plus every worker and nanny process), the
peak RSS of the
largest worker (sampled every 50 ms), and the shard counts. Every size runs `--repeat` times,
the sizes interleaved, each run on a fresh cluster; a size's row is its run with the median peak
RSS, with the range over its runs beside it (a worker's base RSS moves by ~10 MB between runs).

Targets (the issue's): peak worker RSS at 16x within 1.25x of 1x; CPU-seconds per MB at 16x at
most 1.2x of 1x; shard counts growing with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine  # noqa: E402
from pipelines import local_corpus  # noqa: E402

MB = 1 << 20
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# The workers' environment, as docs/clean.md asks of every runner. Arrow on jemalloc: its default
# allocator in the pyarrow wheels, mimalloc, keeps what a thread freed, and a worker writing shard
# after shard grew by up to ~20 MB per shard; Arrow reads the variable when it is imported, which
# Beam does before any job code runs, so it has to be in the environment the worker starts with.
# glibc's malloc with 2 arenas rather than up to 8 per core: a dask worker's threads (event loop,
# task thread, Arrow's I/O threads) each got an arena of their own, holding its freed memory
# apart (16x peak 316-324 MB -> 311 MB over 3 runs each, 1x unchanged; docs/benchmarks.md).
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "MALLOC_ARENA_MAX": "2"}


def worker_environment():
    """Dask config that starts every worker process with WORKER_ENV. The nanny sets its
    `pre-spawn-environ` before it starts a worker; `LocalCluster(env=...)` is applied inside the
    worker once Python runs, too late for glibc, which reads MALLOC_ARENA_MAX as the process starts."""
    import dask

    return dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()})
_TEXT_NODE = re.compile(rb">([^<]+)<")


def variant_html(body: bytes, copy: int) -> bytes:
    """The page with the words of every text node shuffled (seeded by `copy`); tags untouched."""
    rng = random.Random(copy)

    def shuffle(m: re.Match) -> bytes:
        words = m.group(1).split(b" ")
        if len(words) < 3:
            return m.group(0)
        head = words[:-1]  # the last word keeps the node's end mark in place
        rng.shuffle(head)
        return b">" + b" ".join(head + words[-1:]) + b"<"

    return _TEXT_NODE.sub(shuffle, body)


def build_corpus(root: str, base_mb: float, copies: int, file_mb: float) -> dict:
    """copy 0 = the machine's pages as local_corpus writes them; copies 1.. = their variants."""
    out = Path(root)
    marker = out / f"built-{base_mb}-{copies}-{file_mb}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    out.mkdir(parents=True, exist_ok=True)
    info = local_corpus.build(str(out / "copy-000"), max_mb=base_mb, fmt="warc", file_mb=file_mb)
    pages = list(local_corpus.pages(int(base_mb * MB)))
    per_file = len(pages) // max(1, len(info["files"]))
    for copy in range(1, copies):
        d = out / f"copy-{copy:03d}"
        d.mkdir(exist_ok=True)
        for i in range(0, len(pages), max(1, per_file)):
            chunk = pages[i:i + per_file]
            data = b"".join(local_corpus.warc_response(p, variant_html(body, copy), ctype) for p, body, ctype in chunk)
            (d / f"corpus-{i // per_file:05d}.warc.gz").write_bytes(data)
    res = {"pages": info["pages"], "bytes": info["bytes"], "files_per_copy": len(info["files"])}
    marker.write_text(json.dumps(res))
    return res


def inputs_for(root: str, scale: int) -> list[str]:
    return [str(p) for c in range(scale) for p in sorted(Path(root, f"copy-{c:03d}").glob("*.warc.gz"))]


class Peak:
    """Samples the RSS of the cluster's worker processes, and the scheduler's split of it.

    A dask worker keeps finished tasks' results (here: the elements waiting for a GroupByKey's
    other inputs) in memory until the spill threshold of its `memory_limit`, then on disk: that
    part, *managed* memory, grows with the shuffle and is bounded by the limit, not by the code.
    What the jobs' own calls hold shows up as *unmanaged* memory (RSS - managed), which is what
    the block and unit sizes bound. Both are read from the scheduler's view of each worker
    (updated by heartbeats, so sampled rather than exact).
    """

    def __init__(self, pids: list[int], scheduler=None):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = {p.pid: 0 for p in self.procs}
        self.scheduler = scheduler
        self.managed = self.unmanaged = self.spilled = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        tick = 0
        while not self.stop.is_set():
            for p in self.procs:
                try:
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)
                except Exception:  # noqa: BLE001 - a worker restarting: its new pid is not ours
                    pass
            if self.scheduler is not None and tick % 5 == 0:
                try:
                    for ws in list(self.scheduler.workers.values()):
                        m = ws.memory
                        self.managed = max(self.managed, m.managed)
                        self.unmanaged = max(self.unmanaged, m.unmanaged)
                        self.spilled = max(self.spilled, m.spilled)
                except Exception:  # noqa: BLE001 - the scheduler's dicts change under us: skip a sample
                    pass
            tick += 1
            time.sleep(0.05)

    def finish(self) -> int:
        self.stop.set()
        self.thread.join()
        return max(self.peak.values())


def cluster_cpu(cluster_procs) -> float:
    total = 0.0
    for p in cluster_procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001
            pass
    return total


def run_scale(scale: int, files: list[str], work: str, tok: str, a) -> dict:
    import distributed
    import psutil

    from pipelines import clean
    from pipelines.cleaning.config import CleanConfig, OutputConfig
    from pipelines.packing.config import PackConfig
    from pipelines.packing.run import run as run_pack

    out = os.path.join(work, f"x{scale}")
    me = psutil.Process()
    with worker_environment(), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                     memory_limit=a.memory_limit) as cluster, \
            distributed.Client(cluster) as client:
        procs = me.children(recursive=True)  # nannies and workers
        worker_pids = list(client.run(os.getpid).values())
        args = [f"--runner={DASK_RUNNER}", f"--dask_client_address={cluster.scheduler_address}"]
        res: dict = {"scale": scale, "files": len(files)}
        for job in ("clean", "pack"):
            peak = Peak(worker_pids, cluster.scheduler)
            c0, w0, k0 = machine.cpu_seconds(), time.perf_counter(), cluster_cpu(procs)
            if job == "clean":
                cfg = CleanConfig(inputs=tuple(files), output=f"{out}/clean",
                                  out=OutputConfig(shard_mb=a.shard_mb, block_input_mb=a.block_input_mb))
                m = clean.run(cfg, args)
                res["kept"] = m["counters"]["kept"]
                res["clean_shards"] = len(m["shards"])
                res["records_read"] = m["counters"]["records_read"]
            else:
                m = run_pack(PackConfig(input=f"{out}/clean", tokenizer=tok, output=f"{out}/pack",
                                        max_seq_length=a.seq_len, shard_mb=a.pack_shard_mb, unit_mb=a.unit_mb), args)
                res["pack_shards"] = len(m["shards"])
                res["tokens"] = m["counters"]["tokens_packed"]
            # this process (the scheduler lives here) + every worker and nanny process
            res[f"{job}_cpu_s"] = round(machine.cpu_seconds() - c0 + cluster_cpu(procs) - k0, 2)
            res[f"{job}_wall_s"] = round(time.perf_counter() - w0, 2)
            res[f"{job}_peak_rss_mb"] = round(peak.finish() / MB, 1)
            res[f"{job}_peak_managed_mb"] = round(peak.managed / MB, 1)
            res[f"{job}_peak_unmanaged_mb"] = round(peak.unmanaged / MB, 1)
            res[f"{job}_peak_spilled_mb"] = round(peak.spilled / MB, 1)
    return res


def median_run(runs: list[dict]) -> dict:
    """The run whose peak worker RSS is the median (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["peak_rss_mb"])
    return ordered[(len(ordered) - 1) // 2]


def spread(runs: list[dict]) -> str:
    peaks = sorted(r["peak_rss_mb"] for r in runs)
    return f"{peaks[0]}-{peaks[-1]} over {len(peaks)}" if len(peaks) > 1 else "1 run"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-mb", type=float, default=96, help="MB of HTML at 1x (16x must be >= 1.5 GB for the record)")
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--file-mb", type=float, default=8, help="HTML MB per WARC.gz file: one dask partition")
    ap.add_argument("--memory-limit", default="2GiB", help="dask memory_limit per worker (spilling at 60-70%%)")
    ap.add_argument("--shard-mb", type=float, default=1.0, help="documents shard target (small: many shards)")
    ap.add_argument("--block-input-mb", type=float, default=2.0, help="input MB per clean block")
    ap.add_argument("--pack-shard-mb", type=float, default=1.0, help="pack shard target")
    ap.add_argument("--unit-mb", type=float, default=8.0, help="text MB per pack work unit")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=8000, help="tokenizer trained on the 1x documents")
    ap.add_argument("--corpus", help="keep the corpus here (built once, reused)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per size, interleaved (1x, 4x, 16x, 1x, ...); each size's row is its median-RSS run")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    scales = [int(s) for s in a.scales.split(",")]

    from pipelines.tokenizer.config import TokenizerConfig
    from pipelines.tokenizer.train import run as train

    tmp = tempfile.TemporaryDirectory(prefix="data-scale-")
    corpus = a.corpus or os.path.join(tmp.name, "corpus")
    t0 = time.perf_counter()
    info = build_corpus(corpus, a.base_mb, max(scales), a.file_mb)
    print(f"corpus: {info['pages']} pages, {info['bytes'] / MB:.1f} MB HTML at 1x, built in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    before = machine.describe()
    print(f"machine: {before['cpu']}, {before['cores']} cores, load average {before['load_avg']}", flush=True)
    runs: dict[int, list[dict]] = {scale: [] for scale in scales}
    tok = os.path.join(tmp.name, "tok")
    # Sizes interleaved, each run on a fresh cluster: a worker's base RSS moves by ~10 MB from run
    # to run (imports, heap layout), as much as the 16x/1x ratio's margin, so one run per size is
    # not a measurement; drift of the machine spreads over every size alike.
    # The tokenizer is not what is measured: trained once, on the first size's documents.
    from pipelines import clean
    from pipelines.cleaning.config import CleanConfig

    clean.run(CleanConfig(inputs=tuple(inputs_for(corpus, scales[0])), output=os.path.join(tmp.name, "tok-docs")),
              ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    train(TokenizerConfig(input=os.path.join(tmp.name, "tok-docs"), output=tok, vocab_size=a.vocab_size,
                          sample_docs=2000))
    for _ in range(max(1, a.repeat)):
        for scale in scales:
            files = inputs_for(corpus, scale)
            r = run_scale(scale, files, tmp.name, tok, a)
            html_mb = info["bytes"] * scale / MB
            r["input_mb"] = round(html_mb, 1)
            r["gzip_mb"] = round(sum(os.path.getsize(f) for f in files) / MB, 1)
            r["cpu_s_per_mb"] = round((r["clean_cpu_s"] + r["pack_cpu_s"]) / html_mb, 4)
            r["peak_rss_mb"] = max(r["clean_peak_rss_mb"], r["pack_peak_rss_mb"])
            r["peak_unmanaged_mb"] = max(r["clean_peak_unmanaged_mb"], r["pack_peak_unmanaged_mb"])
            runs[scale].append(r)
            print(json.dumps(r), flush=True)
    rows = [median_run(runs[scale]) for scale in scales]
    first, last = rows[0], rows[-1]
    result = {
        "machine_before": before, "machine_after": machine.describe(),
        "settings": {k: getattr(a, k) for k in ("base_mb", "file_mb", "memory_limit", "shard_mb", "block_input_mb",
                                                "pack_shard_mb", "unit_mb", "seq_len")},
        "rows": rows,
        "runs": {str(scale): runs[scale] for scale in scales},
        "rss_ratio": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
        "unmanaged_ratio": round(last["peak_unmanaged_mb"] / max(1e-9, first["peak_unmanaged_mb"]), 3),
        "cpu_per_mb_ratio": round(last["cpu_s_per_mb"] / first["cpu_s_per_mb"], 3),
        "shards_grow": all(b["clean_shards"] > a_["clean_shards"] and b["pack_shards"] > a_["pack_shards"]
                           for a_, b in zip(rows, rows[1:])),
    }
    print(f"| size | input MB (HTML) | files | kept docs | CPU-s clean + pack | CPU-s per MB | "
          f"peak worker RSS MB (clean / pack) (range of the peak over runs) | of which managed / unmanaged / "
          f"spilled (clean) | documents shards | "
          f"pack shards | wall s |")
    for r in rows:
        print(f"| {r['scale']}x | {r['input_mb']} | {r['files']} | {r['kept']} | {r['clean_cpu_s']} + {r['pack_cpu_s']} | "
              f"{r['cpu_s_per_mb']} | {r['clean_peak_rss_mb']} / {r['pack_peak_rss_mb']} ({spread(runs[r['scale']])}) | "
              f"{r['clean_peak_managed_mb']} / "
              f"{r['clean_peak_unmanaged_mb']} / {r['clean_peak_spilled_mb']} | {r['clean_shards']} | "
              f"{r['pack_shards']} | {r['clean_wall_s'] + r['pack_wall_s']:.0f} |")
    print(f"peak RSS {last['scale']}x / {first['scale']}x = {result['rss_ratio']} (target <= 1.25), unmanaged "
          f"{result['unmanaged_ratio']}; CPU-s per MB "
          f"{last['scale']}x / {first['scale']}x = {result['cpu_per_mb_ratio']} (target <= 1.2); shard counts grow: "
          f"{result['shards_grow']}; load average after {result['machine_after']['load_avg']}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
