"""Progress of an evaluation: a line every few percent of each fine-tuning run, one per finished seed, overall ETA.

    fine-tuning rte seed 1: step 50/780 (6%) | loss 0.6912 | lr 6.41e-05 | elapsed 0m41s ETA 9m58s | overall 2% ETA 3h12m
    rte seed 1 done in 10m39s: accuracy 71.84 | overall 12/22 runs (31%), elapsed 1h02m, ETA 2h15m

The overall estimate weighs each planned run by the work it does (optimizer steps x batch x
sequence length, plus its dev set at a third of that per example: a forward pass without the
backward), so a SQuAD run at 512 tokens counts for more than an RTE run at 128.

Every line's log record carries a `ProgressEvent` as `record.eval_progress`: the flow turns
those into a Prefect progress artifact without parsing text (flows/electra_pretraining.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from transformers import TrainerCallback

from common.progress import fmt_duration

log = logging.getLogger("evaluation.progress")


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    fraction: float  # of the whole evaluation's estimated work, 0..1
    eta_s: float | None  # seconds left for the whole evaluation; None before the first measurement
    task: str
    seed: int
    step: int  # optimizer steps done in the current run
    total: int  # optimizer steps of the current run


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    task: str
    seed: int
    steps: int  # optimizer steps (an estimate for SQuAD: windows are counted when the run starts)
    units: float  # relative work: steps x batch x length + dev examples x length / 3


class EvalProgress:
    """The whole evaluation's plan and clock; `run(task, seed)` gives the callback of one fine-tuning run."""

    def __init__(self, plan: list[PlannedRun], every_pct: float = 5.0, logger: logging.Logger | None = None):
        self.plan, self.every_pct = plan, every_pct
        self.log = logger or log
        self.total_units = sum(r.units for r in plan) or 1.0
        self.done_units = 0.0
        self.finished = 0
        self.t0 = time.monotonic()
        self.current: PlannedRun | None = None
        self.current_fraction = 0.0  # of the current run's training steps

    def start(self) -> None:
        tasks = sorted({r.task for r in self.plan}, key=[r.task for r in self.plan].index)
        steps = sum(r.steps for r in self.plan)
        self.log.info("evaluation plan: %d fine-tuning runs (%s), about %d optimizer steps in all",
                      len(self.plan), ", ".join(tasks), steps)
        self._emit("evaluation started", 0, 0)

    def fraction(self) -> float:
        cur = self.current.units * self.current_fraction if self.current else 0.0
        return min(1.0, (self.done_units + cur) / self.total_units)

    def eta_s(self) -> float | None:
        f = self.fraction()
        if f <= 0.0:
            return None
        return (time.monotonic() - self.t0) * (1.0 - f) / f

    def overall(self) -> str:
        eta = self.eta_s()
        return f"overall {100 * self.fraction():.0f}% ETA {fmt_duration(eta) if eta is not None else '?'}"

    def run(self, task: str, seed: int) -> "RunProgress":
        self.current = next((r for r in self.plan if r.task == task and r.seed == seed), None)
        self.current_fraction = 0.0
        return RunProgress(self, task, seed)

    def finish(self, task: str, seed: int, scores: dict[str, dict[str, float]], primary: str, seconds: float) -> None:
        """One line per finished seed, with its primary score(s) and the overall ETA."""
        if self.current is not None:
            self.done_units += self.current.units
        self.current, self.current_fraction = None, 0.0
        self.finished += 1
        shown = ", ".join(f"{key} {primary} {s[primary]:.2f}" if len(scores) > 1 else f"{primary} {s[primary]:.2f}"
                          for key, s in scores.items() if primary in s)
        eta = self.eta_s()
        self._emit(f"{task} seed {seed} done in {fmt_duration(seconds)}: {shown} | overall {self.finished}/"
                   f"{len(self.plan)} runs ({100 * self.fraction():.0f}%), elapsed "
                   f"{fmt_duration(time.monotonic() - self.t0)}, ETA {fmt_duration(eta) if eta is not None else '?'}",
                   0, 0, task, seed)

    def _emit(self, line: str, step: int, total: int, task: str = "", seed: int = 0) -> None:
        event = ProgressEvent(self.fraction(), self.eta_s(), task, seed, step, total)
        self.log.info(line, extra={"eval_progress": event})


class RunProgress(TrainerCallback):
    """Trainer callback of one run: a line every `every_pct` percent of its steps (Trainer's logging interval)."""

    def __init__(self, overall: EvalProgress, task: str, seed: int):
        self.overall, self.task, self.seed = overall, task, seed
        self.t0 = time.monotonic()

    def interval(self, total: int) -> int:
        """Steps between lines for a run of `total` steps (Trainer's logging_steps)."""
        return max(1, round(total * self.overall.every_pct / 100.0))

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.monotonic()

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # the end-of-training summary has train_loss instead
        step, total = state.global_step, state.max_steps
        self.overall.current_fraction = step / total if total else 0.0
        lr = max(g["lr"] for g in optimizer.param_groups) if optimizer is not None else float("nan")
        elapsed = time.monotonic() - self.t0
        eta = elapsed / step * (total - step) if step else float("nan")
        self.overall._emit(
            f"fine-tuning {self.task} seed {self.seed}: step {step}/{total} ({100 * step / total:.0f}%) | "
            f"loss {logs['loss']:.4f} | lr {lr:.2e} | elapsed {fmt_duration(elapsed)} ETA "
            f"{fmt_duration(eta) if eta == eta else '?'} | {self.overall.overall()}", step, total, self.task, self.seed)
