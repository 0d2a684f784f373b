"""Training-health checks on crafted metric histories, the held-out split, and the AUC; no launcher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.configs import ConfigError
from pretraining.config import HealthConfig, paper_setting_warnings, train_config
from pretraining.health import INTERVAL_CHECKS, Check, HealthMonitor, finite, nonfinite_warning
from pretraining.validation import HeldOut, roc_auc

HEALTHY = {"gen_acc": 0.3, "disc_recall": 0.4, "disc_precision": 0.7, "disc_acc": 0.9}
GOLDEN = Path(__file__).parent / "assets" / "golden_loss_tiny.json"


def fired(monitor: HealthMonitor, steps: range, loss, derived: dict, every: int = 10) -> dict[int, set[Check]]:
    """Feed a history step by step; {interval end: checks that fired there}."""
    out = {}
    for s in steps:
        monitor.step(loss(s))
        if s % every == 0:
            out[s] = {w.check for w in monitor.interval(s, derived)}
    return out


def test_each_warning_fires_on_its_crafted_history():
    cfg = HealthConfig(grace_steps=20, spike_window=10)
    steady = lambda s: 20.0  # noqa: E731
    # The learning-progress checks wait for warmup (10) + grace (20): nothing before step 30 whatever the values.
    bad = {"gen_acc": 0.0, "disc_recall": 0.0, "disc_precision": 0.0, "disc_acc": 0.86}
    got = fired(HealthMonitor(cfg, warmup_steps=10), range(1, 61), steady, bad)
    assert got[10] == got[20] == set()
    assert got[30] == got[60] == {Check.GENERATOR_NOT_LEARNING, Check.DISC_RECALL_ZERO, Check.DISC_PRECISION_ZERO}
    # Flags replacements, but none of them is right: precision alone.
    wrong = {**HEALTHY, "disc_precision": 0.0, "disc_recall": 0.0}
    assert fired(HealthMonitor(cfg, 10), range(1, 41), steady, {**wrong, "disc_recall": 0.2})[40] == \
        {Check.DISC_PRECISION_ZERO}
    # A generator that restores almost everything.
    assert fired(HealthMonitor(cfg, 10), range(1, 41), steady, {**HEALTHY, "gen_acc": 0.97})[40] == \
        {Check.GENERATOR_TOO_STRONG}
    # A spike: one step at 2x the average of the 10 before it, reported at its interval only.
    spike = fired(HealthMonitor(cfg, 10), range(1, 51), lambda s: 40.0 if s == 35 else 20.0, HEALTHY)
    assert spike[40] == {Check.LOSS_SPIKE} and spike[30] == spike[50] == set()
    w = HealthMonitor(cfg, 10)
    fired(w, range(1, 35), steady, HEALTHY)
    w.step(40.0)
    (warning,) = w.interval(35, HEALTHY)
    assert warning.value == pytest.approx(2.0) and "2.00x the average of the 10 steps" in warning.message
    assert warning.record()["kind"] == "health" and warning.record()["check"] == "loss_spike"
    # A healthy history fires nothing.
    assert not any(fired(HealthMonitor(cfg, 10), range(1, 101), lambda s: 30 - s * 0.1, HEALTHY).values())
    assert set(INTERVAL_CHECKS) == set(Check) - {Check.NONFINITE}


def test_non_finite_is_caught_and_the_message_says_what_to_change():
    assert finite(3.0, 1.0) and finite(3.0, None)
    assert not finite(math.nan, 1.0) and not finite(3.0, math.inf) and not finite(math.inf, None)
    cfg = train_config("small", ["optim.lr=1e6"])
    w = nonfinite_warning(7, math.nan, math.nan, cfg, "s3://b/run/checkpoints/step-000000004")
    assert w.check is Check.NONFINITE and w.step == 7
    for part in ("nonfinite_loss: the loss is not finite at step 7", "stopped without saving",
                 "the last good checkpoint, s3://b/run/checkpoints/step-000000004, is kept",
                 "lower optim.lr (now 1e+06", "schedule.warmup_steps (now 10000)", "model.generator_hidden_size"):
        assert part in w.message
    assert "starts over" in nonfinite_warning(1, math.nan, None, cfg, None).message


def test_none_fire_on_the_golden_curve():
    """The golden run's own history (tests/assets/golden_loss_tiny.json: tiny, warmup 4, logged every 8) with its
    logged accuracies: generator 3-6%, the discriminator's recall still 0 (it first learns the base rate)."""
    losses = {int(k): v for k, v in json.loads(GOLDEN.read_text())["losses"].items()}
    cfg = train_config("tiny", ["schedule.warmup_steps=4"])
    monitor = HealthMonitor(cfg.health, cfg.schedule.warmup_steps)
    early = {"gen_acc": 0.03, "disc_recall": 0.0, "disc_precision": 0.0, "disc_acc": 0.86}
    assert not any(fired(monitor, range(1, len(losses) + 1), losses.__getitem__, early, every=8).values())


def test_health_thresholds_are_validated():
    with pytest.raises(ConfigError, match="spike_ratio > 1"):
        train_config("tiny", ["health.spike_ratio=0.9"])
    with pytest.raises(ConfigError, match="gen_acc_min < health.gen_acc_max"):
        train_config("tiny", ["health.gen_acc_min=0.95"])


def test_held_out_split_is_proportional_exact_and_never_in_the_training_order(tmp_path):
    """The split is a pure function of the manifest's shard sizes; the loader's order, over many epochs, never
    reaches a held-out row (checked against the loader's own order), and each rank gets an equal share."""
    from pretraining.data import ExampleOrder

    held = HeldOut.from_pack([500, 300, 7, 193], 100)
    assert held.count == 100 and held.held == (50, 30, 1, 19)
    assert [(r.shard, r.start, r.stop) for r in held.train_ranges()] == [(0, 0, 450), (1, 0, 270), (2, 0, 6),
                                                                          (3, 0, 174)]
    rows = set(held.rows())
    assert rows == {(k, r) for k, (n, h) in enumerate(zip([500, 300, 7, 193], held.held)) for r in range(n - h, n)}
    order = ExampleOrder(held.train_ranges(), 16, 8, seed=3)
    seen = set(order.examples(0, 3 * order.epoch_examples))
    assert seen.isdisjoint(rows) and len(seen) == 900
    shares = [held.rank_rows(r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [33, 33, 33] and not set(shares[0]) & set(shares[1])
    assert [r.stop for r in HeldOut.from_pack([10, 10], 0).train_ranges()] == [10, 10]
    with pytest.raises(ConfigError, match="more than half"):
        HeldOut.from_pack([10, 10], 11)


def test_auc_is_mann_whitney_with_ties_counted_half():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    labels = rng.random(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert roc_auc(np.zeros(5), np.array([1, 0, 1, 0, 0], bool)) == 0.5
    assert roc_auc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0
    assert roc_auc(np.arange(3.0), np.zeros(3, bool)) is None


def test_base_and_large_below_512_warn_with_the_papers_setting():
    assert paper_setting_warnings(train_config("small"), 128) == []
    assert paper_setting_warnings(train_config("base"), 512) == []
    (line,) = paper_setting_warnings(train_config("large"), 128)
    assert "ELECTRA-Large is trained at sequence length 512 in the paper" in line and "has 128" in line


def test_report_curves_keep_validation_apart_and_skip_health_events(tmp_path):
    """metrics.jsonl holds training, validation and health lines; the report draws validation as its own curves
    (never averaged into the training ones of the same name) and health warnings not at all."""
    from evaluation.report import curves
    from pretraining.health import HealthWarning
    from pretraining.validation import ValidationResult

    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": 30.0 - s, "disc_acc": 0.8, "tokens_seen": 100 * s} for s in range(1, 11)]
    lines.append(ValidationResult(10, 64, 6.0, 0.05, 0.4, 0.5, 0.3, 0.2, 0.75).record())
    lines.append(HealthWarning(Check.LOSS_SPIKE, 10, 2.0, 1.3, "loss_spike: ...").record())
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    c = curves.load(str(path))
    assert c.lines == 11 and c.bad_lines == 0
    assert [v for _, v in c.series["disc_acc"]] == [0.8] * 10  # the validation's 0.5 is not in it
    assert c.series["validation/disc_acc"] == [(10.0, 0.5)] and c.series["validation/disc_auc"] == [(10.0, 0.75)]
    assert not any(k.startswith("health") or k in ("value", "threshold") or k.endswith("examples") for k in c.series)
