r"""Export a pretraining checkpoint as Hugging Face models, in safetensors, with the tokenizer.

    python -m pretraining.export --checkpoint s3://bucket/runs/r1/checkpoints/step-000400000 \
        --output s3://bucket/models/r1

`--checkpoint` is a step directory, or a run / checkpoints directory (its newest complete
checkpoint). Writes OUTPUT/discriminator (ElectraForPreTraining, the model to fine-tune),
OUTPUT/generator (ElectraForMaskedLM), each with the tokenizer files the pack was made with
(a pipelines.train_tokenizer output, or the HF tokenizer the pack job copied), and
OUTPUT/manifest.json (kind "model") last. The ZeRO partitions are consolidated to fp32
with DeepSpeed's zero_to_fp32, on CPU, without a launcher.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

from common import cli
from common import manifest as manifests
from common import storage
from common.packformat import PackManifest
from pretraining import checkpoint as ckpt

log = logging.getLogger("pretraining.export")

DISCRIMINATOR, GENERATOR = "discriminator", "generator"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    checkpoint: str  # a step dir, or a run / checkpoints dir (its newest complete checkpoint is exported)
    output: str  # where discriminator/, generator/ and the model manifest go (local or s3://)


def consolidated_state_dict(step_dir: str, work: str) -> dict:
    """fp32 full state dict of the ElectraPretrainingModel saved in a (local or S3) step dir."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag = storage.basename(step_dir)
    if storage.is_s3(step_dir):
        local_root = os.path.join(work, "checkpoint")
        storage.download_dir(step_dir, os.path.join(local_root, tag))
    else:
        local_root = storage.parent(step_dir)
    return get_fp32_state_dict_from_zero_checkpoint(local_root, tag=tag)


def trained_pack(cm: ckpt.CheckpointManifest) -> PackManifest:
    """The pack a checkpoint was trained on, refused if it changed since (its tokenizer is what gets exported)."""
    ref = cm.pack
    pack = PackManifest.read(ref["uri"])
    if pack.manifest_hash != ref["manifest_hash"]:
        raise manifests.ManifestError(f"the pack at {ref['uri']} changed since training "
                                      f"({pack.manifest_hash[:12]} != {ref['manifest_hash'][:12]})")
    return pack


def export(checkpoint: str, output: str) -> dict:
    """Write the HF directories and the model manifest; returns the manifest."""
    from pretraining.config import config_from_dict

    cm = ckpt.resolve(checkpoint)
    cfg = config_from_dict(cm.config)
    pack = trained_pack(cm)
    # This project's tokenizer output, or the pack's copy of the HF tokenizer it was packed with (ELECTRA's
    # WordPiece vocabulary for continued pretraining): either way the ids the model was trained on.
    tok_uri = pack.tokenizer.uri
    tok_files = [f for f in storage.list_files(tok_uri.rstrip("/") + "/")
                 if storage.basename(f) != manifests.MANIFEST_NAME and "/" not in f[len(tok_uri.rstrip("/")) + 1:]]
    with tempfile.TemporaryDirectory(prefix="electra-export-") as work:
        state = consolidated_state_dict(cm.uri, work)
        model = cfg.model.build()
        model.load_state_dict(state, strict=True)
        disc, gen = model.to_hf()
        out_local = os.path.join(work, "out")
        for name, hf in ((DISCRIMINATOR, disc), (GENERATOR, gen)):
            d = os.path.join(out_local, name)
            hf.save_pretrained(d)  # safetensors; the generator's tied head is stored once
            for f in tok_files:
                storage.download_file(f, os.path.join(d, storage.basename(f)))
        files = []
        for p in sorted(Path(out_local).rglob("*")):
            if p.is_file():
                files.append({"path": p.relative_to(out_local).as_posix(), "bytes": p.stat().st_size,
                              "sha256": storage.sha256_uri(str(p))})
        storage.upload_dir(out_local, output)
    inputs = [manifests.input_ref(cm.uri, cm.raw), cm.pack]
    if manifests.exists(tok_uri):
        inputs.append(manifests.input_ref(tok_uri, manifests.read(tok_uri, kind="tokenizer")))
    out = manifests.build("model", inputs=inputs, config=cm.config, shards=files, step=cm.step,
                          tokens_seen=cm.tokens_seen, size=cfg.size, seq_len=pack.seq_len,
                          vocab_size=cfg.model.vocab_size, special_ids=pack.special_ids.as_dict(),
                          tokenizer=pack.raw.get("tokenizer"), validation=cm.validation,
                          architectures={DISCRIMINATOR: "ElectraForPreTraining", GENERATOR: "ElectraForMaskedLM"})
    manifests.write(output, out)
    log.info("exported %s (step %d) to %s", cm.uri, cm.step, output)
    return out


def run(cfg: ExportConfig) -> dict:
    """Library entry (what the flow calls): the model manifest."""
    return export(cfg.checkpoint, cfg.output)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretraining.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="step dir, or a run/checkpoints dir (newest complete)")
    ap.add_argument("--output", required=True, help="output URI (s3:// or local)")
    cli.add_debug(ap)
    args = ap.parse_args(argv)
    cfg = ExportConfig(checkpoint=args.checkpoint, output=args.output)

    def body() -> str:
        m = run(cfg)
        return f"export: step {m['step']} -> {cfg.output}/manifest.json"

    return cli.run_job(body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
