"""Which checkpoint a run has reached, read through pretraining's typed checkpoint manifest.

pretraining.checkpoint decides what a complete checkpoint is and where its step is; the flows
(electra-pretraining, glue-squad-report, the cluster follower) ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.params import RunSpec

if TYPE_CHECKING:
    from pretraining.checkpoint import CheckpointManifest


def latest(run_uri: str) -> "CheckpointManifest | None":
    """The newest complete checkpoint of a run, or None. Files are checked by size, not sha256: the flow polls
    this while a run trains, and the trainer and the export verify the hashes where they read the files."""
    from pretraining import checkpoint  # torch: imported when a flow looks, not when it is loaded

    got = checkpoint.latest_complete(run_uri, mode="size")
    return checkpoint.CheckpointManifest.from_dict(*got) if got else None


def latest_step(run_uri: str) -> int:
    """The step of the newest complete checkpoint; 0 before the first."""
    got = latest(run_uri)
    return got.step if got else 0


def target_steps(spec: RunSpec) -> int:
    """The step the run ends at: train.max_steps, else the size's (overridden) default."""
    if spec.train.max_steps:
        return spec.train.max_steps
    from pretraining.config import train_config

    return train_config(spec.size, list(spec.train.overrides)).max_steps
