"""The data jobs: clean, tokenizer, pack (Apache Beam), and the formats they hand on."""

import os

# Arrow's default allocator in these wheels, mimalloc, keeps what a thread freed for that thread:
# a worker that reads blocks and writes shard after shard grew by up to ~20 MB per shard and never
# shrank (measured in one process writing 32 shards of 1 MB: +44 MB with mimalloc, +14 MB and flat
# after the first with jemalloc). Arrow reads this variable when it is first imported, and Beam
# imports it, so it is set here, before any job module imports Beam; worker processes started
# from this process (DirectRunner's, a LocalCluster's) inherit it. Workers started elsewhere
# (Flink, Spark, Dataflow, `dask worker`) need it in their environment: docs/clean.md.
# A value already set wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
