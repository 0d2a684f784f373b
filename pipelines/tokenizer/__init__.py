"""SentencePiece tokenizer: training on cleaned documents, HF fast-tokenizer export, loading.

`pipelines.train_tokenizer` is the entry point; `load_spm` / `load_hf` are what later
stages use (the pack job, pretraining, evaluation).
"""

from common.special_tokens import SPECIAL_IDS, SPECIAL_TOKENS
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.load import TokenizerError, load_hf, load_spm

__all__ = ["TokenizerConfig", "TokenizerError", "load_hf", "load_spm", "SPECIAL_IDS", "SPECIAL_TOKENS"]
