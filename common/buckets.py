"""Tiny CLI over common.storage: `python -m common.buckets mb s3://bucket` | `ls URI`.

Apart from common/storage.py because the command line goes through common.cli, which imports
storage for its error classes.
"""

from __future__ import annotations

import argparse

from common import cli
from common.storage import list_files, make_bucket


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.buckets", description="Make a bucket, or list a URI.")
    ap.add_argument("verb", choices=["mb", "ls"])
    ap.add_argument("uri")
    cli.add_debug(ap)
    a = ap.parse_args(argv)

    def body() -> str:
        if a.verb == "mb":
            make_bucket(a.uri)
            return f"bucket {a.uri} ready"
        return "\n".join(list_files(a.uri))

    return cli.run_job(body, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
