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
    tokenizer_hash: str = ""  # if set, the pack must have been built with this tokenizer (manifest hash; HF: sha256)
    # Examples set aside at the end of each shard (pretraining/validation.py), never trained on, and
    # evaluated at every checkpoint: MLM loss/accuracy, discriminator loss/accuracy/precision/recall/AUC.
    # 2048 x 128 tokens is ~260K tokens: stable curves for a third of a Large step's compute. 0 = none.
    validation_examples: int = 2048

    def __post_init__(self) -> None:
        for name in ("train_batch", "micro_batch", "block_examples", "prefetch_steps", "workers"):
            if getattr(self, name) <= 0:
                raise configs.ConfigError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.window_blocks < 0:
            raise configs.ConfigError(f"data.window_blocks must be >= 0 (0 = train_batch), got {self.window_blocks}")
        if self.grad_accum < 0:
            raise configs.ConfigError(f"data.grad_accum must be >= 0 (0 = derive), got {self.grad_accum}")
        if self.validation_examples < 0:
            raise configs.ConfigError(f"data.validation_examples must be >= 0, got {self.validation_examples}")


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
    peak_flops: float = 0.0  # one accelerator's peak FLOP/s for MFU (x ranks); 0 = look it up (none on CPU)

    def __post_init__(self) -> None:
        if self.every_steps <= 0:
            raise configs.ConfigError("logging.every_steps must be positive")


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Continued pretraining: start from a published (or earlier) ELECTRA pair instead of random weights.

    The model's shapes then come from the pair's configs; a resumed run's checkpoint wins over it.
    See pretraining/init_from.py and docs/pretraining.md for the hyperparameters to change.
    """

    # A directory (local or s3://) with discriminator/ and generator/ (what pretraining.export writes), or the
    # discriminator alone (a directory or a hub id such as google/electra-base-discriminator) with `generator`.
    pretrained: str = ""
    generator: str = ""  # the generator (google/electra-base-generator) when it is not pretrained/generator/

    def __post_init__(self) -> None:
        if self.generator and not self.pretrained:
            raise configs.ConfigError("init.generator needs init.pretrained (the discriminator) as well")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the training-health guardrails (pretraining/health.py). A non-finite loss always stops the run."""

    # The learning-progress checks (generator accuracy, discriminator precision/recall) start this many steps
    # after warmup. After the paper's 10,000 warmup steps a healthy run is far past every threshold; a tiny run
    # warms up in 10 steps and its discriminator needs ~60 more to flag its first replacement (the demo's log).
    grace_steps: int = 0
    # A generator stuck on the unigram distribution still scores the most frequent token's share (~3-6% in
    # English); below 1% it has not learned even that. Chance is 1/vocab.
    gen_acc_min: float = 0.01
    # Above this the generator restores nearly every masked token, so few are replaced and the discriminator's
    # task collapses (the paper: generators 1/4-1/2 of the discriminator's size work best, larger ones hurt).
    gen_acc_max: float = 0.9
    disc_recall_min: float = 0.0  # recall at (or below) this: the discriminator calls every token "original"
    disc_precision_min: float = 0.0  # precision at (or below) this: none of the tokens it flags was replaced
    # A step's loss above spike_ratio x the mean of the spike_window steps before it is a spike; step-to-step
    # noise is a few percent (the demo's batch of 8 moves it by up to 8%), a divergence starts well above.
    spike_ratio: float = 1.3
    spike_window: int = 100

    def __post_init__(self) -> None:
        if self.grace_steps < 0 or self.spike_window <= 0 or self.spike_ratio <= 1.0:
            raise configs.ConfigError("health.grace_steps must be >= 0, health.spike_window > 0 and "
                                      "health.spike_ratio > 1")
        if not 0.0 <= self.gen_acc_min < self.gen_acc_max <= 1.0:
            raise configs.ConfigError("need 0 <= health.gen_acc_min < health.gen_acc_max <= 1")


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
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    health: HealthConfig = dataclasses.field(default_factory=HealthConfig)

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
# tiny (tests, the demo) trains at Small's 5e-4: at 1e-3 the demo's generator catches up with its discriminator
# by step 40 and the held-out discriminator AUC falls from there (0.78 at step 50, 0.72 at 150); at 5e-4 the
# discriminator keeps improving (AUC 0.78 -> 0.80, loss 0.42 -> 0.34). It flags its first replacement about 60
# steps in, so the learning-progress checks start after step 100 (warmup 10 + grace 90).
_RUN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"max_steps": 200, "data.train_batch": 16, "data.micro_batch": 8, "optim.lr": 5e-4,
             "schedule.warmup_steps": 10, "checkpoint.every_steps": 50, "logging.every_steps": 10,
             "data.validation_examples": 128, "health.grace_steps": 90},
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


def with_pack(cfg: TrainConfig, explicit: set[str] = frozenset()) -> TrainConfig:
    """The config with the vocabulary size and special ids taken from the pack manifest: the tokenizer decides
    them (BERT's WordPiece puts [CLS] at 101, this project's SentencePiece at 2). Keys in `explicit` (set on
    the command line) are kept; the compatibility check then says if they disagree with the pack."""
    from common.packformat import PackManifest

    pack = PackManifest.read(cfg.data.pack)
    values = {"vocab_size": pack.vocab_size, **{f"{k}_token_id": v for k, v in pack.special_ids.as_dict().items()}}
    return replace_model(cfg, {k: v for k, v in values.items() if f"model.{k}" not in explicit})


def replace_model(cfg: TrainConfig, fields: dict[str, Any]) -> TrainConfig:
    """Set several model fields at once (one at a time, special ids could collide on the way)."""
    try:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **fields))
    except ValueError as exc:
        raise configs.ConfigError(str(exc)) from None


def with_inputs(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """The run config as trained: vocabulary and special ids from the pack, shapes from init.pretrained."""
    explicit = {o.partition("=")[0].strip() for o in overrides}
    cfg = with_pack(cfg, explicit)
    if cfg.init.pretrained:
        from pretraining import init_from

        cfg = replace_model(cfg, init_from.pretrained_shapes(cfg.init, cfg.model, explicit))
    return cfg


def paper_setting_warnings(cfg: TrainConfig, seq_len: int) -> list[str]:
    """Departures from the paper's recipe worth a line in the log (they are allowed)."""
    out = []
    if cfg.size in ("base", "large") and seq_len < 512:
        out.append(f"ELECTRA-{cfg.size.capitalize()} is trained at sequence length 512 in the paper (ELECTRA-Small "
                   f"at 128); this pack has {seq_len}. Repack with --max-seq-length 512 unless the shorter length "
                   "is deliberate.")
    return out


def config_from_dict(data: dict) -> TrainConfig:
    """Rebuild a TrainConfig from a manifest's `config` (export, resume checks)."""
    if "chunk_examples" in data.get("data", {}):  # written before the block-window data order: still exportable
        data = {**data, "data": {k: v for k, v in data["data"].items() if k != "chunk_examples"}}
    return configs.from_dict(TrainConfig, data)
