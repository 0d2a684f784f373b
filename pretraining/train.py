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
Exit codes: 0 finished, 75 stopped by SIGTERM/SIGINT after writing a checkpoint (relaunch
to resume), 2 bad config or data, 3 stopped by a non-finite loss (the last good checkpoint is
kept; change the learning rate or warmup, then relaunch). See docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by the launcher: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.configs import ConfigError  # noqa: E402
from common.manifest import ManifestError  # noqa: E402
from pretraining.config import train_config, with_inputs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pretraining/train.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deepspeed", required=True, metavar="PATH",
                    help="ds_config JSON (ds_configs/zero3.json, zero3_offload.json, zero2.json, cpu.json)")
    ap.add_argument("--config", nargs="+", default=["large"], metavar="ITEM",
                    help="a named size (tiny, small, base, large; default large) then key.sub=value "
                         "overrides, e.g. `--config tiny data.pack=PACK run=RUN max_steps=100`")
    ap.add_argument("--local_rank", type=int, default=-1, help="set by the DeepSpeed launcher; unused (LOCAL_RANK env)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size, *overrides = args.config
    try:
        cfg = train_config(size, overrides)
        cfg.require_io()
        cfg = with_inputs(cfg, overrides)  # vocabulary and special ids from the pack, shapes from init.pretrained
    except (ConfigError, ManifestError) as exc:
        print(f"train.py: config error: {exc}", file=sys.stderr)
        return 2
    from pretraining.data import DataMismatchError
    from pretraining.trainer import TrainError, run

    try:
        return run(cfg, args.deepspeed)
    except (ConfigError, TrainError, DataMismatchError) as exc:  # a user error: one clear line per rank, no traceback
        print(f"train.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
