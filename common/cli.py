"""The shared shape of every command's `main(argv)`: log setup, errors as one line, exit codes.

Exit codes (the same for every job, `train.py`, export, evaluation, inspect and lineage):

    0   done
    2   something to fix before running again: bad input or config, missing or refused credentials,
        a missing bucket, an output claimed by another run. One `error:` line says what to fix.
    75  EX_TEMPFAIL, try again later: the object store could not be reached or kept failing (an
        outage), or training stopped on SIGTERM after a checkpoint. The flow retries these.
    1   anything else: a bug; its traceback is kept.

The traceback of a 2 or 75 is not printed (it would bury the line that matters); `--debug`
(or ELECTRA_DEBUG=1) prints it, and Beam jobs keep their workers' output in a log file that the
error line names (pipelines/beam.py).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import os
import sys
import traceback
from typing import Callable, Iterator

from common.configs import ConfigError
from common.manifest import ManifestError
from common.storage import StorageError, StorageUnavailable

EXIT_OK = 0
EXIT_FIX = 2  # the user must change something (input, config, credentials, bucket)
EXIT_RETRY = 75  # EX_TEMPFAIL: an outage or a preemption; the same command can succeed later

# Errors every job treats as the user's to fix; jobs add their own.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ManifestError, StorageError, FileNotFoundError)
# Errors that mean "try again later"; checked before USER_ERRORS (StorageUnavailable is a StorageError).
RETRY_ERRORS: tuple[type[BaseException], ...] = (StorageUnavailable,)

_DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("electra_debug", default=False)


def add_overrides(ap: argparse.ArgumentParser, example: str) -> None:
    """`--set KEY=VALUE ...`: one or more pairs per flag, and the flag repeatable, the same in every job."""
    ap.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help=f"config field overrides, dotted keys (e.g. --set {example}); repeatable")


def add_claim_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--break-claim", action="store_true",
                    help="take the output over from the run that holds its claim; only when that run is dead "
                         "(common/claims.py)")


def add_debug(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--debug", action="store_true",
                    help="print full tracebacks and let Beam workers log to this terminal (also ELECTRA_DEBUG=1)")


def wants_debug(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("ELECTRA_DEBUG", "") not in ("", "0")


def debug_enabled() -> bool:
    """Whether the command running in this context asked for full output (read by pipelines/beam.py)."""
    return _DEBUG.get() or os.environ.get("ELECTRA_DEBUG", "") not in ("", "0")


def exit_code(exc: BaseException, user_errors: tuple[type[BaseException], ...] = ()) -> int | None:
    """The exit code an error maps to, or None for a bug (which keeps its traceback)."""
    own = getattr(exc, "exit_code", None)  # an error that knows its code (pipelines.beam.JobFailed)
    if isinstance(own, int) and not isinstance(exc, SystemExit):
        return own
    if isinstance(exc, RETRY_ERRORS):
        return EXIT_RETRY
    if isinstance(exc, USER_ERRORS + tuple(user_errors)):
        return EXIT_FIX
    return None


def one_line(exc: BaseException) -> str:
    """The error's message on one line (worker errors can carry newlines)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def report(exc: BaseException, prog: str | None = None, *, debug: bool | None = None) -> None:
    """Print the error line (after the traceback when debugging)."""
    if debug if debug is not None else debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{prog + ': ' if prog else ''}error: {one_line(exc)}", file=sys.stderr)


@contextlib.contextmanager
def debugging(on: bool) -> Iterator[None]:
    token = _DEBUG.set(on)
    try:
        yield
    finally:
        _DEBUG.reset(token)


def setup_logging() -> None:
    """A job's log lines at INFO on stderr (unless the process already configured logging), without Beam's
    per-bundle worker chatter. The same for a job run by hand and one the flow runs in its process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def run_job(body: Callable[[], str | int], user_errors: tuple[type[BaseException], ...] = (), *,
            argv: list[str] | None = None) -> int:
    """Run `body`; map errors to exit codes 2 / 75 with one line each.

    `body` returns the text to print on success (a job's one-line summary), or an exit code when it
    printed its own output (lineage: 1 for a hash mismatch).
    """
    setup_logging()
    debug = wants_debug(argv)
    with debugging(debug):
        try:
            summary = body()
        except BaseException as exc:  # noqa: BLE001 - classified below; bugs re-raise with their traceback
            code = exit_code(exc, user_errors)
            if code is None:
                raise
            report(exc, debug=debug)
            return code
    if isinstance(summary, int):
        return summary
    print(summary)
    return EXIT_OK
