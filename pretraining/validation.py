"""Held-out validation during pretraining: the curves that say a run is learning long before GLUE does.

The split is defined from the pack manifest alone: the last rows of every shard, as many
as `data.validation_examples` spread over the shards in proportion to their size
(`HeldOut`). The training loader's index space is the rows before them
(`PackLoader(ranges=HeldOut.train_ranges())`), so training never sees a held-out example, and the
split is the same for every run, resume and world size over the same pack.

At every checkpoint (`Validator.run`), each rank evaluates its contiguous share of the split,
in batches of twice the training micro-batch, in eval mode (no dropout) with masking and
sampling seeded by (seed, rank, batch) only, so the same weights on the same number of ranks
give the same numbers: a resumed run reproduces them exactly. What it reports, as the official
run_pretraining.py's evaluation does:

    mlm_loss, mlm_acc                  the generator at the masked positions
    disc_loss, disc_acc,               the discriminator on the generator's samples, over non-padding
    disc_precision, disc_recall        tokens (precision and recall of "replaced")
    disc_auc                           ROC AUC of its logits for replaced vs original tokens

The AUC is exact (Mann-Whitney, ties counted half) over every non-padding token of the split:
the ranks all-gather their logits and labels, 2 x `validation_examples x seq_len` floats (8 MB
for 2048 x 512). Early in training the discriminator's logits differ by less than 0.01 from
token to token, so a binned AUC would read 0.5 exactly when the first signal appears.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from common.configs import ConfigError
from common.packformat import PackReader, attention_mask, token_type_ids
from pretraining.data import RowRange
from pretraining.model import METRIC_KEYS, derived_metrics
from pretraining.seeding import mix_seed

SALT = 0x7A11DA7E  # separates validation's draws from training's (seed, step, rank, micro) ones


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The validation split of a pack: `held[k]` rows at the end of shard k."""

    shard_examples: tuple[int, ...]
    held: tuple[int, ...]

    @classmethod
    def from_pack(cls, shard_examples: list[int], count: int) -> "HeldOut":
        total = sum(shard_examples)
        if count > total // 2:
            raise ConfigError(f"data.validation_examples={count} would hold out more than half of the pack's "
                              f"{total} examples; lower it (0 turns validation off)")
        # Largest-remainder apportionment: proportional to shard size, exact total, deterministic.
        quota = [count * n / total if total else 0.0 for n in shard_examples]
        held = [math.floor(q) for q in quota]
        by_fraction = sorted(range(len(quota)), key=lambda k: (held[k] - quota[k], k))
        for k in by_fraction[:count - sum(held)]:
            held[k] += 1
        return cls(tuple(shard_examples), tuple(held))

    @property
    def count(self) -> int:
        return sum(self.held)

    def train_ranges(self) -> list[RowRange]:
        """The rows the training order may use: each shard's rows before its held-out tail."""
        return [RowRange(k, 0, n - h) for k, (n, h) in enumerate(zip(self.shard_examples, self.held)) if n > h]

    def rows(self) -> list[tuple[int, int]]:
        """(shard, row) of every held-out example, shard by shard."""
        return [(k, r) for k, (n, h) in enumerate(zip(self.shard_examples, self.held)) for r in range(n - h, n)]

    def rank_rows(self, rank: int, world: int) -> list[tuple[int, int]]:
        """This rank's contiguous share; every rank gets as many (the remainder, < world rows, is unused), so
        the ranks run the same number of forwards and their ZeRO-3 gathers stay in step."""
        rows = self.rows()
        per = len(rows) // world
        return rows[rank * per:(rank + 1) * per]


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    step: int
    examples: int
    mlm_loss: float
    mlm_acc: float
    disc_loss: float
    disc_acc: float
    disc_precision: float
    disc_recall: float
    disc_auc: float | None  # None when the split has no replaced (or no original) token

    def record(self) -> dict:
        """The metrics.jsonl line (and the checkpoint manifest's `validation`)."""
        return {"step": self.step, "kind": "validation", **{k: v for k, v in dataclasses.asdict(self).items()
                                                            if k != "step"}}

    def scalars(self) -> dict[str, float]:
        return {f"validation/{k}": v for k, v in dataclasses.asdict(self).items()
                if k not in ("step", "examples") and v is not None}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U); None without both."""
    pos = labels.astype(bool)
    p, n = int(pos.sum()), int((~pos).sum())
    if p == 0 or n == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    # Average 1-based rank of each run of equal scores.
    starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
    ends = np.concatenate([starts[1:], [len(ranked)]])
    avg = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = avg
    return float((ranks[pos].sum() - p * (p + 1) / 2.0) / (p * n))


class Validator:
    """Evaluates this rank's share of the held-out split; every rank calls `run` at the same steps."""

    def __init__(self, reader: PackReader, held: HeldOut, *, rank: int, world: int, micro_batch: int, seed: int,
                 device: torch.device):
        self.reader, self.rank, self.device, self.seed = reader, rank, device, seed
        # Forward only: nothing is kept for a backward, so twice the training micro-batch fits where training
        # fits, and half as many forwards (each one a round of ZeRO-3 gathers) make the pass cheaper.
        self.batch = 2 * micro_batch
        self.rows = held.rank_rows(rank, world)
        self.examples = len(self.rows) * world
        self._ids: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        """This rank's rows, read once (held-out rows are consecutive within a shard: one read per shard)."""
        if self._ids is None:
            parts = []
            for shard in sorted({k for k, _ in self.rows}):
                mine = [r for k, r in self.rows if k == shard]
                parts.append(self.reader.read(shard, mine[0], len(mine)))
            self._ids = np.concatenate(parts) if parts else np.zeros((0, self.reader.seq_len), np.int64)
        return self._ids

    def batches(self) -> list[dict[str, torch.Tensor]]:
        ids = self._load()
        sep, pad = int(self.reader.special_ids["sep"]), int(self.reader.special_ids["pad"])
        out = []
        for i in range(0, len(ids), self.batch):
            chunk = ids[i:i + self.batch]
            out.append({"input_ids": torch.from_numpy(np.ascontiguousarray(chunk)),
                        "attention_mask": torch.from_numpy(attention_mask(chunk, pad)),
                        "token_type_ids": torch.from_numpy(token_type_ids(chunk, sep))})
        return out

    def run(self, module: torch.nn.Module, step: int, dist) -> ValidationResult:
        """Forward passes only (a collective under ZeRO-3: all ranks, same count), then one all-reduce of the
        sums and one all-gather of the discriminator's logits."""
        sums = torch.zeros(2 + len(METRIC_KEYS), dtype=torch.float64, device=self.device)
        logits, labels = [], []  # labels: 1 replaced, 0 original, -1 padding
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for i, batch in enumerate(self.batches()):
                gen = torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, SALT, self.rank, i))
                out = module(**{k: v.to(self.device) for k, v in batch.items()}, generator=gen)
                counts = torch.stack([out.metrics[k] for k in METRIC_KEYS]).double()
                sums[0] += out.mlm_loss.double() * counts[METRIC_KEYS.index("masked")]
                sums[1] += out.rtd_loss.double() * counts[METRIC_KEYS.index("disc_tokens")]
                sums[2:] += counts
                valid = batch["attention_mask"].to(self.device).bool()
                logits.append(out.disc_logits.float())
                labels.append(torch.where(valid, out.replaced.to(torch.int8), torch.tensor(-1, dtype=torch.int8,
                                                                                            device=self.device)))
        module.train(was_training)
        dist.all_reduce(sums)
        seq = self.reader.seq_len
        mine = torch.cat([torch.cat(logits), torch.cat(labels).float()], dim=1) if logits else \
            torch.zeros((0, 2 * seq), device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mine)  # every rank holds as many rows (HeldOut.rank_rows)
        both = torch.cat(gathered).cpu().numpy()
        scores, codes = both[:, :seq].ravel(), both[:, seq:].ravel()
        keep = codes >= 0
        vals = sums.cpu().numpy()
        counts = dict(zip(METRIC_KEYS, vals[2:].tolist()))
        d = derived_metrics(counts)
        return ValidationResult(
            step=step, examples=self.examples, mlm_loss=float(vals[0] / max(counts["masked"], 1)),
            mlm_acc=d["gen_acc"], disc_loss=float(vals[1] / max(counts["disc_tokens"], 1)), disc_acc=d["disc_acc"],
            disc_precision=d["disc_precision"], disc_recall=d["disc_recall"],
            disc_auc=roc_auc(scores[keep], codes[keep] > 0))
