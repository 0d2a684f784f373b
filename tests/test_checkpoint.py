"""Checkpoint directories: completion marker, corruption detection, newest-complete lookup, keep-last-K (local + S3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import manifest, storage
from pretraining import checkpoint as ckpt


def fake_checkpoint(root: str, step: int, *, complete: bool = True, ranks: int = 2) -> str:
    """A step dir laid out like DeepSpeed's ZeRO-3 output, built locally then copied to `root` (local or S3)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, ckpt.tag(step))
        os.makedirs(local)
        for r in range(ranks):
            for kind in ("model_states", "optim_states"):
                Path(local, f"zero_pp_rank_{r}_mp_rank_00_{kind}.pt").write_bytes(os.urandom(64 + step))
        files = [f for r in range(ranks) for f in ckpt.file_entries(local, r)]
        dest = storage.join(root, ckpt.tag(step))
        storage.upload_dir(local, dest)
    if complete:
        manifest.write(dest, manifest.build("checkpoint", inputs=[], config={}, shards=files, step=step,
                                            tokens_seen=step * 10, data={"cursor": step * 8}, world_size=ranks))
    return dest


def test_owner_ranks():
    assert ckpt.owner_rank("zero_pp_rank_3_mp_rank_00_model_states.pt") == 3
    assert ckpt.owner_rank("bf16_zero_pp_rank_12_mp_rank_00_optim_states.pt") == 12
    assert ckpt.owner_rank("mp_rank_00_model_states.pt") is None
    assert ckpt.needed_by("mp_rank_00_model_states.pt", 5) and not ckpt.needed_by("zero_pp_rank_1_x.pt", 0)


def test_newest_complete_skips_partial_and_corrupt(tmp_path, caplog):
    root = str(tmp_path / "run" / "checkpoints")
    fake_checkpoint(root, 100)
    fake_checkpoint(root, 200)
    fake_checkpoint(root, 300, complete=False)  # killed before the marker
    uri, m = ckpt.latest_complete(str(tmp_path / "run"))
    assert m["step"] == 200 and uri.endswith("step-000000200")
    # Flip bytes in one file of step 200 (same size): only sha256 catches it.
    victim = Path(uri, "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        uri, m = ckpt.latest_complete(str(tmp_path / "run"))
    assert m["step"] == 100
    assert "sha256" in caplog.text and "step-000000300" in caplog.text and "completion marker" in caplog.text
    # Size check alone would accept it; a truncated file fails even that.
    assert ckpt.verify(storage.join(root, "step-000000200"), "size")[0] is not None
    victim.write_bytes(bytes(data[:10]))
    assert "bytes" in ckpt.verify(storage.join(root, "step-000000200"), "size")[1]
    with pytest.raises(manifest.ManifestError, match="not usable"):
        ckpt.resolve(storage.join(root, "step-000000200"))


def test_keep_last_k(tmp_path):
    root = str(tmp_path / "checkpoints")
    for s in (10, 20, 30, 40):
        fake_checkpoint(root, s)
    fake_checkpoint(root, 25, complete=False)  # stale partial older than the newest complete: removed
    fake_checkpoint(root, 50, complete=False)  # possibly still being written: kept
    ckpt.prune(root, keep_last=2)
    assert [s for s, _ in ckpt.list_steps(root)] == [30, 40, 50]


@pytest.mark.integration
def test_s3_checkpoints_listed_verified_and_pruned(s3_bucket):
    root = f"{s3_bucket}/run/checkpoints"
    for s in (1, 2, 3):
        fake_checkpoint(root, s)
    fake_checkpoint(root, 4, complete=False)
    uri, m = ckpt.latest_complete(f"{s3_bucket}/run")
    assert m["step"] == 3 and uri == f"{root}/step-000000003"
    storage.write_bytes(f"{uri}/zero_pp_rank_0_mp_rank_00_model_states.pt", b"garbage")
    assert ckpt.latest_complete(f"{s3_bucket}/run")[1]["step"] == 2
    ckpt.prune(root, keep_last=1)
    assert [s for s, _ in ckpt.list_steps(root)] == [3, 4]
