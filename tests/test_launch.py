"""The per-node launcher (pretraining/launch.py) with stand-in ranks: environment, SIGTERM, grace, exit codes.

The stand-in is a Python script that behaves like a trainer rank on SIGTERM (sets a flag, "checkpoints"
for a while, exits 75); the real trainer goes through the same launcher in tests/test_train_deepspeed.py
(two nodes on localhost) and tests/test_slurm.py (srun on a real 2-node Slurm).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretraining.launch import LAUNCH_SCRIPT, PREEMPTED_EXIT, node_exit_code

RANK = r'''
import os, signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
mode, save_s = sys.argv[1], float(sys.argv[2])
e = os.environ
sys.stdout.write(f"rank {e['RANK']} local {e['LOCAL_RANK']} world {e['WORLD_SIZE']} cross {e['CROSS_RANK']} "
                 f"master {e['MASTER_ADDR']}:{e['MASTER_PORT']}\n")
sys.stdout.flush()
if mode == "fail" and os.environ["LOCAL_RANK"] == "1":
    sys.exit(3)
if mode == "done":
    sys.exit(0)
open(os.path.join(os.environ["READY_DIR"], os.environ["RANK"]), "w").close()
deadline = time.monotonic() + 60
while not stop and time.monotonic() < deadline:
    time.sleep(0.05)
if mode == "deaf":  # never finishes its checkpoint
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
time.sleep(save_s)  # the checkpoint
sys.exit(75 if stop else 0)
'''


def _start(tmp_path: Path, mode: str, *, nproc: int = 2, node_rank: int = 0, grace_s: float = 30,
           save_s: float = 0.0) -> subprocess.Popen:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    (tmp_path / "ready").mkdir(exist_ok=True)
    cmd = [sys.executable, LAUNCH_SCRIPT, "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node",
           str(nproc), "--master-addr", "node-a", "--master-port", "29555", "--grace-s", str(grace_s), str(script),
           mode, str(save_s)]
    # Its own session: the test signals the launcher alone, as Kubernetes signals a container's PID 1.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={"READY_DIR": str(tmp_path / "ready"), "PATH": "/usr/bin"})


def _when_ready(tmp_path: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "ready").iterdir())) < n:
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.05)


def test_ranks_get_the_distributed_environment(tmp_path):
    proc = _start(tmp_path, "done", node_rank=1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "rank 2 local 0 world 4 cross 1 master node-a:29555" in out
    assert "rank 3 local 1 world 4 cross 1 master node-a:29555" in out
    assert "node 1 of 2" in out and "ranks 2..3 of 4" in out


def test_sigterm_to_the_launcher_alone_reaches_the_ranks_and_the_node_exits_75(tmp_path):
    """As Kubernetes does to a container's PID 1: only the launcher is signalled. The ranks hear it, take their
    2 s "checkpoint" inside the 5 s grace, and the node exits 75 (DeepSpeed's launcher exits 1 whatever they do)."""
    proc = _start(tmp_path, "save", grace_s=5, save_s=2)
    _when_ready(tmp_path, 2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, out
    assert time.monotonic() - t0 >= 2
    assert "signal SIGTERM: passed to the ranks" in out and "ranks exited [75, 75]: node exit 75" in out


def test_ranks_that_outlive_the_grace_are_killed(tmp_path):
    proc = _start(tmp_path, "deaf", grace_s=1)
    _when_ready(tmp_path, 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL, out
    assert "grace period over: SIGKILL" in out


def test_a_failed_rank_stops_the_others(tmp_path):
    proc = _start(tmp_path, "fail")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert "a rank exited 3: stopping the others" in out


@pytest.mark.parametrize("codes, want", [([0, 0], 0), ([75, 75], 75), ([75, 0], 75), ([75, 3], 3), ([-9, 75], 137),
                                         ([0, -15], 143)])
def test_node_exit_code(codes, want):
    assert node_exit_code(codes) == want
