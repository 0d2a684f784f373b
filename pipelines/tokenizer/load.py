"""Loading a trained tokenizer output, with the checks every consumer needs.

A tokenizer directory (local or s3://) holds:
    spm.model                 the SentencePiece model (what the pack job encodes with)
    tokenizer.json            HF fast tokenizer, same ids as spm.model
    tokenizer_config.json     so `AutoTokenizer.from_pretrained(dir)` works offline
    special_tokens_map.json
    manifest.json             kind "tokenizer": vocab_size, special_ids, spm_sha256, model_type

`load_for_pack(uri)` is what the pack job calls: such an output, or else an existing HF
tokenizer (pipelines/tokenizer/pretrained.py: tokenizer.json, a WordPiece vocab.txt, a hub id).
"""

from __future__ import annotations

import dataclasses

from common import manifest, storage
from common.special_tokens import FIXED, SPECIAL_PIECES, SPECIAL_TOKENS, SpecialIds
from pipelines.tokenizer import pretrained

SPM_NAME = "spm.model"
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class TokenizerError(ValueError):
    """A tokenizer output that must not be used: wrong special tokens, or a model that is not the one its manifest names."""


@dataclasses.dataclass(frozen=True)
class LoadedTokenizer:
    uri: str
    manifest: dict
    model_bytes: bytes  # the serialized spm.model, small enough (~1 MB) to ship to Beam workers
    sha256: str

    def processor(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_proto=self.model_bytes)

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def special_ids(self) -> SpecialIds:
        return FIXED  # check_special_tokens holds every loaded model to them

    def ref(self) -> dict:
        """How a pack manifest names its tokenizer."""
        return {"uri": self.uri, "kind": "sentencepiece", "manifest_hash": self.manifest["manifest_hash"],
                "spm_sha256": self.sha256}


def check_special_tokens(sp, where: str) -> None:
    """Raise unless [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 sit at their fixed ids as non-text pieces."""
    problems = []
    for name, (piece, want) in SPECIAL_TOKENS.items():
        if want >= sp.get_piece_size():
            problems.append(f"{piece} should be id {want} but the vocabulary has {sp.get_piece_size()} pieces")
            continue
        got = sp.id_to_piece(want)
        if got != piece:
            problems.append(f"id {want} is {got!r}, expected {piece}")
        elif name == "unk" and not sp.is_unknown(want):
            problems.append(f"{piece} (id {want}) is not the unknown piece")
        elif name != "unk" and not sp.is_control(want):
            problems.append(f"{piece} (id {want}) is not a control symbol, so text could produce it")
    if problems:
        raise TokenizerError(f"tokenizer {where} does not have the required special tokens: " + "; ".join(problems)
                             + ". Retrain it with `python -m pipelines.train_tokenizer`.")


def load_spm(uri: str, settings: storage.StorageSettings | None = None) -> LoadedTokenizer:
    """Read and verify a tokenizer output: manifest, sha256 of spm.model, special ids."""
    m = manifest.read(uri, kind="tokenizer", settings=settings)
    model_uri = storage.join(uri, SPM_NAME)
    try:
        data = storage.read_bytes(model_uri, settings)
    except FileNotFoundError:
        raise TokenizerError(f"{model_uri} is missing although {uri} has a manifest") from None
    sha = storage.sha256_bytes(data)
    if sha != m.get("spm_sha256"):
        raise TokenizerError(f"{model_uri} has sha256 {sha[:16]}..., but its manifest claims "
                             f"{str(m.get('spm_sha256'))[:16]}...: the model was replaced or corrupted after training.")
    loaded = LoadedTokenizer(uri=uri, manifest=m, model_bytes=data, sha256=sha)
    check_special_tokens(loaded.processor(), uri)
    return loaded


def load_for_pack(uri: str, settings: storage.StorageSettings | None = None
                  ) -> LoadedTokenizer | pretrained.HFTokenizer:
    """A `pipelines.train_tokenizer` output (it has a manifest), else an existing HF tokenizer.

    Raises TokenizerError with the reason when neither fits.
    """
    if manifest.exists(uri, settings):
        return load_spm(uri, settings)
    try:
        return pretrained.load(uri, settings)
    except pretrained.PretrainedTokenizerError as exc:
        raise TokenizerError(str(exc)) from None


def load_hf(uri: str, settings: storage.StorageSettings | None = None):
    """The HF fast tokenizer of a tokenizer output (local or s3://), verified against its manifest."""
    from transformers import AutoTokenizer

    manifest.read(uri, kind="tokenizer", settings=settings)
    with storage.local_copy(uri, settings) as local:
        tok = AutoTokenizer.from_pretrained(local)
    missing = [p for p in SPECIAL_PIECES.values() if p not in tok.get_vocab()]
    if missing:
        raise TokenizerError(f"HF tokenizer at {uri} lacks special tokens {missing}")
    return tok
