"""The training cost model against the figures in ../shared/reference/ELECTRA.md."""

from __future__ import annotations

import dataclasses

import pytest

from pretraining.cost import PEAK_FLOPS, flops_per_token, mfu, peak_flops_for_device
from pretraining.sizes import electra_large, electra_small


def _large(vocab: int = 30522):
    return dataclasses.replace(electra_large(), vocab_size=vocab)  # the reference counts the paper's vocabulary


def test_large_at_512_is_2_17_gflop_per_token():
    assert flops_per_token(_large(), 512) == pytest.approx(2.17e9, rel=0.02)


def test_large_with_the_head_on_every_position_is_2_31():
    full = flops_per_token(_large(), 512, gen_head_all_positions=True)
    assert full == pytest.approx(2.31e9, rel=0.02)
    # The saving the masked-only head buys: about 6.5% of the whole step.
    assert 1 - flops_per_token(_large(), 512) / full == pytest.approx(0.065, abs=0.01)


def test_project_vocabulary_stays_within_the_reference_figure():
    assert flops_per_token(_large(32768), 512) == pytest.approx(2.17e9, rel=0.02)


def test_masked_fraction_only_moves_the_generator_head():
    cfg = _large()
    assert flops_per_token(cfg, 512, masked_fraction=1.0) == pytest.approx(
        flops_per_token(cfg, 512, gen_head_all_positions=True))
    assert flops_per_token(cfg, 512, masked_fraction=0.15) < flops_per_token(cfg, 512)


def test_attention_term_grows_with_length():
    cfg = electra_small()
    per_position = 12 * (cfg.hidden_size + cfg.generator_hidden_size) * cfg.num_hidden_layers
    assert flops_per_token(cfg, 256) - flops_per_token(cfg, 128) == pytest.approx(128 * per_position)


def test_mfu_and_the_h100_anchor():
    # ELECTRA.md: at 50% MFU one H100 trains Large at about 228k tokens/s.
    fpt = flops_per_token(_large(), 512)
    assert mfu(228e3, fpt, PEAK_FLOPS["h100-sxm-bf16"]) == pytest.approx(0.5, rel=0.01)


def test_peak_flops_lookup_by_device_name():
    assert peak_flops_for_device("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_device("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for_device("NVIDIA H200") == 989e12
    assert peak_flops_for_device("Some Future Accelerator") is None
