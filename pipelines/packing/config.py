"""Typed config of the pack job."""

from __future__ import annotations

import dataclasses

from common.configs import ConfigError


@dataclasses.dataclass(frozen=True)
class PackConfig:
    input: str  # a finished `pipelines.clean` output (documents manifest)
    tokenizer: str  # a finished `pipelines.train_tokenizer` output
    output: str  # pack directory: shards/*.bin and manifest.json
    max_seq_length: int = 128  # tokens per example incl. [CLS]/[SEP]; ELECTRA uses 128 (small) and 512
    seed: int = 0  # with the work unit's place, seeds every random choice: same seed, same bytes
    # Target size of an output shard (MB of rows); every shard but the last holds exactly
    # shard_mb // row bytes examples, so the shard count follows the corpus: ELECTRA-Large's
    # 33B tokens (66 GB of uint16 rows) make ~130 shards. The trainer reads any shard size by
    # range requests; 512 MB keeps object counts and listings small (docs/tokenizer_and_packing.md).
    shard_mb: float = 512
    # Text MB one work unit packs (a run of row groups of one input shard, or part of one): the
    # unit's text, token ids, byte offsets per token, the segmenter's windows and the rows peak at
    # ~25x this (measured: +200 MB at 8 MB of prose), so this bounds a pack worker's memory.
    # Units, not shards, are the parallelism; 8 MB is ~2M tokens, seconds of work each.
    unit_mb: float = 8
    single_segment_prob: float = 0.1  # official: 10% of examples hold one segment ([CLS] A [SEP])
    short_seq_prob: float = 0.05  # official: 5% of examples get a random shorter target length
    # Short targets are drawn from U(max(5, frac * max_seq_length), max_seq_length). Official is
    # U(5, max) (frac=0), which alone pads ~2.5% of all positions; 0.5 halves the mean gap, ~1.25%.
    short_seq_min_fraction: float = 0.5
    # Official ELECTRA flushes the example at every document end (short, padded examples).
    # True lets an example continue into the next document, as RoBERTa's FULL-SENTENCES does;
    # ELECTRA has no next-sentence task, so a B segment from another document teaches nothing wrong.
    cross_document: bool = True
    encode_batch_docs: int = 256  # documents per SentencePiece batch call (amortises Python overhead)

    def __post_init__(self):
        if not 8 <= self.max_seq_length <= 65535:
            raise ConfigError(f"max_seq_length must be in [8, 65535], got {self.max_seq_length}")
        for name in ("single_segment_prob", "short_seq_prob", "short_seq_min_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if self.shard_mb <= 0 or self.unit_mb <= 0:
            raise ConfigError(f"shard_mb and unit_mb must be > 0, got {self.shard_mb}, {self.unit_mb}")
        if self.encode_batch_docs < 1:
            raise ConfigError(f"encode_batch_docs must be >= 1, got {self.encode_batch_docs}")

    @property
    def short_min_length(self) -> int:
        return min(self.max_seq_length, max(5, int(self.short_seq_min_fraction * self.max_seq_length)))
