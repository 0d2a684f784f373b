"""The pack job: every token kept in order, ELECTRA example structure, padding, determinism, bad input."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from common import manifest, packformat, storage
from common.special_tokens import SPECIAL_IDS
from pipelines import documents
from pipelines.packing import prose
from pipelines.packing.config import PackConfig
from pipelines.packing.examples import KnownSentences, pack, split_point
from pipelines.packing.run import EmptyInputError
from pipelines.packing.run import run as run_pack
from pipelines.packing.transforms import is_blank, units_of
from pipelines.tokenizer import TokenizerError, load_spm
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.sentences import split_sentences
from pipelines.packing.segment import WindowSegmenter, stream_text, surface_bytes
from pipelines.tokenizer.train import run as train

BEAM = ["--direct_num_workers=2"]
SPECIAL = set(SPECIAL_IDS.values())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    docs = prose.documents()
    prose.write_documents(str(root / "docs"), docs, num_shards=3)
    train(TokenizerConfig(input=str(root / "docs"), output=str(root / "tok"), vocab_size=8000))
    return {"root": root, "docs": str(root / "docs"), "tok": str(root / "tok"), "documents": docs}


@pytest.fixture(scope="module")
def pack512(corpus):
    out = str(corpus["root"] / "pack512")
    m = run_pack(PackConfig(input=corpus["docs"], tokenizer=corpus["tok"], output=out, max_seq_length=512), BEAM)
    return out, m


def all_rows(output: str) -> list[np.ndarray]:
    r = packformat.PackReader(output)
    return [r.read(i, 0, s.examples) for i, s in enumerate(r.shards)]


def expected_stream(docs_uri: str, sp) -> list[int]:
    """The tokens of every document, in input order: what the shards hold, in shard order."""
    return [t for d in documents.iter_documents(docs_uri, ["text"]) for t in sp.encode(d["text"])]


def text_tokens(rows: np.ndarray) -> list[int]:
    return rows[~np.isin(rows, list(SPECIAL))].tolist()  # row-major = example order


def check_structure(rows: np.ndarray, seq_len: int) -> None:
    for row in rows:
        assert row[0] == SPECIAL_IDS["cls"]
        body = row[row != SPECIAL_IDS["pad"]]
        assert len(body) == (row != SPECIAL_IDS["pad"]).sum() and (row[len(body):] == 0).all(), "padding is a suffix"
        seps = np.flatnonzero(body == SPECIAL_IDS["sep"])
        assert len(seps) in (1, 2) and seps[-1] == len(body) - 1
        assert not np.isin(body[1:], [0, 1, 2, 4]).any(), "no [PAD]/[UNK]/[CLS]/[MASK] inside an example"
        types = packformat.token_type_ids(row[None, :], SPECIAL_IDS["sep"])[0]
        assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:len(body)] == 1).all()


def test_every_token_once_in_order_and_text_round_trips(corpus, pack512):
    out, m = pack512
    sp = load_spm(corpus["tok"]).processor()
    rows = np.concatenate(all_rows(out))
    check_structure(rows, 512)
    want = expected_stream(corpus["docs"], sp)
    assert text_tokens(rows) == want
    c = m["counters"]
    assert c["tokens_truncated"] == 0 and c["tokens_in"] == c["tokens_packed"] == len(want)
    assert c["docs"] == c["docs_read"] == len(corpus["documents"]) and c["docs_empty"] == 0
    assert [s["tokens"] for s in m["shards"]] == [len(text_tokens(r)) for r in all_rows(out)]
    # Text round trip: exact, since the tokenizer is lossless (identity normalisation, byte fallback).
    texts = [d["text"] for d in documents.iter_documents(corpus["docs"], ["text"])]
    assert sp.decode(text_tokens(rows)) == " ".join(texts)


def test_padding_under_2_percent_at_512(pack512):
    out, m = pack512
    rows = np.concatenate(all_rows(out))
    measured = float((rows == 0).mean())
    assert measured == pytest.approx(m["padding_fraction"], abs=1e-6)
    assert m["padding_fraction"] < 0.02
    c = m["counters"]
    assert 0.05 < c["examples_single_segment"] / c["examples"] < 0.15  # official 10%
    assert 0.02 < c["examples_short"] / c["examples"] < 0.09  # official 5%


def test_manifest_fields(corpus, pack512):
    out, m = pack512
    assert m["kind"] == "pack" and m["format"] == packformat.FORMAT and m["dtype"] == "uint16"
    assert m["seq_len"] == 512 and m["seed"] == 0 and m["vocab_size"] == 8000
    assert m["special_ids"] == SPECIAL_IDS
    tok = manifest.read(corpus["tok"])
    assert m["tokenizer"] == {"uri": corpus["tok"], "kind": "sentencepiece", "manifest_hash": tok["manifest_hash"],
                              "spm_sha256": tok["spm_sha256"]}
    assert [i["manifest_hash"] for i in m["inputs"]] == [manifest.read(corpus["docs"])["manifest_hash"],
                                                         tok["manifest_hash"]]
    for s in m["shards"]:
        data = storage.read_bytes(storage.join(out, s["path"]))
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["examples"] * 512 * 2
    assert not storage.list_files(storage.join(out, "_work"))


def test_deterministic_per_seed(corpus, tmp_path):
    def shards(name, seed, beam_args=BEAM):
        out = str(tmp_path / name)
        m = run_pack(PackConfig(input=corpus["docs"], tokenizer=corpus["tok"], output=out, max_seq_length=128,
                                seed=seed, shard_mb=0.25, unit_mb=0.1), beam_args)
        return [storage.read_bytes(storage.join(out, s["path"])) for s in m["shards"]], m

    a, ma = shards("a", 7)
    # Another runner mode and worker count: bundling and ordering must not matter.
    b, mb = shards("b", 7, ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    c, _ = shards("c", 8)
    assert a == b and a != c and len(a) > 2
    assert ma["shards"] == mb["shards"] and ma["counters"] == mb["counters"]
    check_structure(np.frombuffer(a[0], "<u2").reshape(-1, 128), 128)


def test_long_document_and_long_sentence_are_split_not_dropped(corpus, tmp_path):
    words = " ".join(d["text"] for d in corpus["documents"][:5]).split()
    long_doc = {"id": "long", "text": " ".join(words[:6000])}  # one "sentence" (no breaks) of ~8k tokens
    short = {"id": "short", "text": "A short document. It has two sentences."}
    blank = {"id": "blank", "text": " \n "}  # sits between them: must not shift sentence offsets
    prose.write_documents(str(tmp_path / "docs"), [long_doc, blank, short], num_shards=1)
    out = str(tmp_path / "pack")
    m = run_pack(PackConfig(input=str(tmp_path / "docs"), tokenizer=corpus["tok"], output=out, max_seq_length=128,
                            cross_document=False), BEAM)
    sp = load_spm(corpus["tok"]).processor()
    rows = all_rows(out)[0]
    check_structure(rows, 128)
    got = rows[~np.isin(rows, list(SPECIAL))].tolist()
    want = [t for d in (long_doc, short) for t in sp.encode(d["text"])]
    assert got == want
    assert m["counters"]["sentences_split"] > 10 and m["counters"]["tokens_truncated"] == 0
    assert m["counters"]["examples_cross_document"] == 0  # official-style flush at document end
    assert m["counters"]["docs_empty"] == 1
    assert rows.shape[0] > len(want) // 128


@pytest.mark.parametrize("sizes,unit", [([5], 1), ([5, 5, 5], 10), ([5, 5, 5], 15), ([1, 30, 1, 1], 8), ([], 8),
                                        ([2, 9, 2], 4)])
def test_units_take_every_row_once(sizes, unit):
    groups = [(n, 10 * n) for n in sizes]  # 10 rows per byte of text
    units = units_of(3, "documents/x.parquet", groups, unit)
    taken = [(g, r) for u in units for g in range(u.lo, u.hi)
             for r in (range(*u.rows) if u.rows else range(groups[g][1]))]
    assert taken == [(g, r) for g, (_, rows) in enumerate(groups) for r in range(rows)]
    for u in units:  # a unit is whole row groups that fit, or a run of rows of one that does not
        assert u.hi > u.lo and (sum(n for n, _ in groups[u.lo:u.hi]) <= unit or u.rows or u.hi - u.lo == 1)
        if u.rows:
            assert u.hi == u.lo + 1 and groups[u.lo][0] > unit
            assert (u.rows[1] - u.rows[0]) * groups[u.lo][0] / groups[u.lo][1] <= unit + 1


def test_shards_follow_the_size_target_with_exact_example_counts(corpus, tmp_path):
    def shards(name, beam_args):
        out = str(tmp_path / name)
        m = run_pack(PackConfig(input=corpus["docs"], tokenizer=corpus["tok"], output=out, max_seq_length=128,
                                shard_mb=0.1, unit_mb=0.05), beam_args)
        return out, m, [storage.read_bytes(storage.join(out, s["path"])) for s in m["shards"]]

    out, m, a = shards("a", BEAM)
    _, _, b = shards("b", ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    per_shard = int(0.1 * 2**20) // (128 * 2)
    assert a == b and len(a) > 3
    assert [s["examples"] for s in m["shards"][:-1]] == [per_shard] * (len(a) - 1)
    assert 0 < m["shards"][-1]["examples"] <= per_shard
    sp = load_spm(corpus["tok"]).processor()
    assert text_tokens(np.concatenate(all_rows(out))) == expected_stream(corpus["docs"], sp)
    assert m["counters"]["docs"] == len(corpus["documents"])


def test_read_texts_is_the_text_column_as_utf8(tmp_path):
    texts = ["plain", "", "é and 日本語", "\u3000", " \n "]
    prose.write_documents(str(tmp_path / "docs"), [{"id": str(i), "text": t} for i, t in enumerate(texts)],
                          num_shards=2)
    for uri in documents.shard_uris(str(tmp_path / "docs")):
        assert documents.read_texts(uri) == [r["text"].encode() for r in documents.iter_shard(uri, ["text"])]


def test_is_blank_matches_str_isspace():
    for text in ["", " ", " \n\t\r\x0b\x0c", "a", " a", "\x1c\x1f", "\u3000", "\u3000x", "é", "\xa0 ", "\x85", " \x7f"]:
        assert is_blank(text.encode()) == text.isspace(), repr(text)


@pytest.mark.parametrize("texts", [[], ["", "   \n  "]], ids=["no-documents", "blank-documents"])
def test_empty_input_fails_without_manifest(corpus, tmp_path, texts):
    prose.write_documents(str(tmp_path / "docs"), [{"id": str(i), "text": t} for i, t in enumerate(texts)],
                          num_shards=1)
    out = str(tmp_path / "pack")
    with pytest.raises(EmptyInputError, match="no text to pack|nothing to pack"):
        run_pack(PackConfig(input=str(tmp_path / "docs"), tokenizer=corpus["tok"], output=out), BEAM)
    assert not manifest.exists(out)


def test_tokenizer_with_wrong_hash_is_rejected(corpus, tmp_path):
    bad = str(tmp_path / "tok")
    storage.download_dir(corpus["tok"], bad)
    data = bytearray(storage.read_bytes(storage.join(bad, "spm.model")))
    data[100] ^= 0xFF
    storage.write_bytes(storage.join(bad, "spm.model"), bytes(data))
    out = str(tmp_path / "pack")
    with pytest.raises(TokenizerError, match="sha256"):
        run_pack(PackConfig(input=corpus["docs"], tokenizer=bad, output=out), BEAM)
    assert not manifest.exists(out)


class AllStarts:
    """A SentenceIndex that answers every query with all sentence starts, wherever they are."""

    def __init__(self, starts):
        self.all = np.asarray(starts)

    def starts(self, lo, hi):
        return self.all


def test_pack_function_invariants_on_random_streams():
    """The packer alone, many shapes: all tokens in order, rows full except at the very end."""
    for trial in range(30):
        r = random.Random(trial)
        sent_lens = [r.choice([1, 3, 20, 60, 300]) for _ in range(r.randint(1, 80))]
        tokens = np.array([r.randint(5, 999) for _ in range(sum(sent_lens))], dtype="<u2")
        sentence_ends = np.cumsum(sent_lens)
        doc_ends = np.unique(np.append(sentence_ends[r.sample(range(len(sent_lens)), min(3, len(sent_lens)))],
                                       sentence_ends[-1]))
        cfg = PackConfig(input="x", tokenizer="x", output="x", max_seq_length=r.choice([8, 32, 128]),
                         cross_document=bool(trial % 2))
        rows, st = pack(tokens, doc_ends, KnownSentences(sentence_ends), cfg, random.Random(trial), SPECIAL_IDS,
                        np.dtype("<u2"))
        assert rows[~np.isin(rows, list(SPECIAL))].tolist() == tokens.tolist()
        assert st.tokens == len(tokens) and st.padding == int((rows == 0).sum())
        check_structure(rows, cfg.max_seq_length)
        # The windowed search finds the split points knowing every sentence start would give.
        rows_all, st_all = pack(tokens, doc_ends, AllStarts(sentence_ends), cfg, random.Random(trial), SPECIAL_IDS,
                                np.dtype("<u2"))
        assert np.array_equal(rows, rows_all) and st == st_all


def _official_split(cuts: list[int], first_target: int, coin: bool) -> int:
    """The A/B rule over all of an example's sentence cuts [start, *inner starts, end], as packed
    before windowed segmentation: the reference that split_point must agree with."""
    start, a_end = cuts[0], cuts[0]
    for c0, c1 in zip(cuts[:-1], cuts[1:]):
        a_len, n = a_end - start, c1 - c0
        if a_len == 0 or a_len + n < first_target or (a_len < first_target and coin):
            a_end = c1
        else:
            break
    if a_end == cuts[-1]:
        a_end = cuts[-2] if len(cuts) > 2 else start + max(1, min(first_target, cuts[-1] - start - 1))
    return a_end


def test_split_point_needs_only_the_starts_around_the_middle():
    r = random.Random(0)
    for _ in range(5000):
        start = r.randint(0, 50)
        end = start + r.randint(2, 120)
        inner = sorted(r.sample(range(start + 1, end), r.randint(0, min(8, end - start - 1))))
        middle = start + r.randint(1, 80)
        coin = r.random() < 0.5
        bp = max((b for b in inner if b < middle), default=-1)
        bn = min((b for b in inner if b >= middle), default=-1)
        assert split_point(start, end, middle, True, coin, bp, bn) == \
            _official_split([start, *inner, end], middle - start, coin)


def _stream(corpus, texts):
    sp = load_spm(corpus["tok"]).processor()
    enc = [sp.encode(t) for t in texts]
    tokens = np.array([t for e in enc for t in e], dtype=np.int64)
    text, starts = stream_text([t.encode() for t in texts], [len(e) for e in enc], tokens, surface_bytes(sp))
    return sp, enc, tokens, WindowSegmenter(text, starts)


def test_sentence_starts_map_to_token_boundaries(corpus):
    """Bling Fire's byte offsets land on the token where each sentence starts."""
    sp = load_spm(corpus["tok"]).processor()
    surface = surface_bytes(sp)
    text = "Dr. Smith paid $3.50 for it.  Then he left!\nA heading\nThe end (?P<x>) here. 東京。"
    ids = np.array(sp.encode(text))
    assert int(surface[ids].sum()) == len((" " + text).encode())  # pieces cover " " + text exactly
    odd = "A literal \u2581 sign. Second."  # 3 bytes in text, 1 in the pieces: no inner boundaries
    texts = ["First doc, no full stop", "", odd, text, "Last one. Two sentences."]  # "" = a blank document
    _, enc, tokens, seg = _stream(corpus, texts)
    offsets = np.cumsum([0, *map(len, enc)])
    found = seg.starts(np.array([0]), np.array([len(tokens)])).tolist()
    per_doc = [[b - offsets[i] for b in found if offsets[i] < b < offsets[i + 1]] for i in range(len(texts))]
    assert found[0] == 0 and [per_doc[i] for i in (0, 1, 2, 4)] == [[], [], [], [len(sp.encode("Last one."))]]
    assert {0, len(enc[0]), offsets[2], offsets[3], offsets[4]} <= set(found), "every document starts a sentence"
    ends = per_doc[3] + [len(enc[3])]
    pieces = [sp.decode(ids[a:b].tolist()).strip() for a, b in zip([0] + ends[:-1], ends)]
    pieces = [p for p in pieces if p]  # a boundary may sit on a blank line
    assert pieces == split_sentences(text) == ["Dr. Smith paid $3.50 for it.", "Then he left!", "A heading",
                                              "The end (?P<x>) here.", "東京。"]
    for doc in corpus["documents"][:50]:
        ids = np.array(sp.encode(doc["text"]))
        assert int(surface[ids].sum()) == len((" " + doc["text"]).encode())


def test_windows_find_the_whole_texts_sentence_starts(corpus):
    """Segmenting small windows (with their context) gives the boundaries segmenting everything gives."""
    _, _, tokens, seg = _stream(corpus, [d["text"] for d in corpus["documents"]])
    whole = seg.starts(np.array([0]), np.array([len(tokens)]))
    lo = np.arange(100, len(tokens) - 100, 150)
    hi = lo + np.random.default_rng(0).integers(1, 50, len(lo))
    windowed = seg.starts(lo, hi)
    k = np.searchsorted(lo, whole, "right") - 1  # the window each whole-text start would fall in
    inside = whole[(k >= 0) & (whole < hi[np.maximum(k, 0)])]
    assert len(inside) > 1000
    assert len(np.setxor1d(inside, windowed)) <= len(inside) // 1000


def test_pair_examples_split_at_a_sentence_boundary(corpus, pack512):
    """A/B is cut where the whole text has a sentence start, whenever the example holds one."""
    out, m = pack512
    texts = [d["text"] for d in documents.iter_documents(corpus["docs"], ["text"])]
    _, _, tokens, seg = _stream(corpus, texts)
    starts = set(seg.starts(np.array([0]), np.array([len(tokens)])).tolist())
    rows = np.concatenate(all_rows(out))
    pos = at_boundary = with_boundary = 0
    for row in rows:
        seps = np.flatnonzero(row == SPECIAL_IDS["sep"])
        n_a = seps[0] - 1
        n = n_a + (seps[1] - seps[0] - 1 if len(seps) == 2 else 0)
        if len(seps) == 2 and any(b in starts for b in range(pos + 1, pos + n)):
            with_boundary += 1
            at_boundary += (pos + n_a) in starts
        pos += n
    assert pos == len(tokens) and with_boundary > 0.8 * len(rows)
    assert at_boundary >= 0.995 * with_boundary
