"""Command lines for `deepspeed pretraining/train.py`, for flows and tests (one place that knows the flags).

    launcher_command(["data.pack=s3://b/pack", "run=s3://b/runs/r1"], size="large",
                     ds_config="ds_configs/zero3.json", hostfile="/job/hostfile")
    # -> ['deepspeed', '--hostfile', '/job/hostfile', '--master_port', '29500',
    #     'pretraining/train.py', '--deepspeed', 'ds_configs/zero3.json', '--config', 'large', ...]

Single node: `num_gpus`. Multi-node with ssh: `hostfile` (lines `host slots=N`). Multi-node
without ssh (Kubernetes, SLURM: one launcher per node): the same hostfile on every node plus
`no_ssh=True, num_nodes, node_rank, master_addr`; only `node_rank` differs between nodes.
"""

from __future__ import annotations

from pathlib import Path

TRAIN_SCRIPT = str(Path(__file__).resolve().parent / "train.py")
PREEMPTED_EXIT = 75  # same as pretraining.trainer.PREEMPTED_EXIT (kept import-free: flows need no torch here)
DIVERGED_EXIT = 3  # same as pretraining.trainer.DIVERGED_EXIT: a non-finite loss stopped the run


def launcher_command(overrides: list[str], *, size: str, ds_config: str, num_gpus: int | None = None,
                     master_port: int = 29500, hostfile: str | None = None, num_nodes: int | None = None,
                     node_rank: int | None = None, master_addr: str | None = None, no_ssh: bool = False,
                     deepspeed_bin: str = "deepspeed", extra: list[str] | None = None) -> list[str]:
    """argv for the DeepSpeed launcher running train.py with `--config size overrides...`."""
    if no_ssh and (not hostfile or num_nodes is None or node_rank is None or not master_addr):
        raise ValueError("no_ssh needs hostfile, num_nodes, node_rank and master_addr (the node_rank-0 host)")
    cmd = [deepspeed_bin]
    if hostfile:
        cmd += ["--hostfile", hostfile]
    if no_ssh:
        cmd += ["--no_ssh", "--num_nodes", str(num_nodes), "--node_rank", str(node_rank), "--master_addr", master_addr]
    elif master_addr:
        cmd += ["--master_addr", master_addr]
    if num_gpus is not None:
        cmd += ["--num_gpus", str(num_gpus)]
    cmd += ["--master_port", str(master_port), *(extra or [])]
    cmd += [TRAIN_SCRIPT, "--deepspeed", ds_config, "--config", size, *overrides]
    return cmd
