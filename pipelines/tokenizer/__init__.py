"""SentencePiece tokenizer: training on cleaned documents, HF fast-tokenizer export, loading.

`pipelines.train_tokenizer` is the entry point; `load_spm` / `load_hf` are what later
stages use (the pack job, pretraining, evaluation).
"""

from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.load import TokenizerError, load_hf, load_spm
from pipelines.tokenizer.special import SPECIAL_IDS, SPECIAL_TOKENS

__all__ = ["TokenizerConfig", "TokenizerError", "load_hf", "load_spm", "SPECIAL_IDS", "SPECIAL_TOKENS"]
