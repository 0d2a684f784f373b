"""The special tokens every stage agrees on (docs/architecture.md), and their ids as one typed record.

The one definition: the tokenizer job, the pack format, the model config's defaults and the tiny test
tokenizers all read it, so a change here is a change everywhere."""

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
# The pieces in id order: a tokenizer trainer given this list as its special tokens puts each at its fixed id.
PIECES_BY_ID: list[str] = [p for p, _ in sorted(SPECIAL_TOKENS.values(), key=lambda t: t[1])]


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


def template_processor():
    """The HF post-processor that frames text as the packed examples are: `[CLS] A [SEP]` and
    `[CLS] A [SEP] B [SEP]`, token type 1 for B, with the fixed ids (a `tokenizers` object, imported here
    so that reading the ids needs no tokenizers install)."""
    from tokenizers import processors

    cls, sep = SPECIAL_PIECES["cls"], SPECIAL_PIECES["sep"]
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, SPECIAL_IDS["cls"]), (sep, SPECIAL_IDS["sep"])],
    )
