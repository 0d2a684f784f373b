"""The local directory a run on object storage stages checkpoints and logs in (when checkpoint.staging is unset).

A fixed name under /tmp could be created first by another user (then a symlink or their directory
receives this run's checkpoints) and outlived every run. Instead rank 0 draws a random name, every
rank of every node creates it privately (0700, owned by this user, checked), and it is removed when
the run ends normally (finished or preempted: everything in it has been uploaded by then).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile

PREFIX = "electra-staging-"


class StagingError(RuntimeError):
    """The staging directory exists but is not a private directory of this user."""


def private_dir(dist) -> str:
    """A new private directory with the same name on every rank (agreed on through `dist`)."""
    name = [f"{PREFIX}{os.getuid()}-{secrets.token_hex(8)}" if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(name, src=0)
    path = os.path.join(tempfile.gettempdir(), name[0])
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # another local rank made it a moment ago
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise StagingError(f"{path} is not a private directory of this user: set checkpoint.staging")
    return path


def remove(path: str, dist, local_rank: int) -> None:
    """Delete the staging directory once every rank is done with it (one rank per node deletes)."""
    dist.barrier()
    if local_rank == 0:
        shutil.rmtree(path, ignore_errors=True)
