"""Checkpoints a preempted run can trust: DeepSpeed shards + a manifest written last.

Layout, for a run URI (s3:// or local):

    <run>/checkpoints/step-000001000/   DeepSpeed's files for that step (one set per rank)
    <run>/checkpoints/step-000001000/manifest.json   kind "checkpoint", written last: the completion marker

The manifest records step, tokens seen, the data resume point, the validation metrics,
every file with its size and sha256, the run config and the input pack's manifest hash. A
step directory without a manifest, or whose files disagree with it, is incomplete: it is
skipped with a warning and never resumed from. Ranks hash (and upload, download) only their
own files, so the work of a checkpoint is spread over the job.

`Checkpointer` is the one object the training loop talks to: `load()` resumes (find, fetch,
verify, load into the engine) and `save(step, last=...)` writes (save, hash, upload, mark,
prune); where the files go (local or s3:// through a staging directory) stays inside it.
`CheckpointManifest` is the typed view of a manifest that the trainer and the export read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from common import manifest as manifests
from common import storage

log = logging.getLogger("pretraining.checkpoint")

CHECKPOINTS = "checkpoints"
_TAG = re.compile(r"^step-(\d{9})$")
_RANK_FILE = re.compile(r"zero_pp_rank_(\d+)_")
LOG_FILES = ("tensorboard", "metrics.jsonl", "probe.pt", "run_info.json")  # beside checkpoints/ in the run dir


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the step directory
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class CheckpointManifest:
    """A complete checkpoint's manifest, typed."""

    uri: str  # the step directory
    step: int
    tokens_seen: int
    world_size: int
    data: dict  # the loader's resume point (pretraining.data.resume_point)
    files: tuple[FileEntry, ...]
    config: dict  # the TrainConfig as trained (pretraining.config.config_from_dict rebuilds it)
    validation: dict | None  # held-out metrics at this step (pretraining/validation.py), None if off
    raw: dict  # the manifest itself, for lineage (`input_ref`)

    @classmethod
    def from_dict(cls, uri: str, m: dict) -> "CheckpointManifest":
        return cls(uri=uri, step=int(m["step"]), tokens_seen=int(m["tokens_seen"]),
                   world_size=int(m.get("world_size", 0)), data=dict(m.get("data") or {}),
                   files=tuple(FileEntry(f["path"], int(f["bytes"]), f["sha256"]) for f in m["shards"]),
                   config=m["config"], validation=m.get("validation"), raw=m)

    @property
    def pack(self) -> dict:
        """The input ref of the pack it was trained on."""
        return next(i for i in self.raw["inputs"] if i.get("kind") == "pack")


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


def resolve(uri: str, mode: str = "sha256") -> CheckpointManifest:
    """A step dir, a checkpoints root or a run dir -> the manifest of a complete checkpoint."""
    if _TAG.match(storage.basename(uri)):
        m, why = verify(uri, mode)
        if m is None:
            raise manifests.ManifestError(f"checkpoint {uri} is not usable: {why}")
        return CheckpointManifest.from_dict(uri, m)
    got = latest_complete(uri, mode)
    if got is None:
        raise manifests.ManifestError(f"no complete checkpoint under {uri}")
    return CheckpointManifest.from_dict(*got)


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


def all_ranks_ok(dist, device, ok: bool) -> bool:
    """True on every rank when `ok` is true on every rank (a collective)."""
    t = torch.tensor([1 if ok else 0], dtype=torch.int64, device=device)  # NCCL reduces device tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


class Checkpointer:
    """Resume and save a DeepSpeed engine's checkpoints for one run; every rank holds one and calls it together.

    `static` holds the manifest fields fixed for the run (inputs, config, ds_config, size, seq_len);
    `save` adds the step's own (tokens seen, the data resume point, validation).
    """

    def __init__(self, cfg, run: str, *, engine, dist, rank: int, local_rank: int, world: int, device,
                 static: dict):
        self.cfg, self.run, self.engine, self.dist = cfg, run, engine, dist
        self.rank, self.local_rank, self.world, self.device = rank, local_rank, world, device
        self.static = static
        self.root = checkpoints_root(run)
        self.remote = storage.is_s3(run)
        default = os.path.join(tempfile.gettempdir(), "electra-staging-" + manifests.config_hash(run)[:12])
        staging = cfg.staging or (default if self.remote else run)
        self.stage_root = os.path.join(staging, CHECKPOINTS) if self.remote else self.root
        self.log_dir = staging if self.remote else run  # metrics.jsonl, tensorboard/, probe.pt, run_info.json
        self.last: str | None = None  # the newest complete checkpoint this run loaded or wrote

    # ----- resume ------------------------------------------------------------------------------
    def load(self, check: Callable[[CheckpointManifest], None] = lambda m: None) -> CheckpointManifest | None:
        """Load the newest complete checkpoint into the engine; None when there is none (or resume is off).

        Candidates are listed by rank 0 and checked newest first: every rank fetches (S3) and verifies
        its own files, the ranks agree, and a checkpoint any rank finds corrupt is skipped with a
        warning. `check` refuses one the run cannot continue (another pack or data order).
        """
        if not self.cfg.resume:
            self._fresh_logs()
            return None
        box = [[(u, m) for u, m in candidates(self.root, "size")] if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        for uri, raw in box[0]:
            m = CheckpointManifest.from_dict(uri, raw)
            if m.world_size != self.world:
                raise CheckpointError(f"{uri} was written by {m.world_size} ranks, this run has {self.world}: "
                                      "ZeRO partitions are per rank. Resume with the same number of ranks.")
            if not all_ranks_ok(self.dist, self.device, self._fetch_own(m)):
                if self.rank == 0:
                    log.warning("skipping checkpoint %s: a file is missing or failed its sha256 check", uri)
                continue
            check(m)
            name = storage.basename(uri)
            self.engine.load_checkpoint(self.stage_root, tag=name)
            if self.remote:
                self.dist.barrier()  # every rank of the node has read the staged copy
                shutil.rmtree(os.path.join(self.stage_root, name), ignore_errors=True)
                if self.rank == 0:
                    self._fetch_logs()
            if self.rank == 0:
                log.info("resumed from %s (step %d, %d tokens seen)", uri, m.step, m.tokens_seen)
            self.last = uri
            return m
        if self.rank == 0:
            log.info("no complete checkpoint under %s: starting from step 0", self.root)
        self._fresh_logs()
        return None

    def _fresh_logs(self) -> None:
        """A run starting from step 0 does not continue the staging directory's logs: they belong to an
        earlier run with the same URI (the default staging path is derived from it), and would be
        appended to and uploaded as this run's. A local run's logs are its own and stay."""
        if self.remote and self.rank == 0:
            for sub in ("metrics.jsonl", "tensorboard"):
                path = os.path.join(self.log_dir, sub)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.isfile(path):
                    os.unlink(path)

    def _fetch_own(self, m: CheckpointManifest) -> bool:
        """Download (S3) and verify the files this rank loads; False if any is corrupt.

        Every rank reaches the barrier whatever it found, so a bad file cannot leave the others waiting.
        """
        local = os.path.join(self.stage_root, storage.basename(m.uri))
        ok = True
        for f in m.files:
            if not needed_by(f.path, self.rank):
                continue
            # Shared files are fetched once per node (by local rank 0); everyone verifies their own.
            if owner_rank(f.path) is None and self.local_rank != 0:
                continue
            path = os.path.join(local, f.path)
            try:
                if self.remote:
                    storage.download_file(storage.join(m.uri, f.path), path)
                if self.cfg.verify == "sha256" and storage.sha256_uri(path) != f.sha256:
                    log.warning("rank %d: %s does not match its sha256", self.rank, path)
                    ok = False
            except (FileNotFoundError, storage.StorageError) as exc:
                log.warning("rank %d: cannot read %s: %s", self.rank, path, exc)
                ok = False
            if not ok:
                break
        self.dist.barrier()
        return ok

    def _fetch_logs(self) -> None:
        src = storage.join(self.run, "metrics.jsonl")  # a resumed s3 run appends to its history
        if storage.exists(src):
            storage.download_file(src, os.path.join(self.log_dir, "metrics.jsonl"))

    # ----- save --------------------------------------------------------------------------------
    def due(self, step: int, *, last: bool = False) -> bool:
        """A checkpoint step: every `every_steps`, and the last step (the end, or a preemption)."""
        return last or step % self.cfg.every_steps == 0

    def save(self, step: int, *, last: bool = False, before_upload: Callable[[], None] = lambda: None,
             **fields) -> str | None:
        """Write the checkpoint of `step` if it is due: DeepSpeed files, hashes, upload, manifest last, prune.

        `fields` are the step's manifest entries (tokens_seen, examples_seen, data, validation);
        `before_upload` runs on rank 0 before the logs are uploaded (flush them). Returns the step dir URI.
        """
        if not self.due(step, last=last):
            return None
        name = tag(step)
        dest = storage.join(self.root, name)
        if self.rank == 0:  # re-saving a step (after resuming past a corrupt one): unmark it while it is rewritten
            storage.delete(manifests.manifest_uri(dest))
        self.engine.save_checkpoint(self.stage_root, tag=name, save_latest=False)
        self.dist.barrier()
        local = os.path.join(self.stage_root, name)
        mine = file_entries(local, self.rank) if os.path.isdir(local) else []
        if self.remote:
            for f in mine:
                storage.upload_file(os.path.join(local, f["path"]), storage.join(dest, f["path"]))
        gathered = [None] * self.world
        self.dist.all_gather_object(gathered, mine)
        if self.rank == 0:
            files = sorted((f for part in gathered for f in part), key=lambda f: f["path"])
            m = manifests.build("checkpoint", shards=files, step=step, world_size=self.world, tag=name,
                                **self.static, **fields)
            manifests.write(dest, m)  # last: the completion marker
            before_upload()
            self.upload_logs()
            prune(self.root, self.cfg.keep_last)
            log.info("checkpoint %s complete (%d files)", dest, len(files))
        self.dist.barrier()
        if self.remote:
            shutil.rmtree(local, ignore_errors=True)  # uploaded; local disk is for the next one
        self.last = dest
        return dest

    def upload_logs(self) -> None:
        """Rank 0: an s3 run's metrics, TensorBoard events and run info go beside its checkpoints."""
        if not self.remote:
            return
        for sub in LOG_FILES:
            src = os.path.join(self.log_dir, sub)
            if os.path.isdir(src):
                storage.upload_dir(src, storage.join(self.run, sub))
            elif os.path.isfile(src):
                storage.upload_file(src, storage.join(self.run, sub))


class CheckpointError(RuntimeError):
    """A checkpoint this run cannot resume from (another world size); the message says what to do."""
