"""Export a trained spm.model as a Hugging Face fast tokenizer with identical ids.

The `tokenizers` graph is built from the model proto, not by transformers' generic
converter, because exact id parity needs four details the generic path does not give:

* Normalisation is SentencePiece's `identity` rule, so there is no precompiled charsmap
  to re-implement; spaces become "▁" and one "▁" is prepended unconditionally (spm's
  dummy prefix is added even when the text already starts with a space, which the
  Metaspace pre-tokenizer's `prepend_scheme="always"` does not do).
* Pieces SentencePiece never matches in text (control symbols, [UNK], byte pieces
  "<0xAB>") get a score below any alternative path in the Unigram lattice, so a literal
  "<0x41>" or "[MASK]" in text is segmented as characters, as spm does. Such scores only
  shift the unknown-character penalty by a constant, which changes no argmax.
* BPE merges are derived from the vocabulary over text pieces only, ranked by the
  merged piece's id (= score order), as SentencePiece's BPE applies them.
* `split_special_tokens=True` in tokenizer_config.json: "[SEP]" typed in text stays text.
"""

from __future__ import annotations

import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from common.special_tokens import SPECIAL_IDS, SPECIAL_PIECES, template_processor

SPACE = "\u2581"  # SentencePiece's visible space "▁"
# Lossless only under the identity rule with whitespace kept: a probe of everything another
# normalisation would change (double spaces, ligature, fullwidth, combining accent, tab).
_PROBE = " a  b\tc \ufb01 \uff21 e\u0301 \u2162 "


def _processor(model_bytes: bytes):
    # The processor API rather than the model proto: protobuf's generated sentencepiece_model_pb2
    # is pinned to a protobuf runtime newer than this project's, and the API tells us all we need.
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model_bytes)


def _text_piece(sp, i: int) -> bool:
    return not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))


def _unigram(sp) -> models.Model:
    n = sp.get_piece_size()
    floor = min(sp.get_score(i) for i in range(n) if _text_piece(sp, i)) - 10.0  # spm's unknown penalty
    vocab = []
    for i in range(n):
        piece = sp.id_to_piece(i)
        if _text_piece(sp, i):
            vocab.append((piece, sp.get_score(i)))
        else:
            # Below `len(piece)` single characters at their worst: never chosen over the text itself.
            vocab.append((piece, floor * (len(piece) + 1) - 100.0))
    return models.Unigram(vocab, unk_id=SPECIAL_IDS["unk"], byte_fallback=True)


def bpe_merges(sp) -> list[tuple[str, str]]:
    """Merges that rebuild each text piece from two text pieces, in SentencePiece's priority order."""
    ids = {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if _text_piece(sp, i)}
    merges = []
    for piece, pid in ids.items():
        local = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in ids and piece[i:] in ids]
        merges.extend((pid, ids[a], ids[b], a, b) for a, b in local)
    merges.sort()  # a higher-scored (lower-id) result merges first; ties broken by the parts' ids
    return [(a, b) for _, _, _, a, b in merges]


def _bpe(sp) -> models.Model:
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    return models.BPE(vocab, bpe_merges(sp), unk_token=SPECIAL_PIECES["unk"], byte_fallback=True, fuse_unk=False)


def build(model_bytes: bytes, model_type: str) -> Tokenizer:
    sp = _processor(model_bytes)
    if sp.decode(sp.encode(_PROBE)) != _PROBE:
        raise ValueError("hf_export expects an spm.model trained with normalization_rule_name=identity and "
                         "remove_extra_whitespaces=false (see pipelines.tokenizer.train); this one normalises text")
    tok = Tokenizer(_unigram(sp) if model_type == "unigram" else _bpe(sp))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    # Pieces never span a "▁" boundary (split_by_whitespace), so per-word encoding equals spm's.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(SPACE), behavior="merged_with_next")
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    tok.add_special_tokens([AddedToken(SPECIAL_PIECES[n], special=True, normalized=False)
                            for n in ("pad", "unk", "cls", "sep", "mask")])
    tok.post_processor = template_processor()  # token types as in the packed examples
    return tok


def write(model_bytes: bytes, model_type: str, out_dir: str, *, max_length: int = 512, split_special_tokens: bool = True) -> list[str]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into a local directory."""
    tok = build(model_bytes, model_type)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    special_map = {f"{n}_token": SPECIAL_PIECES[n] for n in ("pad", "unk", "cls", "sep", "mask")}
    config = {
        # The generic fast class: no slow (Python) tokenizer or spm file is needed to load it.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "padding_side": "right",
        "split_special_tokens": split_special_tokens,
        "clean_up_tokenization_spaces": False,  # would rewrite " ." to "." on decode
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **special_map,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(special_map, f, indent=1, sort_keys=True)
        f.write("\n")
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
