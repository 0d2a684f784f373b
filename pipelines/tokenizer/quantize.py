"""Round the piece scores of a unigram spm.model so SentencePiece and HF tokenizers agree exactly.

Unigram encoding is a Viterbi search over summed piece scores. SentencePiece sums in
float32, HF `tokenizers` in float64, so when two segmentations use the same pieces in a
different order ("00"+"000" vs "000"+"00") the float32 rounding decides the winner in one
and an exact tie in the other. With every score a multiple of 2^-8 and partial sums
below 2^15, all sums are exact in float32 too; then both pick the same path, because both
break exact ties the same way (the longest piece ending at a position wins). Rounding by
at most 1/512 nat changes no segmentation that was not already a near-tie.

The model is edited at the protobuf wire level: a score is a fixed32 field, so it is
patched in place and nothing else moves (the generated sentencepiece_model_pb2 needs a
newer protobuf runtime than this project pins).
"""

from __future__ import annotations

import struct

STEP = 2.0 ** -8


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        n, pos = _varint(buf, pos)
        return pos + n
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def quantize_scores(model: bytes, step: float = STEP) -> bytes:
    """The same ModelProto with each SentencePiece.score (field 2 of pieces, field 1) rounded to `step`."""
    out = bytearray(model)
    pos = 0
    while pos < len(model):
        tag, pos = _varint(model, pos)
        field, wire = tag >> 3, tag & 7
        if field == 1 and wire == 2:  # ModelProto.pieces
            n, pos = _varint(model, pos)
            end = pos + n
            p = pos
            while p < end:
                t, p = _varint(model, p)
                if t == (2 << 3 | 5):  # SentencePiece.score, float
                    (score,) = struct.unpack_from("<f", model, p)
                    struct.pack_into("<f", out, p, round(score / step) * step)
                p = _skip(model, p, t & 7)
            pos = end
        else:
            pos = _skip(model, pos, wire)
    return bytes(out)
