"""Sentence starts of a shard's token stream, found by running the segmenter on windows of its text.

The packer needs sentence boundaries only around each example's middle and end
(`pipelines/packing/examples.py`), about 13% of the text at 512, so segmenting whole
documents (which costs about as much as encoding them) is wasted work. Each query range is
segmented with `CONTEXT` tokens of text on either side, so the segmenter sees the words
around a candidate boundary as it would in the whole document, and all ranges of a query
go to Bling Fire in one call.
"""

from __future__ import annotations

import numpy as np

from pipelines.tokenizer.sentences import sentence_starts

# Tokens of text on each side of a query range given to the segmenter (and then ignored):
# Bling Fire decides a boundary from a few words around it ("Dr. Smith", "$3.50."); with 8 the
# windows found exactly the whole text's boundaries on the test prose (6 missed 1 in 7,774).
CONTEXT = 8


def surface_bytes(sp) -> np.ndarray:
    """UTF-8 bytes of original text each piece covers ("▁" is one space; a byte piece is one byte)."""
    ids = list(range(sp.get_piece_size()))  # SentencePiece answers a list of ids in one call
    out = np.array([len(p.replace("\u2581", " ").encode("utf-8")) for p in sp.id_to_piece(ids)], dtype=np.int64)
    out[np.array(sp.is_byte(ids), dtype=bool)] = 1
    out[np.array(sp.is_control(ids), dtype=bool) | np.array(sp.is_unknown(ids), dtype=bool)] = 0
    return out


def stream_text(texts: list[bytes], lengths: list[int], tokens: np.ndarray,
                surface: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The documents' text aligned byte for byte with their concatenated tokens.

    Returns the text and `token_starts` (len(tokens) + 1 byte offsets: token t covers
    text[token_starts[t]:token_starts[t + 1]]). Each document's pieces cover " " + text (the
    dummy prefix), so "\\n" + text stands for it: the "\\n" makes each document start a
    sentence. A literal "▁" in a text (3 bytes, decoded as a 1-byte space) breaks the
    alignment: such a document gets a blank stand-in of its width, i.e. no inner boundaries.
    Documents with no tokens (blank) take no bytes.
    """
    token_starts = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(surface[tokens], out=token_starts[1:])
    doc_bytes = np.diff(token_starts[np.cumsum([0, *lengths])]).tolist()
    parts = [data if len(data) + 1 == c else b" " * (c - 1) for data, n, c in zip(texts, lengths, doc_bytes) if n]
    return (b"\n".join([b"", *parts]) if parts else b""), token_starts  # one copy of the text


class WindowSegmenter:
    """A `SentenceIndex` (examples.py) that segments only the queried token ranges of the stream."""

    def __init__(self, text: bytes, token_starts: np.ndarray, context: int = CONTEXT):
        if context < 1:
            raise ValueError("context must be >= 1: a window's own first byte reads as a line start")
        self.text, self.token_starts, self.context = text, token_starts, context
        # A padded copy of the bytes, to test for UTF-8 continuation bytes at window edges.
        self.bytes = np.frombuffer(text + b"\0\0\0\0", dtype=np.uint8)
        self.segmented_bytes = 0  # text given to the segmenter so far, context included

    def starts(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        if not len(lo):
            return np.zeros(0, np.int64)
        ts, n = self.token_starts, len(self.token_starts) - 1
        b0 = self._char_start(ts[np.maximum(lo - self.context, 0)], -1)
        b1 = self._char_start(ts[np.minimum(hi + self.context, n)], +1)
        parts = [self.text[a:b] for a, b in zip(b0.tolist(), b1.tolist())]
        # Windows joined by "\n": one segmenter call; the "\n" keeps windows from running together.
        offsets = np.cumsum([0, *(len(p) + 1 for p in parts)])[:-1]
        joined = b"\n".join(parts)
        self.segmented_bytes += len(joined)
        found = sentence_starts(joined)
        k = np.searchsorted(offsets, found, "right") - 1
        tok = np.searchsorted(ts, b0[k] + found - offsets[k], "right") - 1  # the token covering the start byte
        keep = (tok >= lo[k]) & (tok < hi[k])
        return np.unique(tok[keep])

    def _char_start(self, b: np.ndarray, step: int) -> np.ndarray:
        """Offsets moved by `step` until they start a UTF-8 character: byte pieces can split one."""
        for _ in range(3):
            inside = (self.bytes[b] & 0xC0) == 0x80
            if not inside.any():
                break
            b = b + step * inside
        return b
