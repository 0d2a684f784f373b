"""Model shapes and the ELECTRA objective's knobs, with the official named sizes.

Sizes and pretraining hyperparameters follow the paper's table (`../shared/reference/ELECTRA.md`):
the generator has the discriminator's depth and a fraction of its width, and both towers
share one embeddings module of width `embedding_size`.

    cfg = named_size("small")                       # or electra_small()
    cfg = dataclasses.replace(cfg, vocab_size=8000) # a run's vocabulary comes from its pack
    model = cfg.build()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.special_tokens import FIXED

if TYPE_CHECKING:
    from pretraining.model import ElectraPretrainingModel

# Attention kernels transformers' ELECTRA layers can dispatch to.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes of both towers plus the replaced-token-detection objective."""

    vocab_size: int = 32768  # the tokenizer's size, set by a run from its pack; a multiple of 128 for tensor cores
    embedding_size: int = 128  # width of the shared token/position/type embeddings; towers project it to theirs
    hidden_size: int = 256  # discriminator width
    num_hidden_layers: int = 12  # depth of both towers (the generator has the discriminator's depth)
    num_attention_heads: int = 4  # discriminator heads; must divide hidden_size
    intermediate_size: int = 1024  # discriminator feed-forward width (4x hidden)
    generator_hidden_size: int = 64  # generator width: a fraction of the discriminator's (0.25 small/large, 1/3 base)
    generator_num_attention_heads: int = 1  # generator heads; must divide generator_hidden_size
    generator_intermediate_size: int = 256  # generator feed-forward width (4x its hidden)
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment A / segment B
    hidden_dropout_prob: float = 0.1  # BERT/ELECTRA default
    attention_probs_dropout_prob: float = 0.1  # BERT/ELECTRA default
    layer_norm_eps: float = 1e-12  # the reference implementation's LayerNorm epsilon
    initializer_range: float = 0.02  # std of the truncated-normal-like init of every matrix (as BERT)
    mask_prob: float = 0.15  # fraction of maskable positions the generator predicts (0.25 for large)
    rtd_weight: float = 50.0  # discriminator loss weight (lambda in the paper)
    # Special ids: this project's tokenizers' (common/special_tokens.py); a run takes its pack's (config.with_pack).
    pad_token_id: int = FIXED.pad
    unk_token_id: int = FIXED.unk
    cls_token_id: int = FIXED.cls
    sep_token_id: int = FIXED.sep
    mask_token_id: int = FIXED.mask
    attn_implementation: str = "sdpa"  # fused scaled-dot-product attention; "eager" is transformers' matmul+softmax
    # torch.compile each tower (fuses LayerNorm/GELU/dropout chains; the first steps pay the compile).
    # Off by default: benchmarks/train_step.py --modes compile measures it against eager on the target GPU.
    compile_towers: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "generator_hidden_size", "generator_num_attention_heads",
                     "generator_intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads:
            problems.append(f"num_attention_heads={self.num_attention_heads} does not divide "
                            f"hidden_size={self.hidden_size}")
        if self.generator_num_attention_heads > 0 and self.generator_hidden_size % self.generator_num_attention_heads:
            problems.append(f"generator_num_attention_heads={self.generator_num_attention_heads} does not divide "
                            f"generator_hidden_size={self.generator_hidden_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.mask_prob < 1.0:
            problems.append(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.rtd_weight < 0:
            problems.append(f"rtd_weight must be >= 0, got {self.rtd_weight}")
        specials = self.special_ids
        if len(set(specials.values())) != len(specials):
            problems.append(f"special token ids must be distinct, got {specials}")
        if max(specials.values()) >= self.vocab_size or min(specials.values()) < 0:
            problems.append(f"special token ids {specials} must lie in [0, vocab_size={self.vocab_size})")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            problems.append(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
                            f"got {self.attn_implementation!r}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def special_ids(self) -> dict[str, int]:
        return {"pad": self.pad_token_id, "unk": self.unk_token_id, "cls": self.cls_token_id,
                "sep": self.sep_token_id, "mask": self.mask_token_id}

    def build(self) -> "ElectraPretrainingModel":
        from pretraining.model import ElectraPretrainingModel

        return ElectraPretrainingModel(self)



def electra_tiny() -> ModelConfig:
    """2 layers, for tests and the demo. The discriminator is wider than the embeddings and the generator
    narrower, so every test runs both towers' embedding projections. A run takes vocab_size from its pack."""
    return ModelConfig(embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=256, generator_hidden_size=16, generator_num_attention_heads=1,
                       generator_intermediate_size=64)


def electra_small() -> ModelConfig:
    """12 x 256, 4 heads, embeddings 128; generator 0.25 width (64, 1 head, FFN 256); mask 15%."""
    return ModelConfig(embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                       intermediate_size=1024, generator_hidden_size=64, generator_num_attention_heads=1,
                       generator_intermediate_size=256, mask_prob=0.15)


def electra_base() -> ModelConfig:
    """12 x 768, 12 heads, embeddings 768; generator 1/3 width (256, 4 heads, FFN 1024); mask 15%."""
    return ModelConfig(embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, generator_hidden_size=256, generator_num_attention_heads=4,
                       generator_intermediate_size=1024, mask_prob=0.15)


def electra_large() -> ModelConfig:
    """24 x 1024, 16 heads, embeddings 1024; generator 0.25 width (256, 4 heads, FFN 1024); mask 25%."""
    return ModelConfig(embedding_size=1024, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096, generator_hidden_size=256, generator_num_attention_heads=4,
                       generator_intermediate_size=1024, mask_prob=0.25)


SIZES: dict[str, Callable[[], ModelConfig]] = {
    "tiny": electra_tiny,
    "small": electra_small,
    "base": electra_base,
    "large": electra_large,
}


def named_size(name: str) -> ModelConfig:
    """The config of a named size; an unknown name lists the valid ones."""
    try:
        return SIZES[name]()
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; valid sizes: {', '.join(SIZES)}") from None
