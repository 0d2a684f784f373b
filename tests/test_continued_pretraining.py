"""Continued pretraining from a published-style ELECTRA pair with its own WordPiece tokenizer.

Nothing is downloaded: the test builds what Google publishes, in miniature. A WordPiece
tokenizer trained on real prose with BERT's vocabulary layout ([PAD]=0, [UNK]=100, [CLS]=101,
[SEP]=102, [MASK]=103), saved in HF format; an `ElectraForPreTraining` + `ElectraForMaskedLM`
pair with random weights, shared embeddings and `embedding_size` below the discriminator's
width (so both towers' projections load), in shapes unlike any named size. The corpus is
packed with that tokenizer by the real pack job, then:

- before any step, the project's model gives the pair's logits (in process);
- continued pretraining under ZeRO-3 on 2 CPU ranks through the real launcher: its first loss is
  the loaded weights' loss, it falls, validation runs at every checkpoint, a SIGTERM + resume
  gives identical losses and validation, the export loads with the Auto classes and the
  published-style tokenizer;
- relaunched with a learning rate of 1e6 it stops on a non-finite loss, names it, and keeps the
  last good checkpoint.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from train_support import deepspeed_cmd, export_and_probe, preempt, run_launcher, train_overrides

from common import storage
from common.packformat import PackReader
from common.special_tokens import BERT
from pipelines.packing import prose
from pipelines.packing.config import PackConfig
from pipelines.packing.run import run as run_pack
from pretraining import checkpoint as ckpt
from pretraining import init_from
from pretraining.config import train_config, with_inputs
from pretraining.metrics import HEALTH, VALIDATION, read_losses, read_records

SEQ = 64
STEPS = 12
BERT_SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Unlike every named size (tiny is 32/64/16 with 512 positions): the run must take these from the pair.
DISC = dict(hidden_size=48, num_attention_heads=2, intermediate_size=96)
GEN = dict(hidden_size=24, num_attention_heads=2, intermediate_size=48)


def wordpiece(docs: list[dict], out, vocab_size: int = 1200):
    """BERT-layout WordPiece trained on the docs, saved in HF format (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator((d["text"] for d in docs),
                            trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS))
    hf = BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True, model_max_length=SEQ)
    hf.save_pretrained(str(out))
    return hf


def electra_pair(vocab_size: int, out) -> tuple:
    """Random ElectraForPreTraining + ElectraForMaskedLM sharing their embeddings, as a published pair does."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    torch.manual_seed(7)
    common = dict(vocab_size=vocab_size, embedding_size=32, num_hidden_layers=2, max_position_embeddings=SEQ,
                  pad_token_id=0)
    disc = ElectraForPreTraining(ElectraConfig(**common, **DISC)).eval()
    gen = ElectraForMaskedLM(ElectraConfig(**common, **GEN)).eval()
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    gen.tie_weights()
    disc.save_pretrained(str(out / "discriminator"))
    gen.save_pretrained(str(out / "generator"))
    return disc, gen


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("continued")
    docs = prose.documents(limit_chars=200_000)
    prose.write_documents(str(root / "docs"), docs, num_shards=2)
    tok = wordpiece(docs, root / "tokenizer")
    disc, gen = electra_pair(len(tok), root / "pair")
    m = run_pack(PackConfig(input=str(root / "docs"), tokenizer=str(root / "tokenizer"), output=str(root / "pack"),
                            max_seq_length=SEQ), ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    return {"root": root, "docs": docs, "tok": tok, "disc": disc, "gen": gen, "pack": str(root / "pack"),
            "pair": str(root / "pair"), "manifest": m}


def test_pack_carries_the_tokenizers_special_ids(pair, tmp_path):
    """The pack job takes an HF tokenizer (tokenizer.json, or a bare vocab.txt): its ids, its specials, its copy."""
    from pipelines.tokenizer.pretrained import load

    m = pair["manifest"]
    assert m["special_ids"] == BERT.as_dict() and m["vocab_size"] == len(pair["tok"])
    assert m["tokenizer"]["kind"] == "hf" and m["tokenizer"]["uri"] == storage.join(pair["pack"], "tokenizer")
    assert [i["kind"] for i in m["inputs"]] == ["documents"]
    reader = PackReader(pair["pack"])
    rows = np.concatenate([reader.read(k, 0, s.examples) for k, s in enumerate(reader.shards)])
    assert (rows[:, 0] == BERT.cls).all() and ((rows == BERT.sep).sum(1) >= 1).all()
    assert not np.isin(rows[:, 1:], [BERT.cls, BERT.mask]).any() and rows.max() < len(pair["tok"])
    # Every token of the corpus, in order, as the tokenizer encodes each document: the rows, in
    # shard order, hold the input shards' documents in input order (shard 0 holds docs[0::2]).
    in_order = pair["docs"][0::2] + pair["docs"][1::2]
    expect = [t for d in in_order for t in pair["tok"](d["text"], add_special_tokens=False)["input_ids"]]
    got = [t for r in rows for t in r.tolist() if t not in (BERT.pad, BERT.cls, BERT.sep)]
    assert got == expect

    # The published form: vocab.txt alone (uncased), the same tokenization.
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    inv = sorted(pair["tok"].get_vocab().items(), key=lambda kv: kv[1])
    (vocab_dir / "vocab.txt").write_text("".join(piece + "\n" for piece, _ in inv))
    from_vocab, from_json = load(str(vocab_dir)), load(str(pair["root"] / "tokenizer"))
    assert from_vocab.special_ids == from_json.special_ids == BERT
    from tokenizers import Tokenizer

    text = "Größenwahn, café and 東京: ELECTRA's discriminator."
    a, b = (Tokenizer.from_str(t.backend_json).encode(text, add_special_tokens=False).ids for t in (from_vocab,
                                                                                                    from_json))
    assert a == b and len(a) > 10


def test_hf_encoder_aligns_tokens_with_the_text(pair):
    """Character offsets become byte offsets of the stream text: each token's span starts with its piece,
    after the normalisation WordPiece applies (lowercase, accents stripped); blank documents take nothing."""
    import unicodedata

    from pipelines.packing.encode import HFEncoder
    from pipelines.tokenizer.pretrained import load

    tok = load(str(pair["root"] / "tokenizer"))
    enc = HFEncoder(tok.backend_json, 2, np.dtype("<u2"), [BERT.pad, BERT.cls, BERT.sep, BERT.mask])
    enc.setup()
    texts = ["Größenwahn ist keine Lösung. Café au lait!", "", "ELECTRA trains a discriminator. 東京 [MASK] here."]
    out = enc.encode([t.encode() for t in texts])
    assert out.lengths[1] == 0 and len(out.tokens) == sum(out.lengths) == len(out.token_starts) - 1
    assert out.text == b"\n" + texts[0].encode() + b"\n" + texts[2].encode()
    assert out.token_starts[0] == 0 and out.token_starts[out.lengths[0]] == len(texts[0].encode()) + 1

    def norm(s: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")

    pieces = pair["tok"].convert_ids_to_tokens(out.tokens.tolist())
    assert "[MASK]" not in pieces  # typed in a text, it is text
    for t, piece in enumerate(pieces):
        span = norm(out.text[out.token_starts[t]:out.token_starts[t + 1]].decode()).lstrip("\n ")
        if piece != "[UNK]":
            assert span.startswith(piece.removeprefix("##")), (t, piece, span)


def _build(pair, run: str, *extra: str):
    overrides = [f"data.pack={pair['pack']}", f"run={run}", f"init.pretrained={pair['pair']}", *extra]
    cfg = with_inputs(train_config("tiny", overrides), overrides)
    return cfg


def test_model_matches_the_published_pair_before_any_step(pair, tmp_path):
    """Same input: the discriminator's logits everywhere and the generator's at the masked positions."""
    from pretraining.model import mask_tokens

    cfg = _build(pair, str(tmp_path / "run"))
    m = cfg.model
    assert (m.hidden_size, m.generator_hidden_size, m.max_position_embeddings, m.vocab_size) == \
        (48, 24, SEQ, len(pair["tok"]))  # from the pair's configs, not the named size
    assert (m.pad_token_id, m.unk_token_id, m.cls_token_id, m.sep_token_id, m.mask_token_id) == \
        (0, 100, 101, 102, 103)  # from the pack manifest
    model = m.build().eval()
    init_from.load_into(model, cfg.init)
    reader = PackReader(pair["pack"])
    ids = torch.from_numpy(reader.read(0, 0, 8))
    from common.packformat import attention_mask, token_type_ids

    am = torch.from_numpy(attention_mask(ids.numpy(), BERT.pad))
    tt = torch.from_numpy(token_type_ids(ids.numpy(), BERT.sep))
    masked, picked = mask_tokens(ids, am, m, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours_d = model.discriminator_logits(ids, am, tt)
        theirs_d = pair["disc"](input_ids=ids, attention_mask=am, token_type_ids=tt).logits
        ours_g = model.generator_logits(masked, am, tt, picked)
        theirs_g = pair["gen"](input_ids=masked, attention_mask=am, token_type_ids=tt).logits[picked]
    assert picked.sum() > 20
    torch.testing.assert_close(ours_d, theirs_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_g, theirs_g, atol=1e-5, rtol=1e-5)


def test_a_pair_that_does_not_fit_is_one_error_naming_it(pair, tmp_path):
    disc = {k: v.clone() for k, v in pair["disc"].state_dict().items()}
    gen = {k: v for k, v in pair["gen"].state_dict().items()}
    state = init_from.from_hf_state_dicts(disc, gen)
    model = _build(pair, str(tmp_path / "r")).model.build()
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    init_from.check_shapes(state, expected)  # the real pair fits
    state["generator.embeddings_project.weight"] = state["generator.embeddings_project.weight"][:, :16]
    with pytest.raises(init_from.InitError, match=r"generator.embeddings_project.weight has shape \[24, 16\], "
                                                  r"the model expects \[24, 32\]"):
        init_from.check_shapes(state, expected)
    with pytest.raises(init_from.InitError, match="has no discriminator/ and generator/"):
        _build({**pair, "pair": str(tmp_path)}, str(tmp_path / "r"))
    with pytest.raises(init_from.InitError, match="pack the corpus with the checkpoint's own tokenizer"):
        _build(pair, str(tmp_path / "r"), "model.vocab_size=2048")
    with pytest.raises(init_from.InitError, match="model.hidden_size=64 .the checkpoint has 48."):
        _build(pair, str(tmp_path / "r"), "model.hidden_size=64")


# ----------------------------------------------------------------------------- through the launcher


def overrides(pair, run, *extra: str) -> list[str]:
    return train_overrides(pair["pack"], str(run), f"init.pretrained={pair['pair']}", *extra, steps=STEPS, warmup=2,
                           every=4, keep=3, seed=99)


@pytest.fixture(scope="module")
def continued(pair, tmp_path_factory) -> dict:
    """The uninterrupted continued-pretraining run: 2 ranks, ZeRO-3 (ds_configs/cpu.json)."""
    base = tmp_path_factory.mktemp("continued_run")
    run, log = base / "run", base / "launcher.log"
    assert run_launcher(deepspeed_cmd(overrides(pair, str(run))), log) == 0, log.read_text()[-5000:]
    return {"run": run, "log": log, "losses": read_losses(str(run / "metrics.jsonl")),
            "validation": {r["step"]: r for r in read_records(str(run / "metrics.jsonl"), VALIDATION)},
            "info": json.loads((run / "run_info.json").read_text())}


def first_step_loss(pair, cfg, world: int = 2, accum: int = 2) -> float:
    """Step 1's loss computed here, without DeepSpeed: the trainer's batches and seeds on the loaded weights."""
    from pretraining.data import PackLoader
    from pretraining.seeding import mix_seed
    from pretraining.validation import HeldOut

    model = cfg.model.build()
    init_from.load_into(model, cfg.init)
    model.train()
    reader = PackReader(pair["pack"])
    held = HeldOut.from_pack([s.examples for s in reader.shards], cfg.data.validation_examples)
    losses = []
    for rank in range(world):
        loader = PackLoader(reader, seed=cfg.seed, micro_batch=4, grad_accum=accum, rank=rank, world=world,
                            block_examples=cfg.data.block_examples, window_blocks=cfg.data.window_blocks,
                            ranges=held.train_ranges())
        batch = next(loader.steps(0, 0, 1))
        for micro, mb in enumerate(batch.micro):
            seed = mix_seed(cfg.seed, 1, rank, micro)
            torch.manual_seed(seed)
            with torch.no_grad():
                losses.append(float(model(**mb, generator=torch.Generator().manual_seed(seed ^ 0x5EED)).loss))
    return sum(losses) / len(losses)


@pytest.mark.slow
@pytest.mark.integration
def test_continued_pretraining_under_zero3(pair, continued, tmp_path):
    """Loaded into partitioned parameters: step 1's loss is the pair's own; the loss falls; validation at every
    checkpoint; the export is an ELECTRA pair again, with the published-style tokenizer."""
    info, losses = continued["info"], continued["losses"]
    assert info["zero_stage"] == 3 and info["world_size"] == 2 and info["init"]["pretrained"] == pair["pair"]
    assert info["model"]["hidden_size"] == 48 and info["model"]["cls_token_id"] == BERT.cls
    assert "initialised from" in continued["log"].read_text()
    cfg = _build(pair, str(tmp_path / "x"), "seed=99", "data.validation_examples=64")
    assert losses[1]["loss"] == pytest.approx(first_step_loss(pair, cfg), rel=1e-4)
    first = sum(losses[s]["loss"] for s in range(1, 4)) / 3
    last = sum(losses[s]["loss"] for s in range(STEPS - 2, STEPS + 1)) / 3
    assert last < first * 0.9, (first, last)
    assert sorted(continued["validation"]) == [4, 8, 12]
    assert all(0.0 <= continued["validation"][s]["disc_auc"] <= 1.0 for s in (4, 8, 12))

    from transformers import AutoTokenizer

    out = tmp_path / "model"
    ex = export_and_probe(continued["run"], out)
    torch.testing.assert_close(ex.disc_logits, ex.probe["discriminator_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ex.gen_logits, ex.probe["generator_logits"], atol=1e-4, rtol=1e-4)
    assert ex.disc.config.hidden_size == 48 and ex.gen.config.hidden_size == 24
    tok = AutoTokenizer.from_pretrained(out / "discriminator")
    enc = tok("The discriminator detects replaced tokens.", "The generator replaces them.")["input_ids"]
    assert enc[0] == 101 and enc.count(102) == 2 and enc[-1] == 102 and tok.mask_token_id == 103
    assert tok.pad_token_id == 0 and tok.unk_token_id == 100
    assert enc == pair["tok"]("The discriminator detects replaced tokens.", "The generator replaces them.")["input_ids"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["special_ids"] == BERT.as_dict() and m["validation"]["step"] == STEPS


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_and_resume_continue_identically(pair, continued, tmp_path):
    """A preempted continued-pretraining run resumes from its checkpoint (not from init.pretrained again):
    per-step losses and the validation at the end equal the uninterrupted run's."""
    run = tmp_path / "run"
    cmd = deepspeed_cmd(overrides(pair, str(run), "checkpoint.every_steps=100"))
    log1 = tmp_path / "first.log"
    preempt(cmd, log1, run / "metrics.jsonl", 5)
    stopped = ckpt.latest_complete(str(run))[1]["step"]
    assert 5 <= stopped < STEPS, log1.read_text()[-3000:]
    log2 = tmp_path / "second.log"
    assert run_launcher(cmd, log2) == 0, log2.read_text()[-5000:]
    assert f"resumed from {run}/checkpoints/{ckpt.tag(stopped)}" in log2.read_text()
    resumed = read_losses(str(run / "metrics.jsonl"))
    for step in range(1, STEPS + 1):
        assert resumed[step]["loss"] == pytest.approx(continued["losses"][step]["loss"], abs=1e-6), step
    val = {r["step"]: r for r in read_records(str(run / "metrics.jsonl"), VALIDATION)}
    assert sorted(val) == [STEPS]  # none at the preemption checkpoint: the grace period is for the checkpoint
    ref = continued["validation"][STEPS]
    for key in ("mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "disc_precision", "disc_recall", "disc_auc"):
        assert val[STEPS][key] == pytest.approx(ref[key], abs=1e-6), key


@pytest.mark.slow
@pytest.mark.integration
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(pair, continued, tmp_path):
    """Relaunched with lr 1e6 (the lr of a resumed run follows its config): the loss goes non-finite, the run
    stops with exit 3 and a message naming it and what to change, and step 12 stays the newest checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(continued["run"], run)
    log = tmp_path / "diverge.log"
    cmd = deepspeed_cmd(overrides(pair, str(run), f"max_steps={STEPS + 4}", "optim.lr=1e6",
                                  "checkpoint.every_steps=100"))
    assert run_launcher(cmd, log) == 3, log.read_text()[-5000:]
    text = log.read_text()
    assert f"resumed from {run}/checkpoints/{ckpt.tag(STEPS)}" in text
    assert "nonfinite_loss: the loss is not finite at step" in text and "lower optim.lr (now 1e+06" in text
    assert f"the last good checkpoint, {run}/checkpoints/{ckpt.tag(STEPS)}, is kept" in text
    assert "Traceback" not in text
    uri, m = ckpt.latest_complete(str(run))  # verified by sha256: resumable
    assert m["step"] == STEPS
    stops = read_records(str(run / "metrics.jsonl"), HEALTH)
    assert [r["check"] for r in stops] == ["nonfinite_loss"] and stops[0]["step"] > STEPS
