"""The Beam stage of the pack job: each output shard reads its own documents, encodes and packs them.

    output shard k -> PackShard (read the text column of its input shards, `shard_sources`;
                      batch encode (encode.py: SentencePiece or an HF tokenizer, loaded in setup); pack with Bling Fire
                      run only on windows around each example's middle and end; write
                      shards/part-k-of-n.bin and a sidecar with its counts)

An output shard's documents are a fixed function of the input layout (whole input shards, or
rows dealt round-robin when there are more outputs than inputs), taken in file order, so
every output byte is a function of (input shards, tokenizer, config) whatever the runner's
bundling, ordering or worker count. No text crosses a shuffle: `Create` only spreads the shard
indices over the workers. The encode parallelism is the number of output shards, which
`--num-shards` sets.
"""

from __future__ import annotations

import json
import re

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from common import storage
from pipelines import documents, packformat
from pipelines.packing.config import PackConfig
from pipelines.packing.encode import Encoder
from pipelines.packing.examples import pack, shard_rng
from pipelines.packing.segment import WindowSegmenter

NS = "pack"
WORK_DIR = "_work"  # per-shard sidecars, removed before the manifest is written


def shard_sources(shard: int, num_shards: int, num_inputs: int) -> list[tuple[int, int, int]]:
    """The documents of output shard `shard`: [(input shard j, part, parts)], meaning the rows r
    of input j with r % parts == part, taken in input order then row order.

    With no more outputs than inputs, output k takes whole input shards j ≡ k (mod outputs);
    with more, input j is dealt row by row over the outputs k ≡ j (mod inputs). Every row lands
    in exactly one output, and each output reads its own inputs: no text crosses a shuffle.
    """
    if num_shards <= num_inputs:
        return [(j, 0, 1) for j in range(shard, num_inputs, num_shards)]
    j = shard % num_inputs
    return [(j, shard // num_inputs, len(range(j, num_shards, num_inputs)))]


def sidecar_uri(output: str, shard: int) -> str:
    return storage.join(output, WORK_DIR, f"part-{shard:05d}.json")


# Bytes a blank text can start with: ASCII whitespace by `str.isspace`, and any non-ASCII lead.
_BLANK_LEAD = re.compile(rb"[\t-\r\x1c-\x20\x80-\xff]")


def is_blank(text: bytes) -> bool:
    """`text.decode().isspace()` (a blank document has nothing to learn from), decoding only
    the rare text that starts with whitespace or a non-ASCII character."""
    return bool(text) and _BLANK_LEAD.match(text) is not None and text.decode("utf-8").isspace()


class PackShard(beam.DoFn):
    """Output shard index -> the shard file and a sidecar of its counts.

    Reads the shard's documents (`shard_sources`: its own input shards, text column only, as
    UTF-8 bytes) and encodes them, `encode_batch_docs` per call, each whole, exactly as the
    tokenizer encodes a text (`encode.py`), so the pack holds the document's own tokens; then
    packs them, running the segmenter only on the windows of text where an example's A/B split
    may fall. Yields the sidecar dict.
    """

    def __init__(self, cfg: PackConfig, num_shards: int, uris: list[str], encoder: Encoder, special_ids: dict,
                 dtype: str, settings: storage.StorageSettings):
        self.cfg, self.num_shards, self.uris, self.special_ids = cfg, num_shards, uris, special_ids
        self.encoder, self.dtype, self.settings = encoder, np.dtype(dtype), settings
        self.counters = {n: Metrics.counter(NS, n) for n in (
            "docs", "docs_empty", "tokens_encoded", "examples", "examples_single_segment", "examples_short",
            "tokens_packed", "padding_tokens", "sentences_split", "examples_cross_document", "tokens_truncated",
            "bytes_segmented")}
        self.docs_read = Metrics.counter(NS, "docs_read")

    def setup(self):
        self.encoder.setup()

    def read(self, shard: int) -> list[bytes]:
        texts = []
        for j, part, parts in shard_sources(shard, self.num_shards, len(self.uris)):
            texts += documents.read_texts(self.uris[j], self.settings)[part::parts]
        self.docs_read.inc(len(texts))
        # A blank document has no text to learn from; it is counted (docs_empty), not packed.
        return [b"" if is_blank(t) else t for t in texts]

    def process(self, shard: int):
        texts = self.read(shard)
        enc = self.encoder.encode(texts)
        del texts
        tokens, lengths = enc.tokens, enc.lengths
        empty = lengths.count(0)
        doc_ends = np.cumsum([n for n in lengths if n], dtype=np.int64)
        sentences = WindowSegmenter(enc.text, enc.token_starts)
        rng = shard_rng(self.cfg.seed, shard, self.num_shards)
        rows, st = pack(tokens, doc_ends, sentences, self.cfg, rng, self.special_ids, self.dtype)
        data = rows.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        path = f"{packformat.SHARDS_DIR}/{packformat.shard_name(shard, self.num_shards)}"
        storage.write_bytes(storage.join(self.cfg.output, path), data, self.settings)
        counts = {
            "docs": len(lengths), "docs_empty": empty, "bytes_segmented": sentences.segmented_bytes,
            "tokens_in": int(len(tokens)), "tokens_packed": st.tokens, "tokens_truncated": int(len(tokens)) - st.tokens,
            "examples": st.examples, "examples_single_segment": st.single_segment, "examples_short": st.short,
            "padding_tokens": st.padding, "sentences_split": st.sentences_split,
            "examples_cross_document": st.cross_document,
        }
        info = {"shard": shard, "path": path, "examples": st.examples, "tokens": st.tokens,
                "sha256": storage.sha256_bytes(data), "bytes": len(data), "counts": counts}
        storage.write_text(sidecar_uri(self.cfg.output, shard), json.dumps(info, sort_keys=True), self.settings)
        for name, counter in self.counters.items():
            counter.inc(counts["tokens_in"] if name == "tokens_encoded" else counts[name])
        yield info


class PackDocuments(beam.PTransform):
    """Output shard indices 0..num_shards-1 -> packed shards under cfg.output (yields per-shard info)."""

    def __init__(self, cfg: PackConfig, num_shards: int, uris: list[str], encoder: Encoder, special_ids: dict,
                 dtype: str, settings: storage.StorageSettings):
        super().__init__()
        self.cfg, self.num_shards, self.uris, self.encoder = cfg, num_shards, uris, encoder
        self.special_ids, self.dtype, self.settings = special_ids, dtype, settings

    def expand(self, shards):
        # Each output shard reads its own inputs, so there is no shuffle; Create spreads the
        # shard indices over the workers, and the encode parallelism is --num-shards.
        return shards | "PackShards" >> beam.ParDo(PackShard(self.cfg, self.num_shards, self.uris, self.encoder,
                                                              self.special_ids, self.dtype, self.settings))
