"""`python -m pipelines.inspect` handler for tokenizer outputs."""

from __future__ import annotations

from typing import Iterator

from pipelines.tokenizer.load import load_spm

SAMPLE = "ELECTRA pre-trains a discriminator: 東京, naïve café, 🚀."


def details(output: str, m: dict) -> dict:
    """The tokenizer's own summary fields (pipelines.inspect adds the ones every manifest has)."""
    sp = load_spm(output).processor()  # also verifies the sha256 and the special ids
    return dict(model_type=m.get("model_type"), vocab_size=m.get("vocab_size"), special_ids=m.get("special_ids"),
                spm_sha256=m.get("spm_sha256"), normalization=m.get("normalization"),
                example={"text": SAMPLE, "pieces": sp.encode(SAMPLE, out_type=str)})


def sample(output: str, m: dict) -> Iterator[dict]:
    """The vocabulary, id by id."""
    sp = load_spm(output).processor()
    for i in range(sp.get_piece_size()):
        kind = ("control" if sp.is_control(i) else "unknown" if sp.is_unknown(i) else "byte" if sp.is_byte(i)
                else "normal")
        yield {"id": i, "piece": sp.id_to_piece(i), "score": sp.get_score(i), "type": kind}
