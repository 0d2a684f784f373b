"""The shared shape of every job's `main(argv)`: log setup, user errors as one line, exit codes.

Exit codes: 0 done, 2 a problem the user can fix (bad input, config, storage), printed as one
`error:` line without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from common.configs import ConfigError
from common.manifest import ManifestError
from common.storage import StorageError

# Errors every job treats as the user's to fix; jobs add their own.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ManifestError, StorageError, FileNotFoundError)


def add_overrides(ap: argparse.ArgumentParser, example: str) -> None:
    """`--set KEY=VALUE ...`: one or more pairs per flag, and the flag repeatable, the same in every job."""
    ap.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help=f"config field overrides, dotted keys (e.g. --set {example}); repeatable")


def run_job(body: Callable[[], str], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run `body` (which returns a one-line summary) and map user errors to exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # per-bundle worker chatter
    try:
        summary = body()
    except USER_ERRORS + tuple(user_errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0
