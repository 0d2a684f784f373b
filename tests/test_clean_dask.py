"""The clean and pack jobs on Beam's DaskRunner with a local dask.distributed cluster (scheduler +
1 or 2 worker processes): the same shards, byte for byte, as the DirectRunner writes."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from common import manifest
from pipelines import clean
from pipelines.cleaning.config import CleanConfig, OutputConfig
from pipelines.packing import prose
from pipelines.packing.config import PackConfig
from pipelines.packing.run import run as run_pack
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.train import run as train
from clean_inputs import good_corpus

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
SMALL = OutputConfig(shard_mb=0.02, block_input_mb=0.02)  # several blocks and shards from a small corpus


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _jobs(inputs: tuple[str, ...], tok: str, out: Path, beam_args: list[str]) -> tuple[dict, dict]:
    m = clean.run(CleanConfig(inputs=inputs, output=str(out / "clean"), out=SMALL), beam_args)
    p = run_pack(PackConfig(input=str(out / "clean"), tokenizer=tok, output=str(out / "pack"), max_seq_length=128,
                            shard_mb=0.04, unit_mb=0.05), beam_args)
    return m, p


def test_dask_runner_with_1_and_2_workers_writes_the_direct_runners_bytes(tmp_path):
    distributed = pytest.importorskip("distributed")
    good_corpus(tmp_path / "in", n_docs=6)
    docs = prose.documents(limit_chars=400_000, multilingual=False)
    for i in range(3):
        rows = "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs[i::3])
        (tmp_path / "in" / f"prose-{i}.jsonl.gz").write_bytes(gzip.compress(rows.encode(), mtime=0))
    prose.write_documents(str(tmp_path / "tokdocs"), docs, num_shards=1)
    tok = str(tmp_path / "tok")
    train(TokenizerConfig(input=str(tmp_path / "tokdocs"), output=tok, vocab_size=1000))
    inputs = (str(tmp_path / "in" / "*"),)

    direct = _jobs(inputs, tok, tmp_path / "direct", ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert len(direct[0]["shards"]) > 2 and len(direct[1]["shards"]) > 2
    assert direct[0]["counters"]["dropped"]["exact_duplicate"] == 1  # the dedup GroupByKey ran
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            out = tmp_path / f"dask{workers}"
            on_dask = _jobs(inputs, tok, out, [f"--runner={DASK_RUNNER}",
                                               f"--dask_client_address={cluster.scheduler_address}"])
        for a, b in zip(on_dask, direct):
            assert a["counters"] == b["counters"]
            assert [(s["path"], s["sha256"]) for s in a["shards"]] == [(s["path"], s["sha256"]) for s in b["shards"]]
        assert _hashes(out / "clean") == _hashes(tmp_path / "direct" / "clean")
        assert manifest.read(str(out / "pack"))["shards"] == direct[1]["shards"]
