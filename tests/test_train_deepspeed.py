"""End-to-end pretraining with the real `deepspeed` launcher on CPU (gloo), a tiny model and a real-text pack.

One reference run (2 ranks, ZeRO-3; the `reference` fixture in conftest.py, shared with the Slurm tests)
is shared by most checks; the preemption, S3 and two-"node" runs are compared step by step against it.

Regenerate the golden curve (after an intended change to the model, data order or seeding):

    ELECTRA_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_train_deepspeed.py -k golden
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
import torch
from train_support import (
    STEPS,
    deepspeed_cmd,
    export_and_probe,
    free_port,
    overrides,
    preempt,
    run_launcher,
    start,
    wait,
)

from common import storage
from pretraining import checkpoint as ckpt
from pretraining.metrics import HEALTH, VALIDATION, read_losses, read_records

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "assets" / "golden_loss_tiny.json"
GOLDEN_RTOL = 1e-3  # fp32 on CPU: bit-exact on one machine; other CPUs' kernels may round differently


def shm_buffers(port: int) -> list[str]:
    """This run's entries in /dev/shm: DeepSpeed names its CPU comm buffers by master port (other runs on the
    machine, other ports, are not counted)."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"deepspeed_*_{port}_*"))


def test_two_rank_run_leaves_nothing_in_dev_shm(reference):
    assert shm_buffers(reference["port"]) == []


def test_two_ranks_zero3_loss_falls(reference):
    info, losses = reference["info"], reference["losses"]
    assert info["world_size"] == 2 and info["zero_stage"] == 3 and info["grad_accum"] == 2
    assert sorted(losses) == list(range(1, STEPS + 1))
    first = sum(losses[s]["loss"] for s in range(1, 5)) / 4
    last = sum(losses[s]["loss"] for s in range(STEPS - 3, STEPS + 1)) / 4
    assert last < first * 0.85, (first, last)
    assert losses[STEPS]["mlm_loss"] < losses[1]["mlm_loss"] and losses[STEPS]["rtd_loss"] < losses[1]["rtd_loss"]
    log = reference["log"].read_text()
    assert f"step {STEPS}/{STEPS} (100.0%)" in log and "gen acc" in log and "tok/s" in log and "ETA" in log
    assert list((reference["run"] / "tensorboard").glob("events.out.tfevents.*"))
    # Each log interval's line carries its throughput for the report; no peak is known on CPU, so no MFU.
    assert [s for s in losses if "tokens_per_s" in losses[s]] == [8, 16, 24]
    assert all(losses[s]["tokens_per_s"] > 0 for s in (8, 16, 24)) and not any("mfu" in r for r in losses.values())
    assert info["mfu"].startswith("not recorded")


def test_validation_at_every_checkpoint_on_held_out_examples(reference, real_pack):
    """Held-out metrics at each checkpoint (8, 16, 24), in metrics.jsonl and the checkpoint manifest, on examples
    the run's own order never reaches; and none of the training-health warnings fires on this (golden) run."""
    from common.packformat import PackReader
    from pretraining.config import DataConfig
    from pretraining.data import ExampleOrder
    from pretraining.validation import HeldOut

    metrics = str(reference["run"] / "metrics.jsonl")
    val = {r["step"]: r for r in read_records(metrics, VALIDATION)}
    assert sorted(val) == [8, 16, 24] and all(r["examples"] == 64 for r in val.values())
    for r in val.values():
        assert 0 <= r["disc_auc"] <= 1 and 0 <= r["mlm_acc"] <= 1 and r["mlm_loss"] > 0 and r["disc_loss"] > 0
    assert val[24]["mlm_loss"] < val[8]["mlm_loss"]
    _, m = ckpt.latest_complete(str(reference["run"]))
    assert m["validation"] == val[24]
    held = HeldOut.from_pack([s.examples for s in PackReader(reference["pack"]).shards], 64)
    assert m["validation_split"] == {"examples": 64, "held_per_shard": list(held.held)}
    order = ExampleOrder(held.train_ranges(), DataConfig.block_examples, 16, seed=1234)  # window = train_batch
    trained = set(order.examples(0, STEPS * 16))
    assert len(trained) == STEPS * 16 and trained.isdisjoint(held.rows())
    assert read_records(metrics, HEALTH) == [] and "health:" not in reference["log"].read_text()


def test_golden_loss_curve(reference, real_pack):
    got = {str(s): r["loss"] for s, r in reference["losses"].items()}
    if os.environ.get("ELECTRA_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "regenerate": "ELECTRA_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_train_deepspeed.py -k golden",
            "corpus_sha256": real_pack["corpus_sha256"], "rtol": GOLDEN_RTOL, "losses": got}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    if golden["corpus_sha256"] != real_pack["corpus_sha256"]:
        pytest.skip("this machine's /usr/share/common-licenses differ from the golden corpus")
    for step, loss in golden["losses"].items():
        assert got[step] == pytest.approx(loss, rel=GOLDEN_RTOL), f"step {step}"


def test_towers_share_one_embedding_tensor(reference):
    report = reference["info"]["shared_embeddings"]
    assert report["shared"] and report["word_embedding_params"] == ["embeddings.word_embeddings.weight"]
    assert report["distinct_tensors"] == 1
    assert all(n.startswith("embeddings.") for n in report["embedding_tables"])
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    sd = get_fp32_state_dict_from_zero_checkpoint(str(reference["run"] / "checkpoints"), tag=ckpt.tag(STEPS))
    assert [k for k in sd if "word_embeddings" in k] == ["embeddings.word_embeddings.weight"]
    assert not any(k.startswith(("generator.embeddings.", "discriminator.embeddings.")) for k in sd)


def test_checkpoints_every_n_keep_last_k(reference):
    steps = [s for s, _ in ckpt.list_steps(str(reference["run"] / "checkpoints"))]
    assert steps == [16, 24]  # 8 was deleted once 24 was complete
    uri, m = ckpt.latest_complete(str(reference["run"]))
    assert m["step"] == STEPS and m["data"]["cursor"] == STEPS * 16 and m["world_size"] == 2
    assert m["inputs"][0]["kind"] == "pack" and m["tokens_seen"] > 0
    assert {f["path"] for f in m["shards"]} == {f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt"
                                                for r in (0, 1) for k in ("model", "optim")}


def test_export_loads_and_matches_engine(reference, real_pack, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "model"
    ex = export_and_probe(reference["run"], out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "model" and m["step"] == STEPS and [i["kind"] for i in m["inputs"]] == \
        ["checkpoint", "pack", "tokenizer"]
    assert (out / "discriminator" / "model.safetensors").exists() and (out / "generator" / "model.safetensors").exists()
    assert type(ex.disc).__name__ == "ElectraForPreTraining" and type(ex.gen).__name__ == "ElectraForMaskedLM"
    torch.testing.assert_close(ex.disc_logits, ex.probe["discriminator_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ex.gen_logits, ex.probe["generator_logits"], atol=1e-4, rtol=1e-4)
    inputs = ex.inputs
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(out / "discriminator")(**inputs).last_hidden_state
    assert hidden.shape == (*inputs["input_ids"].shape, 64)
    tok = AutoTokenizer.from_pretrained(out / "discriminator")
    enc = tok("The licensee may copy the work.", "It is free software.")
    assert enc["input_ids"][0] == 2 and enc["input_ids"].count(3) == 2 and tok.mask_token_id == 4


def test_sigterm_then_resume_matches_uninterrupted_via_s3(reference, real_pack, s3_bucket, tmp_path):
    """Preempt (SIGTERM to the job's process group, as a scheduler does), relaunch, compare losses; pack and run on S3."""
    pack = f"{s3_bucket}/pack"
    storage.upload_dir(real_pack["pack"], pack)
    run = f"{s3_bucket}/runs/preempted"
    staging = tmp_path / "staging"
    staging.mkdir()
    # An earlier run's log left in the staging directory (below step 5, so wait_for_step is not fooled by it).
    (staging / "metrics.jsonl").write_text('{"step": 2, "kind": "validation", "disc_auc": 0.99}\n')
    port = free_port()
    cmd = deepspeed_cmd(overrides(pack, run, "checkpoint.every_steps=100",
                                  f"checkpoint.staging={staging}"), port=port)

    def while_training() -> None:
        assert shm_buffers(port) == []  # DeepSpeed's CPU shm op is not even loaded
        # Every rank on this host: the rendezvous store listens on loopback only, not on every interface.
        listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN
                     and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, listening

    log1 = tmp_path / "first.log"
    preempt(cmd, log1, staging / "metrics.jsonl", 5, during=while_training)
    assert "checkpoint saved; relaunch to resume" in log1.read_text(), log1.read_text()[-4000:]
    uri, m = ckpt.latest_complete(run)
    stopped = m["step"]
    assert 5 <= stopped < STEPS and uri.startswith("s3://")
    assert not (staging / "checkpoints" / ckpt.tag(stopped)).exists()  # uploaded, then staging cleared
    assert shm_buffers(port) == []  # a SIGTERM'd run leaves nothing in /dev/shm either

    log2 = tmp_path / "second.log"
    assert run_launcher(cmd, log2) == 0, log2.read_text()[-5000:]
    assert shm_buffers(port) == []
    assert f"resumed from {run}/checkpoints/{ckpt.tag(stopped)}" in log2.read_text()
    local = tmp_path / "metrics.jsonl"
    storage.download_file(f"{run}/metrics.jsonl", str(local))
    resumed = read_losses(str(local))
    for step in range(1, STEPS + 1):
        assert resumed[step]["loss"] == pytest.approx(reference["losses"][step]["loss"], abs=1e-6), step
    assert ckpt.latest_complete(run)[1]["step"] == STEPS
    assert storage.list_files(f"{run}/tensorboard/")
    # The held-out metrics at the end equal the uninterrupted run's: same weights, same seeded masking. The one
    # validation line is this run's: the stale staging log was not continued.
    (val,) = read_records(str(local), VALIDATION)
    ref = {r["step"]: r for r in read_records(str(reference["run"] / "metrics.jsonl"), VALIDATION)}[STEPS]
    assert val["step"] == STEPS and val.keys() == ref.keys()
    for key, value in ref.items():
        assert val[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


def test_two_nodes_on_localhost_without_ssh(reference, real_pack, tmp_path):
    """Two node launchers (pretraining/launch.py --node-rank 0/1), one rank each, form one 2-rank job: the same
    losses as DeepSpeed's launcher running both ranks."""
    port = free_port()
    run = tmp_path / "run"
    procs = []
    for node in (0, 1):
        cmd = deepspeed_cmd(overrides(real_pack["pack"], str(run)), ranks=1, port=port, no_ssh=True, num_nodes=2,
                            node_rank=node, master_addr="127.0.0.1")
        log = tmp_path / f"node{node}.log"
        procs.append((start(cmd, log), log))
    for proc, log in procs:
        assert wait(proc, log) == 0, log.read_text()[-5000:]
    assert "node 1 of 2" in procs[1][1].read_text() and "ranks 1..1 of 2" in procs[1][1].read_text()
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2
    losses = read_losses(str(run / "metrics.jsonl"))
    for step in range(1, STEPS + 1):
        assert losses[step]["loss"] == pytest.approx(reference["losses"][step]["loss"], abs=1e-6), step


def test_launch_refuses_inconsistent_batch(real_pack, tmp_path):
    """train_batch != micro x grad_accum x world stops every rank before the model is built, with one clear line."""
    log = tmp_path / "batch.log"
    bad = overrides(real_pack["pack"], str(tmp_path / "run"), "data.train_batch=12",
                    "data.micro_batch=4", "data.grad_accum=2")
    assert run_launcher(deepspeed_cmd(bad), log) != 0
    assert "train_batch must equal micro_batch x grad_accum x world: 12 != 4 x 2 x 2" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_skips_a_corrupt_newest_checkpoint(reference, tmp_path):
    """Flip one byte of the newest checkpoint (same size): the relaunch warns, resumes from the older one, and
    retrains the same steps to the same losses."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference["run"], run)
    victim = run / "checkpoints" / ckpt.tag(STEPS) / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    first_kept = STEPS - 8
    log = tmp_path / "resume.log"
    assert run_launcher(deepspeed_cmd(overrides(reference["pack"], str(run))), log) == 0, log.read_text()[-5000:]
    text = log.read_text()
    assert "failed its sha256 check" in text and "does not match its sha256" in text and f"resumed from {run}/checkpoints/{ckpt.tag(first_kept)}" in text
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # The retrained steps replace their earlier lines, once each: training lines and the validation line of
    # each checkpoint alike (checkpoint.every_steps=8).
    assert [m["step"] for m in lines if "kind" not in m] == list(range(1, STEPS + 1))
    assert [m["step"] for m in lines if m.get("kind") == "validation"] == list(range(8, STEPS + 1, 8))
    losses = read_losses(str(run / "metrics.jsonl"))
    for step in range(first_kept + 1, STEPS + 1):
        assert losses[step]["loss"] == pytest.approx(reference["losses"][step]["loss"], abs=1e-6), step
    assert ckpt.latest_complete(str(run))[1]["step"] == STEPS


def test_gpu_zero3_config_in_bf16_on_cpu(real_pack, tmp_path):
    """The production ds_configs/zero3.json as shipped (bf16, its buckets and persistence threshold), on 2 CPU ranks:
    it trains, its bf16 ZeRO-3 checkpoints resume to the same losses, and the export matches the bf16 engine.

    No GPU runs in CI; this is the GPU configuration's path through DeepSpeed short of CUDA kernels."""
    import shutil

    steps = 12
    run = tmp_path / "run"
    args = overrides(real_pack["pack"], str(run), f"max_steps={steps}", "checkpoint.every_steps=6")
    log = tmp_path / "bf16.log"
    assert run_launcher(deepspeed_cmd(args, ds_config="ds_configs/zero3.json"), log) == 0, log.read_text()[-5000:]
    assert "enables bf16 on CPU" in log.read_text()
    info = json.loads((run / "run_info.json").read_text())
    assert info["ds_config"]["bf16"]["enabled"] and info["zero_stage"] == 3
    assert info["ds_config"]["zero_optimization"]["stage3_param_persistence_threshold"] == 1_100_000
    # Micro-batch gradients accumulate in fp32, not bf16: the config as shipped, what the engine reads from it,
    # and the dtype of ZeRO-3's accumulation buffer itself (grad_accum 2 here).
    assert info["ds_config"]["data_types"]["grad_accum_dtype"] == "fp32" and info["grad_accum"] == 2
    assert info["model_dtype"] == "torch.bfloat16" and info["grad_accum_dtype"] == "torch.float32"
    assert info["grad_accum_buffer_dtype"] == "torch.float32"
    losses = read_losses(str(run / "metrics.jsonl"))
    assert sorted(losses) == list(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in losses.values())
    assert losses[steps]["loss"] < losses[1]["loss"]
    _, m = ckpt.latest_complete(str(run))
    assert {f["path"] for f in m["shards"]} == {f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} \
        | {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)}

    # Resume: drop the last checkpoint's completion marker, relaunch, retrain steps 7-12.
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / "checkpoints" / ckpt.tag(steps) / "manifest.json").unlink()
    args = overrides(real_pack["pack"], str(again), f"max_steps={steps}", "checkpoint.every_steps=6")
    log2 = tmp_path / "resume.log"
    assert run_launcher(deepspeed_cmd(args, ds_config="ds_configs/zero3.json"), log2) == 0, log2.read_text()[-5000:]
    assert f"resumed from {again}/checkpoints/{ckpt.tag(6)}" in log2.read_text()
    resumed = read_losses(str(again / "metrics.jsonl"))
    for step in range(7, steps + 1):
        assert resumed[step]["loss"] == pytest.approx(losses[step]["loss"], abs=1e-5), step

    # Export consolidates the fp32 master weights; the engine's probe ran with their bf16 copies, so the logits
    # agree to bf16 rounding (2^-8 at |x| ~ 1). After 12 steps the discriminator's logits are nearly constant;
    # the generator's vary (std ~0.2), so their correlation is what shows the right weights were exported.
    ex = export_and_probe(run, tmp_path / "model")
    torch.testing.assert_close(ex.disc_logits, ex.probe["discriminator_logits"], atol=1e-2, rtol=0)
    torch.testing.assert_close(ex.gen_logits, ex.probe["generator_logits"], atol=2e-2, rtol=0)
    g = ex.gen_logits
    assert torch.corrcoef(torch.stack([g.flatten(), ex.probe["generator_logits"].flatten()]))[0, 1] > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_zero3_on_one_gpu(real_pack, tmp_path):
    """The GPU path as users launch it: CUDA accelerator, NCCL, ds_configs/zero3.json (bf16), torch's fused AdamW."""
    run = tmp_path / "run"
    log = tmp_path / "gpu.log"
    cmd = deepspeed_cmd(overrides(real_pack["pack"], str(run)), ranks=1, ds_config="ds_configs/zero3.json")
    assert run_launcher(cmd, log, env={"DS_ACCELERATOR": "cuda"}) == 0, log.read_text()[-5000:]
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["grad_accum"] == 4 and info["zero_stage"] == 3
    assert info["ds_config"]["bf16"]["enabled"] and info["ds_config"]["optimizer"]["params"]["fused"]
    assert "enables bf16 on CPU" not in log.read_text()
    losses = read_losses(str(run / "metrics.jsonl"))
    first = sum(losses[s]["loss"] for s in range(1, 5)) / 4
    last = sum(losses[s]["loss"] for s in range(STEPS - 3, STEPS + 1)) / 4
    assert last < first * 0.85, (first, last)
