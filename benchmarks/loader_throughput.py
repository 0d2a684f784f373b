"""Pretraining input rate: the project's PackLoader beside litdata and a per-example reader, over S3.

    python benchmarks/loader_throughput.py [--latency-ms 30] [--examples 16384] [--json out.json]

A synthetic pack (random ids in the project's pack format; tokens 1-2 of each row hold its row
number, so every reader's output can be traced back to where it came from) is written to a fresh
bucket on a SeaweedFS S3 gateway started for the run, on loopback, and the same rows in litdata's
format (`litdata.optimize`, 2 MB chunks) beside it. The readers then take the same data, each
timed by wall clock from a cold start (no cache, workers started inside the clock), in
alternating rounds:

  loader      `pretraining.data.PackLoader` as one rank uses it (micro-batch 32, the DataConfig
              defaults): 256-example blocks, one range request each, read on threads a window
              ahead and dealt round-robin; it also builds the attention-mask and token-type tensors.
  litdata     the best-known streaming peer: `litdata.StreamingDataset(shuffle=True)` in its
              `StreamingDataLoader` (batch 32, `--litdata-workers` processes, a fresh cache dir
              per round), items turned into ids + attention mask.
  peer        what a user writes for a shuffled stream: a map-style Dataset whose `__getitem__`
              issues one range GET per example, in a torch DataLoader (RandomSampler, batch 32,
              `--peer-workers` worker processes, each with its own boto3 client).
  sequential  whole shards in order with one GET each, no shuffle: this gateway's ceiling.

`--latency-ms` adds that long a wait before every GET of every reader: loopback answers in about
a millisecond, a remote object store's first byte takes tens (S3 in-region: 20-50 ms), and the
rates that matter on a cluster are the latency-bound ones.

Reported per reader: examples/s (median round), GETs and MB read per round, peak memory growth
(RSS of this process and its worker children, sampled), and two shuffle-quality figures from the
row numbers it yielded in the first round:
  neighbours/batch  pairs in a batch of 32 that were within 8 rows of each other in the pack
                    (consecutive packed examples are usually one document); a uniform shuffle's
                    expectation is printed beside it (0.42 for 16,384 rows in 8 shards)
  adjacent gap      median distance in the output stream between pack rows i and i+1, as a
                    fraction of the examples read (uniform shuffle ~0.33; 0 is no shuffle)
Plus the loader/litdata and loader/peer ratios, and the loader's headroom over what one GPU
consumes: ELECTRA-Large at seq 512 and 50% MFU on an H100 trains about 445 examples/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine, packformat, storage  # noqa: E402
from common import manifest as manifests  # noqa: E402
from common.seaweedfs import LocalS3  # noqa: E402
from pretraining.config import DataConfig  # noqa: E402
from pretraining.cost import PEAK_FLOPS, flops_per_token  # noqa: E402
from pretraining.data import PackLoader  # noqa: E402
from pretraining.sizes import named_size  # noqa: E402

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
MICRO = 32
ID_BASE = 32000  # row number = (token1 - 5) * ID_BASE + (token2 - 5); both stay clear of the special ids
NEIGHBOUR_ROWS = 8


# ----------------------------------------------------------------------------- the data
def pack_rows(examples: int, seq_len: int, vocab: int, seed: int = 0) -> np.ndarray:
    """Random rows with [CLS] first, two [SEP]s, and the row number in tokens 1-2."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(5, vocab, size=(examples, seq_len), dtype=np.uint16)
    rows[:, 0], rows[:, seq_len // 2], rows[:, -1] = SPECIAL["cls"], SPECIAL["sep"], SPECIAL["sep"]
    index = np.arange(examples)
    rows[:, 1], rows[:, 2] = 5 + index // ID_BASE, 5 + index % ID_BASE
    return rows


def row_numbers(ids: torch.Tensor | np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return (ids[:, 1].astype(np.int64) - 5) * ID_BASE + ids[:, 2].astype(np.int64) - 5


def write_pack(uri: str, rows: np.ndarray, shards: int, vocab: int, settings: storage.StorageSettings) -> list[int]:
    """The rows as a pack (uint16 shards + manifest, written last); returns each shard's first row number."""
    per = -(-len(rows) // shards)
    entries, firsts = [], []
    for i in range(shards):
        part = rows[i * per:(i + 1) * per]
        data = part.astype("<u2").tobytes()
        path = f"{packformat.SHARDS_DIR}/{packformat.shard_name(i, shards)}"
        storage.write_bytes(storage.join(uri, path), data, settings)
        entries.append({"path": path, "examples": len(part), "tokens": part.size, "sha256": storage.sha256_bytes(data),
                        "bytes": len(data)})
        firsts.append(i * per)
    m = manifests.build("pack", inputs=[], config={"synthetic": True}, shards=entries, format=packformat.FORMAT,
                        dtype="uint16", seq_len=rows.shape[1], vocab_size=vocab, special_ids=SPECIAL, tokenizer={},
                        padding_fraction=0.0, seed=0)
    manifests.write(uri, m, settings)
    return firsts


def write_litdata(uri: str, rows: np.ndarray, shards: int, chunk_bytes: str, settings: storage.StorageSettings,
                  tmp: str) -> None:
    """The same rows in litdata's format (`optimize`, one input per shard), uploaded beside the pack."""
    from litdata import optimize

    local = os.path.join(tmp, "litdata")
    per = -(-len(rows) // shards)
    optimize(fn=_litdata_items, inputs=[rows[i * per:(i + 1) * per] for i in range(shards)], output_dir=local,
             chunk_bytes=chunk_bytes, num_workers=1, mode="overwrite", start_method="fork")
    storage.upload_dir(local, uri, settings)


def _litdata_items(shard: np.ndarray):
    yield from shard


# ----------------------------------------------------------------------------- store latency, requests
class SlowReader(packformat.PackReader):
    """A PackReader whose every range GET first waits `latency_s`, as a remote store's first byte does."""

    def __init__(self, output: str, settings: storage.StorageSettings, latency_s: float, gets):
        super().__init__(output, settings)
        self.latency_s, self.gets = latency_s, gets

    def read(self, shard: int, start: int, count: int, **kw) -> np.ndarray:
        time.sleep(self.latency_s)
        with self.gets.get_lock():
            self.gets.value += 1
        return super().read(shard, start, count, **kw)


def slow_litdata_gets(latency_s: float, gets) -> None:
    """Make every litdata S3 GET wait `latency_s` first and count it (patched before its workers fork)."""
    import asyncio
    import functools

    from litdata.streaming import downloader

    # The loopback gateway speaks plain http, which obstore (litdata's chunk GETs) refuses unless told.
    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True
    cls = downloader.S3Downloader
    for name in ("download_file", "download_bytes", "download_fileobj", "adownload_file", "adownload_bytes",
                 "adownload_fileobj"):
        original = getattr(cls, name, None)
        if original is None or getattr(original, "_slowed", False):
            continue
        if asyncio.iscoroutinefunction(original):
            async def wrapper(self, *a, _orig=original, **kw):
                await asyncio.sleep(latency_s)
                with gets.get_lock():
                    gets.value += 1
                return await _orig(self, *a, **kw)
        else:
            def wrapper(self, *a, _orig=original, **kw):
                if a and isinstance(a[0], str) and a[0].endswith("index.json"):
                    return _orig(self, *a, **kw)  # the index is read once at start-up, not per chunk
                time.sleep(latency_s)
                with gets.get_lock():
                    gets.value += 1
                return _orig(self, *a, **kw)
        wrapper = functools.wraps(original)(wrapper)
        wrapper._slowed = True
        setattr(cls, name, wrapper)


class PerExampleDataset(torch.utils.data.Dataset):
    """The peer: one range GET per example, a boto3 client per worker process (created on first use)."""

    def __init__(self, shard_uris: list[str], shard_examples: list[int], row_bytes: int,
                 settings: storage.StorageSettings, latency_s: float, gets):
        self.index = [(s, r) for s, n in enumerate(shard_examples) for r in range(n)]
        self.uris, self.row_bytes, self.settings = shard_uris, row_bytes, settings
        self.latency_s, self.gets = latency_s, gets
        self._client = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        import boto3

        if self._client is None:
            s = self.settings
            self._client = boto3.client("s3", endpoint_url=s.endpoint_url, aws_access_key_id=s.access_key_id,
                                        aws_secret_access_key=s.secret_access_key, region_name=s.region)
        shard, row = self.index[i]
        time.sleep(self.latency_s)
        with self.gets.get_lock():
            self.gets.value += 1
        bucket, key = storage.split_s3(self.uris[shard])
        start = row * self.row_bytes
        body = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + self.row_bytes - 1}")
        ids = torch.from_numpy(np.frombuffer(body["Body"].read(), dtype="<u2").astype(np.int64))
        return {"input_ids": ids, "attention_mask": (ids != SPECIAL["pad"]).long()}


def litdata_item(row: np.ndarray) -> dict:
    ids = torch.from_numpy(row.astype(np.int64))
    return {"input_ids": ids, "attention_mask": (ids != SPECIAL["pad"]).long()}


# ----------------------------------------------------------------------------- measuring
class PeakRSS:
    """Peak resident memory of this process and its children while the block runs, above where it started."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.peak = self.base = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def shuffle_quality(rows: np.ndarray, shard_of: np.ndarray) -> dict:
    """neighbours/batch and adjacent gap (module docstring) of a stream of pack row numbers."""
    pairs = []
    for b in range(0, len(rows) - MICRO + 1, MICRO):
        r = rows[b:b + MICRO]
        near = (np.abs(r[:, None] - r[None, :]) < NEIGHBOUR_ROWS) & (shard_of[r][:, None] == shard_of[r][None, :])
        pairs.append((near.sum() - len(r)) / 2)
    where = np.full(len(shard_of), -1)
    where[rows] = np.arange(len(rows))
    both = (where[:-1] >= 0) & (where[1:] >= 0) & (shard_of[:-1] == shard_of[1:])
    gaps = np.abs(where[1:] - where[:-1])[both]
    return {"neighbours_per_batch": float(np.mean(pairs)) if pairs else None,
            "adjacent_gap": float(np.median(gaps)) / len(rows) if len(gaps) else None}


def uniform_neighbours(shard_of: np.ndarray) -> float:
    """neighbours/batch expected of a uniform shuffle: batch pairs x P(same shard, fewer than 8 rows apart)."""
    n = len(shard_of)
    sizes = np.bincount(shard_of)
    near_pairs = sum(sum(max(0, int(s) - d) for d in range(1, NEIGHBOUR_ROWS)) for s in sizes)
    return MICRO * (MICRO - 1) / 2 * near_pairs / (n * (n - 1) / 2)


def time_loader(reader: SlowReader, examples: int, seed: int, d: DataConfig) -> tuple[float, np.ndarray, dict]:
    loader = PackLoader(reader, seed=seed, micro_batch=MICRO, grad_accum=1, rank=0, world=1,
                        block_examples=d.block_examples, window_blocks=d.window_blocks,
                        prefetch_steps=d.prefetch_steps, workers=d.workers)
    seen = []
    start = time.perf_counter()
    for batch in loader.steps(0, 0, examples // MICRO):
        seen += [m["input_ids"] for m in batch.micro]
    rate = sum(len(s) for s in seen) / (time.perf_counter() - start)
    extra = {"cache_mb_peak": loader.counters["cached_blocks_peak"] * d.block_examples * reader.row_bytes / 1e6}
    return rate, row_numbers(torch.cat(seen)), extra


def time_litdata(uri: str, settings: storage.StorageSettings, examples: int, workers: int, seed: int,
                 tmp: str) -> tuple[float, np.ndarray, dict]:
    from litdata import StreamingDataLoader, StreamingDataset

    cache = tempfile.mkdtemp(prefix="litdata-cache-", dir=tmp)
    options = {"endpoint_url": settings.endpoint_url, "aws_access_key_id": settings.access_key_id,
               "aws_secret_access_key": settings.secret_access_key, "region_name": settings.region}
    seen = []
    start = time.perf_counter()
    ds = StreamingDataset(uri, cache_dir=cache, shuffle=True, seed=seed, storage_options=options,
                          transform=litdata_item, max_cache_size="25GB")  # a cap, not an allocation
    dl = StreamingDataLoader(ds, batch_size=MICRO, num_workers=workers)
    n = 0
    for batch in dl:
        seen.append(batch["input_ids"])
        n += len(batch["input_ids"])
        if n >= examples:
            break
    rate = n / (time.perf_counter() - start)
    del dl, ds
    return rate, row_numbers(torch.cat(seen)), {}


def time_peer(dataset: PerExampleDataset, examples: int, workers: int, seed: int) -> tuple[float, np.ndarray, dict]:
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(dataset, batch_size=MICRO, sampler=torch.utils.data.RandomSampler(dataset,
                                     generator=g), num_workers=workers, persistent_workers=False)
    seen = []
    start = time.perf_counter()
    n = 0
    for batch in dl:  # worker start-up is part of what a user's epoch pays
        seen.append(batch["input_ids"])
        n += batch["input_ids"].shape[0]
        if n >= examples:
            break
    rate = n / (time.perf_counter() - start)
    return rate, row_numbers(torch.cat(seen)), {}


def time_sequential(reader: SlowReader, settings: storage.StorageSettings) -> tuple[float, np.ndarray, dict]:
    start = time.perf_counter()
    n = 0
    for shard in reader.shards:
        time.sleep(reader.latency_s)
        with reader.gets.get_lock():
            reader.gets.value += 1
        data = storage.read_bytes(shard.uri, settings)
        n += len(data) // reader.row_bytes
    return n / (time.perf_counter() - start), np.arange(n), {}


def gpu_demand(seq_len: int, mfu: float = 0.5) -> float:
    """Examples/s one H100 trains for ELECTRA-Large at this MFU (the cost model's FLOPs per token)."""
    return PEAK_FLOPS["h100-sxm-bf16"] * mfu / flops_per_token(named_size("large"), seq_len) / seq_len


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--examples", type=int, default=16384, help="examples in the synthetic pack")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--read", type=int, default=4096, help="examples each reader takes per round")
    ap.add_argument("--peer-read", type=int, default=0,
                    help="examples the per-example peer takes per round (0: --read); at 30 ms it reads ~60/s")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side reports its median")
    ap.add_argument("--readers", default="loader,litdata,peer,sequential", help="comma list of readers to run")
    ap.add_argument("--peer-workers", type=int, default=2, help="DataLoader worker processes for the peer")
    ap.add_argument("--litdata-workers", type=int, default=2, help="StreamingDataLoader worker processes")
    ap.add_argument("--litdata-chunk-bytes", default="2MB", help="litdata's chunk size (optimize's chunk_bytes)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="wait added before every GET (remote-store latency)")
    d = DataConfig()
    ap.add_argument("--workers", type=int, default=d.workers, help="the loader's data.workers")
    ap.add_argument("--prefetch-steps", type=int, default=d.prefetch_steps, help="the loader's data.prefetch_steps")
    ap.add_argument("--block-examples", type=int, default=d.block_examples, help="the loader's data.block_examples")
    ap.add_argument("--window-blocks", type=int, default=d.window_blocks, help="the loader's data.window_blocks")
    ap.add_argument("--json", default="", help="also write the results to this file")
    a = ap.parse_args(argv)
    readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    data_cfg = DataConfig(workers=a.workers, prefetch_steps=a.prefetch_steps, block_examples=a.block_examples,
                          window_blocks=a.window_blocks)
    latency = a.latency_ms / 1000
    info = machine.describe()
    print(f"machine: {json.dumps(info)}")
    gets = multiprocessing.Value("l", 0)  # in shared memory: worker processes count their GETs too
    rows = pack_rows(a.examples, a.seq_len, 32768)
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        s3 = LocalS3(os.path.join(tmp, "s3")).start()
        try:
            settings = s3.settings
            bucket = f"s3://loader-bench-{uuid.uuid4().hex[:8]}"
            storage.make_bucket(bucket, settings)
            firsts = write_pack(f"{bucket}/pack", rows, a.shards, 32768, settings)
            shard_of = np.searchsorted(np.asarray(firsts), np.arange(a.examples), side="right") - 1
            reader = SlowReader(f"{bucket}/pack", settings, latency, gets)
            if "litdata" in readers:
                write_litdata(f"{bucket}/litdata", rows, a.shards, a.litdata_chunk_bytes, settings, tmp)
                slow_litdata_gets(latency, gets)
            peer_ds = PerExampleDataset([s.uri for s in reader.shards], [s.examples for s in reader.shards],
                                        reader.row_bytes, settings, latency, gets)
            runs = {
                "loader": lambda r: time_loader(reader, a.read, r, data_cfg),
                "litdata": lambda r: time_litdata(f"{bucket}/litdata", settings, a.read, a.litdata_workers, r, tmp),
                "peer": lambda r: time_peer(peer_ds, a.peer_read or a.read, a.peer_workers, seed=r),
                "sequential": lambda r: time_sequential(reader, settings),
            }
            stats: dict[str, dict] = {k: {"rates": [], "gets": [], "rss_mb": [], "extra": []} for k in readers}
            quality = {}
            for r in range(a.rounds):
                for name in readers:
                    before = gets.value
                    with PeakRSS() as mem:
                        rate, seen, extra = runs[name](r)
                    s = stats[name]
                    s["rates"].append(rate)
                    s["gets"].append(gets.value - before)
                    s["rss_mb"].append(mem.growth_mb)
                    s["extra"].append(extra)
                    if r == 0 and name != "sequential":
                        quality[name] = shuffle_quality(seen, shard_of)
                print(f"round {r + 1}/{a.rounds}: "
                      + ", ".join(f"{k} {v['rates'][-1]:,.0f} ex/s ({v['gets'][-1]} GETs)" for k, v in stats.items()))
        finally:
            s3.stop()
    med = {k: statistics.median(v["rates"]) for k, v in stats.items()}
    demand = gpu_demand(a.seq_len)
    result = {"machine": info, "args": vars(a), "examples_per_s": med, "rounds": {k: v["rates"] for k, v in stats.items()},
              "gets_per_round": {k: statistics.median(v["gets"]) for k, v in stats.items()},
              "peak_rss_growth_mb": {k: max(v["rss_mb"]) for k, v in stats.items()},
              "shuffle_quality": quality, "uniform_neighbours_per_batch": uniform_neighbours(shard_of),
              "h100_large_demand_examples_per_s": demand}
    if "loader" in stats:
        result["loader_cache_mb_peak"] = max(e["cache_mb_peak"] for e in stats["loader"]["extra"])
        result["loader_headroom_over_one_gpu"] = med["loader"] / demand
        for peer in ("litdata", "peer", "sequential"):
            if peer in stats:
                ratios = [lo / p for lo, p in zip(stats["loader"]["rates"], stats[peer]["rates"])]
                result[f"loader_over_{peer}"] = statistics.median(ratios)
    print(f"\n{'reader':<12} {'examples/s':>11} {'GETs/round':>10} {'peak RSS+ MB':>12} {'neighb./batch':>13} "
          f"{'adj. gap':>8}")
    for k, v in med.items():
        q = quality.get(k, {})
        nb = f"{q['neighbours_per_batch']:.2f}" if q.get("neighbours_per_batch") is not None else "-"
        gap = f"{q['adjacent_gap']:.3f}" if q.get("adjacent_gap") is not None else "-"
        print(f"{k:<12} {v:>11,.0f} {result['gets_per_round'][k]:>10,.0f} {result['peak_rss_growth_mb'][k]:>12.0f} "
              f"{nb:>13} {gap:>8}")
    print(f"a uniform shuffle gives {result['uniform_neighbours_per_batch']:.2f} neighbours/batch and an adjacent "
          "gap of about 0.33")
    ratio_line = ", ".join(f"loader / {p}: {result[f'loader_over_{p}']:.2f}x" for p in ("litdata", "peer", "sequential")
                           if f"loader_over_{p}" in result)
    if ratio_line:
        print(f"\n{ratio_line} (medians of per-round ratios)")
    print(f"added latency per GET: {a.latency_ms:g} ms; loader workers {a.workers}, prefetch_steps "
          f"{a.prefetch_steps}, block_examples {a.block_examples}, window_blocks {a.window_blocks or MICRO}; "
          f"litdata {a.litdata_workers} workers, {a.litdata_chunk_bytes} chunks")
    if "loader" in stats:
        print(f"loader block cache peak: {result['loader_cache_mb_peak']:.1f} MB; one H100 on ELECTRA-Large at "
              f"{a.seq_len}, 50% MFU, consumes {demand:,.0f} examples/s: the loader's headroom is "
              f"{result['loader_headroom_over_one_gpu']:.1f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
