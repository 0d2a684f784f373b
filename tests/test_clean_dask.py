"""The clean job on Beam's DaskRunner with a local dask.distributed cluster (scheduler + 2 worker
processes). It must write the same bytes as the DirectRunner."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipelines import clean
from pipelines.cleaning.config import CleanConfig
from test_clean_fixtures import good_corpus

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dask_runner_matches_direct_runner(tmp_path):
    distributed = pytest.importorskip("distributed")
    good_corpus(tmp_path / "in", n_docs=6)
    inputs = (str(tmp_path / "in" / "*"),)
    direct = clean.run(CleanConfig(inputs=inputs, output=str(tmp_path / "direct")),
                       ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = clean.run(CleanConfig(inputs=inputs, output=str(tmp_path / "dask")),
                            [f"--runner={DASK_RUNNER}", f"--dask_client_address={cluster.scheduler_address}"])
    assert on_dask["counters"] == direct["counters"]
    assert on_dask["counters"]["dropped"]["exact_duplicate"] == 1  # the GroupByKey dedup ran on Dask
    assert _hashes(tmp_path / "dask") == _hashes(tmp_path / "direct")
