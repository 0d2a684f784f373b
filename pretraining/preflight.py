"""Checks `train.py` runs before DeepSpeed starts (which costs ~25 s per rank and then fails with tracebacks).

    cfg, ds = preflight.check(args.deepspeed, size, overrides)

- the ds_config exists, is readable, and is one JSON object;
- the config builds (unknown keys and sizes are ConfigErrors naming the valid ones) and names a pack and a run;
- the pack is reachable and readable: its store answers (endpoint, credentials, bucket), its manifest is a
  pack manifest, and its first shard can be read; `model.vocab_size` and the special ids then default to
  the pack's (and shapes to `init.pretrained`'s).

Each failure is one of the errors `common.cli` maps to an exit code: 2 for something to fix
(ConfigError, ManifestError, CredentialsError, BucketMissingError...), 75 when the store is
unreachable (StorageUnavailable: it may be an outage).
"""

from __future__ import annotations

import dataclasses
import json
import os

from common import manifest, storage
from common.configs import ConfigError
from pretraining.config import TrainConfig, train_config, with_inputs


def check_ds_config(path: str) -> dict:
    """The ds_config as a dict, or a ConfigError that says what is wrong with the file."""
    hint = "pass --deepspeed with one of ds_configs/*.json (cpu.json on CPU, zero3.json on GPUs)"
    if not os.path.exists(path):
        raise ConfigError(f"ds_config {path} does not exist: {hint}")
    if not os.path.isfile(path):
        raise ConfigError(f"ds_config {path} is not a file: {hint}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except PermissionError:
        raise ConfigError(f"ds_config {path} is not readable by this user: fix its permissions or {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno} column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else exc
        raise ConfigError(f"ds_config {path} is not valid JSON ({where}): fix it or {hint}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"ds_config {path} holds a JSON {type(data).__name__}, not an object: {hint}")
    return data


def check_pack(uri: str) -> dict:
    """The pack's manifest, once its store, manifest and first shard have answered."""
    quick = dataclasses.replace(storage.StorageSettings.from_env(), max_attempts=2)  # a dead endpoint fails in seconds
    storage.check_reachable(uri, quick)
    m = manifest.read(uri, kind="pack", settings=quick)
    shards = m.get("shards") or []
    if not shards:
        raise manifest.ManifestError(f"the pack {uri} lists no shards: rebuild it with `python -m pipelines.pack`")
    first = storage.join(uri, shards[0]["path"])
    try:
        storage.read_range(first, 0, 1, quick)
    except FileNotFoundError:
        raise manifest.ManifestError(f"the pack {uri} lists {shards[0]['path']} but it is missing: the pack is "
                                     "incomplete; rebuild it with `python -m pipelines.pack`") from None
    return m


def check(ds_config_path: str, size: str, overrides: list[str]) -> tuple[TrainConfig, dict]:
    """The run's TrainConfig (vocab and special ids from the pack unless overridden) and ds_config, or the first problem found."""
    ds = check_ds_config(ds_config_path)
    cfg = train_config(size, overrides)
    cfg.require_io()
    check_pack(cfg.data.pack)
    return with_inputs(cfg, overrides), ds  # vocabulary and special ids from the pack, shapes from init.pretrained
