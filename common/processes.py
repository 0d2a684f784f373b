"""Stopping whole process trees: local servers (SeaweedFS, Prefect) and the DeepSpeed launcher."""

from __future__ import annotations

import os
import signal
import time


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(pid: int, grace_s: float = 15.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if it outlives `grace_s`.

    Our own children are reaped while waiting, so a zombie does not count as still running.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not alive(pid):
                return
            time.sleep(0.1)
