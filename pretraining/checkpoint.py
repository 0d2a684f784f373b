"""Checkpoints a preempted run can trust: DeepSpeed shards + a manifest written last.

Layout, for a run URI (s3:// or local):

    <run>/checkpoints/step-000001000/   DeepSpeed's files for that step (one set per rank)
    <run>/checkpoints/step-000001000/manifest.json   kind "checkpoint", written last: the completion marker

The manifest records step, tokens seen, the data resume point, every file with its size
and sha256, the run config and the input pack's manifest hash. A step directory without
a manifest, or whose files disagree with it, is incomplete: it is skipped with a warning
and never resumed from. Ranks hash (and upload, download) only their own files, so the
work of a checkpoint is spread over the job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

from common import manifest as manifests
from common import storage

log = logging.getLogger("pretraining.checkpoint")

CHECKPOINTS = "checkpoints"
_TAG = re.compile(r"^step-(\d{9})$")
_RANK_FILE = re.compile(r"zero_pp_rank_(\d+)_")


def tag(step: int) -> str:
    return f"step-{step:09d}"


def checkpoints_root(run: str) -> str:
    return storage.join(run, CHECKPOINTS)


def owner_rank(name: str) -> int | None:
    """The rank whose ZeRO partition a DeepSpeed file holds; None for files every rank reads (rank 0 writes them)."""
    m = _RANK_FILE.search(os.path.basename(name))
    return int(m.group(1)) if m else None


def needed_by(name: str, rank: int) -> bool:
    owner = owner_rank(name)
    return owner == rank or owner is None


def file_entries(tag_dir: str, rank: int) -> list[dict]:
    """Size and sha256 of the files in a local step dir that this rank accounts for."""
    out = []
    for p in sorted(Path(tag_dir).rglob("*")):
        if not p.is_file() or p.name == manifests.MANIFEST_NAME:
            continue
        rel = p.relative_to(tag_dir).as_posix()
        owner = owner_rank(rel)
        if owner == rank or (owner is None and rank == 0):
            out.append({"path": rel, "bytes": p.stat().st_size, "sha256": storage.sha256_uri(str(p))})
    return out


def list_steps(root: str) -> list[tuple[int, str]]:
    """(step, step-dir URI) of every step directory under a checkpoints root, oldest first, complete or not."""
    names: set[str] = set()
    if storage.is_s3(root):
        base = root.rstrip("/") + "/"
        for uri in storage.list_files(base):
            names.add(uri[len(base):].split("/", 1)[0])
    elif os.path.isdir(root):
        names = {n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
    steps = [(int(m.group(1)), storage.join(root, n)) for n in names if (m := _TAG.match(n))]
    return sorted(steps)


def verify(step_dir: str, mode: str = "sha256") -> tuple[dict | None, str]:
    """(manifest, "") when a step dir is complete and intact; (None, why) otherwise.

    mode "size" checks presence and sizes only (cheap on S3); "sha256" re-hashes every file.
    """
    try:
        m = manifests.read(step_dir, kind="checkpoint")
    except manifests.ManifestError as exc:
        return None, f"no valid completion marker ({exc})"
    if not m.get("shards"):
        return None, "the manifest lists no files"
    base = step_dir.rstrip("/") + "/"
    present = {u[len(base):] for u in storage.list_files(base)} if storage.is_s3(step_dir) else None
    for f in m["shards"]:
        rel, uri = f["path"], storage.join(step_dir, f["path"])
        if not (rel in present if present is not None else os.path.isfile(uri)):
            return None, f"{rel} is missing"
        if storage.size(uri) != f["bytes"]:
            return None, f"{rel} has {storage.size(uri)} bytes, the manifest says {f['bytes']}"
        if mode == "sha256" and storage.sha256_uri(uri) != f["sha256"]:
            return None, f"{rel} does not match its sha256 (corrupted)"
    return m, ""


def candidates(root: str, mode: str = "size") -> list[tuple[str, dict]]:
    """Complete-looking checkpoints, newest first; incomplete ones are logged and left out."""
    out = []
    for step, uri in reversed(list_steps(root)):
        m, why = verify(uri, mode)
        if m is None:
            log.warning("skipping checkpoint %s: %s", uri, why)
            continue
        out.append((uri, m))
    return out


def latest_complete(run_or_root: str, mode: str = "sha256") -> tuple[str, dict] | None:
    """The newest complete checkpoint of a run (or of a checkpoints root): (step-dir URI, manifest), or None."""
    root = run_or_root
    if storage.basename(root) != CHECKPOINTS:
        root = checkpoints_root(run_or_root)
    got = candidates(root, mode)
    return got[0] if got else None


def resolve(uri: str, mode: str = "sha256") -> tuple[str, dict]:
    """A step dir, a checkpoints root or a run dir -> (step dir, manifest) of a complete checkpoint."""
    if _TAG.match(storage.basename(uri)):
        m, why = verify(uri, mode)
        if m is None:
            raise manifests.ManifestError(f"checkpoint {uri} is not usable: {why}")
        return uri, m
    got = latest_complete(uri, mode)
    if got is None:
        raise manifests.ManifestError(f"no complete checkpoint under {uri}")
    return got


def prune(root: str, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` complete checkpoints, and incomplete dirs older than the newest one."""
    steps = list_steps(root)
    complete = [(s, u) for s, u in steps if manifests.exists(u)]
    if not complete:
        return []
    keep = {u for _, u in complete[-keep_last:]}
    newest = complete[-1][0]
    removed = []
    for s, u in steps:
        if u in keep or s > newest:  # a newer incomplete dir may be being written right now
            continue
        # The marker goes first, so a half-deleted checkpoint is never mistaken for a complete one.
        storage.delete(manifests.manifest_uri(u))
        if storage.is_s3(u):
            storage.delete_prefix(u.rstrip("/") + "/")
        else:
            shutil.rmtree(u, ignore_errors=True)
        removed.append(u)
        log.info("deleted old checkpoint %s (keep_last=%d)", u, keep_last)
    return removed


def newest_step(run_or_root: str) -> int:
    """The step of the newest complete checkpoint (sizes checked, not hashes), 0 when there is none."""
    got = latest_complete(run_or_root, mode="size")
    return int(got[1]["step"]) if got else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pretraining.checkpoint newest-step RUN`: prints that step (0 if none); the Slurm job uses it
    to decide whether an attempt made progress and should be requeued."""
    import argparse

    from common.cli import run_job

    ap = argparse.ArgumentParser(prog="python -m pretraining.checkpoint", description=main.__doc__)
    ap.add_argument("verb", choices=["newest-step"])
    ap.add_argument("run", help="a run URI (s3:// or local) or its checkpoints/ root")
    a = ap.parse_args(argv)
    return run_job(lambda: str(newest_step(a.run)))


if __name__ == "__main__":
    sys.exit(main())
