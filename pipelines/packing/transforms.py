"""Beam stages of the pack job: read documents, encode sentences, pack shards.

    shard URIs -> ReadDocuments (batches of (id, text)) -> Reshuffle
      -> EncodeDocuments (whole-document SentencePiece batch encode, model loaded in setup;
                          Bling Fire sentence ends mapped to token indices)
      -> key by hash(doc id) % num_shards -> + one empty marker per shard -> GroupByKey
      -> PackShard (sort by id, pack, write shards/part-i-of-n.bin and a sidecar with its counts)

Grouping by a hash of the id and sorting inside the group makes every output byte a
function of (documents, tokenizer, config), whatever the runner's bundling or ordering.
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
from pipelines.tokenizer.sentences import sentence_starts

NS = "pack"
WORK_DIR = "_work"  # per-shard sidecars, removed before the manifest is written


def shard_of(doc_id: str, num_shards: int) -> int:
    """Output shard of a document: stable across runs, machines and Python hash seeds."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % num_shards


def sidecar_uri(output: str, shard: int) -> str:
    return storage.join(output, WORK_DIR, f"part-{shard:05d}.json")


class ReadDocuments(beam.DoFn):
    """A documents shard URI -> lists of (id, text), `batch` documents each."""

    def __init__(self, batch: int, settings: storage.StorageSettings):
        self.batch, self.settings = batch, settings
        self.docs = Metrics.counter(NS, "docs_read")

    def process(self, uri: str):
        buf = []
        for row in documents.iter_shard(uri, columns=["id", "text"], settings=self.settings):
            buf.append((row["id"], row["text"] or ""))
            if len(buf) >= self.batch:
                self.docs.inc(len(buf))
                yield buf
                buf = []
        if buf:
            self.docs.inc(len(buf))
            yield buf


def surface_bytes(sp) -> np.ndarray:
    """UTF-8 bytes of original text each piece covers ("▁" is one space; a byte piece is one byte)."""
    out = np.zeros(sp.get_piece_size(), dtype=np.int64)
    for i in range(sp.get_piece_size()):
        if sp.is_byte(i):
            out[i] = 1
        elif not (sp.is_control(i) or sp.is_unknown(i)):
            out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out


def sentence_ends(texts: list[str], flat: np.ndarray, lengths: list[int], surface: np.ndarray) -> list[np.ndarray]:
    """Per document, the token-index ends of its sentences (the last is its token count).

    `flat` holds the documents' whole-document encodings back to back. Each document's pieces
    cover " " + text (the dummy prefix), so joining "\n" + text for every document gives one
    byte string aligned with the tokens' byte offsets: one segmenter call per batch, and the
    "\n" makes each document start a sentence. A sentence starting at byte b begins with
    the token covering byte b + 1 there (usually the "▁word" that starts at the space before).
    """
    widths = surface[flat]
    token_ends = np.cumsum(widths)
    token_starts = token_ends - widths
    doc_starts = np.cumsum([0, *lengths])
    covered = np.diff(np.concatenate([[0], token_ends])[doc_starts])
    parts = []
    for text, n, c in zip(texts, lengths, covered.tolist()):
        if not n:
            continue  # an empty text encodes to no tokens (no dummy prefix), so it takes no byte either
        data = text.encode("utf-8")
        # A literal "▁" in the text (3 bytes, decoded as a 1-byte space) breaks the alignment: such a
        # document gets a blank stand-in of its token width, i.e. no inner sentence boundaries.
        parts.append(b"\n" + data if len(data) + 1 == c else b"\n" + b" " * (c - 1))
    bounds = sentence_starts(b"".join(parts))
    cuts = np.searchsorted(token_starts, bounds, side="right") - 1  # bounds point at the sentence's first byte
    out = []
    lo = np.searchsorted(cuts, doc_starts[:-1], side="right")
    hi = np.searchsorted(cuts, doc_starts[1:], side="left")
    for i, n in enumerate(lengths):
        inner = cuts[lo[i]:hi[i]] - doc_starts[i]
        out.append(np.unique(np.append(inner, n)).astype(np.int32) if n else np.zeros(0, np.int32))
    return out


class EncodeDocuments(beam.DoFn):
    """A batch of documents -> (doc id, token ids bytes, sentence-end token indices bytes) per document.

    Each document is encoded whole, exactly as `SentencePieceProcessor.encode(text)` and the HF
    export would, so the pack holds the document's own tokens (line breaks as byte pieces);
    sentences only decide where segment A may end.
    """

    def __init__(self, model_bytes: bytes, dtype: str):
        self.model_bytes, self.dtype = model_bytes, np.dtype(dtype)
        self.sentences = Metrics.counter(NS, "sentences")
        self.tokens = Metrics.counter(NS, "tokens_encoded")
        self.docs = Metrics.counter(NS, "docs_encoded")

    def setup(self):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.surface = surface_bytes(self.sp)

    def process(self, batch: list[tuple[str, str]]):
        # A blank document has no text to learn from; it is counted (docs_empty), not packed.
        texts = [text if text and not text.isspace() else "" for _, text in batch]
        # One C++ call for the whole batch; one thread, since Beam already runs a worker per core.
        encoded = self.sp.encode(texts, num_threads=1)
        lengths = [len(e) for e in encoded]
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=self.dtype, count=sum(lengths))
        del encoded
        off = 0
        for (doc_id, _), n, ends in zip(batch, lengths, sentence_ends(texts, flat, lengths, self.surface)):
            self.sentences.inc(len(ends))
            yield doc_id, flat[off:off + n].tobytes(), ends.tobytes()
            off += n
        self.tokens.inc(off)
        self.docs.inc(len(batch))


class PackShard(beam.DoFn):
    """(shard, [docs]) -> the shard file and its sidecar of counts; yields the sidecar dict."""

    def __init__(self, cfg: PackConfig, num_shards: int, special_ids: dict, dtype: str,
                 settings: storage.StorageSettings):
        self.cfg, self.num_shards, self.special_ids = cfg, num_shards, special_ids
        self.dtype, self.settings = np.dtype(dtype), settings
        self.counters = {n: Metrics.counter(NS, n) for n in (
            "docs", "docs_empty", "examples", "examples_single_segment", "examples_short", "tokens_packed",
            "padding_tokens", "sentences_split", "examples_cross_document", "tokens_truncated")}

    def process(self, element):
        shard, items = element
        docs = sorted(d for d in items if d is not None)  # by id; ties (duplicate ids) by content
        token_parts, sent_ends, doc_ends_list = [], [], []
        empty = offset = 0
        for _, ids_bytes, ends_bytes in docs:
            ids = np.frombuffer(ids_bytes, dtype=self.dtype)
            if len(ids) == 0:
                empty += 1
                continue
            token_parts.append(ids)
            sent_ends.append(np.frombuffer(ends_bytes, dtype=np.int32).astype(np.int64) + offset)
            offset += len(ids)
            doc_ends_list.append(offset)
        tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, self.dtype)
        sentence_ends = np.concatenate(sent_ends) if sent_ends else np.zeros(0, np.int64)
        doc_ends = np.array(doc_ends_list, dtype=np.int64)
        rng = shard_rng(self.cfg.seed, shard, self.num_shards)
        rows, st = pack(tokens, sentence_ends, doc_ends, self.cfg, rng, self.special_ids, self.dtype)
        data = rows.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        path = f"{packformat.SHARDS_DIR}/{packformat.shard_name(shard, self.num_shards)}"
        storage.write_bytes(storage.join(self.cfg.output, path), data, self.settings)
        counts = {
            "docs": len(docs), "docs_empty": empty, "sentences": int(len(sentence_ends)),
            "tokens_in": int(len(tokens)), "tokens_packed": st.tokens, "tokens_truncated": int(len(tokens)) - st.tokens,
            "examples": st.examples, "examples_single_segment": st.single_segment, "examples_short": st.short,
            "padding_tokens": st.padding, "sentences_split": st.sentences_split,
            "examples_cross_document": st.cross_document,
        }
        info = {"shard": shard, "path": path, "examples": st.examples, "tokens": st.tokens,
                "sha256": storage.sha256_bytes(data), "bytes": len(data), "counts": counts}
        storage.write_text(sidecar_uri(self.cfg.output, shard), json.dumps(info, sort_keys=True), self.settings)
        for name in ("docs", "docs_empty", "examples", "tokens_truncated", "sentences_split"):
            self.counters[name].inc(counts[name])
        self.counters["examples_single_segment"].inc(st.single_segment)
        self.counters["examples_short"].inc(st.short)
        self.counters["tokens_packed"].inc(st.tokens)
        self.counters["padding_tokens"].inc(st.padding)
        self.counters["examples_cross_document"].inc(st.cross_document)
        yield info


class PackDocuments(beam.PTransform):
    """Documents shard URIs -> packed shards written under cfg.output (yields per-shard info)."""

    def __init__(self, cfg: PackConfig, num_shards: int, model_bytes: bytes, special_ids: dict, dtype: str,
                 settings: storage.StorageSettings):
        super().__init__()
        self.cfg, self.num_shards, self.model_bytes = cfg, num_shards, model_bytes
        self.special_ids, self.dtype, self.settings = special_ids, dtype, settings

    def expand(self, uris):
        n = self.num_shards
        encoded = (
            uris
            | "ReadDocuments" >> beam.ParDo(ReadDocuments(self.cfg.encode_batch_docs, self.settings))
            | "Spread" >> beam.Reshuffle()  # a few big input shards must not cap the encode parallelism
            | "Encode" >> beam.ParDo(EncodeDocuments(self.model_bytes, self.dtype))
            | "KeyByShard" >> beam.Map(lambda d: (shard_of(d[0], n), d))
        )
        # One marker per shard, so a shard no document hashed to is still written (empty).
        markers = uris.pipeline | "ShardMarkers" >> beam.Create([(i, None) for i in range(n)])
        return (
            (encoded, markers)
            | "WithMarkers" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "PackShards" >> beam.ParDo(PackShard(self.cfg, n, self.special_ids, self.dtype, self.settings))
        )
