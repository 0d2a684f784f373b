"""Child processes: the environment they start with, and stopping whole process trees (local servers
(SeaweedFS, Prefect) and the DeepSpeed launcher)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent  # the checkout whose packages the children must import


def child_env(extra: Mapping[str, str] | None = None, *, drop_prefix: str | None = None) -> dict[str, str]:
    """This process's environment for a child that runs the project's code: `extra` on top, and this checkout
    first on PYTHONPATH, so a launcher rank or a Prefect worker imports the same code as its parent (not an
    installed copy). Variables starting with `drop_prefix` are left out (the local stack's own PREFECT_*
    settings must replace the caller's, not mix with them)."""
    env = {k: v for k, v in os.environ.items() if not (drop_prefix and k.startswith(drop_prefix))}
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, D, Z...), or None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    """True while `pid` runs. A zombie (exited, not yet reaped by its parent) is dead: it serves nothing.

    A zombie that is our own child is reaped here, so its pid can be reused.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: /proc tells
    return _state(pid) not in ("Z", "X")


def cmdline(pid: int | None) -> list[str]:
    """The command line of a running process ([] when gone or unreadable): to tell our server from a reused pid."""
    if not pid:
        return []
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


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
            if not alive(pid):
                return
            time.sleep(0.1)


@contextlib.contextmanager
def env_overlay(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (children started inside inherit them), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
