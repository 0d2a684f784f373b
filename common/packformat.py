"""The packed-examples format: what `pipelines.pack` writes and `pretraining` streams.

Layout under an output URI:
    shards/part-00000-of-00008.bin   fixed-length examples, row-major [examples, seq_len],
                                     little-endian uint16 (uint32 when the vocabulary > 65535)
    manifest.json                    written last; kind "pack"

Only token ids are stored. The attention mask is `ids != pad_id`; token types are 0
up to and including the first [SEP] and 1 after it, so storing them would double the
bytes the trainer streams for nothing. Example i of a shard starts at byte
i * seq_len * itemsize, so a reader fetches any run of examples with one HTTP range
request, without downloading the shard.

Manifest fields beyond the common ones (common/manifest.py):
    format: "electra-pack-v1", dtype: "uint16"|"uint32", seq_len, vocab_size,
    special_ids: {pad, unk, cls, sep, mask} (the tokenizer's own),
    tokenizer: {uri, kind, manifest_hash, spm_sha256 | sha256, source},
    padding_fraction, seed, shards: [{path, examples, tokens, sha256, bytes}]
Written by `pipelines.pack`; semantics of the examples in docs/tokenizer_and_packing.md.
Readers outside the pipelines use the typed `PackManifest`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common import manifest, storage
from common.special_tokens import SpecialIds

FORMAT = "electra-pack-v1"
SHARDS_DIR = "shards"


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.bin"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def token_type_ids(ids: np.ndarray, sep_id: int) -> np.ndarray:
    """0 through the first [SEP] of each row, 1 after it (padding included; it is masked anyway)."""
    is_sep = ids == sep_id
    seen = np.cumsum(is_sep, axis=-1)
    # A position is segment B once a [SEP] strictly before it has been seen.
    return ((seen - is_sep) > 0).astype(np.int64)


def attention_mask(ids: np.ndarray, pad_id: int) -> np.ndarray:
    return (ids != pad_id).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    uri: str
    examples: int
    tokens: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class TokenizerRef:
    """The tokenizer a pack was encoded with."""

    uri: str  # its files: a pipelines.train_tokenizer output, or the pack's own copy of an HF tokenizer
    kind: str  # "sentencepiece" (this project's) or "hf" (an existing HF tokenizer, e.g. ELECTRA's WordPiece)
    manifest_hash: str | None  # the tokenizer output's manifest; None for an HF tokenizer (it has none)
    sha256: str  # of spm.model, or of the HF tokenizer's tokenizers JSON
    source: str  # what the pack job was given (an HF directory or hub id); the uri for sentencepiece

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerRef":
        kind = d.get("kind", "sentencepiece")  # packs written before HF tokenizers were accepted
        return cls(uri=d.get("uri", ""), kind=kind, manifest_hash=d.get("manifest_hash"),
                   sha256=d.get("spm_sha256") or d.get("sha256", ""), source=d.get("source") or d.get("uri", ""))


@dataclasses.dataclass(frozen=True)
class PackManifest:
    """What the trainer and the export read from a pack manifest, typed."""

    uri: str
    manifest_hash: str
    seq_len: int
    vocab_size: int
    special_ids: SpecialIds
    tokenizer: TokenizerRef
    shards: tuple[ShardInfo, ...]
    raw: dict  # the manifest itself, for lineage (input_ref) and the data loader

    @classmethod
    def from_dict(cls, uri: str, m: dict) -> "PackManifest":
        if m.get("format") != FORMAT:
            raise manifest.ManifestError(f"{uri}: pack format {m.get('format')!r}, expected {FORMAT!r}")
        shards = tuple(ShardInfo(storage.join(uri, s["path"]), int(s["examples"]), int(s["tokens"]), s["sha256"])
                       for s in m["shards"])
        return cls(uri=uri, manifest_hash=m["manifest_hash"], seq_len=int(m["seq_len"]),
                   vocab_size=int(m["vocab_size"]), special_ids=SpecialIds.from_dict(m["special_ids"]),
                   tokenizer=TokenizerRef.from_dict(m.get("tokenizer") or {}), shards=shards, raw=m)

    @classmethod
    def read(cls, uri: str, settings: storage.StorageSettings | None = None) -> "PackManifest":
        return cls.from_dict(uri, manifest.read(uri, kind="pack", settings=settings))

    @property
    def num_examples(self) -> int:
        return sum(s.examples for s in self.shards)


class PackReader:
    """Random access to the examples of a finished pack, local or s3://."""

    def __init__(self, output: str, settings: storage.StorageSettings | None = None):
        self.output = output
        self.settings = settings
        self.pack = PackManifest.read(output, settings)
        self.manifest = self.pack.raw
        self.seq_len: int = self.pack.seq_len
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.vocab_size: int = self.pack.vocab_size
        self.special_ids: dict[str, int] = self.pack.special_ids.as_dict()
        self.shards = list(self.pack.shards)

    @property
    def num_examples(self) -> int:
        return sum(s.examples for s in self.shards)

    @property
    def row_bytes(self) -> int:
        return self.seq_len * self.dtype.itemsize

    def read(self, shard: int, start: int, count: int, *, widen: bool = True) -> np.ndarray:
        """Examples [start, start+count) of one shard as an array [count, seq_len]: int64 (what torch
        embeddings take), or with `widen=False` the stored dtype (a quarter of the memory, for caches)."""
        info = self.shards[shard]
        count = max(0, min(count, info.examples - start))
        raw = storage.read_range(info.uri, start * self.row_bytes, count * self.row_bytes, self.settings)
        if len(raw) != count * self.row_bytes:
            raise IOError(f"{info.uri}: short read at example {start} (got {len(raw)} bytes); the shard is truncated")
        rows = np.frombuffer(raw, dtype=self.dtype).reshape(count, self.seq_len)
        return rows.astype(np.int64) if widen else rows
