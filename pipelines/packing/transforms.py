"""Beam stages of the pack job: read documents, group them by output shard, encode and pack each shard.

    (i, shard URI) -> ReadDocuments (per output shard: [(id, UTF-8 text)]; + empty markers)
      -> GroupByKey on hash(doc id) % num_shards
      -> PackShard (sort by id; SentencePiece batch encode, model loaded in setup; pack with
                    Bling Fire run only on windows around each example's middle and end;
                    write shards/part-i-of-n.bin and a sidecar with its counts)

Grouping by a hash of the id and sorting inside the group makes every output byte a
function of (documents, tokenizer, config), whatever the runner's bundling or ordering.
Three steps and one shuffle, of UTF-8 text only (the packer needs the text for segmentation
anyway, so encoding before the shuffle would send token ids and text). The encode
parallelism is the number of output shards, which `--num-shards` sets.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from common import storage
from pipelines import documents, packformat
from pipelines.packing.config import PackConfig
from pipelines.packing.examples import pack, shard_rng
from pipelines.packing.segment import WindowSegmenter, stream_text, surface_bytes

NS = "pack"
WORK_DIR = "_work"  # per-shard sidecars, removed before the manifest is written


def shard_of(doc_id: str, num_shards: int) -> int:
    """Output shard of a document: stable across runs, machines and Python hash seeds."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % num_shards


def sidecar_uri(output: str, shard: int) -> str:
    return storage.join(output, WORK_DIR, f"part-{shard:05d}.json")


class ReadDocuments(beam.DoFn):
    """(i, documents shard URI) -> (output shard, (doc ids, text lengths, UTF-8 texts joined)) per output shard.

    Input shard i also emits the empty marker of every output shard j with j % num_inputs == i,
    so a shard no document hashed to is still written. Text goes through the shuffle as UTF-8
    bytes (what both SentencePiece and the segmenter read), joined: the shuffle's coders copy
    one large bytes object per element instead of handling one element per document.
    """

    def __init__(self, num_shards: int, num_inputs: int, settings: storage.StorageSettings):
        self.num_shards, self.num_inputs, self.settings = num_shards, num_inputs, settings
        self.docs = Metrics.counter(NS, "docs_read")

    def process(self, element: tuple[int, str]):
        index, uri = element
        for j in range(index, self.num_shards, self.num_inputs):
            yield j, None
        by_shard: dict[int, tuple[list, list]] = {}
        for row in documents.iter_shard(uri, columns=["id", "text"], settings=self.settings):
            text = row["text"] or ""
            ids, texts = by_shard.setdefault(shard_of(row["id"], self.num_shards), ([], []))
            ids.append(row["id"])
            # A blank document has no text to learn from; it is counted (docs_empty), not packed.
            texts.append(b"" if text.isspace() else text.encode("utf-8"))
        self.docs.inc(sum(len(ids) for ids, _ in by_shard.values()))
        for shard, (ids, texts) in by_shard.items():
            yield shard, (ids, np.array([len(t) for t in texts], np.int64).tobytes(), b"".join(texts))


class PackShard(beam.DoFn):
    """(shard, [(doc ids, text lengths, texts joined)]) -> the shard file and a sidecar of its counts.

    Encodes the shard's documents (sorted by id) with SentencePiece, `encode_batch_docs` per call,
    each whole, exactly as `SentencePieceProcessor.encode(text)` and the HF export would, so the
    pack holds the document's own tokens (line breaks as byte pieces); then packs them, running
    the segmenter only on the windows of text where an example's A/B split may fall. Yields
    the sidecar dict.
    """

    def __init__(self, cfg: PackConfig, num_shards: int, model_bytes: bytes, special_ids: dict, dtype: str,
                 settings: storage.StorageSettings):
        self.cfg, self.num_shards, self.special_ids = cfg, num_shards, special_ids
        self.model_bytes, self.dtype, self.settings = model_bytes, np.dtype(dtype), settings
        self.counters = {n: Metrics.counter(NS, n) for n in (
            "docs", "docs_empty", "tokens_encoded", "examples", "examples_single_segment", "examples_short",
            "tokens_packed", "padding_tokens", "sentences_split", "examples_cross_document", "tokens_truncated",
            "bytes_segmented")}

    def setup(self):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.surface = surface_bytes(self.sp)

    def encode(self, texts: list[bytes]) -> tuple[np.ndarray, list[int]]:
        """Concatenated token ids and per-document lengths; one C++ call (one thread: Beam runs a
        worker per core) per batch, which bounds the Python lists it returns."""
        parts, lengths, step = [], [], self.cfg.encode_batch_docs
        for i in range(0, len(texts), step):
            encoded = self.sp.encode(texts[i:i + step], num_threads=1)
            n = [len(e) for e in encoded]
            parts.append(np.fromiter(itertools.chain.from_iterable(encoded), dtype=self.dtype, count=sum(n)))
            lengths += n
        return (np.concatenate(parts) if parts else np.zeros(0, self.dtype)), lengths

    def process(self, element):
        shard, groups = element
        # By id; ties (duplicate ids) by content. None is the marker that makes an empty shard exist.
        docs = []
        for group in groups:
            if group is not None:
                ids, sizes, data = group
                ends = np.cumsum(np.frombuffer(sizes, np.int64)).tolist()
                docs += zip(ids, (data[a:b] for a, b in zip([0, *ends[:-1]], ends)))
        texts = [text for _, text in sorted(docs)]
        del docs
        tokens, lengths = self.encode(texts)
        empty = lengths.count(0)
        doc_ends = np.cumsum([n for n in lengths if n], dtype=np.int64)
        text, token_starts = stream_text(texts, lengths, tokens, self.surface)
        del texts
        sentences = WindowSegmenter(text, token_starts)
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
    """(i, documents shard URI) for i < num_inputs -> packed shards under cfg.output (yields per-shard info)."""

    def __init__(self, cfg: PackConfig, num_shards: int, num_inputs: int, model_bytes: bytes, special_ids: dict,
                 dtype: str, settings: storage.StorageSettings):
        super().__init__()
        self.cfg, self.num_shards, self.num_inputs, self.model_bytes = cfg, num_shards, num_inputs, model_bytes
        self.special_ids, self.dtype, self.settings = special_ids, dtype, settings

    def expand(self, uris):
        # Create already spreads the input shards over the workers (its own reshuffle); the
        # encode parallelism is the number of output shards (--num-shards).
        n = self.num_shards
        return (
            uris
            | "ReadDocuments" >> beam.ParDo(ReadDocuments(n, self.num_inputs, self.settings))
            | "GroupByShard" >> beam.GroupByKey()
            | "PackShards" >> beam.ParDo(PackShard(self.cfg, n, self.model_bytes, self.special_ids, self.dtype,
                                                   self.settings))
        )
