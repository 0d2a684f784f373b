"""The data path at scale, in small: bounded memory per DoFn call, the same shards on every runner.

The memory test caps every DoFn call of the clean and pack jobs: while the job's code runs
(each stretch of a call up to its next output), RLIMIT_DATA is the process's data size at that
point plus 16 MB, so no call can hold more than 16 MB beyond what it was handed. It runs both
jobs on ~96 MB of cleaned text, enough that today's design could not work under the same cap: it
listed, sorted and encoded a whole shard (1/8 of the cleaned text) in one call, and packed a
whole output shard in one call. The test replays exactly that work under the cap and sees it
fail with MemoryError, so the cap is known to bind.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from common import packformat, storage
from common.special_tokens import SPECIAL_IDS
from pipelines import clean, documents, sharding
from pipelines.cleaning import transforms as clean_transforms
from pipelines.cleaning.config import (C4Config, CleanConfig, DedupConfig, GopherQualityConfig, GopherRepetitionConfig,
                                       LangIdConfig, OutputConfig)
from pipelines.packing import prose
from pipelines.packing import transforms as pack_transforms
from pipelines.packing.config import PackConfig
from pipelines.packing.encode import SentencePieceEncoder
from pipelines.packing.run import run as run_pack
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.train import run as train

MB = 1 << 20
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
ALLOWANCE = 16 * MB  # what one DoFn call may add to the process's data size
DOC_BYTES = 12_000  # a web page's worth of text


def _vm_data() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


@contextlib.contextmanager
def capped(allowance: int = ALLOWANCE):
    """RLIMIT_DATA = data size now + allowance (never above an enclosing cap: fused DoFns share it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = _vm_data() + allowance
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _capped_process(orig):
    """Our code runs capped; the runner's, between our outputs (buffering, flushing them), does not."""
    def process(self, *args, **kwargs):
        with capped():
            out = orig(self, *args, **kwargs)
            it = iter(out) if out is not None else iter(())
        while True:
            with capped():
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    return process


def _malloc_maps_large_blocks() -> None:
    """glibc serves allocations of 64 KiB and more (texts' buffers, arrays, Arrow's buffers) with
    their own mapping, returned on free: so the data size (what RLIMIT_DATA limits) follows what
    is live instead of keeping every freed hole, which a later call could reuse unseen. (The
    same setting dask.distributed recommends for workers: MALLOC_MMAP_THRESHOLD_.)"""
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD


@pytest.fixture
def every_dofn_call_capped(monkeypatch):
    """Every DoFn of the two jobs runs each call under `capped()`; Arrow allocates with malloc
    (counted like everything else) instead of its own pool."""
    _malloc_maps_large_blocks()
    classes = [clean_transforms._ReadFileFn, clean_transforms._ExtractFn, clean_transforms._StageFn,
               clean_transforms._DedupKeysFn, clean_transforms._WriteBlockFn, sharding._PlanFn,
               sharding._WriteShardFn, pack_transforms._SplitShardFn, pack_transforms.PackUnit]
    for cls in classes:
        monkeypatch.setattr(cls, "process", _capped_process(cls.process))
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    yield
    pa.set_memory_pool(pool)


def _corpus(root: Path, text_mb: float) -> tuple[int, int]:
    """JSONL.gz files of real prose lines reshuffled into distinct documents; returns how many and
    their characters in total."""
    lines = [line for d in prose.documents(multilingual=False) for line in d["text"].split("\n") if line]
    root.mkdir(parents=True)
    rng, total, n, f = random.Random(0), 0, 0, 0
    while total < text_mb * MB:
        rows = []
        for _ in range(100):
            picked, size = [], 0
            while size < DOC_BYTES:
                line = lines[rng.randrange(len(lines))]
                picked.append(line)
                size += len(line) + 1
            text = "\n".join(picked)
            rows.append(json.dumps({"id": f"d{n:07d}", "text": text}) + "\n")
            total += len(text)
            n += 1
        (root / f"part-{f:04d}.jsonl.gz").write_bytes(gzip.compress("".join(rows).encode(), 1, mtime=0))
        f += 1
    return n, total


def _cheap_rules(**out) -> dict:
    """Rules that cost little (this test is about memory): normalise and exact dedup only."""
    return dict(langid=LangIdConfig(enabled=False), gopher_quality=GopherQualityConfig(enabled=False),
                gopher_repetition=GopherRepetitionConfig(enabled=False), c4=C4Config(enabled=False),
                dedup=DedupConfig(near=False), out=OutputConfig(**out))


def test_clean_and_pack_fit_a_per_call_memory_cap_todays_design_cannot(tmp_path, every_dofn_call_capped):
    n_docs, text_chars = _corpus(tmp_path / "in", text_mb=96)
    out, tok, pack_out = tmp_path / "clean", tmp_path / "tok", tmp_path / "pack"
    m = clean.run(CleanConfig(inputs=(str(tmp_path / "in" / "*"),), output=str(out),
                              **_cheap_rules(shard_mb=4, block_input_mb=0.5)), IN_MEMORY)
    c = m["counters"]
    assert c["kept"] == c["records_read"] == n_docs
    assert len(m["shards"]) > 8 and sum(s["records"] for s in m["shards"]) == c["kept"]
    for s in m["shards"]:
        assert storage.sha256_uri(str(out / s["path"])) == s["sha256"]

    prose.write_documents(str(tmp_path / "tokdocs"), prose.documents(limit_chars=300_000), num_shards=1)
    train(TokenizerConfig(input=str(tmp_path / "tokdocs"), output=str(tok), vocab_size=2000))
    pm = run_pack(PackConfig(input=str(out), tokenizer=str(tok), output=str(pack_out), max_seq_length=128,
                             shard_mb=16, unit_mb=0.25), IN_MEMORY)
    pc = pm["counters"]
    assert pc["docs"] == c["kept"] and pc["tokens_in"] == pc["tokens_packed"] > 0
    assert packformat.PackReader(str(pack_out)).num_examples == pc["examples"]

    # Today's design under the same cap: one call took the group of a whole shard (1/8 of the
    # cleaned documents), listed, sorted and encoded it; one call packed a whole output shard.
    paths = [str(out / s["path"]) for s in m["shards"]]
    assert text_chars / 8 >= ALLOWANCE * 0.75  # 1/8 of the text (bytes >= chars) nearly fills the cap
    with pytest.raises(MemoryError), capped():
        rows = [r for p in paths for r in documents.iter_shard(p)][::8]
        rows.sort(key=lambda r: r["id"])
        documents.encode_shard(rows)
    # A whole input shard (fewer documents than today's 1/8: if this does not fit, that did not either).
    unit = pack_transforms.Unit(0, m["shards"][0]["path"], 0, len(documents.row_groups(paths[0])))
    encoder = SentencePieceEncoder(storage.read_bytes(str(tok / "spm.model")), 256, np.dtype("<u2"))
    fn = pack_transforms.PackUnit(PackConfig(input=str(out), tokenizer=str(tok), output=str(tmp_path / "p2")),
                                  str(out), encoder, dict(SPECIAL_IDS), "<u2", None)
    fn.setup()
    with pytest.raises(MemoryError):
        list(fn.process(unit))
