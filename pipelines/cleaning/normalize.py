"""Unicode NFC, control characters and whitespace: the text every rule and the tokenizer see."""

from __future__ import annotations

import re
import unicodedata

from pipelines.cleaning.config import NormalizeConfig

# C0 and C1 controls, DEL, and the zero-width / bidi formatting characters that make equal
# text compare unequal. \t and \n are whitespace, handled below.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except newline (tabs, NBSP, ideographic space...)
_BLANKS = re.compile(r"\n{3,}")


def normalize(text: str, cfg: NormalizeConfig) -> str:
    if cfg.nfc:
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.collapse_whitespace:
        text = _HSPACE.sub(" ", text)
        text = "\n".join(line.strip() for line in text.split("\n"))
        text = _BLANKS.sub("\n\n", text).strip()
    return text


def dedup_key(text: str) -> str:
    """What "exactly the same document" means: same words, ignoring case and spacing."""
    return " ".join(text.lower().split())
