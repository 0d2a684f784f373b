"""Run a command that must not outlive the flow process that started it (Linux).

    python -m flows.supervise -- deepspeed pretraining/train.py ...

The DeepSpeed launcher is a tree: `deepspeed` → `deepspeed.launcher.launch` → one process
per rank. If the flow process dies (killed worker, OOM, a node drain), a leftover tree
would keep training into the same run directory while the rerun resumes there. This
supervisor leads its own process group, asks the kernel for SIGTERM when its parent dies
(PR_SET_PDEATHSIG), and on SIGTERM/SIGINT signals the whole group: the ranks checkpoint
at the next step boundary and exit; after a grace period the group is killed.

Both sides live here: `run_streaming` (in the flow) starts a command under this supervisor and
streams its output; `main` (the supervisor process) holds the tree.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from common.processes import REPO, child_env, kill_group

GRACE_S = float(os.environ.get("ELECTRA_SUPERVISE_GRACE_S", "60"))


def run_streaming(cmd: list[str], on_line: Callable[[str], None], cwd: str | None = None,
                  env: dict[str, str] | None = None) -> int:
    """Run a command in its own process group, passing each output line to `on_line`.

    If this thread is interrupted (flow cancelled, worker stopping), the group gets SIGTERM (ranks
    checkpoint at the next step boundary), then SIGKILL after a grace period. The command runs
    under this supervisor, so if the flow process itself is killed the whole launcher tree is
    stopped too, and a rerun never races an orphaned trainer for the same run directory.
    """
    env = dict(env or child_env())
    env["ELECTRA_SUPERVISE_PARENT"] = str(os.getpid())
    proc = subprocess.Popen([sys.executable, "-m", "flows.supervise", "--", *cmd], cwd=cwd or str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait()
    except BaseException:
        terminate_group(proc)
        raise


def terminate_group(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Stop the launcher tree; the grace period lets the ranks write a checkpoint on SIGTERM."""
    kill_group(proc.pid, grace_s)


class LineLogger:
    """Forwards launcher output to a logger, keeping the last lines for the error message."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, keep: int = 40):
        self.logger, self.keep = logger, keep
        self.tail: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.tail = (self.tail + [line])[-self.keep:]
        self.logger.info(line)


# ----------------------------------------------------------------------------- the supervisor process


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: only explicit cancellation stops the tree
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m flows.supervise -- COMMAND...", file=sys.stderr)
        return 2
    parent = int(os.environ.get("ELECTRA_SUPERVISE_PARENT", os.getppid()))
    stopping: list[float] = []

    def stop(signum, _frame) -> None:
        # Only note the time and pass the signal on; the loop below does the waiting (no blocking in a handler).
        if not stopping:
            stopping.append(time.monotonic())
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.killpg(os.getpgid(0), signal.SIGTERM)  # the launcher forwards it to the ranks

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _die_with_parent(parent)
    child = subprocess.Popen(args)  # same process group: one killpg reaches every rank
    while (rc := child.poll()) is None:
        if stopping and time.monotonic() - stopping[0] > GRACE_S:
            break
        time.sleep(0.5)
    if stopping:
        os.killpg(os.getpgid(0), signal.SIGKILL)  # whatever is left of the tree, and this process
    return rc if rc is not None else 1


if __name__ == "__main__":
    sys.exit(main())
