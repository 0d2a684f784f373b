"""Training metrics: one JSON line per step, TensorBoard scalars and a progress line every K steps.

Per-step values are already reduced over ranks (the trainer all-reduces one small
tensor per step), so only rank 0 writes. metrics.jsonl is what tests and the golden
curve read; a resumed run first drops the lines after the step it resumes from (steps
trained after the last checkpoint by a run that then died), so each step appears once.
"""

from __future__ import annotations

import json
import logging
import os
import time

from common.progress import fmt_duration
from pretraining import cost
from pretraining.model import derived_metrics

log = logging.getLogger("pretraining.train")


def peak_flops(override: float = 0.0) -> float | None:
    """The accelerator's dense bf16 peak for MFU; None on CPU, where MFU means nothing."""
    return override or cost.peak_flops_for_device()


def flops_per_token(model_cfg, seq_len: int) -> float:
    return float(cost.flops_per_token(model_cfg, seq_len))


def truncate_after(path: str, step: int) -> int:
    """Drop the lines of steps after `step` (and any torn last line); returns how many were dropped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    keep = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if len(keep) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return len(lines) - len(keep)


class MetricsLogger:
    """Rank 0's sink for per-step metrics."""

    def __init__(self, log_dir: str, *, max_steps: int, start_step: int, every_steps: int, tensorboard: bool,
                 flops_per_token: float | None, peak_flops: float | None, enabled: bool = True):
        self.enabled = enabled
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
        path = os.path.join(log_dir, "metrics.jsonl")
        truncate_after(path, start_step)
        self.jsonl = open(path, "a", buffering=1)
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
        self.jsonl.write(json.dumps(rec) + "\n")
        self._window_tokens += positions
        self._window_losses.append((loss, mlm_loss, rtd_loss))
        for k, v in counts.items():
            self._window_sums[k] = self._window_sums.get(k, 0.0) + v
        if step % self.every == 0 or step == self.max_steps:
            self._flush(step, lr, grad_norm, tokens_seen)

    def _flush(self, step: int, lr: float, grad_norm: float | None, tokens_seen: int) -> None:
        now = time.monotonic()
        dt = max(now - self._last_t, 1e-9)
        tok_s = self._window_tokens / dt
        mfu = tok_s * self.fpt / self.peak if (self.fpt and self.peak) else None
        n = len(self._window_losses)
        loss, mlm, rtd = (sum(x[i] for x in self._window_losses) / n for i in range(3))
        d = derived_metrics(self._window_sums)
        done = step - self.start_step
        elapsed = now - self.t0
        eta = elapsed / done * (self.max_steps - step) if done else float("nan")
        gn = f"{grad_norm:.3f}" if grad_norm is not None else "n/a"
        log.info(
            "step %d/%d (%.1f%%) | loss %.4f mlm %.4f rtd %.4f | gen acc %.3f | disc acc %.3f P %.3f R %.3f | "
            "lr %.3e gnorm %s | %.0f tok/s MFU %s | elapsed %s ETA %s",
            step, self.max_steps, 100.0 * step / self.max_steps, loss, mlm, rtd, d["gen_acc"], d["disc_acc"],
            d["disc_precision"], d["disc_recall"], lr, gn, tok_s, f"{100 * mfu:.1f}%" if mfu is not None else "n/a",
            fmt_duration(elapsed), fmt_duration(eta) if eta == eta else "?")
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


def read_losses(path: str) -> dict[int, dict]:
    """step -> record from a metrics.jsonl (the last record of a step wins)."""
    out: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[int(rec["step"])] = rec
    return out
