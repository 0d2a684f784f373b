"""The clean job's rule functions and readers, without Beam: fast and exhaustive."""

from __future__ import annotations

import dataclasses
import gzip

import pytest

from common import configs
from pipelines.cleaning import c4, gopher, langid, minhash, readers
from pipelines.cleaning import records as R
from pipelines.cleaning.config import (C4Config, CleanConfig, DedupConfig, GopherQualityConfig,
                                       GopherRepetitionConfig, NormalizeConfig, ReaderConfig, build)
from pipelines.cleaning.normalize import normalize
from clean_inputs import prose, warc_response, write_jsonl

RC = ReaderConfig()


def test_normalize_nfc_controls_whitespace():
    text = "Cafe\u0301\x00 \t  bar\u200b\r\n\n\n\n  next\u00a0line  "
    assert normalize(text, NormalizeConfig()) == "Caf\u00e9 bar\n\nnext line"
    assert normalize("e\u0301", dataclasses.replace(NormalizeConfig(), nfc=False)) == "e\u0301"


def test_c4_line_and_document_rules():
    good = prose(1)
    out, reason = c4.clean(good + "\nMenu\nPlease enable JavaScript to view this page.\nRead more...", C4Config())
    assert reason is None and "Menu" not in out and "JavaScript" not in out and "Read more" not in out
    assert c4.clean(good + "\nLorem ipsum dolor sit amet, consectetur.", C4Config()) == (None, c4.LOREM_IPSUM)
    assert c4.clean(good + "\nUse the {} placeholder in a format string.", C4Config()) == (None, c4.CURLY_BRACKET)
    assert c4.clean("One sentence only is here.\nAnd a second one.", C4Config()) == (None, c4.TOO_FEW_SENTENCES)
    relaxed = dataclasses.replace(C4Config(), min_sentences=1)
    assert c4.clean("One sentence only is here.", relaxed)[1] is None


def test_gopher_quality_rules():
    cfg = GopherQualityConfig()
    assert gopher.quality(prose(2), cfg) is None
    assert gopher.quality("Too short a text.", cfg) == "gopher_word_count"
    assert gopher.quality(" ".join(["a"] * 60), cfg) == "gopher_mean_word_length"
    assert gopher.quality(prose(2) + " #" * 40, cfg) == "gopher_symbol_ratio"
    bullets = "\n".join(f"- the careful engineer repaired bridge number {i} with the painter" for i in range(20))
    assert gopher.quality(bullets, cfg) == "gopher_bullet_lines"
    assert gopher.quality(" ".join(["12345", "67890"] * 40), cfg) == "gopher_alpha_words"
    no_stop = " ".join(["river", "garden", "painter", "engineer"] * 20)
    assert gopher.quality(no_stop, cfg) == "gopher_stop_words"


def test_gopher_repetition_rules():
    cfg = GopherRepetitionConfig()
    assert gopher.repetition(prose(3), cfg) is None
    line = "The same line of text repeats on this page again and again."
    assert gopher.repetition("\n".join([line] * 10 + [prose(3)]), cfg) == "gopher_dup_line_frac"
    words = prose(4).split()
    spam = " ".join(words[:30] + ["buy cheap watches"] * 30 + words[30:])
    assert gopher.repetition(spam, cfg).startswith("gopher_top_")
    loose = dataclasses.replace(cfg, max_top_ngram_char_frac=(1.0, 1.0, 1.0))
    assert gopher.repetition(spam, loose).startswith("gopher_dup_")


def test_langid_keeps_configured_languages():
    lang, score, reason = langid.check(prose(5), dataclasses.replace(CleanConfig().langid))
    assert (lang, reason) == ("en", None) and 0 < score <= 1
    german = ("Der schnelle braune Fuchs springt über den faulen Hund. Die Stadt liegt am Fluss, und "
              "die Menschen gehen jeden Morgen zur Arbeit in die Fabrik oder in das Büro.") * 3
    assert langid.check(german, CleanConfig().langid)[2] == langid.NOT_KEPT
    de_cfg = dataclasses.replace(CleanConfig().langid, languages=("de",))
    assert langid.check(german, de_cfg)[:3:2] == ("de", None)
    strict = dataclasses.replace(CleanConfig().langid, min_score=0.99)
    assert langid.check(prose(5), strict)[2] == langid.LOW_SCORE


def test_minhash_lsh_finds_near_duplicates_only():
    h = minhash.MinHasher(DedupConfig())
    a, b = prose(10), prose(11)
    near = a.replace("The", "A", 1)
    keys_a, keys_b, keys_near = (set(h.band_keys(t)) for t in (a, b, near))
    assert keys_a & keys_near and not keys_a & keys_b
    assert h.band_keys(a) == minhash.MinHasher(DedupConfig()).band_keys(a)  # deterministic
    assert len(h.band_keys(a)) == DedupConfig().bands


def test_format_detection_by_name_and_content(tmp_path):
    assert readers.format_from_name("s3://b/CC-MAIN-1.warc.wet.gz") == "wet"
    assert readers.format_from_name("x/a.warc.gz") == "warc"
    assert readers.format_from_name("a.jsonl.zst") == "jsonl"
    assert readers.format_from_name("a.parquet") == "parquet"
    assert readers.format_from_name("dump.bin") is None
    (tmp_path / "dump.bin").write_bytes(gzip.compress(warc_response("http://x", b"<p>x</p>")))
    assert readers.detect_format(str(tmp_path / "dump.bin")) == "warc"
    write_jsonl(tmp_path / "rows.data", [{"text": "x"}])
    assert readers.detect_format(str(tmp_path / "rows.data")) == "jsonl"


def test_jsonl_reader_custom_fields_and_zstd(tmp_path):
    import zstandard

    body = b'{"body": "Some text here.", "key": 7, "link": "http://u"}\n'
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    cfg = ReaderConfig(text_field="body", id_field="key", url_field="link")
    doc, = readers.read_file(str(tmp_path / "a.jsonl.zst"), "jsonl", cfg)
    assert doc.tag is R.Tag.DOC and (doc.id, doc.url, doc.text) == ("7", "http://u", "Some text here.")


def test_jsonl_lone_surrogate_is_invalid_utf8(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", ['{"text": "bad \\ud800 text"}'])
    rec, = readers.read_file(str(tmp_path / "s.jsonl"), "jsonl", RC)
    assert (rec.tag, rec.reason) == (R.Tag.REJECT, R.INVALID_UTF8)


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["Hello there.", None, ""], "url": ["u1", "u2", "u3"]}), tmp_path / "t.parquet")
    out = list(readers.read_file(str(tmp_path / "t.parquet"), "parquet", RC))
    assert [r.tag for r in out] == [R.Tag.DOC, R.Tag.REJECT, R.Tag.REJECT]
    assert [r.reason for r in out[1:]] == [R.MISSING_TEXT_FIELD, R.EMPTY_DOCUMENT]
    assert out[0].url == "u1" and out[0].id == R.stable_id(str(tmp_path / "t.parquet"), 0)


def test_text_reader_units(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    assert len(list(readers.read_file(str(tmp_path / "a.txt"), "text", RC))) == 1
    per_line = list(readers.read_file(str(tmp_path / "a.txt"), "text", ReaderConfig(text_unit="line")))
    assert [r.text for r in per_line] == ["first line", "second line"]


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("dedup:\n  bands: 20\nlangid:\n  languages: [en, de]\n")
    cfg = build(["in/*"], "out", None, str(tmp_path / "c.yaml"), ["c4.min_sentences=3"])
    assert (cfg.dedup.bands, cfg.langid.languages, cfg.c4.min_sentences) == (20, ("en", "de"), 3)
    (tmp_path / "bad.json").write_text('{"dedup": {"bandz": 3}}')
    with pytest.raises(configs.ConfigError, match="bandz"):
        build(["in"], "out", None, str(tmp_path / "bad.json"))
    with pytest.raises(configs.ConfigError):
        build(["in"], "out", None, None, ["nope.x=1"])


def test_c4_bad_words_list_is_applied_on_word_boundaries(tmp_path):
    words = tmp_path / "bad.txt"
    words.write_text("grault\nfoo bar\n")
    cfg = dataclasses.replace(C4Config(), bad_words_file=str(words))
    good = prose(1)
    assert c4.clean(good, cfg)[1] is None
    assert c4.clean(good + "\nThis sentence mentions a Grault, which is on the list.", cfg) == (None, c4.BAD_WORDS)
    assert c4.clean(good + "\nHere is foo bar, a listed phrase.", cfg) == (None, c4.BAD_WORDS)
    # Inside another word it is not a match, as in C4.
    assert c4.clean(good + "\nThe graultish form is not a listed word at all.", cfg)[1] is None
