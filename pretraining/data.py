"""Pretraining batches from a pack (`common/packformat.py`), local or s3://, resumable to the example.

The order of examples is a pure function of (seed, epoch). The pack's rows, taken as one index
space (the shards' rows end to end, or any list of row ranges), are cut into blocks of
`block_examples` consecutive rows: a block is what one HTTP range request reads. Each epoch
permutes the blocks with a generator seeded by (seed, epoch) and groups them, in that order,
into windows of `window_blocks` blocks. Inside a window the stream deals the rows round-robin:
position t of the window takes round t // W of block t % W (W blocks in the window), and each
block's rows are themselves permuted, so consecutive positions come from W different places in
the pack. Concatenating the windows and epochs gives one global stream, and a run consumes it
front to back: step s takes positions [s*B, (s+1)*B) with B the global batch, rank r the r-th
contiguous slice of B/world of them. The only state a checkpoint needs is one integer, the
stream position (`cursor`) at the step boundary; resuming there gives the next unseen example
with no repeat and no skip, whatever the world size of the resumed run.

Why this shape: with W a multiple of B (the default is W = B) all the positions a block serves
are congruent modulo B, so each block is read by exactly one rank, once, as one large range
request, and no two rows of a global batch come from the same block. A rank holds its blocks of
the current window and of the next one (read one window ahead on background threads), so its
memory is bounded by 2 x (B / world) x block_examples rows whatever the pack's size.
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
from common.packformat import PackReader, attention_mask, token_type_ids


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


ORDER_SCHEME = "block-window-v1"  # recorded in checkpoints: a cursor only means something under the same scheme


@dataclasses.dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of one shard: one piece of the index space the order runs over.

    The whole pack is one range per shard (`whole_shards`); leaving rows out of the training stream
    (a held-out slice) is a matter of passing fewer or shorter ranges.
    """

    shard: int
    start: int
    stop: int


def whole_shards(shard_examples: list[int]) -> list[RowRange]:
    return [RowRange(i, 0, int(n)) for i, n in enumerate(shard_examples) if n > 0]


@dataclasses.dataclass(frozen=True)
class Piece:
    """A run of consecutive stream positions inside one window, and where each one's row is."""

    epoch: int
    window_end: int  # stream position just after the window: its blocks are not needed from there on
    blocks: np.ndarray  # block id of each position
    rounds: np.ndarray  # index of each position's row among its block's permuted rows


@dataclasses.dataclass
class _EpochPlan:
    blocks: np.ndarray  # block ids in this epoch's order
    sizes: np.ndarray  # rows of each block, same order
    starts: np.ndarray  # epoch offset of each window's first position, plus the epoch's end


class ExampleOrder:
    """Maps a global stream position to (shard, row): the deterministic order described above."""

    def __init__(self, ranges: list[RowRange], block_examples: int, window_blocks: int, seed: int):
        if block_examples <= 0 or window_blocks <= 0:
            raise ValueError("block_examples and window_blocks must be positive")
        self.ranges = [r for r in ranges if r.stop > r.start]
        self.block_examples, self.window_blocks, self.seed = int(block_examples), int(window_blocks), int(seed)
        self.offsets = np.cumsum([0] + [r.stop - r.start for r in self.ranges])  # index of each range's first row
        self.epoch_examples = int(self.offsets[-1])
        if self.epoch_examples == 0:
            raise DataMismatchError("the pack holds no examples")
        self.num_blocks = -(-self.epoch_examples // self.block_examples)
        self._plans: collections.OrderedDict[int, _EpochPlan] = collections.OrderedDict()
        self._lock = threading.Lock()

    # ----- blocks -------------------------------------------------------------------------------
    def block_size(self, block: int) -> int:
        return min(self.block_examples, self.epoch_examples - block * self.block_examples)

    def block_reads(self, block: int) -> list[tuple[int, int, int]]:
        """(shard, first row, rows) of the range requests that read a block: one, or one per range it spans."""
        lo = block * self.block_examples
        hi = lo + self.block_size(block)
        out = []
        k = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        while lo < hi:
            r = self.ranges[k]
            take = min(hi, int(self.offsets[k + 1])) - lo
            out.append((r.shard, r.start + lo - int(self.offsets[k]), take))
            lo += take
            k += 1
        return out

    def block_permutation(self, epoch: int, block: int) -> np.ndarray:
        """The order a block's rows are dealt in during an epoch."""
        return np.random.default_rng([self.seed, epoch, block, 0xB10C]).permutation(self.block_size(block))

    # ----- the stream ---------------------------------------------------------------------------
    def _plan(self, epoch: int) -> _EpochPlan:
        with self._lock:
            plan = self._plans.get(epoch)
            if plan is None:
                blocks = np.random.default_rng([self.seed, epoch, 0x0E1EC7]).permutation(self.num_blocks)
                sizes = np.full(self.num_blocks, self.block_examples, dtype=np.int64)
                sizes[blocks == self.num_blocks - 1] = self.block_size(self.num_blocks - 1)
                rows = np.add.reduceat(sizes, np.arange(0, self.num_blocks, self.window_blocks))
                plan = _EpochPlan(blocks, sizes, np.concatenate([[0], np.cumsum(rows)]))
                self._plans[epoch] = plan
                while len(self._plans) > 2:  # a run touches one epoch at a time, two across a boundary
                    self._plans.popitem(last=False)
            return plan

    def window(self, epoch: int, index: int) -> np.ndarray:
        """Block ids of one window, in dealing order."""
        return self._plan(epoch).blocks[index * self.window_blocks:(index + 1) * self.window_blocks]

    def pieces(self, position: int, count: int) -> list[Piece]:
        """Stream positions [position, position+count) as runs that each stay inside one window."""
        out = []
        while count > 0:
            epoch, off = divmod(position, self.epoch_examples)
            plan = self._plan(epoch)
            w = int(np.searchsorted(plan.starts, off, side="right")) - 1
            lo = off - int(plan.starts[w])
            take = min(count, int(plan.starts[w + 1]) - off)
            span = slice(w * self.window_blocks, (w + 1) * self.window_blocks)
            blocks, rounds = _deal(plan.blocks[span], plan.sizes[span], np.arange(lo, lo + take))
            out.append(Piece(epoch, epoch * self.epoch_examples + int(plan.starts[w + 1]), blocks, rounds))
            position += take
            count -= take
        return out

    def examples(self, position: int, count: int) -> list[tuple[int, int]]:
        """(shard, row) of each stream position; what tests check coverage, resume and mixing against."""
        out = []
        for p in self.pieces(position, count):
            for block, rnd in zip(p.blocks.tolist(), p.rounds.tolist()):
                index = block * self.block_examples + int(self.block_permutation(p.epoch, block)[rnd])
                k = int(np.searchsorted(self.offsets, index, side="right")) - 1
                out.append((self.ranges[k].shard, self.ranges[k].start + index - int(self.offsets[k])))
        return out


def _deal(blocks: np.ndarray, sizes: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(block, round) of window offsets `t` when rows are dealt round-robin from the window's blocks.

    At most one block of a pack is short (its last), so there are two phases: full rounds over all
    blocks while the short one lasts, then rounds over the others.
    """
    n = len(blocks)
    low = int(sizes.min())
    j, r = t % n, t // n
    late = t >= n * low
    if late.any():
        longer = np.flatnonzero(sizes > low)
        t2 = t[late] - n * low
        j[late] = longer[t2 % len(longer)]
        r[late] = low + t2 // len(longer)
    return blocks[j], r


@dataclasses.dataclass
class StepBatch:
    step: int  # the optimizer step these micro-batches feed (1-based: the step being taken)
    cursor: int  # stream position after this step, i.e. the resume point once it is done
    micro: list[dict[str, torch.Tensor]]  # grad_accum micro-batches: input_ids, attention_mask, token_type_ids


class PackLoader:
    """This rank's micro-batches, step by step, from a stream position onward.

    Blocks are read on `workers` threads (I/O-bound: threads, and more than cores is fine) one
    window ahead of the step being built; batches are assembled `prefetch_steps` steps ahead.
    Memory: the rank's blocks of two windows, 2 x window_blocks / world x block_examples rows
    (uint16 or uint32 as stored), plus the assembled steps.
    """

    def __init__(self, reader: PackReader, *, seed: int, micro_batch: int, grad_accum: int, rank: int, world: int,
                 block_examples: int = 256, window_blocks: int = 0, prefetch_steps: int = 16, workers: int = 8,
                 ranges: list[RowRange] | None = None):
        self.reader = reader
        self.micro_batch, self.grad_accum, self.rank, self.world = micro_batch, grad_accum, rank, world
        self.per_rank = micro_batch * grad_accum
        self.global_batch = self.per_rank * world
        self.block_examples = int(block_examples)
        self.window_blocks = int(window_blocks) or self.global_batch
        shard_ranges = ranges if ranges is not None else whole_shards([s.examples for s in reader.shards])
        self.order = ExampleOrder(shard_ranges, self.block_examples, self.window_blocks, seed)
        self.prefetch_steps, self.workers = max(1, prefetch_steps), max(1, workers)
        # Building step s also requests the blocks of step s + lookahead. Steps are built prefetch_steps ahead of
        # the one being trained, so this asks for blocks one window's worth of positions ahead of training: the
        # next window's blocks arrive while this one trains, and no more than two windows are ever held.
        window_steps = self.window_blocks * self.block_examples // self.global_batch
        self.lookahead_steps = max(0, window_steps - self.prefetch_steps - 1)
        self.pad_id = int(reader.special_ids["pad"])
        self.sep_id = int(reader.special_ids["sep"])
        self._blocks: dict[tuple[int, int], tuple[int, concurrent.futures.Future]] = {}
        self._lock = threading.Lock()
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self.counters = collections.Counter()  # range_requests, bytes_read, blocks_read, examples, cached_blocks_peak

    @property
    def epoch_examples(self) -> int:
        return self.order.epoch_examples

    # ----- blocks -------------------------------------------------------------------------------
    def _read_block(self, epoch: int, block: int) -> np.ndarray:
        parts = [self.reader.read(shard, start, count, widen=False)
                 for shard, start, count in self.order.block_reads(block)]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        with self._lock:
            self.counters["range_requests"] += len(parts)
            self.counters["bytes_read"] += rows.nbytes
            self.counters["blocks_read"] += 1
        return rows[self.order.block_permutation(epoch, block)]

    def _fetch(self, epoch: int, block: int, window_end: int) -> concurrent.futures.Future:
        """The block's permuted rows (a future); read once per epoch, kept until its window is consumed."""
        key = (epoch, block)
        with self._lock:
            got = self._blocks.get(key)
            if got is None:
                if self._io is None:
                    self._io = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="pack-read")
                got = (window_end, self._io.submit(self._read_block, epoch, block))
                self._blocks[key] = got
                self.counters["cached_blocks_peak"] = max(self.counters["cached_blocks_peak"], len(self._blocks))
            return got[1]

    def _evict(self, position: int) -> None:
        """Drop blocks of windows that end at or before `position`: no later step reads them."""
        with self._lock:
            for key in [k for k, (end, _) in self._blocks.items() if end <= position]:
                del self._blocks[key]

    def _request(self, cursor: int) -> None:
        """Start reading the blocks this rank needs in the step that starts at `cursor`; no wait."""
        for p in self.order.pieces(cursor + self.rank * self.per_rank, self.per_rank):
            for block in np.unique(p.blocks).tolist():
                self._fetch(p.epoch, block, p.window_end)

    # ----- steps --------------------------------------------------------------------------------
    def rank_ids(self, cursor: int) -> np.ndarray:
        """Token ids [per_rank, seq_len] this rank trains on in the step that starts at `cursor`."""
        out = np.empty((self.per_rank, self.reader.seq_len), dtype=np.int64)
        at = 0
        for p in self.order.pieces(cursor + self.rank * self.per_rank, self.per_rank):
            blocks = p.blocks.tolist()
            futures = {b: self._fetch(p.epoch, b, p.window_end) for b in dict.fromkeys(blocks)}  # all in flight
            rows = {b: f.result() for b, f in futures.items()}
            for i, (b, r) in enumerate(zip(blocks, p.rounds.tolist())):  # mostly one row per block: no grouping
                out[at + i] = rows[b][r]
            at += len(blocks)
        return out

    def _build(self, step: int, cursor: int, ahead: int | None) -> StepBatch:
        if ahead is not None:
            self._request(ahead)
        ids = self.rank_ids(cursor)
        types = token_type_ids(ids, self.sep_id)
        mask = attention_mask(ids, self.pad_id)
        micro = []
        for m in range(self.grad_accum):
            sl = slice(m * self.micro_batch, (m + 1) * self.micro_batch)
            micro.append({"input_ids": torch.from_numpy(ids[sl]), "attention_mask": torch.from_numpy(mask[sl]),
                          "token_type_ids": torch.from_numpy(types[sl])})
        with self._lock:
            self.counters["examples"] += ids.shape[0]
        return StepBatch(step=step, cursor=cursor + self.global_batch, micro=micro)

    def steps(self, start_step: int, cursor: int, max_steps: int | None = None) -> Iterator[StepBatch]:
        """Batches for steps start_step+1, start_step+2, ... given the stream position after `start_step`."""
        pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="pack-batch")
        pending: collections.deque = collections.deque()
        nxt = start_step + 1

        def position(step: int) -> int:  # stream position where `step` starts
            return cursor + (step - start_step - 1) * self.global_batch

        def submit():
            nonlocal nxt
            while len(pending) < self.prefetch_steps and (max_steps is None or nxt <= max_steps):
                far = nxt + self.lookahead_steps
                ahead = position(far) if max_steps is None or far <= max_steps else None
                pending.append(pool.submit(self._build, nxt, position(nxt), ahead))
                nxt += 1

        try:
            submit()
            while pending:
                batch = pending.popleft().result()
                self._evict(batch.cursor - self.global_batch)
                submit()
                yield batch
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            self.close()

    def close(self) -> None:
        """Stop the reader threads and drop every cached block."""
        with self._lock:
            io, self._io = self._io, None
            self._blocks.clear()
        if io is not None:
            io.shutdown(wait=False, cancel_futures=True)


def resume_point(loader: PackLoader, cursor: int, pack_manifest: dict) -> dict:
    """What a checkpoint stores to continue the stream exactly."""
    return {"cursor": int(cursor), "epoch": int(cursor // loader.epoch_examples),
            "epoch_examples": loader.epoch_examples, "seed": loader.order.seed, "order": ORDER_SCHEME,
            "block_examples": loader.block_examples, "window_blocks": loader.window_blocks,
            "pack_manifest_hash": pack_manifest["manifest_hash"]}


def check_resume_point(point: dict, loader: PackLoader, pack_manifest: dict) -> None:
    """The order must be the one the checkpoint was cut in, or the cursor means something else."""
    if point.get("pack_manifest_hash") != pack_manifest["manifest_hash"]:
        raise DataMismatchError(
            f"the checkpoint was trained on pack {point.get('pack_manifest_hash')}, this run reads "
            f"{pack_manifest['manifest_hash']}: resuming would not continue the same data stream. "
            "Point data.pack at the original pack or start a new run directory.")
    if point.get("order") != ORDER_SCHEME:
        raise DataMismatchError(f"the checkpoint's data order is {point.get('order', 'chunk-v0')!r}, this version "
                                f"reads packs in {ORDER_SCHEME!r}: the cursor would point elsewhere. Resume with the "
                                "version that wrote the checkpoint or start a new run directory.")
    names = ("seed", "epoch_examples", "block_examples", "window_blocks")
    mine = (loader.order.seed, loader.epoch_examples, loader.block_examples, loader.window_blocks)
    theirs = tuple(point.get(k) for k in names)
    if mine != theirs:
        raise DataMismatchError(f"the checkpoint's data order ({', '.join(names)}) {theirs} differs from this "
                                f"run's {mine}; keep seed, data.block_examples, data.window_blocks (0 means "
                                "train_batch) and data.validation_examples (it sets epoch_examples) unchanged when "
                                "resuming")
