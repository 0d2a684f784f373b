"""Pack cleaned documents into fixed-length ELECTRA pretraining examples.

    python -m pipelines.pack --input s3://corpus/clean --tokenizer s3://corpus/tokenizer \
        --output s3://corpus/pack-512 --max-seq-length 512 [--seed 0] [--set key=value ...] \
        [Beam options: --runner, --direct_num_workers, ...]

Writes shards/part-00000-of-00004.bin and its siblings (as many as the corpus needs at --shard-mb) (uint16 rows [examples, seq_len]) and, last,
manifest.json (common/packformat.py). `--tokenizer` is a `pipelines.train_tokenizer` output or an
existing HF tokenizer: a directory with tokenizer.json, a WordPiece vocab.txt, or a hub id such as
google/electra-base-discriminator (continued pretraining keeps the published vocabulary; its special
ids go into the manifest). See docs/tokenizer_and_packing.md.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_claim_flag, add_debug, add_overrides, run_job
from common.configs import apply_overrides
from pipelines.packing.config import PackConfig
from pipelines.packing.run import EmptyInputError, run
from pipelines.tokenizer import TokenizerError

USER_ERRORS = (EmptyInputError, TokenizerError)  # besides common.cli's config, manifest and storage errors


def parse(argv: list[str] | None = None) -> tuple[PackConfig, list[str]]:
    cfg, beam_args, _ = parse_all(argv)
    return cfg, beam_args


def parse_all(argv: list[str] | None = None) -> tuple[PackConfig, list[str], argparse.Namespace]:
    """(config, Beam arguments, the run-control flags: --break-claim, --debug)."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="documents output of pipelines.clean")
    ap.add_argument("--tokenizer", required=True,
                    help="output of pipelines.train_tokenizer, or an HF tokenizer dir / vocab.txt / hub id")
    ap.add_argument("--output", required=True, help="pack directory (local or s3://)")
    ap.add_argument("--max-seq-length", type=int, default=PackConfig.max_seq_length)
    ap.add_argument("--seed", type=int, default=PackConfig.seed)
    ap.add_argument("--shard-mb", type=float, default=PackConfig.shard_mb,
                    help="target output shard size in MB; the shard count follows the corpus")
    add_claim_flag(ap)
    add_overrides(ap, "short_seq_prob=0.0 cross_document=false")
    add_debug(ap)
    a, beam_args = ap.parse_known_args(argv)
    cfg = PackConfig(input=a.input, tokenizer=a.tokenizer, output=a.output, max_seq_length=a.max_seq_length,
                     seed=a.seed, shard_mb=a.shard_mb)
    return apply_overrides(cfg, a.set), beam_args, a


def main(argv: list[str] | None = None) -> int:
    def body() -> str:
        cfg, beam_args, flags = parse_all(argv)
        m = run(cfg, beam_args, break_claim=flags.break_claim)
        c = m["counters"]
        return (f"pack: {c['docs']} documents, {c['tokens_packed']} tokens -> {c['examples']} examples of "
                f"{m['seq_len']} (padding {m['padding_fraction']:.4f}, truncated {c['tokens_truncated']}) "
                f"-> {cfg.output}/manifest.json")

    return run_job(body, USER_ERRORS, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
