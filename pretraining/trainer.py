"""The pretraining loop under DeepSpeed: build, resume, train, checkpoint, stop cleanly on preemption.

`run(cfg, ds_config_path)` is what `pretraining/train.py` calls on every rank.

Determinism: model init, data order, masking and dropout are all functions of
`cfg.seed`: each micro-step reseeds torch (dropout) and builds the masking
`torch.Generator` from (seed, step, rank, micro), so a run resumed from a checkpoint
computes exactly the steps the uninterrupted run would have.

Preemption: SIGTERM/SIGINT only set a flag. At each step boundary the ranks
all-reduce the flag, so they all stop after the same step, save a checkpoint and
exit with PREEMPTED_EXIT (75, EX_TEMPFAIL): "relaunch the same command to resume".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import warnings

import numpy as np
import torch

from common import manifest as manifests
from common import storage
from pretraining import checkpoint as ckpt
from pretraining import data as datalib
from pretraining import optim
from pretraining.config import TrainConfig
from pretraining.metrics import MetricsLogger, flops_per_token, peak_flops
from pretraining.model import METRIC_KEYS

log = logging.getLogger("pretraining.train")

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: a checkpoint was written on SIGTERM/SIGINT; relaunch to resume
_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
               "gradient_clipping")


class TrainError(RuntimeError):
    """A setup problem the user must fix (config, ds_config, device)."""


# ----------------------------------------------------------------------------- setup helpers


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; nearby inputs give unrelated seeds."""
    h = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


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
        self.pack = self.reader.manifest
        datalib.check_compatible(self.pack, cfg.model, pack_uri=cfg.data.pack,
                                 expected_tokenizer=cfg.data.tokenizer_hash)
        self.seq_len = self.reader.seq_len

        self.root = ckpt.checkpoints_root(cfg.run)
        self.remote = storage.is_s3(cfg.run)
        default_staging = os.path.join(tempfile.gettempdir(), "electra-staging-" + manifests.config_hash(cfg.run)[:12])
        self.staging = cfg.checkpoint.staging or (default_staging if self.remote else cfg.run)
        self.stage_root = os.path.join(self.staging, ckpt.CHECKPOINTS) if self.remote else self.root
        self.log_dir = self.staging if self.remote else cfg.run

        seed_everything(cfg.seed)
        stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        # Under ZeRO-3 each rank materialises only its partition, so a model larger than one device still builds.
        with deepspeed.zero.Init(config_dict_or_path=self.ds_config, enabled=stage == 3):
            model = cfg.model.build()
        self.engine, *_ = deepspeed.initialize(
            model=model, model_parameters=optim.param_groups(model, cfg.optim.weight_decay), config=self.ds_config,
            lr_scheduler=optim.scheduler_factory(cfg.schedule, cfg.max_steps))
        self.embedding_report = shared_embedding_report(self.engine.module)
        if not self.embedding_report["shared"]:
            raise TrainError(f"the towers do not share one embedding tensor: {self.embedding_report}")
        self.loader = datalib.PackLoader(
            self.reader, seed=cfg.seed, micro_batch=cfg.data.micro_batch, grad_accum=self.accum, rank=self.rank,
            world=self.world, block_examples=cfg.data.block_examples, window_blocks=cfg.data.window_blocks,
            prefetch_steps=cfg.data.prefetch_steps, workers=cfg.data.workers)

    # ----- checkpoints --------------------------------------------------------------------------
    def _all_ok(self, ok: bool) -> bool:
        t = torch.tensor([1 if ok else 0], dtype=torch.int64, device=self.device)  # NCCL reduces device tensors only
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return bool(t.item())

    def resume(self) -> _State:
        if not self.cfg.checkpoint.resume:
            return _State()
        cands = [None]
        if self.rank == 0:
            cands = [[(u, m) for u, m in ckpt.candidates(self.root, "size")]]
        self.dist.broadcast_object_list(cands, src=0)
        for uri, m in cands[0]:
            name = storage.basename(uri)
            if m.get("world_size") != self.world:
                raise TrainError(f"{uri} was written by {m.get('world_size')} ranks, this run has {self.world}: "
                                 "ZeRO partitions are per rank. Resume with the same number of ranks.")
            ok = self._fetch_own(uri, m)
            if not self._all_ok(ok):
                if self.rank == 0:
                    log.warning("skipping checkpoint %s: a file is missing or failed its sha256 check", uri)
                continue
            point = m["data"]
            datalib.check_resume_point(point, self.loader, self.pack)
            self.engine.load_checkpoint(self.stage_root, tag=name)
            if self.remote:
                self.dist.barrier()  # every rank of the node has read the staged copy
                shutil.rmtree(os.path.join(self.stage_root, name), ignore_errors=True)
            if self.rank == 0:
                log.info("resumed from %s (step %d, %d tokens seen)", uri, m["step"], m["tokens_seen"])
                if self.remote:
                    self._fetch_logs()
            return _State(step=int(m["step"]), cursor=int(point["cursor"]), tokens_seen=int(m["tokens_seen"]))
        if self.rank == 0:
            log.info("no complete checkpoint under %s: starting from step 0", self.root)
        return _State()

    def _fetch_own(self, uri: str, m: dict) -> bool:
        """Download (S3) and verify the files this rank loads; False if any is corrupt.

        Every rank reaches the barrier whatever it found, so a bad file cannot leave the others waiting.
        """
        name = storage.basename(uri)
        local = os.path.join(self.stage_root, name)
        ok = True
        for f in m["shards"]:
            if not ckpt.needed_by(f["path"], self.rank):
                continue
            # Shared files are fetched once per node (by local rank 0); everyone verifies their own.
            if ckpt.owner_rank(f["path"]) is None and self.local_rank != 0:
                continue
            path = os.path.join(local, f["path"])
            try:
                if self.remote:
                    storage.download_file(storage.join(uri, f["path"]), path)
                if self.cfg.checkpoint.verify == "sha256" and storage.sha256_uri(path) != f["sha256"]:
                    log.warning("rank %d: %s does not match its sha256", self.rank, path)
                    ok = False
            except (FileNotFoundError, storage.StorageError) as exc:
                log.warning("rank %d: cannot read %s: %s", self.rank, path, exc)
                ok = False
            if not ok:
                break
        self.dist.barrier()
        return ok

    def _fetch_logs(self) -> None:
        for rel in ("metrics.jsonl",):
            src = storage.join(self.cfg.run, rel)
            if storage.exists(src):
                storage.download_file(src, os.path.join(self.log_dir, rel))

    def save(self, state: _State) -> str:
        name = ckpt.tag(state.step)
        dest = storage.join(self.root, name)
        if self.rank == 0:  # re-saving a step (after resuming past a corrupt one): unmark it while it is rewritten
            storage.delete(manifests.manifest_uri(dest))
        self.engine.save_checkpoint(self.stage_root, tag=name, save_latest=False)
        self.dist.barrier()
        local = os.path.join(self.stage_root, name)
        mine = ckpt.file_entries(local, self.rank) if os.path.isdir(local) else []
        if self.remote:
            for f in mine:
                storage.upload_file(os.path.join(local, f["path"]), storage.join(dest, f["path"]))
        gathered = [None] * self.world
        self.dist.all_gather_object(gathered, mine)
        if self.rank == 0:
            files = sorted((f for part in gathered for f in part), key=lambda f: f["path"])
            m = manifests.build(
                "checkpoint", inputs=[manifests.input_ref(self.cfg.data.pack, self.pack)], config=self.cfg,
                shards=files, step=state.step, tokens_seen=state.tokens_seen,
                examples_seen=state.cursor, data=datalib.resume_point(self.loader, state.cursor, self.pack),
                world_size=self.world, ds_config=self.ds_config, size=self.cfg.size, seq_len=self.seq_len,
                tag=name)
            manifests.write(dest, m)  # last: the completion marker
            if self.remote:
                self.metrics.flush()
                self._upload_logs()
            ckpt.prune(self.root, self.cfg.checkpoint.keep_last)
            log.info("checkpoint %s complete (%d files)", dest, len(files))
        self.dist.barrier()
        if self.remote:
            shutil.rmtree(local, ignore_errors=True)  # uploaded; local disk is for the next one
        return dest

    def _upload_logs(self) -> None:
        for sub in ("tensorboard", "metrics.jsonl", "probe.pt", "run_info.json"):
            src = os.path.join(self.log_dir, sub)
            if os.path.isdir(src):
                storage.upload_dir(src, storage.join(self.cfg.run, sub))
            elif os.path.isfile(src):
                storage.upload_file(src, storage.join(self.cfg.run, sub))

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
            peak_flops=peak_flops(cfg.logging.peak_flops), enabled=self.rank == 0)
        if self.rank == 0:
            self._write_run_info(state)
        if state.step >= cfg.max_steps:
            if self.rank == 0:
                log.info("the run is already complete (step %d of %d)", state.step, cfg.max_steps)
            return 0
        last_saved = state.step
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
            red[-1] = 1.0 if self.stop.signum else 0.0
            self.dist.all_reduce(red)
            vals = red.tolist()
            n = self.world * self.accum
            counts = {k: vals[3 + i] for i, k in enumerate(METRIC_KEYS)}
            state = _State(step=batch.step, cursor=batch.cursor,
                           tokens_seen=state.tokens_seen + int(counts["disc_tokens"]))
            self.metrics.step(state.step, loss=vals[0] / n, mlm_loss=vals[1] / n, rtd_loss=vals[2] / n, counts=counts,
                              lr=lr, grad_norm=None if grad_norm is None else float(grad_norm),
                              positions=cfg.data.train_batch * self.seq_len, tokens_seen=state.tokens_seen)
            preempted = vals[-1] > 0
            if preempted or state.step % cfg.checkpoint.every_steps == 0 or state.step == cfg.max_steps:
                if state.step == cfg.max_steps:
                    self.probe(batch.micro[0])
                self.save(state)
                last_saved = state.step
            if preempted:
                if self.rank == 0:
                    log.warning("stopped by signal after step %d; checkpoint saved; relaunch to resume", state.step)
                self.metrics.close()
                return PREEMPTED_EXIT
        if last_saved != state.step:
            self.save(state)
        self.metrics.close()
        return 0

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
        info = {"world_size": self.world, "grad_accum": self.accum, "start_step": state.step,
                "shared_embeddings": self.embedding_report, "ds_config": self.ds_config,
                "zero_stage": self.ds_config.get("zero_optimization", {}).get("stage", 0),
                "params": sum(int(getattr(p, "ds_numel", p.numel())) for p in self.engine.module.parameters())}
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, "run_info.json"), "w") as f:
            json.dump(info, f, indent=1, default=str)


def run(cfg: TrainConfig, ds_config_path: str) -> int:
    """Train on this rank; returns the process exit code (0 done, PREEMPTED_EXIT after a signal checkpoint)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trainer = Trainer(cfg, ds_config_path)
    if trainer.rank != 0:
        logging.getLogger("pretraining").setLevel(logging.WARNING)
    return trainer.train()
