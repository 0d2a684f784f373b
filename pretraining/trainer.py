"""The pretraining loop under DeepSpeed: build, resume, train, validate, checkpoint, stop cleanly.

`run(cfg, ds_config_path)` is what `pretraining/train.py` calls on every rank. The pieces the loop
only calls live elsewhere: checkpoints (`pretraining.checkpoint.Checkpointer`: load / save),
held-out validation (`pretraining.validation`), the training-health checks
(`pretraining.health`), metrics (`pretraining.metrics`), and the published weights a continued
pretraining run starts from (`pretraining.init_from`).

Determinism: model init, data order, masking and dropout are all functions of
`cfg.seed`: each micro-step reseeds torch (dropout) and builds the masking
`torch.Generator` from (seed, step, rank, micro), so a run resumed from a checkpoint
computes exactly the steps the uninterrupted run would have.

Preemption: SIGTERM/SIGINT only set a flag. At each step boundary the ranks
all-reduce the flag, so they all stop after the same step, save a checkpoint and
exit with PREEMPTED_EXIT (75, EX_TEMPFAIL): "relaunch the same command to resume".

Divergence: a non-finite loss or gradient norm (the same all-reduced values on every rank)
stops the run at once with DIVERGED_EXIT (3) and a message saying what to change; nothing
is saved, so the newest checkpoint is the last good one. A checkpoint is never written from
non-finite weights either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import warnings

import torch

from common import manifest as manifests
from pretraining import checkpoint as ckpt
from pretraining import data as datalib
from pretraining import health, init_from, optim
from pretraining.config import TrainConfig, paper_setting_warnings
from pretraining.metrics import MetricsLogger, flops_per_token, peak_flops
from pretraining.model import METRIC_KEYS
from pretraining.seeding import mix_seed, seed_everything  # noqa: F401  (mix_seed: part of this module's API)
from pretraining.validation import HeldOut, Validator

log = logging.getLogger("pretraining.train")

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: a checkpoint was written on SIGTERM/SIGINT; relaunch to resume
DIVERGED_EXIT = 3  # the loss went non-finite: nothing saved; change the recipe, then relaunch (it resumes)
_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
               "gradient_clipping")


class TrainError(RuntimeError):
    """A setup problem the user must fix (config, ds_config, device)."""


# ----------------------------------------------------------------------------- setup helpers


def build_ds_config(path: str, cfg: TrainConfig, *, world: int, on_cpu: bool) -> dict:
    """The ds_config file with batch sizes, clipping and the optimizer filled in from the TrainConfig.

    The JSON files hold engine settings (ZeRO stage, buckets, precision); the TrainConfig owns the
    training recipe. A value set in both must agree, or the run stops before doing anything.
    """
    with open(path) as f:
        ds = json.load(f)
    accum = cfg.grad_accum_for(world)
    want = {"train_batch_size": cfg.data.train_batch, "train_micro_batch_size_per_gpu": cfg.data.micro_batch,
            "gradient_accumulation_steps": accum, "gradient_clipping": cfg.optim.clip}
    for key, value in want.items():
        if key in ds and ds[key] != "auto" and ds[key] != value:
            raise TrainError(f"{path} sets {key}={ds[key]} but the run config gives {value}: remove it from the "
                             "ds_config (the TrainConfig owns batch sizes and clipping) or change the override")
        ds[key] = value
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise TrainError(f"{path} has a {section!r} section: the optimizer and lr schedule come from the "
                             "TrainConfig (optim.*, schedule.*); remove it")
    bf16 = bool(ds.get("bf16", {}).get("enabled")) and ds["bf16"]["enabled"] != "auto"
    fp16 = bool(ds.get("fp16", {}).get("enabled")) and ds["fp16"]["enabled"] != "auto"
    if on_cpu and fp16:
        raise TrainError(f"{path} enables fp16, which DeepSpeed's CPU accelerator does not train in: use "
                         "ds_configs/cpu.json (fp32) or a bf16 config")
    if on_cpu and bf16:
        # DeepSpeed's CPU accelerator trains in bf16; the tests run the GPU configs this way. It is only
        # fast on CPUs with bf16 matrix units (AMX), so say so rather than refuse.
        log.warning("%s enables bf16 on CPU: it runs, but slowly unless the CPU has AMX; ds_configs/cpu.json "
                    "trains in fp32", path)
    if fp16:
        warnings.warn("fp16 with loss scaling is supported by DeepSpeed but this project tunes for bf16")
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    if bf16 and stage >= 1 and "grad_accum_dtype" not in ds.get("data_types", {}):
        # DeepSpeed accumulates micro-batch gradients in the model's dtype unless told otherwise; in bf16
        # (8 mantissa bits) the sum of many small micro-batch gradients loses their low bits. ZeRO 1-3 keep an
        # fp32 accumulation buffer when asked (without ZeRO, DeepSpeed refuses the mix). An explicit
        # "grad_accum_dtype" in the ds_config is respected.
        ds.setdefault("data_types", {})["grad_accum_dtype"] = "fp32"
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"
    ds["optimizer"] = optim.ds_optimizer_section(cfg.optim, on_cpu=on_cpu, offload=offload)
    ds.setdefault("steps_per_print", 10**9)  # our own progress line replaces DeepSpeed's
    return ds


def shared_embedding_report(module: torch.nn.Module) -> dict:
    """Evidence that both towers read one embedding tensor: the only embedding tables are the shared module's."""
    tables = [n for n, m in module.named_modules(remove_duplicate=False) if isinstance(m, torch.nn.Embedding)]
    word = [n for n, p in module.named_parameters(remove_duplicate=False) if n.endswith("word_embeddings.weight")]
    ids = {id(p) for n, p in module.named_parameters(remove_duplicate=False) if n.endswith("word_embeddings.weight")}
    shared = (all(n.startswith("embeddings.") for n in tables) and word == ["embeddings.word_embeddings.weight"]
              and len(ids) == 1)
    return {"embedding_tables": tables, "word_embedding_params": word, "distinct_tensors": len(ids), "shared": shared}


class _StopFlag:
    """Set by SIGTERM/SIGINT; read at step boundaries only (never act inside a handler)."""

    def __init__(self):
        self.signum = 0

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signum = signum


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class _State:
    step: int = 0
    cursor: int = 0  # data stream position after `step`
    tokens_seen: int = 0  # non-padding tokens trained on


class Trainer:
    def __init__(self, cfg: TrainConfig, ds_config_path: str):
        import deepspeed
        import torch.distributed as dist
        from deepspeed.accelerator import get_accelerator

        self.cfg, self.dist = cfg, dist
        cfg.require_io()
        self.stop = _StopFlag()
        self.stop.install()
        self.accel = get_accelerator()
        self.on_cpu = self.accel.device_name() == "cpu"
        deepspeed.init_distributed(dist_backend="gloo" if self.on_cpu else None)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(self.accel.device_name(self.local_rank) if not self.on_cpu else "cpu")
        if not self.on_cpu:
            self.accel.set_device(self.local_rank)  # before zero.Init allocates partitions on "the current device"
        self.accum = cfg.grad_accum_for(self.world)
        self.ds_config = build_ds_config(ds_config_path, cfg, world=self.world, on_cpu=self.on_cpu)

        self.reader = datalib.PackReader(cfg.data.pack)
        self.pack = self.reader.pack
        datalib.check_compatible(self.pack.raw, cfg.model, pack_uri=cfg.data.pack,
                                 expected_tokenizer=cfg.data.tokenizer_hash)
        self.seq_len = self.reader.seq_len
        if self.rank == 0:
            for line in paper_setting_warnings(cfg, self.seq_len):
                log.warning(line)
        self.held = HeldOut.from_pack([s.examples for s in self.pack.shards], cfg.data.validation_examples)

        seed_everything(cfg.seed)
        stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        # Under ZeRO-3 each rank materialises only its partition, so a model larger than one device still builds.
        with deepspeed.zero.Init(config_dict_or_path=self.ds_config, enabled=stage == 3):
            model = cfg.model.build()
        if cfg.init.pretrained:  # before initialize: the optimizer's fp32 master copies are taken from these
            init_from.load_into(model, cfg.init, rank=self.rank, dist=dist)
        self.engine, *_ = deepspeed.initialize(
            model=model, model_parameters=optim.param_groups(model, cfg.optim.weight_decay), config=self.ds_config,
            lr_scheduler=optim.scheduler_factory(cfg.schedule, cfg.max_steps))
        self.embedding_report = shared_embedding_report(self.engine.module)
        if not self.embedding_report["shared"]:
            raise TrainError(f"the towers do not share one embedding tensor: {self.embedding_report}")
        self.loader = datalib.PackLoader(
            self.reader, seed=cfg.seed, micro_batch=cfg.data.micro_batch, grad_accum=self.accum, rank=self.rank,
            world=self.world, block_examples=cfg.data.block_examples, window_blocks=cfg.data.window_blocks,
            prefetch_steps=cfg.data.prefetch_steps, workers=cfg.data.workers, ranges=self.held.train_ranges())
        self.validator = Validator(self.reader, self.held, rank=self.rank, world=self.world,
                                   micro_batch=cfg.data.micro_batch, seed=cfg.seed,
                                   device=self.device) if self.held.count else None
        self.checkpointer = ckpt.Checkpointer(
            cfg.checkpoint, cfg.run, engine=self.engine, dist=dist, rank=self.rank, local_rank=self.local_rank,
            world=self.world, device=self.device,
            static=dict(inputs=[manifests.input_ref(cfg.data.pack, self.pack.raw)], config=cfg,
                        ds_config=self.ds_config, size=cfg.size, seq_len=self.seq_len,
                        validation_split={"examples": self.held.count, "held_per_shard": list(self.held.held)}))
        self.log_dir = self.checkpointer.log_dir

    # ----- resume -------------------------------------------------------------------------------
    def resume(self) -> _State:
        """The newest complete checkpoint (it wins over init.pretrained), or step 0."""
        try:
            m = self.checkpointer.load(
                check=lambda m: datalib.check_resume_point(m.data, self.loader, self.pack.raw))
        except ckpt.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        if m is None:
            return _State()
        self._schedule_from_config()
        return _State(step=m.step, cursor=int(m.data["cursor"]), tokens_seen=m.tokens_seen)

    def _schedule_from_config(self) -> None:
        """After a resume, the lr follows this run's optim.lr, not the checkpoint's: the scheduler state DeepSpeed
        restores carries the old peak (LambdaLR's base_lrs), so a relaunch with a lower lr would not lower it."""
        sched = self.engine.lr_scheduler
        sched.base_lrs = [self.cfg.optim.lr for _ in sched.base_lrs]
        lrs = [base * f(sched.last_epoch) for base, f in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, lr in zip(sched.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = lrs

    # ----- the loop -----------------------------------------------------------------------------
    def _micro_step(self, batch: dict, step: int, micro: int) -> tuple[torch.Tensor, dict]:
        seed = mix_seed(self.cfg.seed, step, self.rank, micro)
        torch.manual_seed(seed)  # dropout
        gen = torch.Generator(device=self.device).manual_seed(seed ^ 0x5EED)  # masking and sampling
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        out = self.engine(**batch, generator=gen)
        self.engine.backward(out.loss)
        self.engine.step()  # DeepSpeed only updates at the accumulation boundary
        stats = torch.stack([out.loss.detach().float(), out.mlm_loss.detach().float(), out.rtd_loss.detach().float()])
        return stats, out.metrics

    def train(self) -> int:
        cfg = self.cfg
        state = self.resume()
        self.metrics = MetricsLogger(
            self.log_dir, max_steps=cfg.max_steps, start_step=state.step, every_steps=cfg.logging.every_steps,
            tensorboard=cfg.logging.tensorboard, flops_per_token=flops_per_token(cfg.model, self.seq_len),
            peak_flops=peak_flops(cfg.logging.peak_flops, self.world), enabled=self.rank == 0,
            health=health.HealthMonitor(cfg.health, cfg.schedule.warmup_steps))
        if self.rank == 0:
            self._write_run_info(state)
        if state.step >= cfg.max_steps:
            if self.rank == 0:
                log.info("the run is already complete (step %d of %d)", state.step, cfg.max_steps)
            return 0
        self.engine.train()
        for batch in self.loader.steps(state.step, state.cursor, cfg.max_steps):
            lr = self.engine.get_lr()[0]  # the lr this step's update uses
            # Loss sums, metric counts and the stop flag stay on the device and travel in one all-reduce,
            # so a step costs one host sync for logging however many micro-batches it has.
            red = torch.zeros(4 + len(METRIC_KEYS), dtype=torch.float64, device=self.device)
            for micro, mb in enumerate(batch.micro):
                stats, metrics = self._micro_step(mb, batch.step, micro)
                red[:3] += stats.double()
                red[3:-1] += torch.stack([metrics[k] for k in METRIC_KEYS]).double()
            grad_norm = self.engine.get_global_grad_norm()
            grad_norm = None if grad_norm is None else float(grad_norm)
            red[-1] = 1.0 if self.stop.signum else 0.0
            self.dist.all_reduce(red)
            vals = red.tolist()
            n = self.world * self.accum
            if not health.finite(vals[0] / n, grad_norm):
                return self._diverged(batch.step, vals[0] / n, grad_norm)
            counts = {k: vals[3 + i] for i, k in enumerate(METRIC_KEYS)}
            state = _State(step=batch.step, cursor=batch.cursor,
                           tokens_seen=state.tokens_seen + int(counts["disc_tokens"]))
            self.metrics.step(state.step, loss=vals[0] / n, mlm_loss=vals[1] / n, rtd_loss=vals[2] / n, counts=counts,
                              lr=lr, grad_norm=grad_norm, positions=cfg.data.train_batch * self.seq_len,
                              tokens_seen=state.tokens_seen)
            preempted = vals[-1] > 0
            last = preempted or state.step == cfg.max_steps
            if self.checkpointer.due(state.step, last=last):
                if not self._weights_finite():
                    return self._diverged(state.step, vals[0] / n, grad_norm, weights=True)
                if state.step == cfg.max_steps:
                    self.probe(batch.micro[0])
                self._checkpoint(state, last=last, validate=not preempted)
            if preempted:
                if self.rank == 0:
                    log.warning("stopped by signal after step %d; checkpoint saved; relaunch to resume", state.step)
                self.metrics.close()
                return PREEMPTED_EXIT
        self.metrics.close()
        return 0

    def _checkpoint(self, state: _State, *, last: bool, validate: bool) -> None:
        """Validate on the held-out split (not on a preemption: the scheduler's grace period is for the
        checkpoint), then save with the results in the manifest."""
        result = self.validator.run(self.engine, state.step, self.dist) if (validate and self.validator) else None
        if result is not None:
            self.metrics.validation(result)
        self.checkpointer.save(
            state.step, last=last, before_upload=self.metrics.flush, tokens_seen=state.tokens_seen,
            examples_seen=state.cursor, data=datalib.resume_point(self.loader, state.cursor, self.pack.raw),
            validation=result.record() if result else None)

    def _weights_finite(self) -> bool:
        """Every rank's parameters (its ZeRO-3 partition) are finite: a checkpoint must never hold a NaN."""
        ok = all(bool(torch.isfinite(getattr(p, "ds_tensor", p)).all()) for p in self.engine.module.parameters())
        return ckpt.all_ranks_ok(self.dist, self.device, ok)

    def _diverged(self, step: int, loss: float, grad_norm: float | None, *, weights: bool = False) -> int:
        """Stop without saving: the newest complete checkpoint stays the last good one."""
        warning = health.nonfinite_warning(step, loss, grad_norm, self.cfg, self.checkpointer.last, weights=weights)
        self.metrics.health_stop(warning)
        if self.rank == 0:
            log.error("%s", warning.message)
            self.checkpointer.upload_logs()  # an s3 run's metrics.jsonl gets the record too
        self.metrics.close()
        return DIVERGED_EXIT

    def probe(self, batch: dict, rows: int = 2, positions: int = 16) -> None:
        """The engine's own logits on a few rows of one batch (probe.pt), so an export can be compared to them.

        Generator logits are kept for the first `positions` positions only: [rows, seq, vocab] fp32 would be
        hundreds of MB for a 32K vocabulary.
        """
        self.engine.eval()
        b = {k: v[:rows].to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            disc = self.engine.module.discriminator_logits(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            gen = self.engine.module.generator_logits(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        self.engine.train()
        if self.rank == 0:
            gen = gen.reshape(*b["input_ids"].shape, -1)[:, :positions]
            torch.save({**{k: v.cpu() for k, v in b.items()}, "discriminator_logits": disc.float().cpu(),
                        "generator_logits": gen.float().cpu()}, os.path.join(self.log_dir, "probe.pt"))

    def _write_run_info(self, state: _State) -> None:
        model_dtype, accum_dtype = self.engine.get_data_types()
        buffer = getattr(self.engine.optimizer, "grad_partitions_flat_buffer", None)  # ZeRO-3's accumulation buffer
        info = {"world_size": self.world, "grad_accum": self.accum, "start_step": state.step,
                "shared_embeddings": self.embedding_report, "ds_config": self.ds_config,
                "zero_stage": self.ds_config.get("zero_optimization", {}).get("stage", 0),
                "params": sum(int(getattr(p, "ds_numel", p.numel())) for p in self.engine.module.parameters()),
                "model_dtype": str(model_dtype), "grad_accum_dtype": str(accum_dtype),
                "grad_accum_buffer_dtype": str(buffer.dtype) if buffer is not None else None,
                "init": dataclasses.asdict(self.cfg.init), "validation_examples": self.held.count,
                "mfu": (f"against {self.metrics.peak:.3g} FLOP/s ({self.world} ranks)" if self.metrics.peak else
                        "not recorded: no peak FLOP/s is known for this device; set logging.peak_flops to record it"),
                "model": dataclasses.asdict(self.cfg.model)}
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, "run_info.json"), "w") as f:
            json.dump(info, f, indent=1, default=str)


def run(cfg: TrainConfig, ds_config_path: str) -> int:
    """Train on this rank; returns the process exit code (0 done, PREEMPTED_EXIT after a signal checkpoint,
    DIVERGED_EXIT after a non-finite loss)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trainer = Trainer(cfg, ds_config_path)
    if trainer.rank != 0:
        logging.getLogger("pretraining").setLevel(logging.WARNING)
    return trainer.train()
