"""Pretraining batches from a pack (`pipelines/packformat.py`), local or s3://, resumable to the example.

The order of examples is a pure function of (seed, epoch): every shard is cut into
chunks of `chunk_examples` consecutive rows, the chunks of all shards are permuted
with a generator seeded by (seed, epoch), and the rows inside each chunk are
permuted too. Concatenating the epochs gives one global stream, and a run consumes
it front to back: step s takes stream positions [s*B, (s+1)*B) with B the global
batch, rank r the r-th contiguous slice of B/world of them. The only state a
checkpoint needs is therefore one integer, the stream position (`cursor`) at the
step boundary; resuming there gives the next unseen example with no repeat and no
skip, whatever the world size of the resumed run.

A rank reads only the chunks its slices touch, each with one HTTP range request,
a few steps ahead on background threads, so S3 latency hides behind compute.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
from typing import Iterator

import numpy as np
import torch

from common import manifest as manifests
from common import storage
from pipelines.packformat import PackReader, attention_mask, token_type_ids


class DataMismatchError(ValueError):
    """The pack and the model (or the run being resumed) disagree; training on it would be wrong."""


def check_compatible(pack: dict, model_cfg, *, pack_uri: str = "pack", expected_tokenizer: str = "",
                     settings: storage.StorageSettings | None = None) -> None:
    """Refuse a pack whose vocabulary, special ids, tokenizer or length disagree with the model."""
    problems = []
    if int(pack["vocab_size"]) != int(model_cfg.vocab_size):
        problems.append(f"vocab_size: pack {pack['vocab_size']} vs model {model_cfg.vocab_size} "
                        f"(set model.vocab_size={pack['vocab_size']} or use a pack made with the model's tokenizer)")
    mine = model_cfg.special_ids
    theirs = {k: int(v) for k, v in pack.get("special_ids", {}).items()}
    for name, mid in mine.items():
        if theirs.get(name) != mid:
            problems.append(f"special id [{name.upper()}]: pack {theirs.get(name)} vs model {mid}")
    max_pos = model_cfg.max_position_embeddings
    if int(pack["seq_len"]) > max_pos:
        problems.append(f"seq_len {pack['seq_len']} > model.max_position_embeddings {max_pos}")
    tok = pack.get("tokenizer") or {}
    built_with = tok.get("manifest_hash") or tok.get("sha256")  # an HF tokenizer has no manifest: its JSON's hash
    if expected_tokenizer and built_with != expected_tokenizer:
        problems.append(f"tokenizer: pack was built with tokenizer {built_with!r}, "
                        f"the run expects {expected_tokenizer!r} (data.tokenizer_hash)")
    if tok.get("uri") and manifests.exists(tok["uri"], settings):
        tm = manifests.read(tok["uri"], kind="tokenizer", settings=settings)
        if tok.get("manifest_hash") and tm["manifest_hash"] != tok["manifest_hash"]:
            problems.append(f"tokenizer at {tok['uri']} (hash {tm['manifest_hash'][:12]}) is not the one the pack "
                            f"was built with ({tok['manifest_hash'][:12]}): it was retrained in place")
        if "vocab_size" in tm and int(tm["vocab_size"]) != int(model_cfg.vocab_size):
            problems.append(f"tokenizer vocab_size {tm['vocab_size']} vs model {model_cfg.vocab_size}")
    if problems:
        raise DataMismatchError(f"refusing pack {pack_uri}: it does not fit the model config:\n  - "
                                + "\n  - ".join(problems))


@dataclasses.dataclass(frozen=True)
class Chunk:
    shard: int
    start: int  # first row in the shard
    count: int


class ExampleOrder:
    """Maps a global stream position to (shard, row): the deterministic order described above."""

    def __init__(self, shard_examples: list[int], chunk_examples: int, seed: int):
        if chunk_examples <= 0:
            raise ValueError("chunk_examples must be positive")
        self.seed = int(seed)
        self.chunks = [Chunk(i, s, min(chunk_examples, n - s))
                       for i, n in enumerate(shard_examples) for s in range(0, n, chunk_examples)]
        self.epoch_examples = int(sum(shard_examples))
        if self.epoch_examples == 0:
            raise DataMismatchError("the pack holds no examples")
        self._epoch_cache: dict[int, tuple[list[Chunk], np.ndarray]] = {}
        self._lock = threading.Lock()

    def _epoch(self, epoch: int) -> tuple[list[Chunk], np.ndarray]:
        with self._lock:
            got = self._epoch_cache.get(epoch)
            if got is None:
                rng = np.random.default_rng([self.seed, epoch, 0x0E1EC7])
                order = [self.chunks[i] for i in rng.permutation(len(self.chunks))]
                starts = np.cumsum([0] + [c.count for c in order])
                got = (order, starts)
                self._epoch_cache = {epoch: got}  # one epoch at a time is all a run touches
            return got

    def row_permutation(self, epoch: int, chunk: Chunk) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, chunk.shard, chunk.start])
        return rng.permutation(chunk.count)

    def pieces(self, position: int, count: int) -> list[tuple[int, Chunk, int, int]]:
        """Stream positions [position, position+count) as (epoch, chunk, lo, hi) runs of the permuted chunk rows."""
        out = []
        while count > 0:
            epoch, off = divmod(position, self.epoch_examples)
            order, starts = self._epoch(epoch)
            k = int(np.searchsorted(starts, off, side="right")) - 1
            lo = off - int(starts[k])
            take = min(count, order[k].count - lo)
            out.append((epoch, order[k], lo, lo + take))
            position += take
            count -= take
        return out

    def examples(self, position: int, count: int) -> list[tuple[int, int]]:
        """(shard, row) of each stream position; what tests check coverage and resume against."""
        rows = []
        for epoch, chunk, lo, hi in self.pieces(position, count):
            perm = self.row_permutation(epoch, chunk)
            rows.extend((chunk.shard, chunk.start + int(i)) for i in perm[lo:hi])
        return rows


@dataclasses.dataclass
class StepBatch:
    step: int  # the optimizer step these micro-batches feed (1-based: the step being taken)
    cursor: int  # stream position after this step, i.e. the resume point once it is done
    micro: list[dict[str, torch.Tensor]]  # grad_accum micro-batches: input_ids, attention_mask, token_type_ids


class PackLoader:
    """This rank's micro-batches, step by step, from a stream position onward."""

    def __init__(self, reader: PackReader, *, seed: int, micro_batch: int, grad_accum: int, rank: int, world: int,
                 chunk_examples: int = 16, prefetch_steps: int = 4, workers: int = 2, cache_chunks: int = 8,
                 train_examples: list[int] | None = None):
        self.reader = reader
        self.micro_batch, self.grad_accum, self.rank, self.world = micro_batch, grad_accum, rank, world
        self.per_rank = micro_batch * grad_accum
        self.global_batch = self.per_rank * world
        self.chunk_examples = chunk_examples
        # The first train_examples[k] rows of shard k are the training index space; the rows after them are
        # held out for validation (pretraining/validation.py) and never enter the order. None = every row.
        counts = [s.examples for s in reader.shards] if train_examples is None else list(train_examples)
        self.order = ExampleOrder(counts, chunk_examples, seed)
        self.prefetch_steps, self.workers = max(1, prefetch_steps), max(1, workers)
        self.pad_id = int(reader.special_ids["pad"])
        self.sep_id = int(reader.special_ids["sep"])
        # Chunks straddle slice boundaries; a small cache keeps a straddling chunk from being fetched twice.
        self._cache: collections.OrderedDict[tuple[int, int], np.ndarray] = collections.OrderedDict()
        self._cache_size = cache_chunks
        self._cache_lock = threading.Lock()
        self.counters = collections.Counter()  # range_requests, bytes_read, examples

    @property
    def epoch_examples(self) -> int:
        return self.order.epoch_examples

    def _chunk_rows(self, chunk: Chunk) -> np.ndarray:
        key = (chunk.shard, chunk.start)
        with self._cache_lock:
            got = self._cache.get(key)
            if got is not None:
                self._cache.move_to_end(key)
                return got
        rows = self.reader.read(chunk.shard, chunk.start, chunk.count)  # one range request
        with self._cache_lock:
            self.counters["range_requests"] += 1
            self.counters["bytes_read"] += rows.shape[0] * self.reader.row_bytes
            self._cache[key] = rows
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return rows

    def rank_ids(self, cursor: int) -> np.ndarray:
        """Token ids [per_rank, seq_len] this rank trains on in the step that starts at `cursor`."""
        first = cursor + self.rank * self.per_rank
        parts = []
        for epoch, chunk, lo, hi in self.order.pieces(first, self.per_rank):
            perm = self.order.row_permutation(epoch, chunk)
            parts.append(self._chunk_rows(chunk)[perm[lo:hi]])
        return np.concatenate(parts, axis=0)

    def _build(self, step: int, cursor: int) -> StepBatch:
        ids = self.rank_ids(cursor)
        types = token_type_ids(ids, self.sep_id)
        mask = attention_mask(ids, self.pad_id)
        micro = []
        for m in range(self.grad_accum):
            sl = slice(m * self.micro_batch, (m + 1) * self.micro_batch)
            micro.append({"input_ids": torch.from_numpy(np.ascontiguousarray(ids[sl])),
                          "attention_mask": torch.from_numpy(np.ascontiguousarray(mask[sl])),
                          "token_type_ids": torch.from_numpy(np.ascontiguousarray(types[sl]))})
        self.counters["examples"] += ids.shape[0]
        return StepBatch(step=step, cursor=cursor + self.global_batch, micro=micro)

    def steps(self, start_step: int, cursor: int, max_steps: int | None = None) -> Iterator[StepBatch]:
        """Batches for steps start_step+1, start_step+2, ... given the stream position after `start_step`."""
        pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="pack-prefetch")
        pending: collections.deque = collections.deque()
        nxt = start_step + 1

        def submit():
            nonlocal nxt
            while len(pending) < self.prefetch_steps and (max_steps is None or nxt <= max_steps):
                c = cursor + (nxt - start_step - 1) * self.global_batch
                pending.append(pool.submit(self._build, nxt, c))
                nxt += 1

        try:
            submit()
            while pending:
                batch = pending.popleft().result()
                submit()
                yield batch
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)


def resume_point(loader: PackLoader, cursor: int, pack_manifest: dict) -> dict:
    """What a checkpoint stores to continue the stream exactly."""
    return {"cursor": int(cursor), "epoch": int(cursor // loader.epoch_examples),
            "epoch_examples": loader.epoch_examples, "seed": loader.order.seed,
            "chunk_examples": loader.chunk_examples,
            "pack_manifest_hash": pack_manifest["manifest_hash"]}


def check_resume_point(point: dict, loader: PackLoader, pack_manifest: dict) -> None:
    """The order must be the one the checkpoint was cut in, or the cursor means something else."""
    if point.get("pack_manifest_hash") != pack_manifest["manifest_hash"]:
        raise DataMismatchError(
            f"the checkpoint was trained on pack {point.get('pack_manifest_hash')}, this run reads "
            f"{pack_manifest['manifest_hash']}: resuming would not continue the same data stream. "
            "Point data.pack at the original pack or start a new run directory.")
    mine = (loader.order.seed, loader.epoch_examples, loader.chunk_examples)
    theirs = (point.get("seed"), point.get("epoch_examples"), point.get("chunk_examples"))
    if mine != theirs:
        raise DataMismatchError(f"the checkpoint's data order (seed, epoch examples, chunk) {theirs} differs from "
                                f"this run's {mine}; keep seed and data.chunk_examples unchanged when resuming")
