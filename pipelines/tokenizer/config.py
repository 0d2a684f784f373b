"""Typed config of the tokenizer-training job."""

from __future__ import annotations

import dataclasses
from typing import Literal

from common.configs import ConfigError


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    input: str  # a finished `pipelines.clean` output (documents manifest), local or s3://
    output: str  # directory that receives spm.model, the HF files and manifest.json
    vocab_size: int = 32768  # multiple of 128 for tensor-core tiles; fits uint16 pack shards
    model_type: Literal["unigram", "bpe"] = "unigram"  # unigram: the SentencePiece default, better on morphology
    sample_docs: int = 200_000  # documents fed to the trainer; bounds its memory (~ few GB at web doc sizes)
    sample_seed: int = 0  # salt of the id hash that picks the sample; change it to draw another sample
    character_coverage: float = 0.9995  # rarer characters are left to byte fallback instead of wasting pieces
    max_sentence_bytes: int = 8192  # longer sentences are skipped by the trainer (SentencePiece's own limit)
    num_threads: int = 1  # trainer threads; 1 keeps spm.model byte-identical across machines
    split_special_tokens: bool = True  # HF export: literal "[MASK]" in text is text, exactly as spm.model sees it

    def __post_init__(self):
        if self.model_type not in ("unigram", "bpe"):
            raise ConfigError(f"model_type must be 'unigram' or 'bpe', got {self.model_type!r}")
        # 5 specials + 256 byte pieces must leave room for real pieces.
        if not 512 <= self.vocab_size <= 65536:
            raise ConfigError(f"vocab_size must be in [512, 65536] (uint16 pack shards), got {self.vocab_size}")
        if self.sample_docs <= 0:
            raise ConfigError(f"sample_docs must be positive, got {self.sample_docs}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ConfigError(f"character_coverage must be in [0.9, 1.0], got {self.character_coverage}")
        if self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
