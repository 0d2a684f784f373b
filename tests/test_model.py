"""The ELECTRA pretraining model on a tiny config: sizes, masking, sharing, the objective, and HF export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import packformat
from pretraining.model import (
    METRIC_KEYS,
    ElectraPretrainingModel,
    derived_metrics,
    gumbel_sample,
    mask_tokens,
    max_picks,
    pick_positions,
)
from pretraining.sizes import SIZES, ModelConfig, electra_tiny, named_size

VOCAB = 1000


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(electra_tiny(), **({"vocab_size": VOCAB} | changes))


def make_batch(batch: int = 8, seq_len: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] rows with random lengths and padding, as pipelines.pack writes them."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, seq_len), dtype=np.int64)
    for row in range(batch):
        used = int(rng.integers(seq_len // 2, seq_len + 1))
        split = int(rng.integers(2, used - 2))
        ids[row, :used] = rng.integers(5, VOCAB, size=used)
        ids[row, 0] = 2
        ids[row, split] = 3
        ids[row, used - 1] = 3
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return as_t(ids), as_t(packformat.attention_mask(ids, 0)), as_t(packformat.token_type_ids(ids, 3))


@pytest.fixture(scope="module")
def model() -> ElectraPretrainingModel:
    torch.manual_seed(0)
    return tiny().build().eval()


# ----------------------------------------------------------------------------- sizes
def test_named_sizes_carry_the_official_shapes():
    s, b, l = named_size("small"), named_size("base"), named_size("large")
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.intermediate_size, s.embedding_size) == \
        (12, 256, 4, 1024, 128)
    assert (s.generator_hidden_size, s.generator_num_attention_heads, s.generator_intermediate_size) == (64, 1, 256)
    assert (b.num_hidden_layers, b.hidden_size, b.num_attention_heads, b.intermediate_size, b.embedding_size) == \
        (12, 768, 12, 3072, 768)
    assert (b.generator_hidden_size, b.generator_num_attention_heads, b.generator_intermediate_size) == (256, 4, 1024)
    assert (l.num_hidden_layers, l.hidden_size, l.num_attention_heads, l.intermediate_size, l.embedding_size) == \
        (24, 1024, 16, 4096, 1024)
    assert (l.generator_hidden_size, l.generator_num_attention_heads, l.generator_intermediate_size) == (256, 4, 1024)
    assert (s.mask_prob, b.mask_prob, l.mask_prob) == (0.15, 0.15, 0.25)
    assert all(c.rtd_weight == 50.0 for c in (s, b, l))
    assert set(SIZES) == {"tiny", "small", "base", "large"}
    assert named_size("tiny").num_hidden_layers == 2


def test_unknown_size_lists_the_valid_ones():
    with pytest.raises(ValueError, match="tiny, small, base, large"):
        named_size("huge")


@pytest.mark.parametrize("changes, message", [
    (dict(num_attention_heads=3), "does not divide hidden_size"),
    (dict(generator_num_attention_heads=3), "does not divide generator_hidden_size"),
    (dict(mask_prob=0.0), "mask_prob"),
    (dict(vocab_size=4), "special token ids"),
    (dict(mask_token_id=0), "distinct"),
    (dict(attn_implementation="fast"), "attn_implementation"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_official_sizes_build_with_the_expected_parameter_count():
    # ELECTRA-Small's discriminator is 14M parameters with the 30522 vocabulary (paper, Table 1).
    cfg = dataclasses.replace(named_size("small"), vocab_size=30522)
    disc, _ = ElectraPretrainingModel(cfg).to_hf()
    assert sum(p.numel() for p in disc.parameters()) == pytest.approx(13.5e6, rel=0.05)


# ----------------------------------------------------------------------------- masking
def test_masking_statistics_and_never_special_or_pad():
    cfg = tiny()
    ids, am, _ = make_batch(64, 128)
    special = (ids == 0) | (ids == 2) | (ids == 3)
    maskable = am.bool() & ~special
    masked_ids, picked = mask_tokens(ids, am, cfg, torch.Generator().manual_seed(1))

    assert not (picked & special).any() and not (picked & ~am.bool()).any()
    # Each row: round(mask_prob x maskable), at least one.
    expected = (maskable.sum(1).float() * cfg.mask_prob).round().clamp(min=1)
    assert torch.equal(picked.sum(1).float(), expected)
    assert picked.sum() / maskable.sum() == pytest.approx(cfg.mask_prob, abs=0.01)
    # 85% of the picks show [MASK], the rest keep their token; nothing else changes, no random tokens.
    shown_mask = (masked_ids == cfg.mask_token_id)
    assert torch.equal(shown_mask, shown_mask & picked)
    assert (shown_mask.sum() / picked.sum()).item() == pytest.approx(0.85, abs=0.04)
    assert torch.equal(masked_ids[~shown_mask], ids[~shown_mask])


def test_masking_is_deterministic_under_a_seeded_generator():
    cfg = tiny()
    ids, am, _ = make_batch()
    a = mask_tokens(ids, am, cfg, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, am, cfg, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, am, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_unk_is_maskable_and_empty_rows_are_left_alone():
    cfg = tiny()
    ids = torch.tensor([[2, 3, 0, 0], [2, 9, 3, 0], [2, 1, 3, 0]])
    _, picked = mask_tokens(ids, (ids != 0).long(), cfg, torch.Generator().manual_seed(0))
    # [UNK] stands for real text, so it is predicted like any token (as in the reference code).
    assert picked.tolist() == [[False] * 4, [False, True, False, False], [False, True, False, False]]


def test_a_batch_with_nothing_to_mask_still_gives_a_finite_loss(model):
    ids = torch.tensor([[2, 3, 0, 0], [2, 3, 3, 0]])
    am = (ids != 0).long()
    out = model(ids, am, torch.zeros_like(ids), generator=torch.Generator().manual_seed(0))
    assert out.mlm_loss.item() == 0.0 and torch.isfinite(out.loss) and int(out.metrics["masked"]) == 0


def test_gumbel_max_samples_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    draws = gumbel_sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.015)


# ----------------------------------------------------------------------------- sharing
def test_the_towers_share_one_embedding_tensor(model):
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.dim() == 2 and p.shape[0] == VOCAB]
    assert shapes == [("embeddings.word_embeddings.weight", (VOCAB, model.cfg.embedding_size))]
    embedding_tables = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    assert all(n.startswith("embeddings.") for n in embedding_tables)
    # Behaviour, not just names: both towers run the one embeddings module, and the word matrix
    # serves two lookups plus the generator's output projection in every step.
    calls = {"embeddings": 0, "word": 0}
    h1 = model.embeddings.register_forward_hook(lambda *a: calls.__setitem__("embeddings", calls["embeddings"] + 1))
    h2 = model.embeddings.word_embeddings.register_forward_hook(lambda *a: calls.__setitem__("word", calls["word"] + 1))
    try:
        ids, am, tt = make_batch()
        model(ids, am, tt, generator=torch.Generator().manual_seed(0))
    finally:
        h1.remove()
        h2.remove()
    assert calls == {"embeddings": 2, "word": 3}


def test_both_losses_train_the_shared_embeddings():
    torch.manual_seed(0)
    m = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).build()
    ids, am, tt = make_batch()
    for part in ("mlm_loss", "rtd_loss"):
        m.zero_grad()
        getattr(m(ids, am, tt, generator=torch.Generator().manual_seed(0)), part).backward()
        for p in (m.embeddings.word_embeddings.weight, m.embeddings.position_embeddings.weight,
                  m.embeddings.LayerNorm.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0, part
    # The generator's output layer is the token matrix: its gradient from the MLM loss reaches rows
    # no input position looked up.
    m.zero_grad()
    m(ids, am, tt, generator=torch.Generator().manual_seed(0)).mlm_loss.backward()
    unseen = torch.ones(VOCAB, dtype=torch.bool)
    unseen[ids.flatten()] = False
    assert m.embeddings.word_embeddings.weight.grad[unseen].abs().sum() > 0


def test_uses_sdpa_attention(model):
    disc_cfg, gen_cfg = model.hf_configs()
    assert disc_cfg._attn_implementation == "sdpa" and gen_cfg._attn_implementation == "sdpa"
    assert model.discriminator.encoder.layer[0].attention.self.config._attn_implementation == "sdpa"
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    assert ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None) is sdpa_attention_forward


def test_sdpa_and_eager_agree():
    torch.manual_seed(0)
    sdpa = tiny().build().eval()
    eager = tiny(attn_implementation="eager").build().eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, am, tt = make_batch()
    with torch.no_grad():
        a = sdpa(ids, am, tt, generator=torch.Generator().manual_seed(3))
        b = eager(ids, am, tt, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a.loss, b.loss, atol=1e-4)


# ----------------------------------------------------------------------------- the objective
def test_loss_is_mlm_plus_50_rtd_recomputed_through_transformers(model):
    """Replay the forward's random draws by hand and recompute both losses with the exported HF models."""
    ids, am, tt = make_batch()
    with torch.no_grad():
        out = model(ids, am, tt, generator=torch.Generator().manual_seed(11))
        disc, gen = model.to_hf()
        rng = torch.Generator().manual_seed(11)
        m = pick_positions(ids, am, model.cfg, rng)
        logits = gen(input_ids=m.masked_ids, attention_mask=am, token_type_ids=tt).logits
        slot_logits = logits.gather(1, m.slots[:, :, None].expand(-1, -1, logits.shape[-1]))
        targets = ids.gather(1, m.slots)
        mlm = F.cross_entropy(slot_logits[m.valid], targets[m.valid])
        sampled = gumbel_sample(slot_logits, rng)
        disc_ids = ids.clone()
        for row, (slots, ok, new) in enumerate(zip(m.slots.tolist(), m.valid.tolist(), sampled.tolist())):
            for pos, keep, token in zip(slots, ok, new):
                if keep:
                    disc_ids[row, pos] = token
        labels = (disc_ids != ids).float()
        d_logits = disc(input_ids=disc_ids, attention_mask=am, token_type_ids=tt).logits
        rtd = F.binary_cross_entropy_with_logits(d_logits[am.bool()], labels[am.bool()])
    assert out.mlm_loss.item() == pytest.approx(mlm.item(), rel=1e-4)
    assert out.rtd_loss.item() == pytest.approx(rtd.item(), rel=1e-4)
    assert out.loss.item() == pytest.approx(mlm.item() + 50.0 * rtd.item(), rel=1e-4)
    assert int(out.metrics["masked"]) == int(m.picked.sum()) == int(m.valid.sum())
    assert int(out.metrics["replaced"]) == int(labels.sum())


def test_fixed_slots_cover_exactly_the_picked_positions():
    """pick_positions: k slots per row, the valid ones are the picked positions (each once), the rest point at
    unpicked positions; the same draws as mask_tokens."""
    cfg = tiny()
    ids, am, _ = make_batch(16, 40)
    m = pick_positions(ids, am, cfg, torch.Generator().manual_seed(2))
    masked_ids, picked = mask_tokens(ids, am, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(masked_ids, m.masked_ids) and torch.equal(picked, m.picked)
    assert m.slots.shape == m.valid.shape == (16, max_picks(40, cfg.mask_prob))
    for row in range(16):
        slots, ok = m.slots[row].tolist(), m.valid[row].tolist()
        assert len(set(slots)) == len(slots)
        assert {s for s, v in zip(slots, ok) if v} == set(torch.nonzero(m.picked[row]).flatten().tolist())
        assert not any(m.picked[row, s] for s, v in zip(slots, ok) if not v)


def test_rtd_weight_scales_only_the_discriminator_term():
    torch.manual_seed(0)
    a = tiny().build().eval()
    b = tiny(rtd_weight=1.0).build().eval()
    b.load_state_dict(a.state_dict())
    ids, am, tt = make_batch()
    with torch.no_grad():
        oa = a(ids, am, tt, generator=torch.Generator().manual_seed(0))
        ob = b(ids, am, tt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(oa.mlm_loss, ob.mlm_loss) and torch.equal(oa.rtd_loss, ob.rtd_loss)
    assert torch.allclose(oa.loss, oa.mlm_loss + 50 * oa.rtd_loss)
    assert torch.allclose(ob.loss, ob.mlm_loss + ob.rtd_loss)


def test_padding_adds_no_tokens_to_either_loss(model):
    ids, am, tt = make_batch(4, 40)
    padded = torch.cat([ids, torch.zeros(4, 24, dtype=ids.dtype)], dim=1)
    pam = torch.cat([am, torch.zeros(4, 24, dtype=am.dtype)], dim=1)
    ptt = torch.cat([tt, torch.ones(4, 24, dtype=tt.dtype)], dim=1)
    with torch.no_grad():
        a = model(ids, am, tt, generator=torch.Generator().manual_seed(0))
        b = model(padded, pam, ptt, generator=torch.Generator().manual_seed(0))
    assert int(a.metrics["disc_tokens"]) == int(b.metrics["disc_tokens"]) == int(am.sum())
    assert int(a.metrics["masked"]) == int(b.metrics["masked"])


def test_metrics_are_detached_counts_and_derive(model):
    ids, am, tt = make_batch()
    out = model(ids, am, tt, generator=torch.Generator().manual_seed(0))
    assert set(out.metrics) == set(METRIC_KEYS)
    assert all(v.dtype == torch.int64 and not v.requires_grad and v.dim() == 0 for v in out.metrics.values())
    m = {k: float(v) for k, v in out.metrics.items()}
    assert m["disc_tokens"] == am.sum().item()
    assert m["true_positive"] <= min(m["replaced"], m["pred_replaced"]) and m["replaced"] <= m["masked"]
    d = derived_metrics(m)
    assert set(d) == {"gen_acc", "disc_acc", "disc_precision", "disc_recall"}
    assert all(0.0 <= v <= 1.0 for v in d.values())
    assert derived_metrics({"gen_correct": 3, "masked": 4, "disc_correct": 9, "disc_tokens": 10, "replaced": 2,
                            "pred_replaced": 4, "true_positive": 1}) == \
        {"gen_acc": 0.75, "disc_acc": 0.9, "disc_precision": 0.25, "disc_recall": 0.5}
    assert derived_metrics({})["disc_precision"] == 0.0


def test_a_seeded_forward_repeats_exactly(model):
    ids, am, tt = make_batch()
    with torch.no_grad():
        a = model(ids, am, tt, generator=torch.Generator().manual_seed(5))
        b = model(ids, am, tt, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss)
    assert all(torch.equal(a.metrics[k], b.metrics[k]) for k in METRIC_KEYS)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    m = tiny().build()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    ids, am, tt = make_batch(16, 32)
    losses = []
    for step in range(12):
        out = m(ids, am, tt, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_forward_and_backward_need_no_host_reads():
    """The step runs on the meta device, where tensors have shapes but no values: no boolean indexing, .item(),
    or `if tensor` anywhere in it (each would make the host wait for the device on a GPU)."""
    m = tiny().build().to("meta")
    ids = torch.randint(5, VOCAB, (4, 32)).to("meta")
    am = torch.ones(4, 32, dtype=torch.long, device="meta")
    out = m(ids, am, torch.zeros_like(am), generator=None)
    out.loss.backward()
    assert out.loss.device.type == "meta" and set(out.metrics) == set(METRIC_KEYS)
    assert m.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.slow
def test_compiled_towers_match_eager():
    """model.compile_towers compiles both towers in place (parameter names unchanged); traced through dynamo and
    AOT autograd they give eager's losses and gradients. Inductor's kernels are checked by
    `benchmarks/train_step.py --modes torch,compile` (a C++/Triton build: minutes on 2 CPU cores)."""
    torch.manual_seed(0)
    eager = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).build()
    flagged = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, compile_towers=True).build()
    assert flagged.generator._compiled_call_impl is not None and flagged.discriminator._compiled_call_impl is not None
    assert eager.generator._compiled_call_impl is None
    assert list(flagged.state_dict()) == list(eager.state_dict())  # in place: no _orig_mod in the names
    traced = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).build()
    traced.load_state_dict(eager.state_dict())
    for tower in (traced.generator, traced.discriminator):
        tower.compile(backend="aot_eager", dynamic=False, fullgraph=True)  # fullgraph: no graph break allowed
    ids, am, tt = make_batch()
    outs = []
    for m in (eager, traced):
        out = m(ids, am, tt, generator=torch.Generator().manual_seed(4))
        out.loss.backward()
        outs.append((out, m.embeddings.word_embeddings.weight.grad.clone()))
    (a, ga), (b, gb) = outs
    assert torch.allclose(a.loss, b.loss, rtol=1e-5) and torch.equal(a.metrics["masked"], b.metrics["masked"])
    assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- export
def test_to_hf_matches_the_model(model):
    ids, am, tt = make_batch()
    disc, gen = model.to_hf()
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight
    for key, value in disc.electra.embeddings.state_dict().items():
        assert torch.equal(value, gen.electra.embeddings.state_dict()[key])
    with torch.no_grad():
        assert torch.allclose(model.discriminator_logits(ids, am, tt),
                              disc(input_ids=ids, attention_mask=am, token_type_ids=tt).logits, atol=1e-5)
        ours = model.generator_logits(ids, am, tt)
        theirs = gen(input_ids=ids, attention_mask=am, token_type_ids=tt).logits.reshape(ours.shape)
        assert torch.allclose(ours, theirs, atol=1e-5)
        picked = am.bool() & (ids > 4)
        assert torch.allclose(model.generator_logits(ids, am, tt, picked), theirs.reshape(*ids.shape, -1)[picked],
                              atol=1e-5)


def test_hf_state_dicts_accept_wrapped_keys(model):
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    disc_sd, gen_sd = ElectraPretrainingModel.hf_state_dicts(wrapped)
    assert "electra.embeddings.word_embeddings.weight" in disc_sd and "generator_lm_head.bias" in gen_sd
    assert gen_sd["generator_lm_head.weight"] is gen_sd["electra.embeddings.word_embeddings.weight"]
    with pytest.raises(KeyError, match="unexpected key"):
        ElectraPretrainingModel.hf_state_dicts({"stray.weight": torch.zeros(1)})


def test_saved_models_load_with_auto_classes(model, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining

    disc, gen = model.to_hf()
    disc.save_pretrained(tmp_path / "discriminator")
    gen.save_pretrained(tmp_path / "generator")
    assert (tmp_path / "discriminator" / "model.safetensors").exists()
    assert (tmp_path / "generator" / "model.safetensors").exists()

    ids, am, tt = make_batch()
    kw = dict(input_ids=ids, attention_mask=am, token_type_ids=tt)
    loaded_disc = AutoModelForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    loaded_gen = AutoModelForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    encoder = AutoModel.from_pretrained(tmp_path / "discriminator").eval()
    assert type(loaded_disc).__name__ == "ElectraForPreTraining" and type(loaded_gen).__name__ == "ElectraForMaskedLM"
    with torch.no_grad():
        assert torch.allclose(loaded_disc(**kw).logits, model.discriminator_logits(ids, am, tt), atol=1e-5)
        ours = model.generator_logits(ids, am, tt)
        assert torch.allclose(loaded_gen(**kw).logits.reshape(ours.shape), ours, atol=1e-5)
        assert torch.allclose(encoder(**kw).last_hidden_state, disc.electra(**kw).last_hidden_state, atol=1e-5)


# ----------------------------------------------------------------------------- heavier paths
@pytest.mark.gpu
def test_bf16_autocast_on_gpu_tracks_fp32():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    m = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).build().cuda()
    ids, am, tt = (t.cuda() for t in make_batch())
    with torch.no_grad():
        ref = m(ids, am, tt, generator=torch.Generator("cuda").manual_seed(0))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(ids, am, tt, generator=torch.Generator("cuda").manual_seed(0))
    assert out.mlm_loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.mlm_loss.item() == pytest.approx(ref.mlm_loss.item(), rel=0.05)


@pytest.mark.gpu
def test_training_step_never_waits_for_the_gpu():
    """torch's sync debug mode turns any host sync inside forward + backward into an error."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    m = tiny().build().cuda()
    ids, am, tt = (t.cuda() for t in make_batch())
    rng = torch.Generator("cuda").manual_seed(0)
    m(ids, am, tt, generator=rng).loss.backward()  # warm-up: lazy initialisation may sync once
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(ids, am, tt, generator=rng)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss)


@pytest.mark.slow
def test_train_step_benchmark_runs(tmp_path):
    import json
    import math
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out, extensions = tmp_path / "bench.json", tmp_path / "torch_extensions"
    subprocess.run([sys.executable, str(repo / "benchmarks" / "train_step.py"), "--size", "tiny", "--seq-len", "64",
                    "--batch", "4", "--modes", "torch,zero0,zero2,zero3", "--dtype", "bf16", "--rounds", "2",
                    "--steps", "1", "--warmup", "1",
                    "--threads", "1", "--json", str(out)], check=True, cwd=repo, capture_output=True, timeout=300,
                   env={**os.environ, "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(extensions)})
    report = json.loads(out.read_text())
    # The DeepSpeed modes went through local_comm: nothing was JIT-built (DeepSpeed's CPU shm op would be).
    assert not extensions.exists() or not any(extensions.iterdir()), sorted(extensions.rglob("*"))
    # The GPU mode's path short of CUDA: bf16 on both sides and the project's ds_configs in DeepSpeed engines.
    assert [r["name"].split(" ")[0] for r in report["results"]] == ["ours", "peer", "ours/zero0", "ours/zero2",
                                                                    "ours/zero3"]
    assert report["args"]["dtype"] == "bf16" and all(math.isfinite(r["last_loss"]) for r in report["results"])
    assert report["ratio"] > 1.0 and report["machine"]["device"]
