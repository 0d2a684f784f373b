"""Four fixes for Beam's DaskRunner (2.77) that the data jobs need to keep worker memory bounded.

The runner runs a ParDo on a dask partition with `apply_dofn_to_bundle`, whose output receiver
(a list of every output of the partition) lives in the task graph and is never emptied. So a
worker keeps every ParDo output it produced, referenced from the graph, for as long as the task
is known: dask's spilling writes the result to disk but cannot free it, and worker memory grows
with the corpus (measured on the clean job: +170 MB per worker for 60 MB of text, +460 MB for
120 MB). `install()` points the runner at a wrapper that empties the receiver once the partition's
outputs are handed to dask, so a result lives only in dask's own, spillable, store. The task
graph names the wrapper, so workers import it from here.

Second, the runner wraps every grouped value in a Beam `WindowedValue`, which dask sizes as a
small object whatever it holds, so a worker holding the pieces of a GroupByKey thinks it holds
almost nothing and never spills them. Importing this module (every worker does, for the wrapper)
teaches dask's `sizeof` to look inside.

Third, the runner's GroupByKey is `bag.groupby`, dask's task shuffle: on P input partitions it
makes P x stages x k tiny split tasks (k = P up to 32 partitions, then about sqrt(P) per stage)
and keeps P partitions on the way out, so every later step of the job runs P tasks too, even a
group on one key. A Flatten adds its inputs' partitions. The clean job has one partition per
input file, so the task count grew faster than the data: the same 24 MB of HTML as 12 files ran
in 8 s with ~1,500 tasks known to a worker at once and a 260 MB worker, as 158 files in 153 s
with ~34,000 tasks and a 460 MB worker, all of it the workers' and the scheduler's per-task
state (dask stored no data to speak of). `GroupByKey` here hashes each input partition's items
by key into m = P / fan_in buckets in the task that made them, pickles and zstd-compresses each
bucket into one blob, joins the blobs of every `fan_in` neighbouring partitions (a
concatenation: linear in P) and shuffles only the joined blobs: a group costs about m^2 split
tasks up to 32 x fan_in partitions, the steps after it run on m partitions, and the data a
shuffle holds until its last input arrives is a few large compressed bytes objects (sized
exactly by dask, freed whole) rather than one tuple and WindowedValue per element. The 158 files
then ran in 18 s with ~1,000 tasks and a 250-280 MB worker. m is never below
`--dask_group_min_partitions` (default: 4 per worker thread of the cluster): joining alone turned
the clean job's chain of groups (blocks -> shard plan -> spread plans) into one partition, and
every shard was written by one task. Memory per task: one input partition's records while they
are cut into blobs, an output partition 1/m of the group's data.

Fourth, the runner's ParDo puts the DoFn invoker's arguments (the DoFn, its output handler and
context) into every partition task as objects. A worker keeps a task's arguments for as long as it
knows the task, and it knows a finished task while anything computed from it is still held, so
every input file's chain of ParDo tasks stays known, with its unpickled and set-up DoFns, until
the GroupByKey after it has every input: worker memory grew with the number of files. `ParDo`
here ships them as one zstd-compressed pickle (1-3 KB per ParDo), unpickled in the task and
dropped with it. Imported only when the DaskRunner is used.
"""

from __future__ import annotations

import math
import pickle

import apache_beam as beam
import cloudpickle
import zstandard
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask import overrides as _ov
from apache_beam.runners.dask import transform_evaluator as _te
from apache_beam.utils.windowed_value import WindowedValue
from dask.bag.core import groupby_tasks
from dask.base import tokenize
from dask.sizeof import sizeof

# Input partitions whose blobs are joined into one before a GroupByKey's shuffle, and so how many
# output partitions it makes (P / fan_in): the shuffle of 207 files is one of 26 partitions (676
# split tasks instead of 6,750), and each output partition holds ~8 files' share of the group.
DEFAULT_GROUP_FAN_IN = 8
# Output partitions a GroupByKey makes at least, per worker thread of the cluster. Joining alone
# would shrink a chain of groups to one partition (26 -> 4 -> 1), and the steps after the last
# group, the shard writes, would all run in one task on one worker, one shard after another
# (measured at 1.5 GB of HTML: 15 shards in one task, that worker's peak RSS +55 MB).
PARTITIONS_PER_THREAD = 4


class DaskGroupingOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--dask_group_fan_in", type=int, default=DEFAULT_GROUP_FAN_IN,
                            help="DaskRunner: input partitions joined into one before each GroupByKey's shuffle "
                                 "(fewer tasks and partitions; each output partition holds about this many input "
                                 "partitions' share of the group)")
        parser.add_argument("--dask_group_min_partitions", type=int, default=0,
                            help="DaskRunner: output partitions of every GroupByKey at least (default: "
                                 f"{PARTITIONS_PER_THREAD} per worker thread of the cluster), so the steps after a "
                                 "group spread over the whole cluster")


@sizeof.register(WindowedValue)
def _sizeof_windowed_value(wv) -> int:
    return 64 + sizeof(wv.value)


# The runner's own function, even if this module is imported again after install().
_ORIGINAL = getattr(_te.apply_dofn_to_bundle, "beam_original", _te.apply_dofn_to_bundle)


def apply_dofn_to_bundle(items, do_fn_invoker_args, do_fn_invoker_kwargs, tagged_receivers):
    try:
        return _ORIGINAL(items, do_fn_invoker_args, do_fn_invoker_kwargs, tagged_receivers)
    finally:
        tagged_receivers.values.clear()


apply_dofn_to_bundle.beam_original = _ORIGINAL


class _CallRecorder:
    """Stands in for the input bag while the runner's own ParDo translation runs, and keeps what it
    asks for: the windowing map, then the partition call with the DoFn invoker's arguments."""

    def map(self, fn, *args):
        self.windowing = (fn, args)
        return self

    def map_partitions(self, fn, *args):
        self.call = args
        return self


def _run_bundle(items, payload: bytes):
    """One partition through a DoFn whose windowing and invoker arguments arrive as one compressed
    pickle (see ParDo)."""
    window, window_args, invoker_args, invoker_kwargs, receivers = pickle.loads(
        zstandard.ZstdDecompressor().decompress(payload))
    return apply_dofn_to_bundle((window(x, *window_args) for x in items), invoker_args, invoker_kwargs, receivers)


class ParDo(_te.ParDo):
    """The runner's ParDo with the DoFn invoker's arguments and the windowing map as one compressed
    pickle per task (see the module docstring): each task unpickles its own copy, sets it up, runs the
    partition through it, tears it down and drops it, as the runner does with its objects, but
    what the worker keeps for a finished task is a few KB of bytes. One task per partition, where
    the runner makes two (the windowing map, then the DoFn)."""

    def apply(self, input_bag, side_inputs=None):
        if side_inputs:  # they hold dask collections the graph must see as such: the runner's own way
            return super().apply(input_bag, side_inputs)
        # The runner's translation, run against a recorder, builds the arguments (so they stay
        # exactly the runner's); the recorder keeps them instead of making tasks.
        recorder = _CallRecorder()
        super().apply(recorder, side_inputs)
        payload = cloudpickle.dumps((*recorder.windowing, *recorder.call), protocol=pickle.HIGHEST_PROTOCOL)
        return input_bag.map_partitions(_run_bundle, zstandard.ZstdCompressor(level=3).compress(payload))


def _key(item):
    return item[0]


def _bucket(key, buckets: int) -> int:
    return int(tokenize(key), 16) % buckets  # tokenize: the same on every worker (hash() of a str is not)


def _to_buckets(items, buckets: int) -> list[tuple[int, bytes]]:
    """A joined partition's (key, value) items -> one (bucket, pickled list of its items) per bucket."""
    out: dict[int, list] = {}
    for item in items:
        out.setdefault(_bucket(item[0], buckets), []).append(item)
    pack = zstandard.ZstdCompressor(level=1).compress
    return [(b, pack(pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL))) for b, group in sorted(out.items())]


def _identity(x):
    return x


def _from_buckets(partition) -> list:
    """(bucket, [(bucket, blob), ...]) of one output partition -> (key, [values]) per key."""
    groups: dict = {}
    unpack = zstandard.ZstdDecompressor().decompress
    for _, pieces in partition:
        for _, blob in pieces:
            for k, v in pickle.loads(unpack(blob)):
                groups.setdefault(k, []).append(_te.defenestrate(v))
    return list(groups.items())


def grouped_partitions(partitions: int, fan_in: int, at_least: int = 1) -> int:
    """How many partitions a GroupByKey shuffles (and outputs) for `partitions` input partitions:
    one per `fan_in` of them, and never fewer than `at_least`."""
    return max(1, at_least, math.ceil(partitions / max(1, fan_in)))


def cluster_threads() -> int:
    """Worker threads of the cluster the runner's client is connected to (1 without a client)."""
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):  # no client: the translation runs outside a cluster (tests)
        return 1


class GroupByKey(_te.DaskBagOp):
    """The runner's GroupByKey as compressed blobs, one per (input partition, output bucket), joined
    `fan_in` partitions at a time and moved through dask's task shuffle (see the docstring)."""

    fan_in = DEFAULT_GROUP_FAN_IN
    min_partitions = 0  # 0: PARTITIONS_PER_THREAD per worker thread, read when the graph is built

    def apply(self, input_bag, side_inputs=None):
        at_least = self.min_partitions or PARTITIONS_PER_THREAD * cluster_threads()
        m = grouped_partitions(input_bag.npartitions, self.fan_in, at_least)
        # Each input partition is cut into compressed bucket blobs in the task that made it (so its
        # records never wait, as objects, for their neighbours), then the blobs of neighbouring
        # partitions are joined (or split, when there are fewer than m partitions).
        blobs = input_bag.map_partitions(_to_buckets, m).repartition(npartitions=m)
        # Bucket b goes to output partition b (identity hash: the shuffle's digits of b are unique).
        return groupby_tasks(blobs, _key, hash=_identity).map_partitions(_from_buckets)


def install(options: PipelineOptions | None = None) -> None:
    """Use the fixes for every pipeline the runner translates from now on (the driver calls this)."""
    grouping = (options or PipelineOptions([])).view_as(DaskGroupingOptions)
    if grouping.dask_group_fan_in < 1:
        raise ValueError(f"--dask_group_fan_in must be at least 1, got {grouping.dask_group_fan_in}")
    if grouping.dask_group_min_partitions < 0:
        raise ValueError(f"--dask_group_min_partitions must be 0 (per thread) or more, "
                         f"got {grouping.dask_group_min_partitions}")
    GroupByKey.fan_in = grouping.dask_group_fan_in
    GroupByKey.min_partitions = grouping.dask_group_min_partitions
    _te.apply_dofn_to_bundle = apply_dofn_to_bundle
    _te.TRANSLATIONS[_ov._GroupByKeyOnly] = GroupByKey
    _te.TRANSLATIONS[beam.ParDo] = ParDo
