"""Run config, ds_config assembly, optimizer groups and the lr schedule: no launcher needed."""

from __future__ import annotations

import json

import pytest
import torch

from common.configs import ConfigError
from pretraining import optim
from pretraining.config import ScheduleConfig, config_from_dict, train_config
from pretraining.trainer import TrainError, build_ds_config, mix_seed

REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "ds_configs"


def test_named_sizes_and_overrides():
    cfg = train_config("large", ["data.micro_batch=16", "schedule.warmup_steps=500", "model.vocab_size=30522"])
    assert (cfg.model.hidden_size, cfg.model.mask_prob, cfg.data.train_batch, cfg.optim.lr) == (1024, 0.25, 2048, 2e-4)
    assert cfg.data.micro_batch == 16 and cfg.schedule.warmup_steps == 500 and cfg.model.vocab_size == 30522
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay, cfg.optim.clip) == \
        (0.9, 0.999, 1e-6, 0.01, 1.0)
    assert train_config("small").schedule.warmup_steps == 10_000
    with pytest.raises(ConfigError, match="unknown config key 'data.micro'"):
        train_config("tiny", ["data.micro=3"])
    with pytest.raises(ConfigError, match="unknown size"):
        train_config("huge")
    with pytest.raises(ConfigError, match="must be positive"):
        train_config("tiny", ["data.micro_batch=0"])
    assert config_from_dict(json.loads(json.dumps(__import__("dataclasses").asdict(cfg)))) == cfg


def test_batch_size_check():
    cfg = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4"])
    assert cfg.grad_accum_for(2) == 2 and cfg.grad_accum_for(4) == 1
    with pytest.raises(ConfigError, match=r"16 != 4 x \? x 3"):
        cfg.grad_accum_for(3)
    cfg = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4", "data.grad_accum=4"])
    with pytest.raises(ConfigError, match=r"train_batch must equal micro_batch x grad_accum x world: 16 != 4 x 4 x 2"):
        cfg.grad_accum_for(2)


def test_ds_config_filled_from_train_config(tmp_path):
    cfg = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4"])
    ds = build_ds_config(str(REPO_CONFIGS / "cpu.json"), cfg, world=2, on_cpu=True)
    sizes = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
    assert tuple(ds[k] for k in sizes) == (16, 4, 2)
    assert ds["gradient_clipping"] == 1.0 and ds["zero_optimization"]["stage"] == 3
    assert ds["optimizer"]["params"]["torch_adam"] is True and ds["optimizer"]["params"]["eps"] == 1e-6
    fp16 = tmp_path / "fp16.json"
    fp16.write_text(json.dumps({"fp16": {"enabled": True}, "zero_optimization": {"stage": 3}}))
    with pytest.raises(TrainError, match="fp16, which DeepSpeed's CPU accelerator does not train in"):
        build_ds_config(str(fp16), cfg, world=2, on_cpu=True)
    assert build_ds_config(str(REPO_CONFIGS / "zero3.json"), cfg, world=2, on_cpu=True)["bf16"]["enabled"]

    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"train_batch_size": 32, "zero_optimization": {"stage": 3}}))
    with pytest.raises(TrainError, match="train_batch_size=32 but the run config gives 16"):
        build_ds_config(str(clash), cfg, world=2, on_cpu=True)
    for name in ("zero3.json", "zero3_offload.json", "zero2.json", "cpu.json"):
        assert "optimizer" not in json.loads((REPO_CONFIGS / name).read_text())


def test_bf16_configs_accumulate_gradients_in_fp32(tmp_path):
    """The shipped bf16 configs say so, and a user's bf16 ZeRO config without a choice gets fp32 accumulation
    (DeepSpeed's default is the model dtype); an explicit choice, and ZeRO-0 (no fp32 mix there), are left alone."""
    cfg = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4"])
    for name in ("zero3.json", "zero3_offload.json", "zero2.json"):
        shipped = json.loads((REPO_CONFIGS / name).read_text())
        assert shipped["bf16"]["enabled"] and shipped["data_types"]["grad_accum_dtype"] == "fp32", name
    assert "data_types" not in build_ds_config(str(REPO_CONFIGS / "cpu.json"), cfg, world=2, on_cpu=True)
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}))
    assert build_ds_config(str(mine), cfg, world=2, on_cpu=False)["data_types"] == {"grad_accum_dtype": "fp32"}
    mine.write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 3},
                                "data_types": {"grad_accum_dtype": "bf16"}}))
    assert build_ds_config(str(mine), cfg, world=2, on_cpu=False)["data_types"] == {"grad_accum_dtype": "bf16"}
    mine.write_text(json.dumps({"bf16": {"enabled": True}}))
    assert "data_types" not in build_ds_config(str(mine), cfg, world=2, on_cpu=False)


def test_gpu_optimizer_choice():
    """GPU: torch's fused AdamW (no nvcc needed) unless asked for DeepSpeed's; ZeRO-Offload: DeepSpeed's CPU Adam."""
    cfg = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4"])
    gpu = build_ds_config(str(REPO_CONFIGS / "zero3.json"), cfg, world=2, on_cpu=False)
    assert gpu["bf16"]["enabled"] and gpu["optimizer"]["params"]["torch_adam"] and gpu["optimizer"]["params"]["fused"]
    offload = build_ds_config(str(REPO_CONFIGS / "zero3_offload.json"), cfg, world=2, on_cpu=False)
    assert "torch_adam" not in offload["optimizer"]["params"]
    ds_fused = train_config("tiny", ["data.train_batch=16", "data.micro_batch=4", "optim.implementation=deepspeed"])
    params = build_ds_config(str(REPO_CONFIGS / "zero3.json"), ds_fused, world=2, on_cpu=False)["optimizer"]["params"]
    assert "torch_adam" not in params and "fused" not in params
    with pytest.raises(ConfigError, match="optim.implementation must be"):
        train_config("tiny", ["optim.implementation=apex"])


def test_param_groups_exclude_layernorm_and_bias():
    model = train_config("tiny", ["model.vocab_size=512"]).model.build()
    decay, no_decay = optim.param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_linear_decay():
    f = optim.lr_lambda(ScheduleConfig(warmup_steps=10), max_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    sched = optim.scheduler_factory(ScheduleConfig(warmup_steps=4), 8)(
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_step_seeds_differ_per_rank_and_step():
    seeds = {mix_seed(0, s, r, m) for s in range(5) for r in range(2) for m in range(2)}
    assert len(seeds) == 20 and mix_seed(1, 2, 3, 4) == mix_seed(1, 2, 3, 4)
