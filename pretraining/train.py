r"""Pretrain ELECTRA with DeepSpeed. Run through the DeepSpeed launcher, one process per device:

    deepspeed pretraining/train.py --deepspeed ds_configs/zero3.json \
        --config large data.pack=s3://bucket/pack run=s3://bucket/runs/large-1

    # CPU (tests, demo):
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 pretraining/train.py \
        --deepspeed ds_configs/cpu.json --config tiny data.pack=PACK run=RUN max_steps=50

`--config` takes a named size (tiny, small, base, large) and `key.sub=value` overrides of
`pretraining.config.TrainConfig`; `model.vocab_size` and the special ids default to the pack's,
and `init.pretrained=DIR_OR_HUB_ID` starts from a published ELECTRA pair (continued pretraining). Relaunching
the same command resumes from the newest complete checkpoint under `<run>/checkpoints/`.
Before DeepSpeed starts, `pretraining/preflight.py` checks the ds_config (exists, is JSON) and the
pack (its store answers, its manifest and first shard read). Exit codes (common/cli.py): 0 finished,
2 bad config, data or credentials (one `error:` line), 75 stopped by SIGTERM/SIGINT after writing a
checkpoint, or the object store unreachable (relaunch to resume), 3 stopped by a non-finite loss (the
last good checkpoint is kept; change the learning rate or warmup, then relaunch). `--debug` adds
tracebacks. See docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by the launcher: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cli  # noqa: E402
from pretraining import preflight  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pretraining/train.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deepspeed", required=True, metavar="PATH",
                    help="ds_config JSON (ds_configs/zero3.json, zero3_offload.json, zero2.json, cpu.json)")
    ap.add_argument("--config", nargs="+", default=["large"], metavar="ITEM",
                    help="a named size (tiny, small, base, large; default large) then key.sub=value "
                         "overrides, e.g. `--config tiny data.pack=PACK run=RUN max_steps=100`")
    ap.add_argument("--local_rank", type=int, default=-1, help="set by the DeepSpeed launcher; unused (LOCAL_RANK env)")
    cli.add_debug(ap)
    return ap.parse_args(argv)


def _fail(exc: BaseException, user_errors: tuple[type[BaseException], ...], debug: bool, *, every_rank: bool) -> int:
    """One line per node for a pre-flight problem (the same on every rank), one per failing rank later on."""
    code = cli.exit_code(exc, user_errors)
    if code is None:
        raise exc
    rank, local_rank = os.environ.get("RANK", "0"), os.environ.get("LOCAL_RANK", "0")
    if every_rank or local_rank == "0":
        cli.report(exc, "train.py" if rank == "0" or not every_rank else f"train.py (rank {rank})", debug=debug)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size, *overrides = args.config
    try:  # before DeepSpeed starts: a bad ds_config or an unreachable pack costs seconds, not a traceback per rank
        cfg, _ = preflight.check(args.deepspeed, size, overrides)
    except Exception as exc:  # noqa: BLE001 - classified by _fail; a bug re-raises
        return _fail(exc, (), args.debug, every_rank=False)
    from pretraining.data import DataMismatchError
    from pretraining.trainer import TrainError, run

    try:
        return run(cfg, args.deepspeed)
    except Exception as exc:  # noqa: BLE001 - a user error or an outage: one line per rank, no traceback
        return _fail(exc, (TrainError, DataMismatchError), args.debug, every_rank=True)


if __name__ == "__main__":
    sys.exit(main())
