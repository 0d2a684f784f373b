"""Tokenizer training and HF export: fixed special ids, exact spm/HF parity, determinism, bad input."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import sentencepiece as spm

from common import manifest, storage
from pipelines.packing import prose
from pipelines.tokenizer import TokenizerError, load_hf, load_spm
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.train import run as train
from pipelines.tokenizer.train import trainer_options

VOCAB = 8000  # small corpus (~2 MB of prose): a 32k vocabulary would not fill


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("docs"))
    prose.write_documents(out, prose.documents(), num_shards=3)
    return out


@pytest.fixture(scope="module")
def unigram(docs_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tok-unigram"))
    train(TokenizerConfig(input=docs_dir, output=out, vocab_size=VOCAB))
    return out


@pytest.fixture(scope="module")
def lines10k():
    lines = prose.lines(10_000)
    assert len(lines) == 10_000
    return lines


def test_layout_special_ids_and_manifest(unigram, docs_dir):
    m = manifest.read(unigram, kind="tokenizer")
    assert sorted(storage.list_files(unigram)) == sorted(
        storage.join(unigram, n) for n in ("spm.model", "tokenizer.json", "tokenizer_config.json",
                                          "special_tokens_map.json", "manifest.json"))
    assert m["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert m["vocab_size"] == VOCAB and m["model_type"] == "unigram"
    assert m["inputs"][0]["manifest_hash"] == manifest.read(docs_dir)["manifest_hash"]
    assert m["spm_sha256"] == storage.sha256_uri(storage.join(unigram, "spm.model"))
    sp = load_spm(unigram).processor()
    assert [sp.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert sp.encode("[CLS] [MASK]", out_type=int)[:1] != [2]  # specials are never produced from text
    tok = load_hf(unigram)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 1, 2, 3, 4)


def test_byte_fallback_never_unk_and_lossless(unigram, lines10k):
    sp = load_spm(unigram).processor()
    ids = sp.encode(lines10k)
    assert not any(1 in row for row in ids), "byte fallback must leave nothing to [UNK]"
    # identity normalisation: decode(encode(x)) == x exactly, emoji and CJK included
    assert [sp.decode(row) for row in ids] == lines10k


def test_hf_export_equals_spm_on_10k_lines(unigram, lines10k):
    sp = load_spm(unigram).processor()
    tok = load_hf(unigram)
    edge = ["", " ", "  two leading", "trailing  ", "<0x41> [MASK] [SEP] [UNK] ▁x", "\t\n", "400000003 ======"]
    lines = lines10k + edge
    hf = tok(lines, add_special_tokens=False)["input_ids"]
    ref = sp.encode(lines)
    bad = [(line, a, b) for line, a, b in zip(lines, ref, hf) if a != b]
    assert not bad, f"{len(bad)} lines differ, first: {bad[0][0]!r}"
    assert any(any(5 <= t < 261 for t in row) for row in ref), "byte fallback was not exercised"
    assert tok.decode(hf[len(lines10k) - 1]) == lines[len(lines10k) - 1]
    pair = tok("first segment", "second one")
    assert pair["input_ids"][0] == 2 and pair["input_ids"].count(3) == 2
    assert pair["token_type_ids"] == [0] * (pair["input_ids"].index(3) + 1) + [1] * (
        len(pair["input_ids"]) - pair["input_ids"].index(3) - 1)


def test_bpe_export_equals_spm(docs_dir, tmp_path, lines10k):
    out = str(tmp_path / "tok-bpe")
    m = train(TokenizerConfig(input=docs_dir, output=out, vocab_size=4000, model_type="bpe"))
    assert m["model_type"] == "bpe"
    sp, tok = load_spm(out).processor(), load_hf(out)
    lines = lines10k[:3000]
    assert tok(lines, add_special_tokens=False)["input_ids"] == sp.encode(lines)


def test_deterministic(docs_dir, unigram, tmp_path):
    again = str(tmp_path / "again")
    train(TokenizerConfig(input=docs_dir, output=again, vocab_size=VOCAB))
    for name in ("spm.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "manifest.json"):
        a = json.loads(storage.read_text(storage.join(unigram, name))) if name == "manifest.json" else None
        if a is not None:
            b = json.loads(storage.read_text(storage.join(again, name)))
            a.pop("config"), b.pop("config")  # output paths differ
            a.pop("manifest_hash"), b.pop("manifest_hash"), a.pop("config_hash"), b.pop("config_hash")
            assert a == b
        else:
            assert storage.read_bytes(storage.join(unigram, name)) == storage.read_bytes(storage.join(again, name)), name


def test_sample_is_bounded_and_deterministic(docs_dir, tmp_path):
    from pipelines.tokenizer.sample import select_ids

    ids, total, shards = select_ids(docs_dir, 50, seed=0)
    per_shard = [s["records"] for s in manifest.read(docs_dir)["shards"]]
    assert len(ids) == 50 and total == len(prose.documents()) == sum(per_shard)
    assert len(shards) == 1, "50 documents need only one of the three shards: the sample reads no more"
    assert select_ids(docs_dir, 50, seed=0)[0] == ids != select_ids(docs_dir, 50, seed=1)[0]
    assert len(select_ids(docs_dir, per_shard[0] + per_shard[1] + 1, seed=0)[2]) == 3
    m = train(TokenizerConfig(input=docs_dir, output=str(tmp_path / "t"), vocab_size=1000, sample_docs=50))
    assert m["counters"]["documents_sampled"] == 50 and m["counters"]["shards_read"] == 1


def test_tampered_model_is_rejected(unigram, tmp_path):
    bad = str(tmp_path / "bad")
    storage.download_dir(unigram, bad)
    data = bytearray(storage.read_bytes(storage.join(bad, "spm.model")))
    data[-1] ^= 1
    storage.write_bytes(storage.join(bad, "spm.model"), bytes(data))
    with pytest.raises(TokenizerError, match="sha256"):
        load_spm(bad)


def test_missing_special_tokens_is_rejected(docs_dir, tmp_path):
    cfg = TokenizerConfig(input=docs_dir, output=str(tmp_path), vocab_size=1000)
    opts = {**trainer_options(cfg), "control_symbols": []}  # no [CLS]/[SEP]/[MASK]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(prose.lines(3000)), model_writer=buf, **opts)
    out = str(tmp_path / "nospecial")
    storage.write_bytes(storage.join(out, "spm.model"), buf.getvalue())
    manifest.write(out, manifest.build("tokenizer", inputs=[], config=dataclasses.asdict(cfg),
                                       spm_sha256=storage.sha256_bytes(buf.getvalue()), vocab_size=1000))
    with pytest.raises(TokenizerError, match=r"\[CLS\]"):
        load_spm(out)
