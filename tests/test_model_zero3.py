"""The model under a real DeepSpeed ZeRO-3 engine (CPU accelerator, gloo) matches plain PyTorch.

The shared token matrix is used outside the embedding module's forward by the generator head;
under ZeRO-3 that is where partitioned parameters go missing. The model computes the tied
projection inside the embedding module's own forward, so DeepSpeed's per-module hooks gather it.
These tests check that the gradients and losses equal a plain run, and that DeepSpeed did not
have to fall back to registering the matrix as an "external" parameter (which the naive head does).

The engine runs in a child process: DeepSpeed's accelerator choice and the process group are
process-wide, and must not leak into the rest of the test session.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def _run_worker(*args: str, world: int = 1, timeout: int = 240) -> list[dict]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, __file__, *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"worker failed:\n{err[-4000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture(scope="module")
def one_rank() -> dict:
    """All single-rank checks in one child process (the imports cost more than the checks)."""
    (r,) = _run_worker("train", "naive", "zero_init")
    return r


def test_zero3_matches_plain_pytorch(one_rank):
    r = one_rank["train"]
    _check_against_plain(r)
    assert r["partitioned"], "parameters were not partitioned: the test would prove nothing"


def test_engine_starts_without_the_cpu_shm_op(one_rank):
    """As the trainer does (local_comm.init_distributed): no JIT build of DeepSpeed's shm op, no /dev/shm buffer."""
    assert not one_rank["shm_op_loaded"], "DeepSpeed's CPU shm all-reduce op was loaded (JIT build, /dev/shm buffer)"


def _check_against_plain(r: dict) -> None:
    z3, plain = r["zero3_losses"], r["plain_losses"]
    assert all(math.isfinite(x) for x in z3) and z3[-1] < 0.9 * z3[0], z3
    # Same weights, batch and draws: the first loss is identical; later ones drift only by fp32
    # summation order, which Adam amplifies on the discriminator's near-zero early gradients.
    assert z3[0] == pytest.approx(plain[0], rel=1e-6)
    assert z3 == pytest.approx(plain, rel=5e-3)
    for name, diff in r["grad_max_abs_diff"].items():
        assert diff <= 1e-5 * max(r["grad_max_abs"][name], 1e-3), (name, diff, r["grad_max_abs"][name])
    assert r["external_params"] == [], "DeepSpeed had to register external parameters"
    assert r["export_max_abs_diff"] < 1e-5, "to_hf() under ZeRO-3 does not reproduce the engine"


def test_naive_tied_head_needs_external_parameters(one_rank):
    """Negative control: reading the matrix from another module's forward is what ZeRO-3 must patch over."""
    r = one_rank["naive"]
    assert r["external_params"], "expected DeepSpeed to register the token matrix as an external parameter"


def test_built_under_zero_init_is_initialised(one_rank):
    """The trainer builds the model inside deepspeed.zero.Init; weights must still get the BERT init."""
    r = one_rank["zero_init"]
    assert 0.015 < r["word_std"] < 0.025 and r["pad_row_abs"] == 0.0 and r["layernorm_mean"] == 1.0
    assert r["loss_finite"]


@pytest.mark.slow
def test_zero3_two_ranks_match_plain_pytorch():
    for r in _run_worker("train", world=2):
        _check_against_plain(r["train"])


# ----------------------------------------------------------------------------- the child process
# One function per check (CHECKS maps the names on the command line to them); the helpers before them hold what
# they share: the model config, DeepSpeed config, batches and masking draws.
LR, STEPS, MICRO, SEQ, VOCAB = 2e-3, 6, 4, 32, 512


def _worker(names: list[str]) -> dict:
    from pretraining import local_comm

    local_comm.init_distributed(on_cpu=True)  # as the trainer does: no JIT build of DeepSpeed's shm op
    from deepspeed.comm import comm as ds_comm

    return {name: CHECKS[name]() for name in names} | {"shm_op_loaded": ds_comm.cdb.shm_comm_op is not None}


def _rank_world() -> tuple[int, int]:
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _model_config():
    import dataclasses

    from pretraining.sizes import electra_tiny

    return dataclasses.replace(electra_tiny(), vocab_size=VOCAB, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)


def _ds_config() -> dict:
    return {
        "train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
        # Threshold 0: every parameter is partitioned, even the tiny model's, so every gather is exercised.
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": LR, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01,
                                                  "torch_adam": True}},
    }


def _engine(model):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=_ds_config())
    return engine


def _batch(step: int, part: int):
    """Micro-batch `part` of `step`: the same on every rank that asks for it (the plain run asks for every rank's)."""
    import torch

    g = torch.Generator().manual_seed(1000 * step + part)
    ids = torch.randint(5, VOCAB, (MICRO, SEQ), generator=g)
    ids[:, 0], ids[:, 15], ids[:, -1] = 2, 3, 3
    ids[1, 24:] = 0  # some padding
    am = (ids != 0).long()
    tt = (torch.arange(SEQ) > 15).long().expand_as(ids).contiguous()
    return ids, am, tt


def _rng(step: int, part: int):
    """The masking draws of micro-batch `part` of `step`."""
    import torch

    return torch.Generator().manual_seed(7 + 1000 * step + part)


def _external(module) -> list[str]:
    """The modules on which DeepSpeed registered parameters used outside their owner's forward."""
    return sorted(f"{type(m).__name__}:{len(m._external_params)}" for m in module.modules()
                  if getattr(m, "_external_params", None))


def _forward_backward(engine, rank: int):
    """The first step's forward and backward of this rank's micro-batch; the output."""
    out = engine(*_batch(0, rank), generator=_rng(0, rank))
    engine.backward(out.loss)
    return out


def _zero_init() -> dict:
    """The model built inside deepspeed.zero.Init (as the trainer does): its init statistics, then one step."""
    import deepspeed
    import torch

    rank, _ = _rank_world()
    cfg = _model_config()
    with deepspeed.zero.Init(config_dict_or_path=_ds_config()):
        model = cfg.build()
    engine = _engine(model)
    we, ln = engine.module.embeddings.word_embeddings, engine.module.embeddings.LayerNorm
    with deepspeed.zero.GatheredParameters([we.weight, ln.weight]):
        stats = {"word_std": float(we.weight[5:].std()), "pad_row_abs": float(we.weight[0].abs().sum()),
                 "layernorm_mean": float(ln.weight.mean())}
    out = _forward_backward(engine, rank)
    engine.step()
    return stats | {"loss_finite": bool(torch.isfinite(out.loss))}


def _naive_head() -> dict:
    """A generator head that reads the token matrix outside its owner's forward: the external parameters it costs."""
    import torch.nn.functional as F

    from pretraining.model import GeneratorHead

    class NaiveHead(GeneratorHead):
        def forward(self, hidden, word_embeddings):  # reads the matrix outside its owner's forward
            return F.linear(self.transform(hidden), word_embeddings.weight) + self.bias

    rank, _ = _rank_world()
    cfg = _model_config()
    model = cfg.build()
    model.generator_head.__class__ = NaiveHead
    engine = _engine(model)
    _forward_backward(engine, rank)
    return {"external_params": _external(engine.module)}


# The first step's gradients compared in full (gathered from the partitions) with the plain run's.
WATCHED = {"word_embeddings": lambda m: m.embeddings.word_embeddings.weight,
           "position_embeddings": lambda m: m.embeddings.position_embeddings.weight,
           "embeddings_layernorm": lambda m: m.embeddings.LayerNorm.weight,
           "generator_bias": lambda m: m.generator_head.bias,
           "disc_layer0_query": lambda m: m.discriminator.encoder.layer[0].attention.self.query.weight}


def _train_vs_plain() -> dict:
    """STEPS steps under ZeRO-3 beside a plain PyTorch copy with the same weights, batches and draws; then the
    export from the partitioned engine against the engine's own logits."""
    import torch
    from deepspeed.utils import safe_get_full_grad

    rank, world = _rank_world()
    cfg = _model_config()
    torch.manual_seed(0)
    model = cfg.build()
    plain = cfg.build()
    plain.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(plain.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    engine = _engine(model)
    partitioned = all(hasattr(p, "ds_id") and p.numel() == 0 for p in engine.module.parameters())

    zero3_losses, plain_losses, diff, scale = [], [], {}, {}
    for step in range(STEPS):
        out = engine(*_batch(step, rank), generator=_rng(step, rank))
        engine.backward(out.loss)
        # The plain reference sees every rank's batch; DeepSpeed averages the ranks' gradients.
        opt.zero_grad()
        ref_losses = []
        for part in range(world):
            ref = plain(*_batch(step, part), generator=_rng(step, part))
            (ref.loss / world).backward()
            ref_losses.append(ref.loss.item())
        if step == 0:
            for name, get in WATCHED.items():
                full = safe_get_full_grad(get(engine.module))
                diff[name] = float((full - get(plain).grad).abs().max())
                scale[name] = float(get(plain).grad.abs().max())
        engine.step()
        opt.step()
        zero3_losses.append(out.loss.item())
        plain_losses.append(ref_losses[rank])
    # Export straight from the partitioned engine (to_hf gathers) and compare with the engine's own logits.
    engine.eval()
    ids, am, tt = _batch(0, rank)
    with torch.no_grad():
        disc, gen = engine.module.to_hf()
        export_diff = float((engine.module.discriminator_logits(ids, am, tt)
                             - disc(input_ids=ids, attention_mask=am, token_type_ids=tt).logits).abs().max())
    return {"zero3_losses": zero3_losses, "plain_losses": plain_losses, "grad_max_abs_diff": diff,
            "grad_max_abs": scale, "partitioned": partitioned, "external_params": _external(engine.module),
            "export_max_abs_diff": export_diff}


CHECKS = {"train": _train_vs_plain, "naive": _naive_head, "zero_init": _zero_init}


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # DeepSpeed's info lines would bury the result
    result = _worker(sys.argv[1:])
    print(json.dumps(result), flush=True)
