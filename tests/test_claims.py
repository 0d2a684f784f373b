"""One writer per output (common/claims.py): the lease, its takeover rules, and two clean jobs on one output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common import claims, manifest, storage
from pipelines import clean
from clean_inputs import good_corpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def output(local_and_s3):
    """The output a claim is taken on, on local disk and in S3."""
    return local_and_s3 + "/out"


def _lease(output: str) -> claims.Lease:
    return claims.Lease.parse(storage.read_bytes(claims.claim_uri(output)))


def test_one_claim_at_a_time_then_released(output):
    with claims.hold(output, "clean") as mine:
        assert _lease(output).run_id == mine.run_id
        with pytest.raises(claims.ClaimHeld, match=f"being written by run {mine.run_id}.*--break-claim"):
            claims.take(output, "pack")
        mine.check()
    assert not storage.exists(claims.claim_uri(output))  # released
    claim, keeper = claims.take(output, "pack")  # free again
    keeper.release()


def test_racing_writers_get_exactly_one_claim(output):
    """Eight threads create the lease at once: the conditional write lets exactly one through."""
    won, lost, barrier = [], [], threading.Barrier(8)

    def contender():
        barrier.wait()
        try:
            won.append(claims.take(output, "clean"))
        except claims.ClaimHeld:
            lost.append(1)

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    won[0][1].release()


def test_stale_claims_are_taken_over_live_ones_only_with_break(output):
    now = time.time()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = claims.Lease("clean-dead", "clean", socket.gethostname(), int(dead.stdout), now, now)
    storage.create_exclusive(claims.claim_uri(output), gone.to_bytes())
    claim, keeper = claims.take(output, "clean")  # its holder's process is gone: taken over without a flag
    keeper.release()

    elsewhere = claims.Lease("clean-far", "clean", "another-host", 1, now - 600, now - 500)  # not renewed for 500 s
    storage.create_exclusive(claims.claim_uri(output), elsewhere.to_bytes())
    claim, keeper = claims.take(output, "clean")
    keeper.release()

    live = claims.Lease("clean-live", "clean", "another-host", 1, now, now)
    storage.create_exclusive(claims.claim_uri(output), live.to_bytes())
    with pytest.raises(claims.ClaimHeld, match="clean-live.*another-host"):
        claims.take(output, "clean")
    victim = claims.Claim(output, "clean-live")
    claim, keeper = claims.take(output, "clean", break_claim=True)
    with pytest.raises(claims.ClaimLost, match=claim.run_id):
        victim.check()  # the broken run must not publish
    keeper.release()


def test_the_lease_is_renewed_while_held(tmp_path):
    out = str(tmp_path / "o")
    claim, keeper = claims.take(out, "clean", ttl_s=0.4)
    first = _lease(out).renewed
    time.sleep(0.5)
    assert _lease(out).renewed > first and _lease(out).run_id == claim.run_id
    keeper.release()


@pytest.mark.integration
def test_second_clean_on_one_output_fails_at_once_first_keeps_its_counts(s3_bucket, tmp_path, capsys):
    """Job A holds the output; job B, started while A runs, stops within seconds naming A; A finishes and prints
    the counts of its own input, which the manifest holds too."""
    a = good_corpus(tmp_path / "a", n_docs=12)
    good_corpus(tmp_path / "b", n_docs=4)
    out = f"{s3_bucket}/clean"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "pipelines.clean", "--input", str(tmp_path / "a" / "*"),
                              "--output", out, "--direct_num_workers=2"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not storage.exists(claims.claim_uri(out)):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        holder = _lease(out)
        t0 = time.monotonic()
        capsys.readouterr()
        assert clean.main(["--input", str(tmp_path / "b" / "*"), "--output", out,
                           "--direct_running_mode=in_memory"]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"being written by run {holder.run_id}" in errors[0], err
        assert time.monotonic() - t0 < 10
        assert first.poll() is None, "job A finished before job B tried: the test proved nothing"
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    m = manifest.read(out, kind="documents")
    c = m["counters"]
    assert c["records_read"] == a["records"]  # A's input, not B's
    dropped, rejected = sum(c["dropped"].values()), sum(c["rejected"].values())
    assert stdout.strip().startswith(f"clean: read {a['records']}, kept {c['kept']}, dropped {dropped}, "
                                     f"rejected {rejected}")
    assert {Path(i["uri"]).parent.name for i in m["inputs"]} == {"a"}
    assert json.loads(storage.read_text(f"{out}/stats.json")) == c
    assert not storage.exists(claims.claim_uri(out))
