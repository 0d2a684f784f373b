"""The pack loader: deterministic order, exact resume, rank split, range reads, refusals."""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np
import pytest

from common import storage
from common.packformat import PackReader
from pretraining import data as datalib
from pretraining.sizes import electra_tiny


def loader(pack_uri: str, *, rank=0, world=1, micro=4, accum=2, seed=7, block=16, reader=None,
           **kw) -> datalib.PackLoader:
    return datalib.PackLoader(reader or PackReader(pack_uri), seed=seed, micro_batch=micro, grad_accum=accum,
                              rank=rank, world=world, block_examples=block, **kw)


def order_of(pack_uri: str, seed: int, block: int = 16, window: int = 8) -> datalib.ExampleOrder:
    r = PackReader(pack_uri)
    return datalib.ExampleOrder(datalib.whole_shards([s.examples for s in r.shards]), block, window, seed)


def ids_of(batch: datalib.StepBatch) -> np.ndarray:
    return np.concatenate([m["input_ids"].numpy() for m in batch.micro])


def test_each_epoch_covers_every_example_once_and_epochs_differ(real_pack):
    r = PackReader(real_pack["pack"])
    order = order_of(real_pack["pack"], seed=3)
    n = order.epoch_examples
    e0, e1 = order.examples(0, n), order.examples(n, n)
    every = {(i, j) for i, s in enumerate(r.shards) for j in range(s.examples)}
    assert set(e0) == every and len(e0) == n
    assert set(e1) == every and e0 != e1
    assert order.examples(0, n) == order_of(real_pack["pack"], seed=3).examples(0, n)
    assert e0 != order_of(real_pack["pack"], seed=4).examples(0, n)


def test_a_held_out_range_is_never_dealt(real_pack):
    """The index space is a list of row ranges: rows left out of it never reach the training stream."""
    r = PackReader(real_pack["pack"])
    ranges = datalib.whole_shards([s.examples for s in r.shards])
    kept = [datalib.RowRange(0, 20, ranges[0].stop)] + ranges[1:]  # rows 0-19 of shard 0 held out
    order = datalib.ExampleOrder(kept, 16, 8, seed=3)
    seen = order.examples(0, 2 * order.epoch_examples)
    assert order.epoch_examples == r.num_examples - 20
    assert not {(0, j) for j in range(20)} & set(seen)
    assert len(set(seen)) == order.epoch_examples


def test_rows_of_a_global_batch_come_from_distinct_blocks(real_pack):
    """Shuffle quality: with window = batch, a step takes one row from each of B blocks, and a block's rows are
    spread over as many steps as it has rows (pack neighbours, often one document, never share a step)."""
    block, batch = 16, 8
    order = order_of(real_pack["pack"], seed=5, block=block, window=batch)
    assert len(order.window(0, 0)) == batch and (order.window(0, 0) != order.num_blocks - 1).all()
    full_window = block * batch
    for step in range(full_window // batch):
        (piece,) = order.pieces(step * batch, batch)
        assert len(set(piece.blocks.tolist())) == batch
    steps_of = collections.defaultdict(set)
    for i, (shard, row) in enumerate(order.examples(0, full_window)):
        steps_of[(int(order.offsets[shard]) + row) // block].add(i // batch)  # index space = shards end to end
    assert sorted(steps_of) == sorted(order.window(0, 0).tolist())
    assert all(len(s) == block for s in steps_of.values())


def test_resume_at_cursor_continues_exactly(real_pack):
    """Steps after a resume are the uninterrupted run's steps, across an epoch boundary: no repeat, no skip."""
    full = list(loader(real_pack["pack"]).steps(0, 0, max_steps=90))  # 90 x 8 > 612 examples: crosses an epoch
    cut = full[36]
    resumed = list(loader(real_pack["pack"]).steps(cut.step, cut.cursor, max_steps=90))
    assert [b.step for b in resumed] == list(range(38, 91))
    for a, b in zip(full[37:], resumed):
        assert a.cursor == b.cursor
        assert np.array_equal(ids_of(a), ids_of(b))
    # Seen once per epoch: the first epoch's rows are a permutation of the pack.
    r = PackReader(real_pack["pack"])
    seen = np.concatenate([ids_of(b) for b in full])[: r.num_examples]
    everything = np.concatenate([r.read(i, 0, s.examples) for i, s in enumerate(r.shards)])
    key = lambda a: sorted(map(bytes, a.astype("<u2")))  # noqa: E731
    assert key(seen) == key(everything)


def test_ranks_split_the_global_batch_and_world_size_can_change(real_pack):
    one = list(loader(real_pack["pack"], world=1, micro=4, accum=4).steps(0, 0, max_steps=5))
    two = [list(loader(real_pack["pack"], rank=r, world=2, micro=4, accum=2).steps(0, 0, max_steps=5))
           for r in range(2)]
    for s in range(5):
        merged = np.concatenate([ids_of(two[0][s]), ids_of(two[1][s])])
        assert np.array_equal(merged, ids_of(one[s]))
        assert two[0][s].cursor == one[s].cursor == 16 * (s + 1)


def test_batches_carry_mask_and_token_types(real_pack):
    b = next(loader(real_pack["pack"]).steps(0, 0, max_steps=1))
    m = b.micro[0]
    assert m["input_ids"].shape == (4, 64) and len(b.micro) == 2
    assert np.array_equal(m["attention_mask"].numpy(), (m["input_ids"].numpy() != 0).astype(np.int64))
    assert (m["token_type_ids"].numpy()[:, 0] == 0).all() and m["token_type_ids"].numpy().max() == 1


class RecordingReader(PackReader):
    """A PackReader that remembers every range request."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.requests: list[tuple[int, int, int]] = []

    def read(self, shard, start, count, **kw):
        self.requests.append((shard, start, count))
        return super().read(shard, start, count, **kw)


def test_each_rank_reads_its_own_blocks_once_with_one_range_request_each(real_pack):
    """Two ranks over the first window: every block of it is read by exactly one rank, in one request (two where it
    spans a shard end), and nothing else is read; a rank's share is the window's half."""
    block, micro, accum, world = 16, 4, 2, 2
    batch = micro * accum * world
    seed = next(s for s in range(50) if (order_of(real_pack["pack"], s, block, batch).window(0, 0)
                                         != order_of(real_pack["pack"], s, block, batch).num_blocks - 1).all())
    order = order_of(real_pack["pack"], seed, block, batch)
    window_steps = block * batch // batch
    readers, loaders = [], []
    for rank in range(world):
        rd = RecordingReader(real_pack["pack"])
        ld = loader(real_pack["pack"], rank=rank, world=world, micro=micro, accum=accum, seed=seed, block=block,
                    reader=rd)
        assert sum(1 for _ in ld.steps(0, 0, max_steps=window_steps)) == window_steps
        readers.append(rd)
        loaders.append(ld)
    wanted = {(s, start) for b in order.window(0, 0).tolist() for s, start, _ in order.block_reads(b)}
    got = [{(s, start) for s, start, _ in rd.requests} for rd in readers]
    assert not got[0] & got[1] and got[0] | got[1] == wanted
    assert all(len(rd.requests) == len(set(rd.requests)) for rd in readers)  # no block read twice
    for ld in loaders:
        assert ld.counters["blocks_read"] == batch // world and ld.counters["examples"] == window_steps * batch // 2
        assert ld.counters["bytes_read"] == batch // world * block * 64 * 2
        assert ld.counters["cached_blocks_peak"] <= 2 * batch // world


def test_blocks_are_read_a_window_ahead_and_dropped_behind(real_pack):
    """Steady state: by the time a window starts, its blocks were requested during the previous one, and the
    cache never holds more than two windows' blocks."""
    ld = loader(real_pack["pack"], micro=4, accum=2, block=16, prefetch_steps=2, workers=2)
    assert ld.lookahead_steps == 13  # a window is 8 blocks x 16 rows = 16 steps of 8; 2 steps are built ahead
    it = ld.steps(0, 0, max_steps=60)
    for _ in range(5):
        next(it)
    time.sleep(0.3)
    assert ld.counters["blocks_read"] >= 12  # window 1 (8 blocks) and most of window 2 already in
    for _ in it:
        pass
    assert ld.counters["cached_blocks_peak"] <= 2 * 8


def test_loader_reads_from_s3_like_local(real_pack, s3_bucket):
    uri = f"{s3_bucket}/pack"
    storage.upload_dir(real_pack["pack"], uri)
    local = [ids_of(b) for b in loader(real_pack["pack"]).steps(0, 0, max_steps=3)]
    remote = [ids_of(b) for b in loader(uri, workers=3, prefetch_steps=2).steps(0, 0, max_steps=3)]
    assert all(np.array_equal(a, b) for a, b in zip(local, remote))


def test_mismatched_pack_is_refused_with_a_clear_message(real_pack):
    pack = PackReader(real_pack["pack"]).manifest
    with pytest.raises(datalib.DataMismatchError, match="vocab_size: pack 512 vs model 32768"):
        datalib.check_compatible(pack, electra_tiny())
    cfg = dataclasses.replace(electra_tiny(), vocab_size=512, mask_token_id=5)
    with pytest.raises(datalib.DataMismatchError, match=r"special id \[MASK\]: pack 4 vs model 5"):
        datalib.check_compatible(pack, cfg)
    good = dataclasses.replace(electra_tiny(), vocab_size=512)
    datalib.check_compatible(pack, good)
    with pytest.raises(datalib.DataMismatchError, match="tokenizer"):
        datalib.check_compatible(pack, good, expected_tokenizer="0" * 64)
    with pytest.raises(datalib.DataMismatchError, match="max_position_embeddings"):
        datalib.check_compatible(pack, dataclasses.replace(good, max_position_embeddings=32))


def test_resume_point_must_match_pack_and_order(real_pack):
    ld = loader(real_pack["pack"])
    pack = ld.reader.manifest
    point = datalib.resume_point(ld, 48, pack)
    datalib.check_resume_point(point, ld, pack)
    with pytest.raises(datalib.DataMismatchError, match="trained on pack"):
        datalib.check_resume_point({**point, "pack_manifest_hash": "x"}, ld, pack)
    with pytest.raises(datalib.DataMismatchError, match="data order"):
        datalib.check_resume_point(point, loader(real_pack["pack"], seed=8), pack)
    with pytest.raises(datalib.DataMismatchError, match="window_blocks"):
        datalib.check_resume_point(point, loader(real_pack["pack"], window_blocks=16), pack)
    old_scheme = {k: v for k, v in point.items() if k not in ("order", "block_examples", "window_blocks")}
    with pytest.raises(datalib.DataMismatchError, match="chunk-v0"):
        datalib.check_resume_point({**old_scheme, "chunk_examples": 16}, ld, pack)


def test_prefetch_runs_ahead_in_the_background(real_pack):
    ld = loader(real_pack["pack"], prefetch_steps=4, workers=2)
    it = ld.steps(0, 0, max_steps=20)
    next(it)
    time.sleep(0.5)
    assert ld.counters["examples"] >= 4 * 8  # the next steps were read while the consumer slept
    counts = collections.Counter(b.step for b in it)
    assert sorted(counts) == list(range(2, 21))


@pytest.mark.slow
def test_loader_benchmark_runs(tmp_path):
    """benchmarks/loader_throughput.py end to end on a small pack (its own SeaweedFS): every reader reports, with
    its GETs, memory and shuffle figures traced from the row numbers it yielded."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(repo / "benchmarks" / "loader_throughput.py"), "--examples", "2048",
                    "--shards", "2", "--read", "512", "--peer-read", "128", "--rounds", "1", "--json", str(out)],
                   check=True, cwd=repo, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    readers = {"loader", "litdata", "peer", "sequential"}
    assert set(report["examples_per_s"]) == readers and all(v > 0 for v in report["examples_per_s"].values())
    assert all(report["gets_per_round"][k] > 0 for k in readers)
    assert report["gets_per_round"]["loader"] <= 8  # 256-example blocks: the whole 2048-row pack is 8 of them
    assert report["gets_per_round"]["peer"] >= 128  # one GET per example (workers also prefetch past the stop)
    q = report["shuffle_quality"]
    assert set(q) == {"loader", "litdata", "peer"}
    # As mixed as a uniform shuffle, or better (no two rows of a batch share a block when the pack has enough).
    assert q["loader"]["neighbours_per_batch"] <= 1.2 * report["uniform_neighbours_per_batch"]
    assert 0.1 < q["loader"]["adjacent_gap"] < 0.6
    assert report["loader_over_litdata"] > 0 and report["loader_cache_mb_peak"] > 0
    assert 400 < report["h100_large_demand_examples_per_s"] < 500  # 2.17 GFLOP/token at 50% of 989 TFLOP/s
