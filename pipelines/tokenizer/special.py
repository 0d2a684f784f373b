"""The fixed special tokens every stage agrees on (docs/architecture.md)."""

from __future__ import annotations

# name -> (piece, id). Ids are fixed so the trainer, the packer and the HF export agree
# without reading each other's files; [PAD]=0 lets the trainer zero-fill padding.
SPECIAL_TOKENS: dict[str, tuple[str, int]] = {
    "pad": ("[PAD]", 0),
    "unk": ("[UNK]", 1),
    "cls": ("[CLS]", 2),
    "sep": ("[SEP]", 3),
    "mask": ("[MASK]", 4),
}
SPECIAL_IDS: dict[str, int] = {name: i for name, (_, i) in SPECIAL_TOKENS.items()}
SPECIAL_PIECES: dict[str, str] = {name: p for name, (p, _) in SPECIAL_TOKENS.items()}
