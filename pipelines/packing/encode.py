"""Encoders for the pack job: token ids of a shard's documents, with the text aligned to them.

The packer needs, beside the ids, the text each token covers, so the segmenter can find
sentence starts around an example's middle (`pipelines/packing/segment.py`). Two tokenizers
feed it, each with its own way to align:

* `SentencePieceEncoder` (a `pipelines.train_tokenizer` output): each piece's surface bytes
  (`surface_bytes`), since SentencePiece with the identity rule is lossless;
* `HFEncoder` (an existing HF tokenizer, e.g. ELECTRA's WordPiece vocabulary): the character
  offsets `tokenizers` reports, since WordPiece lowercases, strips accents and drops spaces,
  so pieces do not spell the text.

Both are built on the driver, pickled to the workers with the DoFn, and load their model in
`setup()` (once per worker).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from pipelines.packing.segment import stream_text, surface_bytes


@dataclasses.dataclass
class EncodedShard:
    tokens: np.ndarray  # every document's ids, concatenated (the pack dtype)
    lengths: list[int]  # tokens per document, blank documents included (0)
    text: bytes  # "\n" + document + "\n" + document ... (documents with tokens only)
    token_starts: np.ndarray  # len(tokens) + 1 offsets into text: token t covers text[starts[t]:starts[t + 1]]


class Encoder(Protocol):
    def setup(self) -> None: ...

    def encode(self, texts: list[bytes]) -> EncodedShard: ...


class SentencePieceEncoder:
    """`SentencePieceProcessor.encode(text)` of each whole document, `batch_docs` per C++ call."""

    def __init__(self, model_bytes: bytes, batch_docs: int, dtype: np.dtype):
        self.model_bytes, self.batch_docs, self.dtype = model_bytes, batch_docs, np.dtype(dtype)
        self.sp = None

    def setup(self) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.surface = surface_bytes(self.sp)

    def encode(self, texts: list[bytes]) -> EncodedShard:
        """One C++ call (one thread: Beam runs a worker per core) per batch. `encode_as_numpy` gives the ids
        `encode` would, as int32 arrays: no Python int per token (building those costs a fifth of the encode)."""
        parts, lengths = [], []
        for i in range(0, len(texts), self.batch_docs):
            encoded = self.sp.encode_as_numpy(texts[i:i + self.batch_docs], num_threads=1)
            lengths += [len(e) for e in encoded]
            # Ids < vocab_size, which dtype holds (dtype_for_vocab): the narrowing cast is exact.
            parts.append(np.concatenate(encoded, dtype=self.dtype, casting="unsafe") if encoded
                         else np.zeros(0, self.dtype))
        tokens = np.concatenate(parts) if parts else np.zeros(0, self.dtype)
        text, starts = stream_text(texts, lengths, tokens, self.surface)
        return EncodedShard(tokens, lengths, text, starts)


def utf8_offsets(text: str) -> np.ndarray:
    """Byte offset of every character of `text` (len + 1 entries): `tokenizers` reports offsets in characters."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    width = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    out = np.zeros(len(cp) + 1, dtype=np.int64)
    np.cumsum(width, out=out[1:])
    return out


class HFEncoder:
    """An HF fast tokenizer (`tokenizers` JSON), no special tokens added; "[SEP]" typed in a text stays text."""

    def __init__(self, backend_json: str, batch_docs: int, dtype: np.dtype, control_ids: list[int]):
        self.backend_json, self.batch_docs, self.dtype = backend_json, batch_docs, np.dtype(dtype)
        self.control_ids = np.asarray(control_ids, dtype=np.int64)  # [PAD]/[CLS]/[SEP]/[MASK]: never from text
        self.tok = None

    def setup(self) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(self.backend_json)
        # Special tokens in the text are encoded as text: a "[SEP]" in a document must not cut an example.
        self.tok.encode_special_tokens = True

    def encode(self, texts: list[bytes]) -> EncodedShard:
        """Each document's ids, and its text aligned by the character offsets `tokenizers` reports.

        A document stands in the text as "\\n" + document; its first token starts at the "\\n" (so every
        document starts a sentence) and each later token where its first character is. The words a
        normaliser changed (case, accents) keep their place: offsets point into the original text.
        """
        ids, starts, lengths, parts = [], [], [], []
        pos = 0  # where the next document's "\n" goes in the stream text
        for i in range(0, len(texts), self.batch_docs):
            batch = texts[i:i + self.batch_docs]
            for data, enc in zip(batch, self.tok.encode_batch([t.decode("utf-8") for t in batch],
                                                               add_special_tokens=False)):
                n = len(enc.ids)
                lengths.append(n)
                if not n:
                    continue
                text = data.decode("utf-8")
                byte_of = utf8_offsets(text) if len(data) != len(text) else None
                first = np.fromiter((a for a, _ in enc.offsets), dtype=np.int64, count=n)
                first = byte_of[first] if byte_of is not None else first
                doc_starts = pos + 1 + np.maximum.accumulate(first)  # offsets never go back (byte-level BPE repeats)
                doc_starts[0] = pos
                ids.append(np.asarray(enc.ids, dtype=np.int64))
                starts.append(doc_starts)
                parts.append(data)
                pos += len(data) + 1
        tokens = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        # Cannot happen with encode_special_tokens; it would corrupt the examples' structure if it did.
        if np.isin(tokens, self.control_ids).any():
            raise ValueError("the tokenizer produced a [PAD]/[CLS]/[SEP]/[MASK] id from document text")
        token_starts = np.concatenate([*starts, np.array([pos], dtype=np.int64)])
        return EncodedShard(tokens.astype(self.dtype), lengths, b"\n".join([b"", *parts]) if parts else b"",
                            token_starts)


def encoder_for(tokenizer, batch_docs: int, dtype: np.dtype) -> Encoder:
    """The encoder of a loaded tokenizer (`pipelines.tokenizer.load_for_pack`)."""
    from pipelines.tokenizer.pretrained import HFTokenizer

    if isinstance(tokenizer, HFTokenizer):
        s = tokenizer.special_ids
        return HFEncoder(tokenizer.backend_json, batch_docs, dtype, [s.pad, s.cls, s.sep, s.mask])
    return SentencePieceEncoder(tokenizer.model_bytes, batch_docs, dtype)
