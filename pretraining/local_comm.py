"""What a CPU (gloo) run sets up before `deepspeed.init_distributed`: loopback rendezvous, no /dev/shm buffers.

    local_comm.init_distributed(on_cpu)   # instead of deepspeed.init_distributed, everywhere

Everything that starts DeepSpeed's comm layer (the trainer, the ZeRO-3 test workers, the train-step
benchmark) goes through `init_distributed`, so no CPU run of the project JIT-builds or loads the
shm op: a build killed half-way leaves a torch-extension lock file that hangs every later run.

Two things DeepSpeed and torch do by default that a CPU run on one machine does not want:

- torch's rendezvous store (TCPStore, `env://`) listens on every interface, even when every rank
  is on this host and MASTER_ADDR is 127.0.0.1. When all ranks are local and the master address
  is a loopback one, rank 0 binds the store's socket to 127.0.0.1 itself and hands it to torch.
- DeepSpeed's CPU shared-memory all-reduce op maps a 66 MB buffer per rank in /dev/shm
  (`deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>`) and never unlinks it. Only
  `inference_all_reduce` (tensor-parallel inference) uses it: training's collectives go through
  torch.distributed. So the op is not loaded on CPU (nothing to compile either), and as a second
  line a buffer of this rank that exists anyway (an older DeepSpeed, a crashed run on the same
  port) is removed at start and at exit.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("pretraining.local_comm")

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "deepspeed_allreduce_buffer"  # deepspeed/ops/csrc/cpu/comm/shm.cpp SHM_BUFFER_NAME


def shm_buffer_name(rank: int, addr: str | None = None, port: str | int | None = None) -> str:
    """The /dev/shm name DeepSpeed's shm op gives this rank's buffer."""
    addr = addr if addr is not None else os.environ.get("MASTER_ADDR", "")
    port = port if port is not None else os.environ.get("MASTER_PORT", "")
    return f"{SHM_PREFIX}_{os.getuid()}_{addr}_{port}_{rank}"


def remove_shm_buffer(rank: int) -> bool:
    """Unlink this rank's buffer if there is one; True when something was removed."""
    path = SHM_DIR / shm_buffer_name(rank)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def disable_shm_allreduce() -> bool:
    """Keep DeepSpeed from loading its CPU shm all-reduce op (used only by inference tensor parallelism)."""
    import importlib

    try:  # by module path: `deepspeed.comm.torch` as an attribute is the torch package itself
        ds_torch = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return False
    if not hasattr(ds_torch, "build_shm_op"):
        return False
    ds_torch.build_shm_op = lambda: None
    return True


def all_ranks_local() -> bool:
    world, local = os.environ.get("WORLD_SIZE"), os.environ.get("LOCAL_SIZE")
    return bool(world) and world == local


def _loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def init_loopback_group(backend: str, timeout_s: float = 1800.0) -> bool:
    """Initialise torch.distributed with a store that listens on 127.0.0.1 only; False when it does not apply."""
    import datetime

    import torch.distributed as dist

    addr = os.environ.get("MASTER_ADDR", "")
    if dist.is_initialized() or not all_ranks_local() or not _loopback(addr) or not os.environ.get("MASTER_PORT"):
        return False
    rank, world, port = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["MASTER_PORT"])
    timeout = datetime.timedelta(seconds=timeout_s)
    listen = None
    if rank == 0:
        listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listen.bind(("127.0.0.1", port))
        listen.listen(max(world, 16))
        store = dist.TCPStore("127.0.0.1", port, world, is_master=True, timeout=timeout, wait_for_workers=False,
                              master_listen_fd=listen.fileno())
    else:
        store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    _KEEP.extend([store, listen])  # the store serves the group for the whole run
    return True


_KEEP: list[object] = []


def prepare(on_cpu: bool) -> None:
    """Call before deepspeed.init_distributed. GPU runs are left as DeepSpeed sets them up."""
    if not on_cpu:
        return
    rank = int(os.environ.get("RANK", "0"))
    disable_shm_allreduce()
    if remove_shm_buffer(rank):
        log.info("removed a stale %s from an earlier run on this port", shm_buffer_name(rank))
    atexit.register(remove_shm_buffer, rank)
    if init_loopback_group("gloo"):
        log.info("rendezvous store on 127.0.0.1:%s (all ranks on this host)", os.environ.get("MASTER_PORT"))


def init_distributed(on_cpu: bool, gpu_backend: str | None = None) -> None:
    """`deepspeed.init_distributed` after `prepare`: gloo on CPU, `gpu_backend` (DeepSpeed's default when None) on GPU."""
    import deepspeed

    prepare(on_cpu)
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else gpu_backend)
