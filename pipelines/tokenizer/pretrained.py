"""An existing Hugging Face tokenizer as the pack job's tokenizer, instead of one `pipelines.train_tokenizer` trained.

Continued pretraining keeps the published model's vocabulary, so `pipelines.pack --tokenizer`
also takes:

    a directory with tokenizer.json (and usually tokenizer_config.json)   any HF fast tokenizer
    a directory with a WordPiece vocab.txt, or the vocab.txt itself       as published with ELECTRA / BERT
    a hub id (google/electra-base-discriminator)                          where the hub is reachable

local or s3://. The special ids are the tokenizer's own (BERT's vocabulary: [PAD]=0, [UNK]=100,
[CLS]=101, [SEP]=102, [MASK]=103); they go into the pack manifest, and the trainer and the
compatibility check take them from there. The pack keeps a copy of the tokenizer
(`<pack>/tokenizer/`, `save_pretrained` files) so the export writes it beside the models
whatever the source was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile

from common import storage
from common.special_tokens import SPECIAL_IDS, SpecialIds

log = logging.getLogger(__name__)

VOCAB_TXT = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
STANDARD_PIECES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


class PretrainedTokenizerError(ValueError):
    """The named tokenizer cannot be used for ELECTRA packing; the message says why."""


@dataclasses.dataclass(frozen=True)
class HFTokenizer:
    source: str  # what the user named: a directory, a vocab.txt, an s3:// prefix or a hub id
    backend_json: str  # the `tokenizers` graph as JSON: small, and what Beam workers rebuild it from
    files: dict[str, bytes]  # `save_pretrained` output, copied into the pack and on to the exported models
    vocab_size: int  # ids in use, added tokens included: the model's embedding table must cover them
    special_ids: SpecialIds
    sha256: str  # of backend_json: names the exact tokenization the pack was made with

    def ref(self, copy_uri: str) -> dict:
        """How a pack manifest names its tokenizer: where the copy is, what it came from, its hash."""
        return {"uri": copy_uri, "kind": "hf", "source": self.source, "sha256": self.sha256, "manifest_hash": None}


def _local_files(uri: str) -> bool:
    return storage.is_s3(uri) or os.path.exists(uri)


def _from_local(path: str):
    """An HF tokenizer object from a local directory or vocab.txt."""
    from transformers import AutoTokenizer, BertTokenizer

    if os.path.isfile(path):
        if os.path.basename(path) != VOCAB_TXT:
            raise PretrainedTokenizerError(f"{path}: expected a directory or a WordPiece {VOCAB_TXT}")
        directory, vocab = os.path.dirname(path) or ".", path
    else:
        directory, vocab = path, os.path.join(path, VOCAB_TXT)
    if os.path.isdir(directory) and any(os.path.isfile(os.path.join(directory, f))
                                        for f in (TOKENIZER_JSON, TOKENIZER_CONFIG)):
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if os.path.isfile(vocab):
        # A bare vocab.txt says nothing about casing; ELECTRA's and BERT-uncased's published vocabularies
        # are lowercase (do_lower_case=True), and a cased vocabulary comes with a tokenizer_config.json.
        log.info("%s: a bare WordPiece vocabulary, read as uncased (BERT/ELECTRA's published setting)", vocab)
        return BertTokenizer(vocab=vocab, do_lower_case=True)
    raise PretrainedTokenizerError(
        f"{path} has neither {TOKENIZER_JSON} nor {VOCAB_TXT}: not a tokenizer (pass a pipelines.train_tokenizer "
        "output, an HF tokenizer directory or a vocab.txt)")


def _special_ids(tok, where: str) -> SpecialIds:
    found, missing = {}, []
    vocab = tok.get_vocab()
    for name in SPECIAL_IDS:
        tid = getattr(tok, f"{name}_token_id", None)
        if tid is None:
            tid = vocab.get(STANDARD_PIECES[name])
        if tid is None:
            missing.append(f"{name}_token {STANDARD_PIECES[name]}")
        else:
            found[name] = int(tid)
    if missing:
        raise PretrainedTokenizerError(f"tokenizer {where} lacks {', '.join(missing)}: ELECTRA's examples need "
                                       "[PAD], [UNK], [CLS], [SEP] and [MASK]")
    try:
        return SpecialIds(**found)
    except ValueError as exc:
        raise PretrainedTokenizerError(f"tokenizer {where}: {exc}") from None


def load(uri: str, settings: storage.StorageSettings | None = None) -> HFTokenizer:
    """Read an HF tokenizer (directory, vocab.txt, s3:// prefix or hub id) for packing; raises with the reason."""
    if storage.is_s3(uri):
        with storage.local_copy(uri, settings) as local:
            return _finish(uri, _from_local(local))
    if _local_files(uri):
        return _finish(uri, _from_local(uri))
    from transformers import AutoTokenizer

    try:  # a hub id: only where the hub is reachable (the tests and the demo never come here)
        tok = AutoTokenizer.from_pretrained(uri)
    except (OSError, ValueError) as exc:
        raise PretrainedTokenizerError(f"{uri} is not a local path, an s3:// prefix or a reachable hub id: "
                                       f"{str(exc).splitlines()[0]}") from None
    return _finish(uri, tok)


def _finish(source: str, tok) -> HFTokenizer:
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise PretrainedTokenizerError(f"{source} loads as a slow (Python) tokenizer; the pack job needs a fast "
                                       "one (tokenizer.json or a WordPiece vocab.txt)")
    specials = _special_ids(tok, source)
    backend = json.loads(tok.backend_tokenizer.to_str())
    backend["truncation"] = backend["padding"] = None  # examples are cut by the packer, never by the tokenizer
    backend_json = json.dumps(backend, sort_keys=True, ensure_ascii=False)
    with tempfile.TemporaryDirectory(prefix="hf-tokenizer-") as tmp:
        tok.save_pretrained(tmp)
        files = {name: open(os.path.join(tmp, name), "rb").read() for name in sorted(os.listdir(tmp))
                 if os.path.isfile(os.path.join(tmp, name))}
    return HFTokenizer(source=source, backend_json=backend_json, files=files, vocab_size=len(tok),
                       special_ids=specials, sha256=storage.sha256_bytes(backend_json.encode()))
