"""Sentence segmentation shared by tokenizer training and packing.

Bling Fire's finite-state segmenter (model inside the wheel) knows abbreviations,
decimals and quotes ("Dr. Smith paid $3.50." is one sentence), which a regex on periods
does not. Line breaks in cleaned documents are paragraph or heading boundaries, so a
sentence never spans one.

We call the C entry point with UTF-8 byte offsets: blingfire's own
`text_to_sentences_and_offsets` maps them to character offsets in a Python loop over
every byte, which costs three times more than SentencePiece encoding of the same text.
"""

from __future__ import annotations

from ctypes import byref, c_char_p, c_int, c_int32, create_string_buffer

import blingfire
import numpy as np

_WS = frozenset(b" \t\n\r\x0b\x0c")


class _Buffers:
    """Output buffers reused across calls (zeroing fresh ones per document costs more than segmenting)."""

    cap = 0
    out = starts = ends = None

    @classmethod
    def get(cls, need: int):
        if need > cls.cap:
            cls.cap = max(need, 2 * cls.cap, 1 << 16)
            cls.out = create_string_buffer(cls.cap)
            cls.starts, cls.ends = (c_int32 * cls.cap)(), (c_int32 * cls.cap)()
        return cls.out, cls.starts, cls.ends, cls.cap


def _raw_spans(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and exclusive end byte offsets of the sentences Bling Fire finds in UTF-8 `data`."""
    out, starts, ends, cap = _Buffers.get(2 * len(data) + 16)  # the wrapper's sizing: output may exceed input
    n = blingfire.blingfire.TextToSentencesWithOffsets(c_char_p(data), c_int(len(data)), byref(out), byref(starts),
                                                       byref(ends), c_int(cap))
    if n < 0 or n > cap:
        raise ValueError("blingfire failed to segment a document")
    k = out.value[:n].count(b"\n") + 1
    # Copies: the buffers are reused by the next call. Bling Fire's end offset is inclusive.
    return np.ctypeslib.as_array(starts)[:k].copy(), np.ctypeslib.as_array(ends)[:k] + 1


def _byte_spans(data: bytes) -> list[tuple[int, int]]:
    s, e = _raw_spans(data)
    return list(zip(s.tolist(), e.tolist()))


_WS_TABLE = np.zeros(256, dtype=bool)
_WS_TABLE[list(_WS)] = True


def sentence_starts(data: bytes) -> np.ndarray:
    """Byte offsets where a sentence starts after the first one, vectorised (the pack job's hot path).

    The same boundaries as `sentence_byte_spans` (cuts inside a token undone, every line
    break a boundary), except that a boundary may sit on whitespace before the sentence.
    """
    if not data:
        return np.zeros(0, dtype=np.int64)
    arr = np.frombuffer(data, dtype=np.uint8)
    ws = _WS_TABLE[arr]
    starts, _ = _raw_spans(data)
    starts = starts[(starts > 0) & (starts < len(data))].astype(np.int64)
    starts = starts[ws[starts - 1] | ws[starts]]
    lines = np.flatnonzero(arr == 10) + 1
    return np.union1d(starts, lines[lines < len(data)])


def sentence_byte_spans(data: bytes) -> list[tuple[int, int]]:
    """[start, end) byte spans of the sentences of UTF-8 text, whitespace trimmed, never across a line break."""
    if not data.strip():
        return []
    merged: list[list[int]] = []
    for start, end in _byte_spans(data):
        # The segmenter sometimes cuts inside a token ("(?" | "P<name>)"): undo such a cut.
        if merged and start > 0 and data[start - 1] not in _WS and data[start] not in _WS:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    out = []
    for start, end in merged:
        line_start = start
        while True:
            nl = data.find(b"\n", line_start, end)
            stop = end if nl < 0 else nl
            a, b = line_start, stop
            while a < b and data[a] in _WS:
                a += 1
            while b > a and data[b - 1] in _WS:
                b -= 1
            if b > a:
                out.append((a, b))
            if nl < 0:
                break
            line_start = nl + 1
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of a document, stripped, in order; empty for blank text."""
    data = text.encode("utf-8")
    return [data[a:b].decode("utf-8") for a, b in sentence_byte_spans(data)]
