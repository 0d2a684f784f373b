"""Train SentencePiece on a sample of cleaned documents and write the tokenizer output.

Normalisation: SentencePiece's `identity` rule with whitespace kept as is. The clean job
already normalised the text (pipelines.clean); a second NFKC pass here would fold
meaning-bearing characters ("x²" -> "x2", "ﬁ" -> "fi"), make decode(encode(x)) != x, and
need a precompiled charsmap that HF re-implements with known differences. Identity makes
the tokenizer lossless and its HF export exact. Spaces become "▁" with a dummy prefix,
as usual; characters outside the vocabulary fall back to their UTF-8 bytes.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile

from common import claims, manifest, storage
from common.special_tokens import SPECIAL_IDS, SPECIAL_PIECES
from pipelines.tokenizer import hf_export
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.load import SPM_NAME, check_special_tokens
from pipelines.tokenizer.quantize import quantize_scores
from pipelines.tokenizer.sample import iter_sample_sentences, select_ids

log = logging.getLogger(__name__)


def trainer_options(cfg: TokenizerConfig) -> dict:
    """SentencePieceTrainer keyword arguments; fixed ids for the specials, no BOS/EOS."""
    return dict(
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        byte_fallback=True,  # nothing that UTF-8 can express becomes [UNK]
        character_coverage=cfg.character_coverage,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        pad_id=SPECIAL_IDS["pad"], pad_piece=SPECIAL_PIECES["pad"],
        unk_id=SPECIAL_IDS["unk"], unk_piece=SPECIAL_PIECES["unk"],
        bos_id=-1, eos_id=-1,  # ELECTRA uses [CLS]/[SEP], added by the packer
        # Control symbols take the next ids in order (2, 3, 4) and are never produced from text.
        control_symbols=[SPECIAL_PIECES["cls"], SPECIAL_PIECES["sep"], SPECIAL_PIECES["mask"]],
        max_sentence_length=cfg.max_sentence_bytes,
        input_sentence_size=0,  # use exactly the sentences we stream (our sample is the bound)
        shuffle_input_sentence=False,
        num_threads=cfg.num_threads,
        minloglevel=2,
    )


def run(cfg: TokenizerConfig, settings: storage.StorageSettings | None = None, *, break_claim: bool = False) -> dict:
    """Train, export and publish; returns the tokenizer manifest (written last). ClaimHeld when another run
    writes the output (common/claims.py)."""
    storage.check_reachable(cfg.output, settings)
    with claims.hold(cfg.output, "train_tokenizer", settings, break_claim=break_claim) as claim:
        return _run(cfg, settings, claim)


def _run(cfg: TokenizerConfig, settings: storage.StorageSettings | None, claim: claims.Claim) -> dict:
    import sentencepiece as spm

    docs_manifest = manifest.read(cfg.input, kind="documents", settings=settings)
    ids, total, shards = select_ids(cfg.input, cfg.sample_docs, cfg.sample_seed, settings)
    if not ids:
        raise ValueError(f"{cfg.input} has no documents: nothing to train a tokenizer on")
    log.info("sampled %d of %d documents from %d shards", len(ids), total, len(shards))

    stats: dict = {}
    buf = io.BytesIO()
    # A generator, not a file or list: the trainer pulls sentences as it reads them.
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter_sample_sentences(shards, ids, stats, settings),
                                       model_writer=buf, **trainer_options(cfg))
    except RuntimeError as exc:  # e.g. "Vocabulary size too high": the sample is too small for vocab_size
        raise ValueError(f"SentencePiece training on {len(ids)} documents of {cfg.input} failed: {exc}") from None
    model = buf.getvalue()
    if cfg.model_type == "unigram":
        model = quantize_scores(model)  # exact spm/HF parity, see quantize.py
    sp = spm.SentencePieceProcessor(model_proto=model)
    check_special_tokens(sp, "just trained")

    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        with open(os.path.join(tmp, SPM_NAME), "wb") as f:
            f.write(model)
        names = [SPM_NAME, *hf_export.write(model, cfg.model_type, tmp,
                                            split_special_tokens=cfg.split_special_tokens)]
        files = []
        for name in names:
            data = open(os.path.join(tmp, name), "rb").read()
            storage.write_bytes(storage.join(cfg.output, name), data, settings)
            files.append({"path": name, "bytes": len(data), "sha256": storage.sha256_bytes(data)})

    m = manifest.build(
        "tokenizer",
        inputs=[manifest.input_ref(cfg.input, docs_manifest)],
        config=cfg,
        shards=files,
        counters={"documents_total": total, "documents_sampled": stats.get("docs", 0), "shards_read": len(shards),
                  "sentences": stats.get("sentences", 0), "chars": stats.get("chars", 0)},
        vocab_size=sp.get_piece_size(),
        special_ids=dict(SPECIAL_IDS),
        spm_sha256=storage.sha256_bytes(model),
        model_type=cfg.model_type,
        normalization="identity (whitespace kept, byte fallback)",
    )
    claim.check()
    manifest.write(cfg.output, m, settings)
    return m
