"""Train the SentencePiece tokenizer on cleaned documents; export it for Hugging Face.

    python -m pipelines.train_tokenizer --input s3://corpus/clean --output s3://corpus/tokenizer \
        [--vocab-size 32768] [--model-type unigram|bpe] [--sample-docs 200000] [--set key=value ...]

Writes spm.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json and,
last, manifest.json. See docs/tokenizer_and_packing.md.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_claim_flag, add_debug, add_overrides, run_job
from common.configs import apply_overrides
from pipelines.tokenizer.config import TokenizerConfig
from pipelines.tokenizer.load import TokenizerError
from pipelines.tokenizer.train import run

USER_ERRORS = (TokenizerError, ValueError)  # besides common.cli's config, manifest and storage errors (exit 2)


def parse(argv: list[str] | None = None) -> TokenizerConfig:
    return parse_all(argv)[0]


def parse_all(argv: list[str] | None = None) -> tuple[TokenizerConfig, argparse.Namespace]:
    """(config, the run-control flags: --break-claim, --debug)."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.train_tokenizer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="documents output of pipelines.clean")
    ap.add_argument("--output", required=True, help="tokenizer directory (local or s3://)")
    ap.add_argument("--vocab-size", type=int, default=TokenizerConfig.vocab_size)
    ap.add_argument("--model-type", choices=["unigram", "bpe"], default=TokenizerConfig.model_type)
    ap.add_argument("--sample-docs", type=int, default=TokenizerConfig.sample_docs)
    add_claim_flag(ap)
    add_overrides(ap, "character_coverage=0.9995")
    add_debug(ap)
    a = ap.parse_args(argv)
    cfg = TokenizerConfig(input=a.input, output=a.output, vocab_size=a.vocab_size, model_type=a.model_type,
                          sample_docs=a.sample_docs)
    return apply_overrides(cfg, a.set), a


def main(argv: list[str] | None = None) -> int:
    def body() -> str:
        cfg, flags = parse_all(argv)
        m = run(cfg, break_claim=flags.break_claim)
        c = m["counters"]
        return (f"train_tokenizer: {m['model_type']} vocab {m['vocab_size']} from {c['documents_sampled']} of "
                f"{c['documents_total']} documents ({c['sentences']} sentences) -> {cfg.output}/manifest.json")

    return run_job(body, USER_ERRORS, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
