"""Launchers for `pretraining/train.py`: DeepSpeed's, and this project's per-node launcher for schedulers.

    launcher_command(["data.pack=s3://b/pack", "run=s3://b/runs/r1"], size="large",
                     ds_config="ds_configs/zero3.json", hostfile="/job/hostfile")
    # -> ['deepspeed', '--hostfile', '/job/hostfile', '--master_port', '29500',
    #     'pretraining/train.py', '--deepspeed', 'ds_configs/zero3.json', '--config', 'large', ...]

Single node: `num_gpus`, DeepSpeed's launcher. Multi-node with ssh: `hostfile` (lines `host slots=N`),
DeepSpeed's pdsh launcher. Multi-node where something else starts one process per node (Slurm's
`srun`, a Kubernetes indexed Job, or you with `no_ssh=True`): this module's node launcher, the
same command on every node but for `--node-rank`:

    python pretraining/launch.py --nnodes 2 --node-rank $SLURM_NODEID --nproc-per-node 8 \
        --master-addr node-a --master-port 29500 --grace-s 600 \
        pretraining/train.py --deepspeed ds_configs/zero3.json --config large data.pack=... run=...

It starts `nproc-per-node` ranks with the environment DeepSpeed's per-node launcher sets (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...) and owns what happens on SIGTERM, which is why it exists:
DeepSpeed's `deepspeed --no_ssh` dies on SIGTERM at once (no handler; as a container's PID 1 it
ignores the signal, so the ranks never hear it), and its `deepspeed.launcher.launch` kills the ranks
30 s after SIGTERM and exits 1 whatever they return. Here a SIGTERM/SIGINT is passed to the ranks
(the trainer checkpoints at the next step boundary and exits 75), the ranks get `--grace-s` seconds
before SIGKILL, and the node exits 75 when they did, so a scheduler can tell "checkpointed, requeue
me" from a crash. It needs no hostfile: the world is nnodes x nproc-per-node. A rank that fails
takes the node's other ranks down (they would otherwise wait for it in a collective until the
backend's timeout).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TRAIN_SCRIPT = str(Path(__file__).resolve().parent / "train.py")
LAUNCH_SCRIPT = str(Path(__file__).resolve())
PREEMPTED_EXIT = 75  # same as pretraining.trainer.PREEMPTED_EXIT (kept import-free: flows need no torch here)
# Seconds from SIGTERM to SIGKILL: the step in flight, then a checkpoint saved, hashed and uploaded. ELECTRA-Large
# under ZeRO-3 (357M parameters with a 32768 vocabulary: 4.28 GB of bf16 weights, fp32 master weights and Adam
# moments) took 68-76 s to leave one node (2 CPU ranks, local S3; benchmarks/checkpoint_save.py, figures in
# docs/benchmarks.md), about what moving the same bytes takes: the save is I/O-bound. 600 s is 8x that, the whole
# checkpoint leaving one node at 7 MB/s; on N nodes each node writes 1/N. A Large step is short beside it
# (batch 2048 x 512 on 8 H100 at 40% MFU: under a second).
CHECKPOINT_GRACE_S = 600
CRASH_GRACE_S = 30.0  # after a rank failed no checkpoint is possible (it takes every rank): stop the rest soon
DIVERGED_EXIT = 3  # same as pretraining.trainer.DIVERGED_EXIT: a non-finite loss stopped the run


def launcher_command(overrides: list[str], *, size: str, ds_config: str, num_gpus: int | None = None,
                     master_port: int = 29500, hostfile: str | None = None, num_nodes: int | None = None,
                     node_rank: int | None = None, master_addr: str | None = None, no_ssh: bool = False,
                     deepspeed_bin: str = "deepspeed", python_bin: str | None = None,
                     grace_s: float = CHECKPOINT_GRACE_S, extra: list[str] | None = None) -> list[str]:
    """argv running train.py with `--config size overrides...`: DeepSpeed's launcher, or with `no_ssh` this node's.

    `no_ssh` starts `num_gpus` (default 1) ranks here as node `node_rank` of `num_nodes`; `hostfile` is not
    needed then (DeepSpeed's --no_ssh needed the same one on every node).
    """
    train = [TRAIN_SCRIPT, "--deepspeed", ds_config, "--config", size, *overrides]
    if no_ssh:
        if num_nodes is None or node_rank is None or not master_addr:
            raise ValueError("no_ssh needs num_nodes, node_rank and master_addr (the node_rank-0 host)")
        return [python_bin or sys.executable, LAUNCH_SCRIPT, "--nnodes", str(num_nodes), "--node-rank",
                str(node_rank), "--nproc-per-node", str(num_gpus or 1), "--master-addr", master_addr,
                "--master-port", str(master_port), "--grace-s", f"{grace_s:g}", *train]
    cmd = [deepspeed_bin]
    if hostfile:
        cmd += ["--hostfile", hostfile]
    if master_addr:
        cmd += ["--master_addr", master_addr]
    if num_gpus is not None:
        cmd += ["--num_gpus", str(num_gpus)]
    return cmd + ["--master_port", str(master_port), *(extra or []), *train]


# ----------------------------------------------------------------------------- the node launcher


def rank_env(base: dict[str, str], *, nnodes: int, node_rank: int, nproc: int, local_rank: int,
             master_addr: str, master_port: int) -> dict[str, str]:
    """What torch.distributed (env://) and DeepSpeed read, as `deepspeed.launcher.launch` sets it."""
    env = dict(base)
    env.update(RANK=str(node_rank * nproc + local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nnodes * nproc),
               LOCAL_SIZE=str(nproc), CROSS_RANK=str(node_rank), CROSS_SIZE=str(nnodes), MASTER_ADDR=master_addr,
               MASTER_PORT=str(master_port))
    return env


def node_exit_code(codes: list[int]) -> int:
    """A failing rank's code (a signal death as 128+N) wins; then 75 if any rank checkpointed on a signal; else 0."""
    failed = [c for c in codes if c not in (0, PREEMPTED_EXIT)]
    if failed:
        return 128 - failed[0] if failed[0] < 0 else failed[0]
    return PREEMPTED_EXIT if PREEMPTED_EXIT in codes else 0


def _say(msg: str) -> None:
    print(f"[pretraining.launch] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pretraining/launch.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nnodes", type=int, required=True, help="nodes in the job")
    ap.add_argument("--node-rank", type=int, required=True, help="this node's rank, 0..nnodes-1 (0 hosts the master)")
    ap.add_argument("--nproc-per-node", type=int, default=1, help="ranks on this node: its GPUs, or CPU ranks")
    ap.add_argument("--master-addr", required=True, help="address of node 0, where rank 0's rendezvous listens")
    ap.add_argument("--master-port", type=int, default=29500)
    ap.add_argument("--grace-s", type=float, default=CHECKPOINT_GRACE_S,
                    help="seconds the ranks get to checkpoint after SIGTERM before SIGKILL (default %(default)s)")
    ap.add_argument("script", help="the training script (pretraining/train.py)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    a = ap.parse_args(argv)
    if not 0 <= a.node_rank < a.nnodes or a.nproc_per_node < 1:
        ap.error(f"need 0 <= --node-rank < --nnodes and --nproc-per-node >= 1, got {a.node_rank}, {a.nnodes}, "
                 f"{a.nproc_per_node}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    host = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    first = a.node_rank * a.nproc_per_node
    _say(f"node {a.node_rank} of {a.nnodes} ({host}): ranks {first}..{first + a.nproc_per_node - 1} of "
         f"{a.nnodes * a.nproc_per_node}, master {a.master_addr}:{a.master_port}")
    signalled: list[int] = []
    # Set before any rank exists, so a signal during start-up is not lost (it is passed on below).
    signal.signal(signal.SIGTERM, lambda signum, _frame: signalled.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signalled.append(signum))
    procs = [subprocess.Popen([sys.executable, "-u", a.script, *a.args],
                              env=rank_env(os.environ, nnodes=a.nnodes, node_rank=a.node_rank, nproc=a.nproc_per_node,
                                           local_rank=i, master_addr=a.master_addr, master_port=a.master_port))
             for i in range(a.nproc_per_node)]
    forwarded, deadline = 0, None
    while [p.poll() for p in procs].count(None):  # poll every rank (any() would stop at the first running one)
        if len(signalled) > forwarded:  # pass each new signal on (a scheduler may also signal the ranks itself)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signalled[-1])
            if deadline is None:
                deadline = time.monotonic() + a.grace_s
                _say(f"signal {signal.Signals(signalled[-1]).name}: passed to the ranks, which checkpoint and exit; "
                     f"SIGKILL in {a.grace_s:g}s")
            forwarded = len(signalled)
        codes = [p.returncode for p in procs if p.returncode is not None]
        if deadline is None and any(c not in (0, PREEMPTED_EXIT) for c in codes):
            _say(f"a rank exited {node_exit_code(codes)}: stopping the others")
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + CRASH_GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            _say("grace period over: SIGKILL to the ranks still running")
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    rc = node_exit_code([p.returncode for p in procs])
    _say(f"ranks exited {[p.returncode for p in procs]}: node exit {rc}"
         + (" (checkpointed after a signal: relaunch to resume)" if rc == PREEMPTED_EXIT else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
