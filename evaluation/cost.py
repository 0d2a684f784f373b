"""Expected GPU cost of each evaluation tier for each model size, from the cost model and the datasets' sizes.

    python -m evaluation.cost [--gpu h100-sxm-bf16] [--mfu 0.3]

FLOPs follow `pretraining/cost.py` (`../shared/reference/ELECTRA.md`): training costs
6 x (matmul parameters) + 12 x length x hidden x layers per token for the discriminator alone,
inference a third of that. Tokens per run = optimizer steps x batch x padded length for training
plus the dev set once, per seed. Lengths: with per-batch padding and length grouping a batch is
about as long as its examples, so the estimate uses each dataset's typical length (`DATASETS`,
rough means in WordPiece tokens with [CLS]/[SEP], SQuAD one window per question); the `padded`
column is the bound when every example is padded to the maximum (128, SQuAD 512). GPU-hours =
FLOPs / (peak x MFU): MFU is an assumption (fine-tuning batches are small: 25-35% is typical
of HF fine-tuning at bf16), so the table scales with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from evaluation import tasks as task_specs
from evaluation.config import FinetuneConfig
from evaluation.finetune import train_steps
from evaluation.tiers import TIERS, Tier
from pretraining import cost as cost_model
from pretraining.sizes import SIZES


@dataclasses.dataclass(frozen=True)
class DatasetSize:
    train: int  # training examples of the official distribution
    dev: int  # dev examples scored (MNLI: matched + mismatched)
    tokens: float  # typical example length in tokens; an estimate for cost only


DATASETS = {
    "cola": DatasetSize(8_551, 1_043, 12),
    "sst2": DatasetSize(67_349, 872, 14),
    "mrpc": DatasetSize(3_668, 408, 53),
    "stsb": DatasetSize(5_749, 1_500, 31),
    "qqp": DatasetSize(363_846, 40_430, 30),
    "mnli": DatasetSize(392_702, 19_647, 40),
    "qnli": DatasetSize(104_743, 5_463, 50),
    "rte": DatasetSize(2_490, 277, 70),
    "squad_v1": DatasetSize(87_599, 10_570, 180),
    "squad_v2": DatasetSize(130_319, 11_873, 180),
}


@dataclasses.dataclass(frozen=True)
class TierCost:
    size: str
    tier: str
    runs: int  # fine-tuning runs (tasks x seeds)
    steps: int  # optimizer steps over all runs
    tokens: float  # tokens processed, training and dev inference, all runs
    flops: float
    gpu_hours: float  # at typical lengths (per-batch padding)
    gpu_hours_padded: float  # every example padded to the maximum length


def tier_cost(size: str, tier: Tier, *, peak_flops: float, mfu: float, ft: FinetuneConfig = FinetuneConfig()) -> TierCost:
    cfg = SIZES[size]()
    runs = steps = 0
    tokens = flops = flops_padded = 0.0
    for t in task_specs.resolve(list(tier.tasks)):
        d = DATASETS[t.name]
        max_len = ft.squad_max_seq_length if t.kind == "squad" else ft.max_seq_length
        n_train = d.train * (2 if t.unordered and ft.double_unordered else 1)
        run_steps = train_steps(n_train, ft, t.epochs, tier.max_steps)
        for length, acc in ((min(d.tokens, max_len), "typical"), (max_len, "padded")):
            train_tok = run_steps * ft.batch_size * length
            dev_tok = d.dev * length
            f = (train_tok + dev_tok / 3) * cost_model.encoder_flops_per_token(cfg, math.ceil(length))
            if acc == "typical":
                tokens += tier.seeds * (train_tok + dev_tok)
                flops += tier.seeds * f
            else:
                flops_padded += tier.seeds * f
        runs += tier.seeds
        steps += tier.seeds * run_steps
    per_hour = peak_flops * mfu * 3600
    return TierCost(size, tier.name, runs, steps, tokens, flops, flops / per_hour, flops_padded / per_hour)


def table(gpu: str = "h100-sxm-bf16", mfu: float = 0.3) -> list[TierCost]:
    peak = cost_model.PEAK_FLOPS[gpu]
    return [tier_cost(size, TIERS[t], peak_flops=peak, mfu=mfu) for size in ("small", "base", "large")
            for t in ("quick", "full")]


def markdown(rows: list[TierCost], gpu: str, mfu: float) -> str:
    out = [f"GPU-hours on one {gpu} at {100 * mfu:.0f}% MFU (`python -m evaluation.cost --gpu {gpu} --mfu {mfu:g}`)",
           "", "| size | tier | runs | optimizer steps | tokens | PFLOP | GPU-hours | GPU-hours padded to max |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.size} | {r.tier} | {r.runs} | {r.steps:,} | {r.tokens / 1e6:,.0f}M | {r.flops / 1e15:,.0f} "
                   f"| {r.gpu_hours:.2g} | {r.gpu_hours_padded:.2g} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100-sxm-bf16", choices=sorted(cost_model.PEAK_FLOPS))
    ap.add_argument("--mfu", type=float, default=0.3, help="assumed model FLOPs utilisation of fine-tuning")
    a = ap.parse_args(argv)
    if not 0 < a.mfu <= 1:
        ap.error("--mfu must be in (0, 1]")
    print(markdown(table(a.gpu, a.mfu), a.gpu, a.mfu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
