"""Training-step throughput: this project's ELECTRA model beside the peer built from stock transformers.

    python benchmarks/train_step.py         # CPU: ELECTRA-Small, seq 128, batch 8, fp32, one thread
    python benchmarks/train_step.py         # GPU: ELECTRA-Large, seq 512, batch 32, bf16, torch + ZeRO 0/2/3
    python benchmarks/train_step.py --peer-attention eager --json out.json
    python benchmarks/train_step.py --modes torch,compile     # ours eager vs ours with model.compile_towers
    python benchmarks/train_step.py --modes maxbatch         # largest micro-batch that fits, and its tokens/s

A step is forward + backward + AdamW update on one micro-batch. Both sides get the same sizes,
batch, masking (`pretraining.model.mask_tokens`) and Gumbel sampling; they differ only in the model:

- ours: `ElectraPretrainingModel` (one shared embeddings module, generator head on masked positions
  only, SDPA attention);
- peer: what a user writes from stock transformers: `ElectraForMaskedLM` + `ElectraForPreTraining`,
  the generator's embeddings set to the discriminator's and its output layer tied to the token
  matrix, `labels=-100` off the masked positions (so the full-vocabulary head runs on every
  position), transformers' default attention for the installed version (`--peer-attention eager`
  for the pre-SDPA default).

The sides alternate in rounds: each reports its median round, and the ratio is the median of the
per-round ratios, so a load spike on a shared machine hits both sides of a ratio. On CPU it also
reports throughput per CPU-second (what other tenants cannot inflate). On GPU it reports MFU (cost
model in pretraining/cost.py) against the datasheet peak and against a bf16 matmul measured in the
same run, each side's peak memory, and our model in single-GPU DeepSpeed engines: ZeRO stage 0
(no ZeRO), 2 and 3, with the project's ds_configs/zero{2,3}.json.

`compile` adds ours with `model.compile_towers` (torch.compile of each tower) to the alternating
rounds, so it is timed against eager; its warm-up, which holds the compile, is reported apart.
`maxbatch` doubles ours' micro-batch from --batch until a step runs out of device memory, bisects
between the last fit and the first failure, and times the largest that fits.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common.machine import cpu_model, load_avg  # noqa: E402
from pretraining.cost import flops_per_token, mfu, peak_flops_for_device  # noqa: E402
from pretraining.model import gumbel_sample, hf_configs, mask_tokens  # noqa: E402
from pretraining.sizes import SIZES, ModelConfig, named_size  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="large" if cuda else "small", help="named model size")
    p.add_argument("--seq-len", type=int, default=512 if cuda else 128, help="positions per example")
    p.add_argument("--batch", type=int, default=32 if cuda else 8, help="examples per step (one micro-batch)")
    p.add_argument("--vocab-size", type=int, default=32768, help="vocabulary (the project's default tokenizer size)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16" if cuda else "fp32",
                   help="bf16 autocast (GPU) or fp32")
    p.add_argument("--modes", default="torch,zero0,zero2,zero3" if cuda else "torch",
                   help="comma list: torch (both sides, plain PyTorch loop), compile (ours with compiled towers, "
                        "timed beside torch), zero0/zero2/zero3 (ours in a single-rank DeepSpeed engine), "
                        "maxbatch (largest micro-batch that fits; GPU)")
    p.add_argument("--max-batch-limit", type=int, default=1024, help="maxbatch: stop doubling here")
    p.add_argument("--peer-attention", choices=["default", "eager", "sdpa"], default="default",
                   help="the peer's attention: transformers' default for the installed version, or forced")
    p.add_argument("--rounds", type=int, default=8 if not cuda else 5, help="alternating timing rounds per side")
    p.add_argument("--steps", type=int, default=5 if cuda else 2, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3 if cuda else 1, help="untimed steps before the first round")
    p.add_argument("--threads", type=int, default=0 if cuda else 1,
                   help="torch CPU threads (0: torch's default). One on CPU: the comparison is per core, and on a "
                        "shared machine a second OpenMP thread mostly spins waiting for a busy core (5x slower here)")
    p.add_argument("--json", default="", help="also write the results to this file")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the two sides
class PeerElectra(torch.nn.Module):
    """Stock `ElectraForMaskedLM` + `ElectraForPreTraining` wired the way ELECTRA ports usually do it."""

    def __init__(self, cfg: ModelConfig, attention: str):
        super().__init__()
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        attn = None if attention == "default" else attention  # None: the class picks transformers' default
        disc_cfg, gen_cfg = hf_configs(cfg, attn_implementation=attn)
        self.cfg = cfg
        self.disc = ElectraForPreTraining(disc_cfg)
        self.gen = ElectraForMaskedLM(gen_cfg)
        self.gen.electra.embeddings = self.disc.electra.embeddings  # token, position, type, LayerNorm shared
        self.gen.generator_lm_head.weight = self.disc.electra.embeddings.word_embeddings.weight

    @staticmethod
    def default_attention(attention: str) -> str:
        """The kernel the peer ends up with: transformers' choice for "default"."""
        from transformers import ElectraForPreTraining

        if attention != "default":
            return attention
        disc_cfg, _ = hf_configs(named_size("tiny"), attn_implementation=None)
        disc_cfg.num_hidden_layers = 1
        return ElectraForPreTraining(disc_cfg).config._attn_implementation

    def forward(self, input_ids, attention_mask, token_type_ids, *, generator=None):
        masked_ids, picked = mask_tokens(input_ids, attention_mask, self.cfg, generator)
        labels = torch.where(picked, input_ids, -100)
        g = self.gen(input_ids=masked_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     labels=labels)
        sampled = gumbel_sample(g.logits[picked], generator)
        disc_ids = input_ids.masked_scatter(picked, sampled)
        d = self.disc(input_ids=disc_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      labels=(disc_ids != input_ids).long())
        return g.loss + self.cfg.rtd_weight * d.loss


def make_batch(cfg: ModelConfig, batch: int, seq_len: int, device: torch.device, seed: int = 0):
    """Packed-format rows: [CLS] A [SEP] B [SEP]; 5% of rows shorter and padded, as the packer's short targets."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size, (batch, seq_len), generator=g)
    lengths = torch.full((batch,), seq_len)
    short = torch.rand(batch, generator=g) < 0.05
    lengths[short] = torch.randint(seq_len // 4, seq_len, (int(short.sum()),), generator=g)
    for row, n in enumerate(lengths.tolist()):
        ids[row, 0], ids[row, n // 2], ids[row, n - 1] = 2, 3, 3
        ids[row, n:] = 0
    am = (ids != 0).long()
    tt = (torch.arange(seq_len)[None, :] > (lengths[:, None] // 2)).long() * am
    return ids.to(device), am.to(device), tt.to(device)


# ----------------------------------------------------------------------------- runners
class Runner:
    """One side of the comparison: owns a model and an optimizer step."""

    def __init__(self, name: str, model: torch.nn.Module, step, batch, device, dtype, seed: int = 0):
        self.name, self.model, self._step, self.batch, self.device, self.dtype = name, model, step, batch, device, dtype
        self.rng = torch.Generator(device=device).manual_seed(seed)
        self.times: list[float] = []  # wall-clock seconds per round
        self.cpu_times: list[float] = []  # this process's CPU seconds per round
        self.peak_bytes = 0
        self.warmup_s = 0.0  # the untimed first steps (allocator warm-up; the compile, when compiled)
        self.last_loss = float("nan")

    def run(self, steps: int) -> tuple[float, float]:
        _sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = self._step(self.batch, self.rng)
        _sync(self.device)
        elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        self.last_loss = float(loss)  # after the clock: reading it syncs
        if not math.isfinite(self.last_loss):
            raise RuntimeError(f"{self.name}: the loss is {self.last_loss}")
        return elapsed


def torch_runner(name: str, model: torch.nn.Module, batch, device, dtype) -> Runner:
    model.to(device).train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                            fused=fused)
    autocast = dtype == torch.bfloat16

    def step(b, rng):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(*b, generator=rng)
        loss = out.loss if hasattr(out, "loss") else out
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return Runner(name, model, step, batch, device, dtype)


def largest_fitting(fits, start: int, limit: int) -> tuple[int, list[tuple[int, bool]]]:
    """The largest batch in [start, limit] for which `fits(batch)` holds: doubling, then bisecting between the
    last fit and the first failure (to within an eighth of it). Returns it (0 if even `start` fails) and the trials."""
    trials: list[tuple[int, bool]] = []

    def attempt(b: int) -> bool:
        ok = fits(b)
        trials.append((b, ok))
        return ok

    good, bad = 0, None
    b = start
    while b <= limit:
        if not attempt(b):
            bad = b
            break
        good, b = b, b * 2
    if good == 0:
        return 0, trials
    if bad is not None:
        step = max(1, good // 8)
        while bad - good > step:
            mid = (good + bad) // 2
            if attempt(mid):
                good = mid
            else:
                bad = mid
    return good, trials


def find_max_batch(cfg: ModelConfig, args, device, dtype) -> tuple[int, list[tuple[int, bool]]]:
    """The largest micro-batch of ours that trains one step (forward, backward, AdamW) without running out of memory."""
    torch.manual_seed(0)
    model = cfg.build().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    rng = torch.Generator(device=device).manual_seed(0)

    def fits(b: int) -> bool:
        batch = make_batch(cfg, b, args.seq_len, device)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = model(*batch, generator=rng).loss
            loss.backward()
            opt.step()
            _sync(device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            loss = batch = None  # noqa: F841 (drop the activations before the next try)
            opt.zero_grad(set_to_none=True)
            _free(device)

    best, trials = largest_fitting(fits, args.batch, args.max_batch_limit)
    del model, opt
    _free(device)
    return best, trials


def deepspeed_runner(stage: int, cfg: ModelConfig, batch, device, dtype) -> Runner:
    import deepspeed

    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", LOCAL_RANK="0",
                           WORLD_SIZE="1").items():
        os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    # The project's own ds_configs/zero{2,3}.json (buckets, persistence threshold) where they exist,
    # so the figures are those of the configs training runs use; batch, clipping and dtype from here.
    project = REPO / "ds_configs" / f"zero{stage}.json"
    ds_config = json.loads(project.read_text()) if project.exists() else {"zero_optimization": {}}
    ds_config["zero_optimization"]["stage"] = stage
    ds_config |= {"train_micro_batch_size_per_gpu": batch[0].shape[0], "gradient_accumulation_steps": 1,
                  "gradient_clipping": 1.0, "steps_per_print": 10**9, "wall_clock_breakdown": False,
                  "bf16": {"enabled": dtype == torch.bfloat16}, "zero_allow_untested_optimizer": True}
    model = cfg.build()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                            fused=device.type == "cuda")
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config)

    def step(b, rng):
        out = engine(*b, generator=rng)
        engine.backward(out.loss)
        engine.step()
        return out.loss.detach()

    return Runner(f"ours/zero{stage}", engine, step, batch, device, dtype)


def matmul_ceiling(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matmul on random data, mean of `reps` after 3 warm-ups: the measured ceiling."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- reporting
def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"device": torch.cuda.get_device_name(0), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "gpus": torch.cuda.device_count()}
    else:
        info |= {"device": f"CPU: {cpu_model()}", "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    info["load_avg"] = load_avg()
    return info


def measure(factories: list, tokens_per_step: int, args) -> list[dict]:
    """Build and warm up each runner in turn, then time them in alternating rounds; report median rounds.

    Peak memory is each runner's own: what the runners built before it hold is subtracted.
    Besides wall-clock time each round records the process's CPU time: on a shared CPU, with one
    thread, it is the work done, unaffected by the time other tenants hold the cores.
    """
    runners = []
    for factory in factories:
        cuda = torch.cuda.is_available()
        base = torch.cuda.memory_allocated() if cuda else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        r = factory()
        r.warmup_s = r.run(args.warmup)[0] if args.warmup else 0.0
        if cuda:
            r.peak_bytes = torch.cuda.max_memory_allocated() - base
        runners.append(r)
    for _ in range(args.rounds):
        for r in runners:
            wall, cpu = r.run(args.steps)
            r.times.append(wall)
            r.cpu_times.append(cpu)
    tokens = tokens_per_step * args.steps
    return [{"name": r.name, "tokens_per_s": tokens / statistics.median(r.times),
             "tokens_per_cpu_s": tokens / statistics.median(r.cpu_times),
             "round_s": [round(t, 3) for t in r.times], "round_cpu_s": [round(t, 3) for t in r.cpu_times],
             "peak_memory_gib": round(r.peak_bytes / 2**30, 2) or None, "last_loss": r.last_loss,
             "warmup_s": round(r.warmup_s, 2)}
            for r in runners]


def round_ratios(ours: dict, peer: dict, key: str) -> list[float]:
    """peer time / our time, round by round: neighbours in time saw about the same machine load."""
    return [p / o for o, p in zip(ours[key], peer[key])]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cfg = dataclasses.replace(named_size(args.size), vocab_size=args.vocab_size,
                              max_position_embeddings=max(512, args.seq_len))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    valid_modes = ("torch", "compile", "zero0", "zero2", "zero3", "maxbatch")
    bad = [m for m in modes if m not in valid_modes]
    if bad:
        raise SystemExit(f"unknown --modes {bad}; valid: {', '.join(valid_modes)}")

    info = machine()
    print(f"machine: {json.dumps(info)}")
    print(f"model: {args.size} vocab {cfg.vocab_size}, seq {args.seq_len}, batch {args.batch}, {args.dtype}")
    batch = make_batch(cfg, args.batch, args.seq_len, device)
    tokens_per_step = args.batch * args.seq_len
    fpt = flops_per_token(cfg, args.seq_len)
    peak = peak_flops_for_device() if device.type == "cuda" else None
    if device.type == "cuda":
        info["matmul_tflops"] = round(matmul_ceiling(device) / 1e12, 1)
        print(f"bf16 matmul ceiling measured: {info['matmul_tflops']} TFLOP/s")

    results: list[dict] = []
    peer_attention = None
    eager_side: list = []
    if "torch" in modes or "compile" in modes:

        def ours():
            torch.manual_seed(0)
            return torch_runner("ours", cfg.build(), batch, device, dtype)

        eager_side.append(ours)
    if "torch" in modes:
        peer_attention = PeerElectra.default_attention(args.peer_attention)

        def peer():
            torch.manual_seed(0)
            return torch_runner(f"peer ({peer_attention} attention)", PeerElectra(cfg, args.peer_attention), batch,
                                device, dtype)

        eager_side.append(peer)
    if "compile" in modes:

        def compiled():
            torch.manual_seed(0)
            return torch_runner("ours/compiled", dataclasses.replace(cfg, compile_towers=True).build(), batch,
                                device, dtype)

        eager_side.append(compiled)
    if eager_side:
        results += measure(eager_side, tokens_per_step, args)
        _free(device)
    for mode in modes:
        if mode.startswith("zero"):
            results += measure([lambda: deepspeed_runner(int(mode[-1]), cfg, batch, device, dtype)],
                               tokens_per_step, args)
            _free(device)
    max_batch = None
    if "maxbatch" in modes:
        best, trials = find_max_batch(cfg, args, device, dtype)
        print("micro-batch trials: " + ", ".join(f"{b} {'fits' if ok else 'out of memory'}" for b, ok in trials))
        max_batch = {"batch": best, "trials": trials}
        if best:
            big = make_batch(cfg, best, args.seq_len, device)

            def ours_at_max():
                torch.manual_seed(0)
                return torch_runner(f"ours @ micro-batch {best}", cfg.build(), big, device, dtype)

            results += measure([ours_at_max], best * args.seq_len, args)
            del big
            _free(device)

    info["load_avg_end"] = load_avg()
    cpu = device.type == "cpu"
    ceiling = info.get("matmul_tflops", 0) * 1e12
    print(f"\n{'side':<30} {'tokens/s':>10} {'tok/CPU-s':>10} {'MFU':>7} {'MFU/mm':>7} {'peak GiB':>9}")
    for r in results:
        r["mfu"] = mfu(r["tokens_per_s"], fpt, peak) if peak else None
        r["mfu_vs_matmul"] = mfu(r["tokens_per_s"], fpt, ceiling) if ceiling else None
        mfu_s = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mm_s = f"{r['mfu_vs_matmul']:.1%}" if r["mfu_vs_matmul"] is not None else "-"
        mem_s = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] else "-"
        cpu_s = f"{r['tokens_per_cpu_s']:,.0f}" if cpu else "-"
        print(f"{r['name']:<30} {r['tokens_per_s']:>10,.0f} {cpu_s:>10} {mfu_s:>7} {mm_s:>7} {mem_s:>9}")
    ratio = None
    if peer_attention:
        ours_r = next(r for r in results if r["name"] == "ours")
        peer_r = next(r for r in results if r["name"].startswith("peer"))
        walls = round_ratios(ours_r, peer_r, "round_s")
        ratio = statistics.median(walls)
        line = f"\nours / peer: {ratio:.2f}x (median of per-round ratios, range {min(walls):.2f}-{max(walls):.2f})"
        if cpu:
            cpu_ratio = statistics.median(round_ratios(ours_r, peer_r, "round_cpu_s"))
            line += f"; by CPU time {cpu_ratio:.2f}x"
            info["cpu_time_ratio"] = cpu_ratio
        print(line)
    compiled_ratio = None
    if "compile" in modes:
        ours_r = next(r for r in results if r["name"] == "ours")
        comp_r = next(r for r in results if r["name"] == "ours/compiled")
        walls = round_ratios(comp_r, ours_r, "round_s")
        compiled_ratio = statistics.median(walls)
        print(f"compiled / eager: {compiled_ratio:.2f}x (per-round range {min(walls):.2f}-{max(walls):.2f}); "
              f"warm-up with the compile {comp_r['warmup_s']:.0f} s, eager {ours_r['warmup_s']:.0f} s")
    print(f"cost model: {fpt / 1e9:.3f} GFLOP/token"
          + (f", peak {peak / 1e12:.0f} TFLOP/s" if peak else " (no MFU on CPU)"))
    print(f"load average: start {info['load_avg']}, end {info['load_avg_end']}")
    report = {"machine": info, "args": vars(args), "flops_per_token": fpt, "peak_flops": peak,
              "results": results, "ratio": ratio, "compiled_over_eager": compiled_ratio, "max_batch": max_batch}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
