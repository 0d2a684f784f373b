"""Training-health guardrails: the ways an ELECTRA run goes wrong silently, named as they happen.

The trainer asks `finite()` every step (every rank, on the all-reduced values, so all ranks
agree): a non-finite loss or gradient norm stops the run before anything is saved, so the
newest checkpoint stays the last good one. `HealthMonitor.interval()` runs on rank 0 at every
log interval, on that interval's summed counts, and returns the warnings that hold:

    loss_spike                    a step's loss far above the average of the steps before it
    generator_not_learning        generator accuracy still near zero after warmup
    discriminator_recall_zero     the discriminator flags no replaced token after warmup
    discriminator_precision_zero  none of the tokens it flags was replaced
    generator_too_strong          the generator restores nearly every masked token: few replacements
                                  are left to detect, and the discriminator's task collapses

Each warning is a name in the progress line, a `health/<name>` TensorBoard scalar and a
`{"kind": "health"}` line in metrics.jsonl (pretraining/metrics.py). Thresholds are
`HealthConfig` fields (pretraining/config.py).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math

from pretraining.config import HealthConfig, TrainConfig


class Check(str, enum.Enum):
    NONFINITE = "nonfinite_loss"
    LOSS_SPIKE = "loss_spike"
    GENERATOR_NOT_LEARNING = "generator_not_learning"
    DISC_RECALL_ZERO = "discriminator_recall_zero"
    DISC_PRECISION_ZERO = "discriminator_precision_zero"
    GENERATOR_TOO_STRONG = "generator_too_strong"


INTERVAL_CHECKS = tuple(c for c in Check if c is not Check.NONFINITE)


@dataclasses.dataclass(frozen=True)
class HealthWarning:
    check: Check
    step: int
    value: float  # the measured quantity (a loss ratio, an accuracy, a recall)
    threshold: float
    message: str  # what it means and what to change

    def record(self) -> dict:
        """The metrics.jsonl line (a non-finite number as its name, "nan" or "inf": JSON has none)."""
        def num(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        return {"step": self.step, "kind": "health", "check": self.check.value, "value": num(self.value),
                "threshold": num(self.threshold), "message": self.message}


def finite(loss: float, grad_norm: float | None) -> bool:
    return math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm))


def nonfinite_warning(step: int, loss: float, grad_norm: float | None, cfg: TrainConfig,
                      last_good: str | None, *, weights: bool = False) -> HealthWarning:
    """The message that stops the run: what happened, what was kept, what to change before relaunching.

    `weights`: the loss was finite but the weights to be checkpointed were not (the update itself overflowed).
    """
    kept = (f"the last good checkpoint, {last_good}, is kept and a relaunch resumes from it" if last_good
            else "no checkpoint was written yet, so a relaunch starts over")
    gn = "n/a" if grad_norm is None else f"{grad_norm:g}"
    what = (f"the weights are not finite after step {step} (loss {loss:g}, grad norm {gn})" if weights
            else f"the loss is not finite at step {step} (loss {loss:g}, grad norm {gn})")
    msg = (f"{Check.NONFINITE.value}: {what}; the run "
           f"stopped without saving: {kept}. Change before relaunching: lower optim.lr (now {cfg.optim.lr:g}; the "
           f"paper uses 5e-4 for small and 2e-4 for base/large, less when continuing from published weights), "
           f"lengthen schedule.warmup_steps (now {cfg.schedule.warmup_steps}), or make the generator smaller "
           f"(model.generator_hidden_size, now {cfg.model.generator_hidden_size}: the paper's is 1/4 to 1/3 of "
           f"the discriminator's {cfg.model.hidden_size}).")
    return HealthWarning(Check.NONFINITE, step, loss, math.inf, msg)


class HealthMonitor:
    """Rank 0's interval checks; `step()` sees every step's loss, `interval()` the interval's derived metrics."""

    def __init__(self, cfg: HealthConfig, warmup_steps: int):
        self.cfg = cfg
        self.start = warmup_steps + cfg.grace_steps  # first step the learning-progress checks look at
        self._history: collections.deque[float] = collections.deque(maxlen=cfg.spike_window)
        self._worst_ratio = 0.0  # largest step-loss / preceding-average ratio since the last interval

    def step(self, loss: float) -> None:
        hist = self._history
        if len(hist) == hist.maxlen:
            mean = sum(hist) / len(hist)
            if mean > 0:
                self._worst_ratio = max(self._worst_ratio, loss / mean)
        hist.append(loss)

    def interval(self, step: int, derived: dict[str, float]) -> list[HealthWarning]:
        """Warnings for the interval ending at `step`; `derived` = derived_metrics of its summed counts."""
        c, out = self.cfg, []
        ratio, self._worst_ratio = self._worst_ratio, 0.0
        if ratio > c.spike_ratio:
            out.append(HealthWarning(
                Check.LOSS_SPIKE, step, ratio, c.spike_ratio,
                f"{Check.LOSS_SPIKE.value}: a step's loss reached {ratio:.2f}x the average of the {c.spike_window} "
                "steps before it; if it recurs, lower optim.lr or optim.clip, or lengthen schedule.warmup_steps"))
        if step < self.start:
            return out
        gen, rec, prec = derived["gen_acc"], derived["disc_recall"], derived["disc_precision"]
        if gen < c.gen_acc_min:
            out.append(HealthWarning(
                Check.GENERATOR_NOT_LEARNING, step, gen, c.gen_acc_min,
                f"{Check.GENERATOR_NOT_LEARNING.value}: generator accuracy {gen:.4f} < {c.gen_acc_min} "
                f"{self.start} steps in: check the learning rate and that the pack's tokenizer matches the model"))
        if rec <= c.disc_recall_min:
            out.append(HealthWarning(
                Check.DISC_RECALL_ZERO, step, rec, c.disc_recall_min,
                f"{Check.DISC_RECALL_ZERO.value}: the discriminator flags no replaced token (recall {rec:.4f}) "
                f"{self.start} steps in: it predicts 'original' everywhere; a too-weak generator (few "
                "replacements) or a too-low learning rate keeps it there"))
        if prec <= c.disc_precision_min:
            out.append(HealthWarning(
                Check.DISC_PRECISION_ZERO, step, prec, c.disc_precision_min,
                f"{Check.DISC_PRECISION_ZERO.value}: none of the tokens the discriminator flags was replaced "
                f"(precision {prec:.4f}) {self.start} steps in"))
        if gen > c.gen_acc_max:
            out.append(HealthWarning(
                Check.GENERATOR_TOO_STRONG, step, gen, c.gen_acc_max,
                f"{Check.GENERATOR_TOO_STRONG.value}: generator accuracy {gen:.3f} > {c.gen_acc_max}: most sampled "
                "tokens equal the original, so the discriminator has little to detect; make the generator "
                "smaller (model.generator_hidden_size: the paper's best is 1/4 to 1/2 of the discriminator)"))
        return out
