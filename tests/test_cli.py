"""Every job's command line takes `--set` the same way: several pairs per flag, and the flag repeated."""

from __future__ import annotations

import pytest

from evaluation import run as eval_run
from pipelines import clean, pack, train_tokenizer


def test_set_takes_several_pairs_and_repeats_in_every_job():
    cfg, beam = clean.parse_args(["--input", "in", "--output", "out", "--set", "c4.min_sentences=5",
                                  "dedup.bands=10", "--runner", "DirectRunner", "--set", "langid.enabled=false"])
    assert (cfg.c4.min_sentences, cfg.dedup.bands, cfg.langid.enabled) == (5, 10, False)
    assert beam == ["--runner", "DirectRunner"]  # Beam options pass through untouched

    cfg, beam = pack.parse(["--input", "d", "--tokenizer", "t", "--output", "o", "--set", "short_seq_prob=0",
                            "cross_document=false", "--direct_num_workers=2", "--set", "shard_mb=3"])
    assert (cfg.short_seq_prob, cfg.cross_document, cfg.shard_mb) == (0.0, False, 3)
    assert beam == ["--direct_num_workers=2"]

    cfg = train_tokenizer.parse(["--input", "d", "--output", "o", "--set", "character_coverage=0.999",
                                 "--set", "num_threads=2"])
    assert (cfg.character_coverage, cfg.num_threads) == (0.999, 2)

    cfg = eval_run.parse(["--model", "m", "--output", "o", "--set", "finetune.max_steps=7", "--set", "seeds=1"])
    assert (cfg.finetune.max_steps, cfg.seeds) == (7, 1)


def test_unknown_override_fails_with_the_valid_keys(capsys):
    assert pack.main(["--input", "d", "--tokenizer", "t", "--output", "o", "--set", "short_seq=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "short_seq" in err and "short_seq_prob" in err
