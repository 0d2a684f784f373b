"""Pretraining input rate: the project's PackLoader beside the shuffled reader a user would write, over S3.

    python benchmarks/loader_throughput.py [--latency-ms 30] [--workers 8] [--json out.json]

A synthetic pack (random ids in the project's pack format; no reader looks at the values) is
written to a fresh bucket on a SeaweedFS S3 gateway started for the run, on loopback. Three
readers then take the same pack, each timed by wall clock in this process, in alternating rounds:

  loader      `pretraining.data.PackLoader` as one rank uses it (micro-batch 32, the TrainConfig
              defaults for chunk_examples, workers and prefetch): shuffled 16-example chunks, one
              range request each, on background threads; it also builds the attention-mask and
              token-type tensors the model takes.
  peer        what a user writes for a shuffled stream: a map-style Dataset whose `__getitem__`
              issues one range GET per example, in a torch DataLoader (RandomSampler, batch 32,
              `--peer-workers` worker processes, each with its own boto3 client).
  sequential  whole shards in order with one GET each, no shuffle: this gateway's ceiling.

`--latency-ms` adds that long a wait before every GET of every reader: loopback answers in about
a millisecond, a remote object store's first byte takes tens (S3 in-region: 20-50 ms), and the
rates that matter on a cluster are the latency-bound ones.

Reported: examples/s of each, the loader/peer ratio, the loader's fraction of the sequential
ceiling, and its headroom over what one GPU consumes: ELECTRA-Large at seq 512 and 50% MFU on an
H100 trains about 445 examples/s (pretraining/cost.py). Every rank runs its own loader, so the
per-process rate is the figure to hold against one GPU's demand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine, storage  # noqa: E402
from common import manifest as manifests  # noqa: E402
from common.seaweedfs import LocalS3  # noqa: E402
from pipelines import packformat  # noqa: E402
from pretraining.config import DataConfig  # noqa: E402
from pretraining.cost import PEAK_FLOPS, flops_per_token  # noqa: E402
from pretraining.data import PackLoader  # noqa: E402
from pretraining.sizes import named_size  # noqa: E402

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
MICRO = 32


def write_pack(uri: str, examples: int, seq_len: int, shards: int, vocab: int,
               settings: storage.StorageSettings) -> None:
    """Random rows with [CLS] first and two [SEP]s, in the pack format; the manifest last."""
    rng = np.random.default_rng(0)
    per = -(-examples // shards)
    entries = []
    for i in range(shards):
        n = min(per, examples - i * per)
        rows = rng.integers(5, vocab, size=(n, seq_len), dtype=np.uint16)
        rows[:, 0], rows[:, seq_len // 2], rows[:, -1] = SPECIAL["cls"], SPECIAL["sep"], SPECIAL["sep"]
        data = rows.astype("<u2").tobytes()
        path = f"{packformat.SHARDS_DIR}/{packformat.shard_name(i, shards)}"
        storage.write_bytes(storage.join(uri, path), data, settings)
        entries.append({"path": path, "examples": n, "tokens": n * seq_len, "sha256": storage.sha256_bytes(data),
                        "bytes": len(data)})
    m = manifests.build("pack", inputs=[], config={"synthetic": True}, shards=entries, format=packformat.FORMAT,
                        dtype="uint16", seq_len=seq_len, vocab_size=vocab, special_ids=SPECIAL, tokenizer={},
                        padding_fraction=0.0, seed=0)
    manifests.write(uri, m, settings)


class SlowReader(packformat.PackReader):
    """A PackReader whose every range GET first waits `latency_s`, as a remote store's first byte does."""

    def __init__(self, output: str, settings: storage.StorageSettings, latency_s: float):
        super().__init__(output, settings)
        self.latency_s = latency_s

    def read(self, shard: int, start: int, count: int) -> np.ndarray:
        time.sleep(self.latency_s)
        return super().read(shard, start, count)


class PerExampleDataset(torch.utils.data.Dataset):
    """The peer: one range GET per example, a boto3 client per worker process (created on first use)."""

    def __init__(self, shard_uris: list[str], shard_examples: list[int], row_bytes: int, seq_len: int,
                 settings: storage.StorageSettings, latency_s: float = 0.0):
        self.index = [(s, r) for s, n in enumerate(shard_examples) for r in range(n)]
        self.uris, self.row_bytes, self.seq_len, self.settings = shard_uris, row_bytes, seq_len, settings
        self.latency_s = latency_s
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
        bucket, key = storage.split_s3(self.uris[shard])
        start = row * self.row_bytes
        body = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + self.row_bytes - 1}")
        ids = torch.from_numpy(np.frombuffer(body["Body"].read(), dtype="<u2").astype(np.int64))
        return {"input_ids": ids, "attention_mask": (ids != SPECIAL["pad"]).long()}


def time_loader(reader: packformat.PackReader, examples: int, seed: int, d: DataConfig) -> float:
    loader = PackLoader(reader, seed=seed, micro_batch=MICRO, grad_accum=1, rank=0, world=1,
                        chunk_examples=d.chunk_examples, prefetch_steps=d.prefetch_steps, workers=d.workers)
    steps = examples // MICRO
    start = time.perf_counter()
    n = 0
    for batch in loader.steps(0, 0, steps):
        n += sum(m["input_ids"].shape[0] for m in batch.micro)
    return n / (time.perf_counter() - start)


def time_peer(dataset: PerExampleDataset, examples: int, workers: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(dataset, batch_size=MICRO, sampler=torch.utils.data.RandomSampler(dataset,
                                     generator=g), num_workers=workers, persistent_workers=False)
    start = time.perf_counter()
    n = 0
    for batch in dl:  # worker start-up is part of what a user's epoch pays
        n += batch["input_ids"].shape[0]
        if n >= examples:
            break
    return n / (time.perf_counter() - start)


def time_sequential(reader: SlowReader, settings: storage.StorageSettings) -> float:
    start = time.perf_counter()
    n = 0
    for shard in reader.shards:
        time.sleep(reader.latency_s)
        data = storage.read_bytes(shard.uri, settings)
        n += len(data) // reader.row_bytes
    return n / (time.perf_counter() - start)


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
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side reports its median")
    ap.add_argument("--peer-workers", type=int, default=2, help="DataLoader worker processes for the peer")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="wait added before every GET (remote-store latency)")
    d = DataConfig()
    ap.add_argument("--workers", type=int, default=d.workers, help="the loader's data.workers")
    ap.add_argument("--prefetch-steps", type=int, default=d.prefetch_steps, help="the loader's data.prefetch_steps")
    ap.add_argument("--chunk-examples", type=int, default=d.chunk_examples, help="the loader's data.chunk_examples")
    ap.add_argument("--json", default="", help="also write the results to this file")
    a = ap.parse_args(argv)
    data_cfg = DataConfig(workers=a.workers, prefetch_steps=a.prefetch_steps, chunk_examples=a.chunk_examples)
    info = machine.describe()
    print(f"machine: {json.dumps(info)}")
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        s3 = LocalS3(tmp).start()
        try:
            settings = s3.settings
            bucket = f"s3://loader-bench-{uuid.uuid4().hex[:8]}"
            storage.make_bucket(bucket, settings)
            pack = f"{bucket}/pack"
            write_pack(pack, a.examples, a.seq_len, a.shards, 32768, settings)
            reader = SlowReader(pack, settings, a.latency_ms / 1000)
            peer_ds = PerExampleDataset([s.uri for s in reader.shards], [s.examples for s in reader.shards],
                                        reader.row_bytes, a.seq_len, settings, a.latency_ms / 1000)
            rates: dict[str, list[float]] = {"loader": [], "peer": [], "sequential": []}
            for r in range(a.rounds):
                rates["loader"].append(time_loader(reader, a.read, r, data_cfg))
                rates["peer"].append(time_peer(peer_ds, a.read, a.peer_workers, seed=r))
                rates["sequential"].append(time_sequential(reader, settings))
                print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f} ex/s" for k, v in rates.items()))
        finally:
            s3.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [lo / p for lo, p in zip(rates["loader"], rates["peer"])]
    demand = gpu_demand(a.seq_len)
    result = {"machine": info, "args": vars(a), "examples_per_s": med, "rounds": rates,
              "loader_over_peer": statistics.median(ratios), "loader_over_sequential": med["loader"] / med["sequential"],
              "h100_large_demand_examples_per_s": demand, "loader_headroom_over_one_gpu": med["loader"] / demand}
    print(f"\n{'reader':<12} {'examples/s':>11} {'MB/s':>8}")
    for k, v in med.items():
        print(f"{k:<12} {v:>11,.0f} {v * a.seq_len * 2 / 1e6:>8.1f}")
    print(f"\nloader / peer: {result['loader_over_peer']:.1f}x (median of per-round ratios, "
          f"range {min(ratios):.1f}-{max(ratios):.1f}); loader / sequential ceiling: "
          f"{result['loader_over_sequential']:.2f}")
    print(f"added latency per GET: {a.latency_ms:g} ms; loader workers {a.workers}, prefetch_steps "
          f"{a.prefetch_steps}, chunk_examples {a.chunk_examples}")
    print(f"one H100 on ELECTRA-Large at {a.seq_len}, 50% MFU, consumes {demand:,.0f} examples/s: the loader's "
          f"headroom is {result['loader_headroom_over_one_gpu']:.1f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
