"""The special tokens every stage agrees on (docs/architecture.md), and their ids as one typed record."""

from __future__ import annotations

import dataclasses

# name -> (piece, id). The ids of the tokenizers this project trains (pipelines.train_tokenizer):
# fixed, so the packer and the HF export agree without reading each other's files; [PAD]=0 lets
# the trainer zero-fill padding. A pack made with another tokenizer (a published WordPiece
# vocabulary) records that tokenizer's ids in its manifest, and the trainer takes them from there.
SPECIAL_TOKENS: dict[str, tuple[str, int]] = {
    "pad": ("[PAD]", 0),
    "unk": ("[UNK]", 1),
    "cls": ("[CLS]", 2),
    "sep": ("[SEP]", 3),
    "mask": ("[MASK]", 4),
}
SPECIAL_IDS: dict[str, int] = {name: i for name, (_, i) in SPECIAL_TOKENS.items()}
SPECIAL_PIECES: dict[str, str] = {name: p for name, (p, _) in SPECIAL_TOKENS.items()}


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the five tokens ELECTRA's examples and masking use; they travel in the pack manifest."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    def __post_init__(self) -> None:
        ids = self.as_dict()
        if len(set(ids.values())) != len(ids) or min(ids.values()) < 0:
            raise ValueError(f"special token ids must be distinct and non-negative, got {ids}")

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, ids: dict) -> "SpecialIds":
        return cls(**{name: int(ids[name]) for name in SPECIAL_IDS})


FIXED = SpecialIds(**SPECIAL_IDS)  # the tokenizers this project trains
BERT = SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)  # BERT's / ELECTRA's published WordPiece vocab.txt
