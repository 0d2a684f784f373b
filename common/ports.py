"""Local TCP ports for the servers and launchers this project starts (SeaweedFS, Prefect, DeepSpeed's rendezvous)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); a caller that races another for it retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Free for a server that sets SO_REUSEADDR (Go's net.Listen, uvicorn, torch's store all do): a port left in
    TIME_WAIT by a server that just stopped counts as free, so a restart keeps its port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def first_free(*ports: int | None) -> int:
    """The first port that is set and free (a previous start's first: ports stay put across restarts), else 0."""
    return next((p for p in ports if p and port_free(p)), 0)
