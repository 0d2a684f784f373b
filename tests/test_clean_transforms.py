"""Beam TestPipeline unit tests, one per transform of pipelines/cleaning/transforms.py."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import documents
from pipelines.cleaning import records as R
from pipelines.cleaning import stages
from pipelines.cleaning import transforms as T
from pipelines.cleaning.config import CleanConfig, DedupConfig, ReaderConfig
from pipelines.cleaning.sinks import ManifestWriter
from test_clean_fixtures import html_page, prose, warc_response, write_jsonl, write_warc_gz

CFG = CleanConfig()


def doc(i: int, text: str | None = None) -> dict:
    return R.document("mem://src", i, prose(i) if text is None else text)


def tags_and_ids(items):
    return sorted((t, v["id"] if t == T.DOC else v.get("reason") if isinstance(v, dict) else v) for t, v in items)


def test_read_inputs_tags_docs_rejects_and_counts(tmp_path):
    warc = write_warc_gz(tmp_path / "a.warc.gz", [
        warc_response("http://a", html_page(prose(1))),
        warc_response("http://img", b"\x89PNG....", "image/png")])
    rows = write_jsonl(tmp_path / "b.jsonl", [{"text": prose(2), "id": "b0"}, "not json"])
    with BeamTestPipeline() as p:
        out = p | T.ReadInputs([(str(warc), "warc"), (str(rows), "jsonl")], ReaderConfig())
        summary = out | beam.Map(lambda item: (item[0], item[1]["id"] if item[0] == T.DOC else
                                                item[1]["reason"] if item[0] == T.REJECT else item[1]))
        assert_that(summary, equal_to([
            (T.DOC, R.stable_id(str(warc), 0)), (T.REJECT, R.NON_HTML_RESPONSE), (T.COUNT, ("records_read", 2)),
            (T.DOC, "b0"), (T.REJECT, R.INVALID_JSON), (T.COUNT, ("records_read", 2))]))


def test_each_stage_keeps_or_drops_with_its_reason():
    for stage, bad, reason in [
        (stages.Normalize(CFG), "\x00\x01 ", stages.EMPTY_AFTER_NORMALIZE),
        (stages.LanguageId(CFG), "Der Hund läuft schnell über die Straße und die Katze schläft im Haus. " * 4,
         "lang_not_kept"),
        (stages.GopherRepetition(CFG), "\n".join(["Same line here, again and again."] * 20), "gopher_dup_line_frac"),
        (stages.GopherQuality(CFG), "Far too short.", "gopher_word_count"),
        (stages.C4Filter(CFG), prose(3) + "\nLorem ipsum dolor sit amet, sed do.", "c4_lorem_ipsum"),
    ]:
        with BeamTestPipeline() as p:
            items = p | beam.Create([(T.DOC, doc(1)), (T.DOC, doc(2, bad)), (T.REJECT, {"reason": "x"})])
            out = items | stage.name >> T.ApplyStage(stage)
            assert_that(out | beam.Map(lambda it: it[0] if it[0] != T.DROP else it[1]),
                        equal_to([T.DOC, reason, T.REJECT]), label=f"check_{stage.name}")


def test_clean_documents_chain_sets_language_and_edits_text():
    noisy = prose(4) + "\nShare this page"  # no end mark: C4 removes the line
    with BeamTestPipeline() as p:
        out = (p | beam.Create([(T.DOC, doc(4, noisy))]) | T.CleanDocuments(CFG)
               | beam.Map(lambda it: (it[0], it[1]["lang"], "Share this" in it[1]["text"])))
        assert_that(out, equal_to([(T.DOC, "en", False)]))


def test_exact_duplicate_flags_all_but_smallest_id():
    a, b, c = doc(1), dict(doc(2, prose(1).upper()), id="0-first"), doc(3)
    with BeamTestPipeline() as p:
        out = p | beam.Create([a, b, c]) | T.ExactDuplicateFlags()
        assert_that(out, equal_to([(T.uid(a), T.EXACT_DUPLICATE)]))


def test_near_duplicate_flags_all_but_smallest_of_a_cluster():
    base = prose(7)
    near = base.replace("The", "A", 1)
    docs = [dict(doc(1, near), id="b"), dict(doc(2, base), id="a"), dict(doc(3, prose(8)), id="c")]
    with BeamTestPipeline() as p:
        out = p | beam.Create(docs) | T.NearDuplicateFlags(DedupConfig())
        # one flag per shared bucket; the shard writer reads them as a set
        assert_that(out | beam.Distinct(), equal_to([(T.uid(docs[0]), T.NEAR_DUPLICATE)]))


def test_write_shards_drops_flagged_and_writes_every_shard_sorted(tmp_path):
    docs = [doc(i) for i in range(6)]
    flags = [(T.uid(docs[0]), T.NEAR_DUPLICATE), (T.uid(docs[1]), T.NEAR_DUPLICATE),
             (T.uid(docs[1]), T.EXACT_DUPLICATE)]
    with BeamTestPipeline() as p:
        pdocs, pflags = p | "Docs" >> beam.Create(docs), p | "Flags" >> beam.Create(flags)
        out = (pdocs, pflags) | T.WriteShards(str(tmp_path), "documents", 3)
        assert_that(out | beam.Map(lambda it: (it[0], it[1]["path"] if it[0] == T.SHARD else it[1])),
                    equal_to([(T.SHARD, f"documents/part-0000{i}-of-00003.parquet") for i in range(3)]
                             + [(T.DROP, T.NEAR_DUPLICATE), (T.DROP, T.EXACT_DUPLICATE)]))
    paths = [tmp_path / f"documents/part-0000{i}-of-00003.parquet" for i in range(3)]
    rows = [r for p in paths for r in documents.iter_shard(str(p))]
    assert sorted(r["id"] for r in rows) == sorted(d["id"] for d in docs[2:])
    for p in paths:
        ids = [r["id"] for r in documents.iter_shard(str(p))]
        assert ids == sorted(ids)


def test_finalize_writes_stats_then_manifest(tmp_path):
    writer = ManifestWriter(str(tmp_path), CFG.rules(), [{"uri": "in"}], "test")
    items = [(T.SHARD, {"kind": "documents", "path": "documents/p0", "records": 2, "bytes": 1, "sha256": "x"}),
             (T.COUNT, ("records_read", 3)), (T.COUNT, ("records_read", 2)),
             (T.COUNT, ("dropped:c4_lorem_ipsum", 1)), (T.COUNT, ("rejected:invalid_json", 2))]
    with BeamTestPipeline() as p:
        out = p | beam.Create(items) | T.Finalize(writer)
        assert_that(out | beam.Map(lambda m: m["counters"]["records_read"]), equal_to([5]))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats == {"records_read": 5, "kept": 2, "dropped": {"c4_lorem_ipsum": 1}, "rejected": {"invalid_json": 2}}
    assert json.loads((tmp_path / "manifest.json").read_text())["kind"] == "documents"


def test_finalize_refuses_counts_that_do_not_reconcile(tmp_path):
    writer = ManifestWriter(str(tmp_path), CFG.rules(), [], "test")
    items = [(T.SHARD, {"kind": "documents", "path": "d", "records": 1, "bytes": 1, "sha256": "x"}),
             (T.COUNT, ("records_read", 5))]
    try:
        with BeamTestPipeline() as p:
            _ = p | beam.Create(items) | T.Finalize(writer)
        raise AssertionError("the pipeline should have failed")
    except Exception as exc:  # noqa: BLE001 - runners wrap the DoFn's error
        assert "do not reconcile" in str(exc)
    assert not (tmp_path / "manifest.json").exists()


def test_select_filters_by_tag():
    with BeamTestPipeline() as p:
        out = p | beam.Create([("a", 1), ("b", 2), ("a", 3)]) | T.Select("a")
        assert_that(out, equal_to([1, 3]))


def test_drops_are_beam_metrics_counters_too():
    from apache_beam.metrics.metric import MetricsFilter

    p = BeamTestPipeline()
    _ = (p | beam.Create([(T.DOC, doc(1, "Far too short.")), (T.DOC, doc(2))])
         | T.ApplyStage(stages.GopherQuality(CFG)))
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(T.NS).with_name("dropped_gopher_word_count"))
    assert sum(c.committed for c in found["counters"]) == 1


def test_a_rule_that_raises_rejects_the_document_instead_of_failing():
    class Broken(stages.Stage):
        name = "Broken"

        def apply(self, d):
            raise ValueError("boom")

    with BeamTestPipeline() as p:
        out = p | beam.Create([(T.DOC, doc(1))]) | T.ApplyStage(Broken(CFG))
        assert_that(out | beam.Map(lambda it: (it[0], it[1]["reason"], "boom" in it[1]["detail"])),
                    equal_to([(T.REJECT, R.RULE_ERROR, True)]))
