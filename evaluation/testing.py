"""A tiny, randomly initialised ELECTRA model in the exporter's layout, for tests and demos.

Nothing is downloaded: a WordPiece vocabulary is trained on the given text with `tokenizers`
and an ElectraForPreTraining of a few thousand parameters is saved beside it, with the
special-token ids the whole project uses (common/special_tokens.py).
"""

from __future__ import annotations

import os

from common.special_tokens import FIXED, PIECES_BY_ID, SPECIAL_PIECES, template_processor


def tiny_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL_PIECES["unk"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=PIECES_BY_ID))
    tok.post_processor = template_processor()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{n}_token": p for n, p in SPECIAL_PIECES.items()},
                                   model_max_length=512,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def make_tiny_model(out_dir: str, texts: list[str], *, step: int | None = 1000, name: str = "tiny-run",
                    size: str = "small", hidden: int = 32, layers: int = 2) -> str:
    """Write `<out_dir>/discriminator/` (+ tokenizer) and a model manifest; returns out_dir."""
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    from common import manifest

    torch.manual_seed(0)
    tok = tiny_tokenizer(texts)
    cfg = ElectraConfig(vocab_size=len(tok), embedding_size=16, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                        pad_token_id=FIXED.pad)
    disc = os.path.join(out_dir, "discriminator")
    ElectraForPreTraining(cfg).save_pretrained(disc)
    tok.save_pretrained(disc)
    if step is not None:
        m = manifest.build("model", inputs=[], config={"hidden_size": hidden, "layers": layers},
                           step=step, size=size, name=name)
        manifest.write(out_dir, m)
    return out_dir


def corpus_from_mirror(data_dir: str) -> list[str]:
    """Every line of the GLUE TSVs and every context/question of the SQuAD files under a local mirror."""
    import glob
    import json

    texts: list[str] = []
    for f in sorted(glob.glob(os.path.join(data_dir, "**", "*.tsv"), recursive=True)):
        with open(f, encoding="utf-8") as fh:
            texts += fh.read().split("\n")
    for f in sorted(glob.glob(os.path.join(data_dir, "**", "*.json"), recursive=True)):
        with open(f, encoding="utf-8") as fh:
            for article in json.load(fh)["data"]:
                for p in article["paragraphs"]:
                    texts += [p["context"]] + [q["question"] for q in p["qas"]]
    return texts
