"""Beam TestPipeline unit tests, one per transform of pipelines/cleaning/transforms.py."""

from __future__ import annotations

import dataclasses
import gzip
import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import documents, sharding
from pipelines.cleaning import records as R
from pipelines.cleaning import sinks, stages
from pipelines.cleaning import transforms as T
from pipelines.cleaning.config import CleanConfig, DedupConfig, ReaderConfig
from pipelines.cleaning.records import Tag
from pipelines.cleaning.sinks import ManifestWriter
from clean_inputs import html_page, prose, warc_response, write_jsonl, write_warc_gz

CFG = CleanConfig()


def doc(i: int, text: str | None = None, doc_id: str | None = None) -> R.Document:
    return R.document("mem://src", i, prose(i) if text is None else text, doc_id=doc_id)


def test_read_inputs_tags_docs_rejects_and_counts(tmp_path):
    warc = write_warc_gz(tmp_path / "a.warc.gz", [
        warc_response("http://a", html_page(prose(1))),
        warc_response("http://img", b"\x89PNG....", "image/png")])
    rows = write_jsonl(tmp_path / "b.jsonl", [{"text": prose(2), "id": "b0"}, "not json"])
    with BeamTestPipeline() as p:
        out = p | T.ReadInputs([(str(warc), "warc"), (str(rows), "jsonl")], ReaderConfig())
        summary = out | beam.Map(lambda r: (r.tag, r.id if r.tag is Tag.DOC else
                                            r.reason if r.tag is Tag.REJECT else (r.name, r.n)))
        assert_that(summary, equal_to([
            (Tag.DOC, R.stable_id(str(warc), 0)), (Tag.REJECT, R.NON_HTML_RESPONSE), (Tag.COUNT, ("records_read", 2)),
            (Tag.DOC, "b0"), (Tag.REJECT, R.INVALID_JSON), (Tag.COUNT, ("records_read", 2))]))


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
            items = p | beam.Create([doc(1), doc(2, bad), R.reject("x", "mem://src", 3)])
            out = items | stage.name >> T.ApplyStage(stage)
            assert_that(out | beam.Map(lambda r: r.tag if r.tag is not Tag.DROP else r.reason),
                        equal_to([Tag.DOC, reason, Tag.REJECT]), label=f"check_{stage.name}")


def test_clean_documents_chain_sets_language_and_edits_text():
    noisy = prose(4) + "\nShare this page"  # no end mark: C4 removes the line
    with BeamTestPipeline() as p:
        out = (p | beam.Create([doc(4, noisy)]) | T.CleanDocuments(CFG)
               | beam.Map(lambda r: (r.tag, r.lang, "Share this" in r.text)))
        assert_that(out, equal_to([(Tag.DOC, "en", False)]))


def test_exact_duplicate_flags_all_but_smallest_id():
    a, b, c = doc(1), doc(2, prose(1).upper(), doc_id="0-first"), doc(3)
    with BeamTestPipeline() as p:
        out = p | beam.Create([a, b, c]) | T.DuplicateFlags(DedupConfig(near=False))
        assert_that(out, equal_to([R.Flag(a.uid, T.EXACT_DUPLICATE)]))


def test_near_duplicate_flags_all_but_smallest_of_a_cluster():
    base = prose(7)
    near = base.replace("The", "A", 1)
    docs = [doc(1, near, doc_id="b"), doc(2, base, doc_id="a"), doc(3, prose(8), doc_id="c")]
    with BeamTestPipeline() as p:
        out = p | beam.Create(docs) | T.DuplicateFlags(DedupConfig(exact=False))
        # one flag per shared bucket; the block writer reads them as a set
        assert_that(out | beam.Distinct(), equal_to([R.Flag(docs[0].uid, T.NEAR_DUPLICATE)]))


def test_blocks_drop_flagged_documents_and_shards_follow_the_size_target(tmp_path):
    docs = [doc(i) for i in range(40)]
    drops = [R.Drop("gopher_word_count", R.key_hash("gone"))]
    flags = [R.Flag(docs[0].uid, T.NEAR_DUPLICATE), R.Flag(docs[1].uid, T.NEAR_DUPLICATE),
             R.Flag(docs[1].uid, T.EXACT_DUPLICATE)]
    rejects = [R.reject(R.INVALID_JSON, "mem://src", 100 + i, b"{") for i in range(5)]
    with BeamTestPipeline() as p:
        recs = p | "Recs" >> beam.Create(docs + drops + rejects)
        pflags = p | "Flags" >> beam.Create(flags)
        blocks = (recs, pflags) | T.WriteBlocks(str(tmp_path), blocks=8)
        written = blocks | sharding.WriteShards(str(tmp_path), sinks.layouts(shard_mb=12_000 / 2**20))
        totals = written | "Totals" >> beam.Filter(lambda x: isinstance(x, sharding.Totals))
        shards = written | "Shards" >> beam.Filter(lambda x: isinstance(x, sharding.ShardInfo))
        assert_that(totals | beam.Map(lambda t: (t.kind, t.counts)), equal_to([
            ("documents", {"kept": 38, "dropped:near_duplicate": 1, "dropped:exact_duplicate": 1,
                           "dropped:gopher_word_count": 1}),
            ("rejects", {"rejected:invalid_json": 5})]), label="totals")
        assert_that(shards | beam.Map(lambda s: s.kind) | beam.combiners.Count.PerElement()
                    | beam.Map(lambda kv: (kv[0], kv[1] > 1 if kv[0] == "documents" else kv[1])),
                    equal_to([("documents", True), ("rejects", 1)]), label="shards")
    paths = sorted((tmp_path / "documents").iterdir())
    rows = [r for p in paths for r in documents.iter_shard(str(p))]
    assert sorted(r["id"] for r in rows) == sorted(d.id for d in docs[2:]), "flagged documents are dropped"
    by_id = {d.id: d for d in docs}
    keys = [(R.key_hash(by_id[r["id"]].uid), by_id[r["id"]].uid) for r in rows]
    assert keys == sorted(keys), "shards in order, each ordered by the hash of the uid"
    assert all(p.stat().st_size <= 12_000 for p in paths), "no single block exceeds the target here"
    with gzip.open(tmp_path / "rejects" / "part-00000-of-00001.jsonl.gz") as f:
        assert [json.loads(line)["reason"] for line in f] == [R.INVALID_JSON] * 5


def test_plan_cuts_between_blocks_or_at_exact_record_counts():
    blocks = [sharding.BlockInfo("k", (i,), f"b{i}", 10 * (i + 1), i + 1, {}) for i in range(4)]  # 10..40 bytes
    blocks.append(sharding.BlockInfo("k", (9,), None, 0, 0, {"dropped:x": 1}))  # counts only: no piece
    by_block = sharding.Layout("k", "d", ".x", 25, 0, sharding.concatenate)
    assert [[p.path for p in s] for s in sharding.plan(blocks[::-1], by_block)] == [["b0"], ["b1"], ["b2"], ["b3"]]
    wide = dataclasses.replace(by_block, shard_bytes=30)  # b0 + b1 fit exactly; b3 alone exceeds it
    assert [[p.path for p in s] for s in sharding.plan(blocks, wide)] == [["b0", "b1"], ["b2"], ["b3"]]
    by_record = dataclasses.replace(by_block, shard_bytes=40, record_bytes=10)  # 4 records per shard
    shards = sharding.plan(blocks, by_record)
    assert [sum(p.records for p in s) for s in shards] == [4, 4, 2]
    assert [(p.path, p.offset, p.length) for p in shards[1]] == [("b2", 10, 20), ("b3", 0, 20)]


def _finalize_items(kept: int, read: int):
    return [sharding.ShardInfo("documents", 0, "documents/p0", kept, 1, "x", {}),
            sharding.Totals("documents", {"kept": kept, "dropped:c4_lorem_ipsum": 1}, 3),
            sharding.Totals("rejects", {"rejected:invalid_json": 2}, 1),
            sharding.ShardInfo("rejects", 0, "rejects/p0", 2, 1, "y", {}),
            sharding.Totals(sinks.READ, {"records_read": read}, 1)]


def test_finalize_writes_stats_then_manifest(tmp_path):
    writer = ManifestWriter(str(tmp_path), CFG.rules(), [{"uri": "in"}], "test")
    (tmp_path / "_work" / "documents").mkdir(parents=True)
    with BeamTestPipeline() as p:
        out = p | beam.Create(_finalize_items(kept=2, read=5)) | sharding.Finalize(writer)
        assert_that(out | beam.Map(lambda m: m["counters"]["records_read"]), equal_to([5]))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats == {"records_read": 5, "kept": 2, "dropped": {"c4_lorem_ipsum": 1}, "rejected": {"invalid_json": 2}}
    assert json.loads((tmp_path / "manifest.json").read_text())["kind"] == "documents"
    assert not (tmp_path / "_work").exists(), "blocks are removed before the manifest is written"


def test_finalize_refuses_counts_that_do_not_reconcile(tmp_path):
    writer = ManifestWriter(str(tmp_path), CFG.rules(), [], "test")
    try:
        with BeamTestPipeline() as p:
            _ = p | beam.Create(_finalize_items(kept=1, read=6)) | sharding.Finalize(writer)
        raise AssertionError("the pipeline should have failed")
    except Exception as exc:  # noqa: BLE001 - runners wrap the DoFn's error
        assert "do not reconcile" in str(exc)
    assert not (tmp_path / "manifest.json").exists()


def test_select_filters_by_tag():
    with BeamTestPipeline() as p:
        recs = [doc(1), R.Count("records_read", 1), doc(2), R.Drop("x", 1)]
        out = p | beam.Create(recs) | T.Select(Tag.DOC, Tag.DROP)
        assert_that(out | beam.Map(lambda r: r.tag), equal_to([Tag.DOC, Tag.DOC, Tag.DROP]))


def test_drops_are_beam_metrics_counters_too():
    from apache_beam.metrics.metric import MetricsFilter

    p = BeamTestPipeline()
    _ = (p | beam.Create([doc(1, "Far too short."), doc(2)])
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
        out = p | beam.Create([doc(1)]) | T.ApplyStage(Broken(CFG))
        assert_that(out | beam.Map(lambda r: (r.tag, r.reason, "boom" in r.detail)),
                    equal_to([(Tag.REJECT, R.RULE_ERROR, True)]))
