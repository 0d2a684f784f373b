"""Progress lines with rate and ETA for long work (logs, not a TTY widget: they survive `tee` and CI)."""

from __future__ import annotations

import logging
import time


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Call `update(n)`; every `every_s` seconds a line with done/total, rate and ETA is logged."""

    def __init__(self, what: str, total: int | None = None, unit: str = "items", every_s: float = 10.0,
                 logger: logging.Logger | None = None):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.log = logger or logging.getLogger("progress")
        self.done = 0
        self.t0 = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.log.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            pct = 100.0 * self.done / self.total
            eta_s = fmt_duration(eta) if eta != float("inf") else "?"
            return (f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.1f}%), "
                    f"{rate:.1f} {self.unit}/s, elapsed {fmt_duration(elapsed)}, ETA {eta_s}")
        return f"{self.what}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s, elapsed {fmt_duration(elapsed)}"
