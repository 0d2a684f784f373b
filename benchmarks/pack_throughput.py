"""Pack job throughput (tokens/s per core) beside raw SentencePiece encoding of the same documents.

    python benchmarks/pack_throughput.py [--copies 12] [--seq-len 512] [--vocab-size 8000]

Both sides run in this process, on one core, on the same documents (real prose from this
machine, `pipelines.packing.prose`, repeated `--copies` times under fresh ids):
  raw   `SentencePieceProcessor.encode(texts, num_threads=1)` on whole documents (lists of
        ints); `raw_encode_numpy` times `encode_as_numpy`, the same ids as int32 arrays, which
        the job calls (`ratio_cpu_vs_numpy` compares against it);
  pack  the full job (read Parquet, segment, encode, group, pack, write shards, manifest) on
        Beam's in-memory DirectRunner with one worker.
Rates are per CPU-second of this process (robust when other jobs share the machine) and per
wall-second; the ratio pack/raw is the figure to compare (target >= 0.7). `segment_only` times
the Bling Fire sentence segmentation of all the text (the job segments only windows of it).
`pack_job_small` runs the job again on the first third of the copies; `marginal` is the rate
of the difference between the two runs, i.e. without the fixed cost of a run (Beam pipeline
construction and start-up, first-time imports, tokenizer checks), which a real corpus amortises.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine  # noqa: E402
from pipelines.packing import prose  # noqa: E402
from pipelines.packing.config import PackConfig  # noqa: E402
from pipelines.packing.run import run as run_pack  # noqa: E402
from pipelines.tokenizer import load_spm  # noqa: E402
from pipelines.tokenizer.config import TokenizerConfig  # noqa: E402
from pipelines.tokenizer.sentences import sentence_starts  # noqa: E402
from pipelines.tokenizer.train import run as train  # noqa: E402


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=12, help="repeat the prose corpus this many times")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=8000)
    a = ap.parse_args(argv)
    before = machine.describe()
    base = prose.documents()
    docs = [{**d, "id": f"{c:02d}-{d['id']}"} for c in range(a.copies) for d in base]
    chars = sum(len(d["text"]) for d in docs)
    with tempfile.TemporaryDirectory(prefix="pack-bench-") as tmp:
        prose.write_documents(f"{tmp}/docs", docs, num_shards=4)
        train(TokenizerConfig(input=f"{tmp}/docs", output=f"{tmp}/tok", vocab_size=a.vocab_size, sample_docs=2000))
        sp = load_spm(f"{tmp}/tok").processor()
        texts = [d["text"] for d in docs]
        encoded, raw_wall, raw_cpu = timed(lambda: sp.encode(texts, num_threads=1))
        raw_tokens = sum(map(len, encoded))
        del encoded
        # The same encoder returning int32 arrays (what the job calls): no Python int per token.
        _, _, np_cpu = timed(lambda: sp.encode_as_numpy(texts, num_threads=1))
        # The segmenter alone on the same text: a floor the pack job cannot go below.
        _, seg_wall, seg_cpu = timed(lambda: [sentence_starts(t.encode("utf-8")) for t in texts])
        beam_args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
        cfg = PackConfig(input=f"{tmp}/docs", tokenizer=f"{tmp}/tok", output=f"{tmp}/pack", max_seq_length=a.seq_len)
        m, pack_wall, pack_cpu = timed(lambda: run_pack(cfg, beam_args))
        small_copies = max(1, a.copies // 3)
        prose.write_documents(f"{tmp}/docs-small", docs[:small_copies * len(base)], num_shards=4)
        small = dataclasses.replace(cfg, input=f"{tmp}/docs-small", output=f"{tmp}/pack-small")
        m_small, small_wall, small_cpu = timed(lambda: run_pack(small, beam_args))
    tokens = m["counters"]["tokens_packed"]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    small_tokens = m_small["counters"]["tokens_packed"]
    result = {
        "machine_before": before, "machine_after": machine.describe(),
        "corpus": {"documents": len(docs), "chars": chars, "tokens": tokens, "seq_len": a.seq_len,
                   "vocab_size": a.vocab_size},
        "raw_encode": {"tokens": raw_tokens, "wall_s": round(raw_wall, 3), "cpu_s": round(raw_cpu, 3),
                       "tokens_per_cpu_s": round(raw_tokens / raw_cpu), "tokens_per_wall_s": round(raw_tokens / raw_wall)},
        "raw_encode_numpy": {"cpu_s": round(np_cpu, 3), "tokens_per_cpu_s": round(raw_tokens / np_cpu)},
        "segment_only": {"wall_s": round(seg_wall, 3), "cpu_s": round(seg_cpu, 3),
                         "cpu_vs_raw_encode": round(seg_cpu / raw_cpu, 3)},
        "pack_job": {"tokens": tokens, "wall_s": round(pack_wall, 3), "cpu_s": round(pack_cpu, 3),
                     "tokens_per_cpu_s": round(tokens / pack_cpu), "tokens_per_wall_s": round(tokens / pack_wall),
                     "padding_fraction": m["padding_fraction"], "examples": m["counters"]["examples"],
                     # share of the text's bytes given to Bling Fire (windows and their context)
                     "text_segmented": round(m["counters"]["bytes_segmented"] / text_bytes, 3)},
    }
    result["pack_job_small"] = {"copies": small_copies, "tokens": small_tokens, "cpu_s": round(small_cpu, 3),
                                "tokens_per_cpu_s": round(small_tokens / small_cpu)}
    marginal = (tokens - small_tokens) / (pack_cpu - small_cpu)
    result["marginal"] = {"tokens_per_cpu_s": round(marginal),
                          "ratio_cpu": round(marginal / result["raw_encode"]["tokens_per_cpu_s"], 3),
                          "fixed_cpu_s": round(pack_cpu - tokens / marginal, 3)}
    result["ratio_cpu"] = round(result["pack_job"]["tokens_per_cpu_s"] / result["raw_encode"]["tokens_per_cpu_s"], 3)
    # Against the array-returning call the job itself uses: the job's own overhead, encoder aside.
    result["ratio_cpu_vs_numpy"] = round(
        result["pack_job"]["tokens_per_cpu_s"] / result["raw_encode_numpy"]["tokens_per_cpu_s"], 3)
    result["ratio_wall"] = round(result["pack_job"]["tokens_per_wall_s"] / result["raw_encode"]["tokens_per_wall_s"], 3)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
