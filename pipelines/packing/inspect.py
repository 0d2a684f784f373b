"""`python -m pipelines.inspect` handler for pack outputs: decodes examples back to text."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from common import packformat


def render_example(row: np.ndarray, sp, special_ids: dict[str, int]) -> str:
    """One example as `[CLS] A [SEP] B [SEP]` text (padding left out)."""
    specials = set(special_ids.values())
    parts, current = [], []
    for tok in row[row != special_ids["pad"]].tolist():
        if tok in specials:
            if current:
                parts.append(sp.decode(current))
                current = []
            parts.append(sp.id_to_piece(tok))
        else:
            current.append(tok)
    if current:
        parts.append(sp.decode(current))
    return " ".join(parts)


def details(output: str, m: dict) -> dict:
    """The pack's own summary fields (pipelines.inspect adds the ones every manifest has)."""
    examples = sum(int(s["examples"]) for s in m["shards"])
    return dict(format=m.get("format"), examples=examples, seq_len=m.get("seq_len"), dtype=m.get("dtype"),
                tokens=sum(int(s["tokens"]) for s in m["shards"]), padding_fraction=m.get("padding_fraction"),
                seed=m.get("seed"), tokenizer=m.get("tokenizer"))


class _HFPieces:
    """An HF tokenizer behind the two calls render_example makes (SentencePiece's names for them)."""

    def __init__(self, tok):
        self.tok = tok

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.tok.convert_ids_to_tokens(i)


def _decoder(ref: packformat.TokenizerRef):
    if ref.kind == "hf":
        from transformers import AutoTokenizer

        from common import storage

        with storage.local_copy(ref.uri) as local:
            return _HFPieces(AutoTokenizer.from_pretrained(local, local_files_only=True))
    from pipelines.tokenizer import load_spm

    return load_spm(ref.uri).processor()


def sample(output: str, m: dict) -> Iterator[dict]:
    """Examples in shard order, decoded with the tokenizer the manifest names."""
    reader = packformat.PackReader(output)
    sp = _decoder(reader.pack.tokenizer)
    sep, pad = reader.special_ids["sep"], reader.special_ids["pad"]
    for shard, info in enumerate(reader.shards):
        for start in range(0, info.examples, 64):
            rows = reader.read(shard, start, 64)
            types = packformat.token_type_ids(rows, sep)
            for i, row in enumerate(rows):
                n = int((row != pad).sum())
                yield {"shard": shard, "example": start + i, "tokens": n, "padding": len(row) - n,
                       "segment_b_tokens": int(types[i][:n].sum()), "text": render_example(row, sp, reader.special_ids)}
