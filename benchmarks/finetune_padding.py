"""Fine-tuning step rate: batches padded to their longest example (and grouped by length) vs padded to the maximum.

    python benchmarks/finetune_padding.py [--hidden 256 --layers 4] [--json out.json]

One epoch of `evaluation.finetune.make_trainer` (the real fine-tuning path: ELECTRA's GLUE head,
layer-wise LR decay, AdamW, the collator) over synthetic examples whose lengths follow a
lognormal law clipped to the maximum, in two regimes:

  glue   max 128 tokens, median 36, 512 examples (sentence pairs: MNLI, QNLI, QQP are 30-50 tokens long)
  squad  max 512 tokens, median 170, 128 examples (a question and a paragraph; long ones fill the window)

and three ways of batching the same examples (batch 32):

  padded   every example padded to the maximum length, random order: what the SQuAD path did
           before (`padding="max_length"`) and what a fixed-shape TF pipeline does: the peer
  dynamic  each batch padded to its longest example, random order
  grouped  dynamic, with Trainer's length-grouped sampler (the default, `finetune.group_by_length`)

Trainer's length-grouped sampler sorts within mega-batches of min(examples / 128, 50) batches,
so grouping needs a few hundred examples to show (real datasets have far more). Each mode runs
in its own process (fresh peak memory), on the same examples and seed. Reported:
examples/s, the ratio to `padded`, the positions the model computed per example (padding
included), and the process's peak resident memory. Lengths are what changes the cost, not the
token values, so ids are random.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REGIMES = {"glue": (128, 36.0, 512), "squad": (512, 170.0, 128)}  # max length, median length, examples
MODES = ("padded", "dynamic", "grouped")


def lengths(n: int, max_len: int, median: float, seed: int = 0) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(np.log(median), 0.5, n), 8, max_len)]


def one(regime: str, mode: str, hidden: int, layers: int) -> dict:
    """Train one epoch in this process; returns its figures."""
    import dataclasses

    import numpy as np
    import torch
    from transformers import ElectraConfig

    from evaluation.config import FinetuneConfig
    from evaluation.finetune import make_trainer, train_steps
    from evaluation.heads import ElectraForGlue

    torch.manual_seed(0)
    max_len, median, n = REGIMES[regime]
    rng = np.random.default_rng(1)
    feats = []
    for length in lengths(n, max_len, median):
        size = max_len if mode == "padded" else length
        ids = np.zeros(size, dtype=np.int32)
        ids[:length] = rng.integers(5, 1000, length)
        mask = (ids != 0).astype(np.int32)
        feats.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros(size, np.int32),
                      "labels": int(rng.integers(0, 2))})
    cfg = ElectraConfig(vocab_size=1000, embedding_size=128, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                        max_position_embeddings=512, num_labels=2)
    ft = dataclasses.replace(FinetuneConfig(), group_by_length=mode == "grouped", bf16=False)
    steps = train_steps(n, ft, 1.0)
    trainer = make_trainer(ElectraForGlue(cfg), feats, ft, lr=1e-4, layer_decay=0.8, steps=steps, seed=1,
                           use_cpu=True, pad_id=0)
    positions: list[int] = []
    trainer.data_collator = _Counting(trainer.data_collator, positions)  # the model computes what the collator pads
    t0, c0 = time.monotonic(), time.process_time()
    trainer.train()
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return {"regime": regime, "mode": mode, "examples": n, "steps": steps, "wall_s": wall, "cpu_s": cpu,
            "examples_per_s": n / wall, "positions_per_example": sum(positions) / n,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class _Counting:
    """The collator, counting the positions (padding included) of every batch it pads."""

    def __init__(self, collate, positions: list[int]):
        self.collate, self.positions = collate, positions

    def __call__(self, batch):
        out = self.collate(batch)
        self.positions.append(int(out["input_ids"].numel()))
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256, help="model width (ELECTRA-Small: 256)")
    ap.add_argument("--layers", type=int, default=4, help="encoder layers (Small has 12; fewer keep CPU runs short)")
    ap.add_argument("--one", nargs=2, metavar=("REGIME", "MODE"), help=argparse.SUPPRESS)  # child process
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(*a.one, a.hidden, a.layers)))
        return 0
    from common import machine

    print(json.dumps(machine.describe()))
    rows = []
    for regime in REGIMES:
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--one", regime, mode, "--hidden", str(a.hidden),
                                  "--layers", str(a.layers)], capture_output=True, text=True, check=True, cwd=REPO)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = {r["regime"]: r for r in rows if r["mode"] == "padded"}
    print(f"model: hidden {a.hidden}, {a.layers} layers; batch 32; one epoch")
    print("| regime | mode | examples/s | x padded | positions/example | CPU-s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = r["examples_per_s"] / base[r["regime"]]["examples_per_s"]
        print(f"| {r['regime']} (max {REGIMES[r['regime']][0]}) | {r['mode']} | {r['examples_per_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['positions_per_example']:.0f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine.describe(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
