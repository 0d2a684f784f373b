r"""Export a pretraining checkpoint as Hugging Face models, in safetensors, with the tokenizer.

    python -m pretraining.export --checkpoint s3://bucket/runs/r1/checkpoints/step-000400000 \
        --output s3://bucket/models/r1

`--checkpoint` is a step directory, or a run / checkpoints directory (its newest complete
checkpoint). Writes OUTPUT/discriminator (ElectraForPreTraining, the model to fine-tune),
OUTPUT/generator (ElectraForMaskedLM), each with the pack's tokenizer files, and
OUTPUT/manifest.json (kind "model") last. The ZeRO partitions are consolidated to fp32
with DeepSpeed's zero_to_fp32, on CPU, without a launcher.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from common import cli
from common import manifest as manifests
from common import storage
from pretraining import checkpoint as ckpt

log = logging.getLogger("pretraining.export")

DISCRIMINATOR, GENERATOR = "discriminator", "generator"


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


def tokenizer_uri(ckpt_manifest: dict) -> tuple[str, dict, dict]:
    """(tokenizer dir, pack manifest, pack input ref) from a checkpoint's lineage."""
    pack_ref = next(i for i in ckpt_manifest["inputs"] if i.get("kind") == "pack")
    pack = manifests.read(pack_ref["uri"], kind="pack")
    if pack["manifest_hash"] != pack_ref["manifest_hash"]:
        raise manifests.ManifestError(f"the pack at {pack_ref['uri']} changed since training "
                                      f"({pack['manifest_hash'][:12]} != {pack_ref['manifest_hash'][:12]})")
    return pack["tokenizer"]["uri"], pack, pack_ref


def export(checkpoint: str, output: str) -> dict:
    """Write the HF directories and the model manifest; returns the manifest."""
    from pretraining.config import config_from_dict

    step_dir, m = ckpt.resolve(checkpoint)
    cfg = config_from_dict(m["config"])
    tok_uri, pack, pack_ref = tokenizer_uri(m)
    tok_files = [f for f in storage.list_files(tok_uri.rstrip("/") + "/")
                 if storage.basename(f) != manifests.MANIFEST_NAME and "/" not in f[len(tok_uri.rstrip("/")) + 1:]]
    with tempfile.TemporaryDirectory(prefix="electra-export-") as work:
        state = consolidated_state_dict(step_dir, work)
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
    inputs = [manifests.input_ref(step_dir, m), pack_ref]
    if manifests.exists(tok_uri):
        inputs.append(manifests.input_ref(tok_uri, manifests.read(tok_uri, kind="tokenizer")))
    out = manifests.build("model", inputs=inputs, config=m["config"], shards=files, step=m["step"],
                          tokens_seen=m["tokens_seen"], size=cfg.size, seq_len=pack["seq_len"],
                          vocab_size=cfg.model.vocab_size, architectures={DISCRIMINATOR: "ElectraForPreTraining",
                                                                          GENERATOR: "ElectraForMaskedLM"})
    manifests.write(output, out)
    log.info("exported %s (step %d) to %s", step_dir, m["step"], output)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretraining.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="step dir, or a run/checkpoints dir (newest complete)")
    ap.add_argument("--output", required=True, help="output URI (s3:// or local)")
    cli.add_debug(ap)
    args = ap.parse_args(argv)

    def body() -> str:
        m = export(args.checkpoint, args.output)
        return f"export: step {m['step']} -> {args.output}/manifest.json"

    return cli.run_job(body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
