"""What machine a measurement ran on: benchmarks print it beside every figure."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict:
    """CPU model, cores, load average (other work on the box skews wall-clock rates) and Python."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg": load_avg(),
            "python": platform.python_version()}


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has waited for."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
