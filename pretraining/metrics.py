"""Training metrics: one JSON line per step, TensorBoard scalars and a progress line every K steps.

Per-step values are already reduced over ranks (the trainer all-reduces one small
tensor per step), so only rank 0 writes. metrics.jsonl is what tests and the golden
curve read; a resumed run appends, so a step that was trained twice (after a crash
without a checkpoint) appears twice and the last line wins.

Besides the training lines (no "kind"), metrics.jsonl holds `{"kind": "validation"}` lines
(held-out metrics at each checkpoint, pretraining/validation.py) and `{"kind": "health"}`
lines (a training-health warning, pretraining/health.py); `read_losses` reads the first,
`read_records(uri, kind)` the others (from a local path or s3://).

The training line of each log interval's last step also carries the interval's throughput, the
figures of its log line: `tokens_per_s` (sequence positions per second over all ranks, padding
included: what the model computes) and `mfu` (those positions' model FLOPs, `pretraining/cost.py`,
over the peak of all ranks). `mfu` is left out when no peak is known (CPU, an unlisted GPU) unless
`logging.peak_flops` gives one; `run_info.json` says which (`mfu`).
"""

from __future__ import annotations

import json
import logging
import os
import time

from common import storage
from common.progress import fmt_duration
from pretraining import cost
from pretraining.model import derived_metrics

TRAIN, VALIDATION, HEALTH = None, "validation", "health"  # the "kind" of a metrics.jsonl line

log = logging.getLogger("pretraining.train")


def peak_flops(override: float = 0.0, world: int = 1) -> float | None:
    """The run's dense bf16 peak for MFU, all `world` ranks together (tokens/s counts every rank's tokens);
    None on CPU or an unlisted GPU unless `override` (one device's peak, logging.peak_flops) gives one."""
    one = override or cost.peak_flops_for_device()
    return one * world if one else None


def flops_per_token(model_cfg, seq_len: int) -> float:
    return float(cost.flops_per_token(model_cfg, seq_len))


class MetricsLogger:
    """Rank 0's sink for per-step metrics."""

    def __init__(self, log_dir: str, *, max_steps: int, start_step: int, every_steps: int, tensorboard: bool,
                 flops_per_token: float | None, peak_flops: float | None, enabled: bool = True, health=None):
        self.enabled = enabled
        self.health = health  # a pretraining.health.HealthMonitor, asked at every log interval
        self._active: set = set()  # checks that held at the previous interval (their full message is logged once)
        self.max_steps, self.start_step, self.every = max_steps, start_step, every_steps
        self.fpt, self.peak = flops_per_token, peak_flops
        self.t0 = self._last_t = time.monotonic()
        self._last_step = start_step
        self._window_tokens = 0
        self._window_sums: dict[str, float] = {}
        self._window_losses: list[tuple[float, float, float]] = []
        self.writer = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        self.jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(log_dir, "tensorboard"))

    def step(self, step: int, *, loss: float, mlm_loss: float, rtd_loss: float, counts: dict[str, float],
             lr: float, grad_norm: float | None, positions: int, tokens_seen: int) -> None:
        """Record one optimizer step; `positions` = sequence positions processed (for tokens/s and MFU)."""
        if not self.enabled:
            return
        rec = {"step": step, "loss": loss, "mlm_loss": mlm_loss, "rtd_loss": rtd_loss, "lr": lr,
               "grad_norm": grad_norm, "tokens_seen": tokens_seen, **derived_metrics(counts)}
        if self.health is not None:
            self.health.step(loss)
        self._window_tokens += positions
        self._window_losses.append((loss, mlm_loss, rtd_loss))
        for k, v in counts.items():
            self._window_sums[k] = self._window_sums.get(k, 0.0) + v
        interval = step % self.every == 0 or step == self.max_steps
        if interval:
            now = time.monotonic()
            tok_s = self._window_tokens / max(now - self._last_t, 1e-9)
            rec["tokens_per_s"] = tok_s
            if self.fpt and self.peak:
                rec["mfu"] = cost.mfu(tok_s, self.fpt, self.peak)
        self.jsonl.write(json.dumps(rec) + "\n")
        if interval:
            self._flush(step, lr, grad_norm, tokens_seen, now, rec["tokens_per_s"], rec.get("mfu"))

    def _flush(self, step: int, lr: float, grad_norm: float | None, tokens_seen: int, now: float, tok_s: float,
               mfu: float | None) -> None:
        n = len(self._window_losses)
        loss, mlm, rtd = (sum(x[i] for x in self._window_losses) / n for i in range(3))
        d = derived_metrics(self._window_sums)
        done = step - self.start_step
        elapsed = now - self.t0
        eta = elapsed / done * (self.max_steps - step) if done else float("nan")
        gn = f"{grad_norm:.3f}" if grad_norm is not None else "n/a"
        warnings = self.health.interval(step, d) if self.health is not None else []
        log.info(
            "step %d/%d (%.1f%%) | loss %.4f mlm %.4f rtd %.4f | gen acc %.3f | disc acc %.3f P %.3f R %.3f | "
            "lr %.3e gnorm %s | %.0f tok/s MFU %s | elapsed %s ETA %s%s",
            step, self.max_steps, 100.0 * step / self.max_steps, loss, mlm, rtd, d["gen_acc"], d["disc_acc"],
            d["disc_precision"], d["disc_recall"], lr, gn, tok_s, f"{100 * mfu:.1f}%" if mfu is not None else "n/a",
            fmt_duration(elapsed), fmt_duration(eta) if eta == eta else "?",
            " | health: " + ", ".join(w.check.value for w in warnings) if warnings else "")
        self._health_records(step, warnings)
        if self.writer is not None:
            scalars = {"loss/total": loss, "loss/generator_mlm": mlm, "loss/discriminator_rtd": rtd,
                       "generator/accuracy": d["gen_acc"], "discriminator/accuracy": d["disc_acc"],
                       "discriminator/precision": d["disc_precision"], "discriminator/recall": d["disc_recall"],
                       "optim/lr": lr, "throughput/tokens_per_s": tok_s, "progress/tokens_seen": tokens_seen}
            if grad_norm is not None:
                scalars["optim/grad_norm"] = grad_norm
            if mfu is not None:
                scalars["throughput/mfu"] = mfu
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self._last_t, self._window_tokens, self._window_sums, self._window_losses = now, 0, {}, []

    def _health_records(self, step: int, warnings: list) -> None:
        """A jsonl line per warning, its full message when a check starts to hold, and a 0/1 scalar per check."""
        if self.health is None:
            return
        from pretraining.health import INTERVAL_CHECKS

        fired = {w.check for w in warnings}
        for w in warnings:
            self.jsonl.write(json.dumps(w.record()) + "\n")
            if w.check not in self._active:
                log.warning("health: %s", w.message)
        self._active = fired
        if self.writer is not None:
            for check in INTERVAL_CHECKS:
                self.writer.add_scalar(f"health/{check.value}", 1.0 if check in fired else 0.0, step)

    def health_stop(self, warning) -> None:
        """The warning that stops the run (a non-finite loss): its jsonl line and scalar."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(warning.record()) + "\n")
        if self.writer is not None:
            self.writer.add_scalar(f"health/{warning.check.value}", 1.0, warning.step)
        self.flush()

    def validation(self, result) -> None:
        """Held-out metrics at a checkpoint (a pretraining.validation.ValidationResult)."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(result.record()) + "\n")
        auc = "n/a" if result.disc_auc is None else f"{result.disc_auc:.4f}"
        log.info("validation at step %d (%d held-out examples) | mlm loss %.4f acc %.3f | disc loss %.4f acc %.3f "
                 "P %.3f R %.3f AUC %s", result.step, result.examples, result.mlm_loss, result.mlm_acc,
                 result.disc_loss, result.disc_acc, result.disc_precision, result.disc_recall, auc)
        if self.writer is not None:
            for k, v in result.scalars().items():
                self.writer.add_scalar(k, v, result.step)
            self.writer.flush()

    def flush(self) -> None:
        if self.enabled:
            self.jsonl.flush()
            if self.writer is not None:
                self.writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def read_records(uri: str, kind: str | None = TRAIN) -> list[dict]:
    """The lines of one kind from a metrics.jsonl (local or s3://), in file order; [] if there is none."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        return []
    return [rec for rec in map(json.loads, filter(str.strip, text.splitlines())) if rec.get("kind") == kind]


def read_losses(path: str) -> dict[int, dict]:
    """step -> training record from a metrics.jsonl (the last record of a step wins)."""
    return {int(rec["step"]): rec for rec in read_records(path, TRAIN)}
