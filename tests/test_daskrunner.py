"""The DaskRunner's GroupByKey and ParDo as `pipelines/daskrunner.py` replaces them: the same groups
as a plain grouping, on P / fan_in partitions instead of dask's P (the task count grew faster than
the data); the same ParDo outputs, with no DoFn object kept in the task graph."""

from __future__ import annotations

import collections

import apache_beam as beam
import dask
import dask.bag as db
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.common import DoFnSignature
from apache_beam.runners.dask import transform_evaluator as _te
from apache_beam.runners.dask.dask_runner import DaskRunner
from apache_beam.runners.dask.overrides import dask_overrides

from pipelines import daskrunner


def _grouped(bag) -> dict:
    out = {}
    for k, values in bag.compute(scheduler="sync"):
        assert k not in out, f"key {k!r} came out of two groups"
        out[k] = sorted(values)
    return out


@pytest.mark.parametrize("partitions,fan_in", [(1, 8), (12, 8), (50, 8), (300, 4)])
def test_group_by_key_gives_every_key_one_group_on_fewer_partitions(partitions, fan_in, monkeypatch):
    items = [((("block", i % 37) if i % 2 else f"near:{i % 53:03d}"), i) for i in range(3000)]
    expected = collections.defaultdict(list)
    for k, v in items:
        expected[k].append(v)
    monkeypatch.setattr(daskrunner.GroupByKey, "fan_in", fan_in)
    with dask.config.set(scheduler="sync"):
        out = daskrunner.GroupByKey(applied=None).apply(db.from_sequence(items, npartitions=partitions))
    m = daskrunner.grouped_partitions(partitions, fan_in)
    # dask's shuffle rounds its output up to k**stages partitions: at most the next square past 32
    assert out.npartitions < max(2 * m, m + 8) and (partitions <= fan_in or out.npartitions < partitions)
    assert _grouped(out) == {k: sorted(v) for k, v in expected.items()}


def test_fan_in_below_one_is_refused():
    with pytest.raises(ValueError, match="--dask_group_fan_in"):
        daskrunner.install(PipelineOptions(["--dask_group_fan_in=0"]))


@pytest.mark.parametrize("partitions,at_least", [(1, 6), (3, 8), (40, 2)])
def test_group_by_key_keeps_at_least_min_partitions(partitions, at_least, monkeypatch):
    """A chain of groups must not shrink to one partition: the steps after the last group (the
    shard writes) would run in one task on one worker."""
    items = [(i % 29, i) for i in range(500)]
    monkeypatch.setattr(daskrunner.GroupByKey, "min_partitions", at_least)
    with dask.config.set(scheduler="sync"):
        out = daskrunner.GroupByKey(applied=None).apply(db.from_sequence(items, npartitions=partitions))
    assert out.npartitions >= max(at_least, daskrunner.grouped_partitions(partitions, daskrunner.GroupByKey.fan_in))
    parts = [p for p in dask.compute(*out.to_delayed(), scheduler="sync")]
    assert sum(1 for p in parts if p) >= min(at_least, 29) // 2, "the groups all landed in a few partitions"
    assert _grouped(out) == {k: sorted(i for i in range(500) if i % 29 == k) for k in range(29)}


def test_min_partitions_default_follows_the_cluster_threads(monkeypatch):
    monkeypatch.setattr(daskrunner.GroupByKey, "min_partitions", 0)
    monkeypatch.setattr(daskrunner, "cluster_threads", lambda: 3)
    with dask.config.set(scheduler="sync"):
        out = daskrunner.GroupByKey(applied=None).apply(db.from_sequence([(1, 1), (2, 2)], npartitions=1))
    assert out.npartitions >= 3 * daskrunner.PARTITIONS_PER_THREAD
    assert _grouped(out) == {1: [1], 2: [2]}


def test_negative_min_partitions_is_refused():
    with pytest.raises(ValueError, match="--dask_group_min_partitions"):
        daskrunner.install(PipelineOptions(["--dask_group_min_partitions=-1"]))


class _SetupFn(beam.DoFn):
    """A DoFn with per-instance state from setup(), as the jobs' DoFns have."""

    def setup(self):
        self.offset = 100

    def process(self, x):
        yield x + self.offset


def _dask_bag(pipeline_fn):
    p = beam.Pipeline()
    pipeline_fn(p)
    p.replace_all(dask_overrides())
    visitor = DaskRunner.to_dask_bag_visitor()
    p.visit(visitor)
    return list(visitor.bags.values())[-1]


def _objects_in(x):
    """Every object an element of a task graph holds as an argument (tasks, lists, dicts, data nodes)."""
    yield x
    if isinstance(x, (list, tuple, set, frozenset)):
        parts = list(x)
    elif isinstance(x, dict):
        parts = list(x.values())
    else:
        parts = [*getattr(x, "args", ()), *getattr(x, "kwargs", {}).values()]
        if hasattr(x, "value") and not isinstance(x, (str, bytes)):
            parts.append(x.value)
    for part in parts:
        yield from _objects_in(part)


def _tasks_holding_a_dofn(bag) -> int:
    return sum(any(isinstance(o, DoFnSignature) for o in _objects_in(t)) for t in dict(bag.__dask_graph__()).values())


def test_pardo_tasks_carry_the_dofn_as_bytes_not_as_objects(monkeypatch):
    """A worker keeps a finished task's arguments while anything computed from it is held, so a
    DoFn in a task's arguments stayed in memory once per partition (see pipelines/daskrunner.py)."""
    daskrunner.install()
    build = lambda p: p | beam.Create(list(range(40))) | beam.ParDo(_SetupFn())  # noqa: E731
    bag = _dask_bag(build)
    # (The outputs are checked on a real cluster, byte for byte against the DirectRunner, by
    # tests/test_clean_dask.py; run here, in the test process, the unpickled invoker objects
    # were the one new thing before a garbage-collector crash later in the suite.)
    assert bag.npartitions > 0 and _tasks_holding_a_dofn(bag) == 0
    # the check can fail: the runner's own translation puts the DoFn into every partition task
    monkeypatch.setitem(_te.TRANSLATIONS, beam.ParDo, _te.ParDo)
    runner_bag = _dask_bag(build)
    assert _tasks_holding_a_dofn(runner_bag) == runner_bag.npartitions > 0
