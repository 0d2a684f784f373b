"""Throughput in metrics.jsonl: the interval's tokens/s and MFU on the line the report's curves read."""

from __future__ import annotations

import json

import pytest

from evaluation.report import curves
from pretraining import metrics
from pretraining.cost import flops_per_token
from pretraining.sizes import named_size


def _run(tmp_path, monkeypatch, *, peak: float | None, steps: int = 6, every: int = 2) -> list[dict]:
    now = [0.0]  # the logger starts at 0 s; each step takes one second
    monkeypatch.setattr(metrics.time, "monotonic", lambda: now[0])
    fpt = flops_per_token(named_size("small"), 128)
    logger = metrics.MetricsLogger(str(tmp_path), max_steps=steps, start_step=0, every_steps=every,
                                   tensorboard=False, flops_per_token=fpt, peak_flops=peak)
    for step in range(1, steps + 1):
        now[0] = float(step)
        logger.step(step, loss=1.0, mlm_loss=0.5, rtd_loss=0.5, counts={}, lr=1e-4, grad_norm=1.0,
                    positions=1000, tokens_seen=step * 900)
    logger.close()
    return [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_interval_lines_carry_tokens_per_s_and_mfu_the_report_draws(tmp_path, monkeypatch):
    recs = _run(tmp_path, monkeypatch, peak=2 * 1e12)
    fpt = flops_per_token(named_size("small"), 128)
    # Interval lines (steps 2, 4, 6): 2 steps x 1000 positions over the 2 s since the previous interval.
    assert [r["step"] for r in recs if "tokens_per_s" in r] == [2, 4, 6]
    assert all(r["tokens_per_s"] == pytest.approx(1000.0) for r in recs if "tokens_per_s" in r)
    assert all(r["mfu"] == pytest.approx(1000.0 * fpt / 2e12) for r in recs if "mfu" in r)
    drawn = curves.load(str(tmp_path / "metrics.jsonl"))
    assert [y for _, y in drawn.series["tokens_per_s"]] == pytest.approx([1000.0] * 3)
    assert "mfu" in drawn.series and drawn.missing == []


def test_without_a_known_peak_mfu_is_left_out_and_the_report_says_so(tmp_path, monkeypatch):
    recs = _run(tmp_path, monkeypatch, peak=None)
    assert not any("mfu" in r for r in recs) and sum("tokens_per_s" in r for r in recs) == 3
    drawn = curves.load(str(tmp_path / "metrics.jsonl"))
    assert "tokens_per_s" in drawn.series and drawn.missing == ["mfu"]


def test_the_peak_is_all_ranks_together(monkeypatch):
    """tokens/s counts every rank's tokens, so MFU divides by every rank's peak."""
    monkeypatch.setattr(metrics.cost, "peak_flops_for_device", lambda: None)
    assert metrics.peak_flops(0.0, world=8) is None
    assert metrics.peak_flops(989e12, world=8) == 8 * 989e12
