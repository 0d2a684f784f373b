"""Shared helpers for the pretraining tests (plain functions; the fixtures built on them, `real_pack` and
`reference`, are in conftest.py): a small real-text pack and the DeepSpeed launcher.

The pack is built here, not by pipelines.pack, so these tests do not depend on the
data jobs: license texts from /usr/share/common-licenses (real English prose present
on any Debian/Ubuntu machine) tokenised by a SentencePiece unigram model trained in the
fixture (and exported as tokenizer.json), packed as `[CLS] A [SEP] B [SEP]` rows in the packformat layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from common.ports import free_port  # noqa: F401  (re-exported for the launcher tests)
from common.special_tokens import FIXED, PIECES_BY_ID, SPECIAL_PIECES, template_processor

REPO = Path(__file__).resolve().parent.parent
PROSE_DIR = Path("/usr/share/common-licenses")
PROSE_FILES = ("GPL-3", "Apache-2.0", "LGPL-2.1", "GPL-2", "MPL-2.0", "GFDL-1.3")
VOCAB = 512
SEQ_LEN = 64
STEPS = 24  # the reference run's length (the `reference` fixture in conftest.py)


def prose() -> tuple[str, str]:
    """(text, sha256) of the corpus; skips when the machine has none of the files."""
    parts = [(PROSE_DIR / n).read_text(errors="replace") for n in PROSE_FILES if (PROSE_DIR / n).is_file()]
    if not parts:
        pytest.skip(f"no prose under {PROSE_DIR}")
    text = "\n\n".join(parts)
    return text, hashlib.sha256(text.encode()).hexdigest()


def sentences(text: str) -> list[list[str]]:
    """Documents (paragraphs) as lists of sentences."""
    docs = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        sents = [s for s in re.split(r"(?<=[.;:!?])\s+", para) if len(s) > 3]
        if sents:
            docs.append(sents)
    return docs


def build_tokenizer(text: str, out: Path) -> dict:
    """SentencePiece unigram (deterministic with one thread), exported as an HF fast tokenizer."""
    import io

    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from common import manifest

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for d in sentences(text) for s in d]), model_writer=buf, vocab_size=VOCAB,
        model_type="unigram", pad_id=FIXED.pad, unk_id=FIXED.unk, bos_id=-1, eos_id=-1, pad_piece=SPECIAL_PIECES["pad"],
        unk_piece=SPECIAL_PIECES["unk"], user_defined_symbols=PIECES_BY_ID[2:], num_threads=1, minloglevel=2, byte_fallback=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spm.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=FIXED.unk))
    tok.add_special_tokens(PIECES_BY_ID)
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = template_processor()
    assert [tok.token_to_id(s) for s in PIECES_BY_ID] == sorted(FIXED.as_dict().values())
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{n}_token": p for n, p in SPECIAL_PIECES.items()},
                                   model_max_length=SEQ_LEN)
    fast.save_pretrained(str(out))
    sha = hashlib.sha256((out / "spm.model").read_bytes()).hexdigest()
    m = manifest.build("tokenizer", inputs=[], config={"vocab_size": VOCAB, "model": "unigram"},
                       vocab_size=tok.get_vocab_size(), special_ids=FIXED.as_dict(), spm_sha256=sha)
    manifest.write(str(out), m)
    return m


def build_pack(text: str, tok_dir: Path, tok_manifest: dict, out: Path, shards: int = 3, seed: int = 0) -> dict:
    """Official-builder-like rows: sentences accumulated to the target, split near the middle into A/B."""
    from tokenizers import Tokenizer

    from common import manifest
    from common.packformat import FORMAT, SHARDS_DIR

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    rng = random.Random(seed)
    rows = []
    for doc in sentences(text):
        ids = [tok.encode(s, add_special_tokens=False).ids for s in doc]
        cur: list[list[int]] = []
        target = SEQ_LEN - 3
        for sent in ids:
            cur.append(sent[:target])
            if sum(map(len, cur)) >= target:
                rows.append(_row(cur, rng))
                cur = []
        if cur:
            rows.append(_row(cur, rng))
    arr = np.asarray(rows, dtype="<u2")
    sizes = [len(arr) // 2, len(arr) // 3]  # uneven shards, so chunks straddle shard ends
    sizes.append(len(arr) - sum(sizes))
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    entries, start = [], 0
    for i, n in enumerate(sizes[:shards]):
        name = f"{SHARDS_DIR}/part-{i:05d}-of-{shards:05d}.bin"
        data = arr[start:start + n].tobytes()
        (out / name).write_bytes(data)
        entries.append({"path": name, "examples": int(n), "tokens": int((arr[start:start + n] != 0).sum()),
                        "sha256": hashlib.sha256(data).hexdigest()})
        start += n
    m = manifest.build(
        "pack", inputs=[manifest.input_ref(str(tok_dir), tok_manifest)], config={"seq_len": SEQ_LEN, "seed": seed},
        shards=entries, format=FORMAT, dtype="uint16", seq_len=SEQ_LEN, vocab_size=tok_manifest["vocab_size"],
        special_ids=FIXED.as_dict(), seed=seed,
        tokenizer={"uri": str(tok_dir), "manifest_hash": tok_manifest["manifest_hash"],
                   "spm_sha256": tok_manifest["spm_sha256"]},
        padding_fraction=float((arr == 0).mean()))
    manifest.write(str(out), m)
    return m


def _row(sents: list[list[int]], rng: random.Random) -> list[int]:
    flat = [t for s in sents for t in s][: SEQ_LEN - 3]
    if len(sents) > 1 and rng.random() > 0.1:
        cut, acc = 1, len(sents[0])
        while cut < len(sents) - 1 and acc < len(flat) // 2:
            acc += len(sents[cut])
            cut += 1
        a, b = flat[:acc], flat[acc:]
        row = [FIXED.cls] + a + [FIXED.sep] + b + [FIXED.sep] if b else [FIXED.cls] + a + [FIXED.sep]
    else:
        row = [FIXED.cls] + flat + [FIXED.sep]
    return row + [FIXED.pad] * (SEQ_LEN - len(row))


# ----------------------------------------------------------------------------- launcher


def recipe(*, warmup: int, every: int, keep: int, seed: int) -> list[str]:
    """The launcher tests' run besides pack, run and max_steps: 16 sequences a step as 2 ranks x 2 micro-batches
    of 4, lr 2e-3, 64 held out for validation; model.vocab_size and the special ids default to the pack's."""
    return ["data.train_batch=16", "data.micro_batch=4", f"schedule.warmup_steps={warmup}", "optim.lr=2e-3",
            f"checkpoint.every_steps={every}", f"checkpoint.keep_last={keep}", f"logging.every_steps={every}",
            f"seed={seed}", "data.validation_examples=64"]


def train_overrides(pack: str, run: str, *extra: str, steps: int, warmup: int, every: int, keep: int,
                    seed: int) -> list[str]:
    return [f"data.pack={pack}", f"run={run}", f"max_steps={steps}",
            *recipe(warmup=warmup, every=every, keep=keep, seed=seed), *extra]


# The reference run's recipe (the `reference` fixture in conftest.py): a run whose losses are compared with it
# trains with exactly these.
RECIPE = recipe(warmup=4, every=8, keep=2, seed=1234)


def overrides(pack: str, run: str, *extra: str) -> list[str]:
    """The reference run's train.py overrides."""
    return [f"data.pack={pack}", f"run={run}", f"max_steps={STEPS}", *RECIPE, *extra]


def launcher_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra or {})
    return env


def deepspeed_cmd(overrides: list[str], *, ranks: int = 2, ds_config: str = "ds_configs/cpu.json",
                  port: int | None = None, **launch_kw) -> list[str]:
    from pretraining.launch import launcher_command

    return launcher_command(overrides, size="tiny", ds_config=str(REPO / ds_config), num_gpus=ranks,
                            master_port=port or free_port(),
                            deepspeed_bin=str(Path(sys.executable).parent / "deepspeed"), **launch_kw)


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    f = open(log, "wb")
    return subprocess.Popen(cmd, cwd=REPO, env=launcher_env(env), stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait(proc: subprocess.Popen, log: Path, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"launcher timed out; log tail:\n{log.read_text()[-4000:]}") from None


def run_launcher(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 600) -> int:
    return wait(start(cmd, log, env), log, timeout)


def wait_group_gone(pgid: int, timeout: float = 120) -> None:
    """Wait until every process of a launcher's group has exited (ranks outlive the runner after a SIGTERM)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    raise AssertionError("ranks did not exit after SIGTERM")


def wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists():
            done = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.strip()]
            if done and max(done) >= step:
                return
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited {proc.returncode} before step {step}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def preempt(cmd: list[str], log: Path, metrics: Path, step: int, during=lambda: None) -> None:
    """Launch, wait until `metrics` has `step`, call `during()` (checks of the running job), then SIGTERM the job's
    process group as a scheduler does and wait until every process of it has exited (the launcher saves a
    checkpoint on the way out)."""
    proc = start(cmd, log)
    wait_for_step(metrics, step, proc, log)
    during()
    os.killpg(proc.pid, signal.SIGTERM)
    wait(proc, log)
    wait_group_gone(proc.pid)


# ----------------------------------------------------------------------------- export


class ExportedProbe(NamedTuple):
    """The exported towers and their logits on the probe batch the trainer saved with the engine's own logits."""
    disc: Any
    gen: Any
    inputs: dict
    probe: dict
    disc_logits: Any
    gen_logits: Any  # cut to the probe's positions (the trainer keeps the first ones only)


def export_and_probe(run: Path, out: Path) -> ExportedProbe:
    """Export `run`'s newest checkpoint to `out` with the export CLI, load both towers with the Auto classes and
    run them on the probe batch; the callers compare with the engine's logits at their own tolerance."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    from pretraining.export import main

    assert main(["--checkpoint", str(run), "--output", str(out)]) == 0
    probe = torch.load(run / "probe.pt")  # the engine's logits, taken by the trainer at the last step
    inputs = {k: probe[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    disc = AutoModelForPreTraining.from_pretrained(out / "discriminator").eval()
    gen = AutoModelForMaskedLM.from_pretrained(out / "generator").eval()
    with torch.no_grad():
        d = disc(**inputs).logits
        g = gen(**inputs).logits[:, :probe["generator_logits"].shape[1]]
    return ExportedProbe(disc, gen, inputs, probe, d, g)
