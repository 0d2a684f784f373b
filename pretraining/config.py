"""The pretraining run config: a named size plus `key.sub=value` overrides.

    cfg = train_config("small", ["data.pack=s3://bucket/pack", "run=s3://bucket/runs/small-1"])

Every field says what it is and why its default; `__post_init__` validates, and
`common.configs` rejects unknown keys. Per-size defaults are the paper's
(`../shared/reference/ELECTRA.md`); `tiny` is for tests and the demo.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common import configs
from pretraining.sizes import ModelConfig, named_size


@dataclasses.dataclass(frozen=True)
class DataConfig:
    pack: str = ""  # pack URI (s3:// or local) written by pipelines.pack; required
    train_batch: int = 128  # sequences per optimizer step over all ranks (the paper's "batch size")
    micro_batch: int = 32  # sequences per rank per forward; bounded by accelerator memory
    grad_accum: int = 0  # micro-batches per rank per step; 0 = derive as train_batch / (micro_batch x world)
    # A rank's read rate is about workers x block_examples / store latency (benchmarks/loader_throughput.py).
    block_examples: int = 256  # consecutive examples per range request (256 KiB at seq 512): few, large reads
    window_blocks: int = 0  # blocks dealt round-robin per window; 0 = train_batch, so each block has one reader
    prefetch_steps: int = 16  # batches assembled ahead in the background (blocks are read a whole window ahead)
    workers: int = 8  # background reader threads; I/O-bound, so threads, and more than cores is fine
    tokenizer_hash: str = ""  # if set, the pack must have been built with this tokenizer manifest hash

    def __post_init__(self) -> None:
        for name in ("train_batch", "micro_batch", "block_examples", "prefetch_steps", "workers"):
            if getattr(self, name) <= 0:
                raise configs.ConfigError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.window_blocks < 0:
            raise configs.ConfigError(f"data.window_blocks must be >= 0 (0 = train_batch), got {self.window_blocks}")
        if self.grad_accum < 0:
            raise configs.ConfigError(f"data.grad_accum must be >= 0 (0 = derive), got {self.grad_accum}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (paper: 5e-4 small, 2e-4 base/large)
    beta1: float = 0.9  # AdamW betas as in the paper
    beta2: float = 0.999
    eps: float = 1e-6  # the paper's epsilon (BERT's), not torch's 1e-8
    weight_decay: float = 0.01  # not applied to LayerNorm weights and biases
    clip: float = 1.0  # global gradient-norm clipping
    implementation: str = "torch"  # GPU AdamW: "torch" (fused, no build step) or "deepspeed" (FusedAdam, built with nvcc)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.eps <= 0 or self.clip < 0 or self.weight_decay < 0:
            raise configs.ConfigError("optim.lr and optim.eps must be positive, clip and weight_decay >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise configs.ConfigError(f"optim betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.implementation not in ("torch", "deepspeed"):
            raise configs.ConfigError(f"optim.implementation must be 'torch' or 'deepspeed', got {self.implementation!r}")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    warmup_steps: int = 10_000  # linear warmup from 0 (paper); tiny runs override it
    final_lr_fraction: float = 0.0  # lr at max_steps as a fraction of the peak (paper: linear decay to 0)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or not 0 <= self.final_lr_fraction <= 1:
            raise configs.ConfigError("schedule.warmup_steps must be >= 0 and final_lr_fraction in [0, 1]")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000  # checkpoint period; a preemption also checkpoints at the next step boundary
    keep_last: int = 3  # complete checkpoints kept; older ones are deleted after each new one is complete
    staging: str = ""  # local dir DeepSpeed writes to before upload (s3 runs); "" = a temp dir per run
    resume: bool = True  # continue from the newest complete checkpoint under <run>/checkpoints
    verify: str = "sha256"  # how a checkpoint is checked before resuming: "sha256" or "size" (faster, weaker)

    def __post_init__(self) -> None:
        if self.every_steps <= 0 or self.keep_last <= 0:
            raise configs.ConfigError("checkpoint.every_steps and checkpoint.keep_last must be positive")
        if self.verify not in ("sha256", "size"):
            raise configs.ConfigError(f"checkpoint.verify must be 'sha256' or 'size', got {self.verify!r}")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    every_steps: int = 100  # a progress line (and TensorBoard scalars) every N steps
    tensorboard: bool = True  # event files under <run>/tensorboard
    peak_flops: float = 0.0  # accelerator peak FLOP/s for MFU; 0 = look it up from the device (none on CPU)

    def __post_init__(self) -> None:
        if self.every_steps <= 0:
            raise configs.ConfigError("logging.every_steps must be positive")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    size: str = "small"  # the named size this config started from (recorded in manifests)
    run: str = ""  # run directory URI (s3:// or local): checkpoints/, tensorboard/, metrics.jsonl; required
    max_steps: int = 1_000_000  # optimizer steps (paper: 1M small, 766K base, 400K large)
    seed: int = 0  # seeds init, data order, masking and dropout; a resumed run must keep it
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise configs.ConfigError(f"max_steps must be positive, got {self.max_steps}")

    def require_io(self) -> None:
        """Checked at launch, not on construction, so a config can be built before its paths are known."""
        missing = [k for k in ("run",) if not getattr(self, k)] + (["data.pack"] if not self.data.pack else [])
        if missing:
            raise configs.ConfigError(f"set {', '.join(missing)} (e.g. `--config tiny data.pack=PACK_URI run=RUN_URI`)")

    def grad_accum_for(self, world: int) -> int:
        """micro x grad_accum x world must equal train_batch; say how to fix it when it cannot."""
        d = self.data
        per_step = d.micro_batch * world
        accum = d.grad_accum or (d.train_batch // per_step if d.train_batch % per_step == 0 else 0)
        if accum <= 0 or d.micro_batch * accum * world != d.train_batch:
            shown = d.grad_accum or "?"
            raise configs.ConfigError(
                f"train_batch must equal micro_batch x grad_accum x world: {d.train_batch} != "
                f"{d.micro_batch} x {shown} x {world}. Change data.train_batch, data.micro_batch or "
                f"data.grad_accum (0 derives it), or the number of ranks.")
        return accum


# Per-size run defaults from the paper; the model shape comes from pretraining.sizes.
_RUN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"max_steps": 200, "data.train_batch": 16, "data.micro_batch": 8, "optim.lr": 1e-3,
             "schedule.warmup_steps": 10, "checkpoint.every_steps": 50, "logging.every_steps": 10},
    "small": {"max_steps": 1_000_000, "data.train_batch": 128, "data.micro_batch": 128, "optim.lr": 5e-4},
    "base": {"max_steps": 766_000, "data.train_batch": 256, "data.micro_batch": 64, "optim.lr": 2e-4},
    "large": {"max_steps": 400_000, "data.train_batch": 2048, "data.micro_batch": 32, "optim.lr": 2e-4},
}


def train_config(size: str, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A named size's run config with `key.sub=value` overrides applied (unknown keys raise ConfigError)."""
    if size not in _RUN_DEFAULTS:
        raise configs.ConfigError(f"unknown size {size!r}; valid sizes: {', '.join(_RUN_DEFAULTS)}")
    cfg = TrainConfig(size=size, model=named_size(size))
    cfg = configs.apply_overrides(cfg, {k: v for k, v in _RUN_DEFAULTS[size].items()})
    return configs.apply_overrides(cfg, overrides or [])


def with_pack_vocab(cfg: TrainConfig) -> TrainConfig:
    """The config with model.vocab_size taken from the pack manifest: the tokenizer decides the vocabulary."""
    from common import manifest

    vocab = int(manifest.read(cfg.data.pack, kind="pack")["vocab_size"])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))


def config_from_dict(data: dict) -> TrainConfig:
    """Rebuild a TrainConfig from a manifest's `config` (export, resume checks)."""
    if "chunk_examples" in data.get("data", {}):  # written before the block-window data order: still exportable
        data = {**data, "data": {k: v for k, v in data["data"].items() if k != "chunk_examples"}}
    return configs.from_dict(TrainConfig, data)
