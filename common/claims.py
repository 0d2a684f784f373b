"""One writer per output: a job claims its output before it writes anything there.

    with claims.hold(output, "clean", settings, break_claim=False) as claim:
        ...                      # write shards
        claim.check()            # right before the manifest: still ours?
        manifest.write(output, m)

The claim is a small lease object, `OUTPUT/_claim.json`, holding the run's id, host, pid and
when it was last renewed. It is created with a conditional write (S3 `If-None-Match: *`; a
hard link locally), so of two jobs started on one output exactly one gets it; the other
stops at once with `ClaimHeld`, one line naming the holder. While the job runs, a thread renews
the lease (S3 `If-Match` on the version it wrote); `check()` re-reads it before the manifest is
written, so a job whose claim was broken never publishes. The lease is deleted when the job ends.

A stale claim (its holder died without deleting it) is taken over without asking when the
store shows it is stale: the lease was not renewed for `ttl_s`, or the holder ran on this host
and its pid is gone. Otherwise `--break-claim` takes it over (use it only when you know the
holder is dead: two writers then interleave). Stores that ignore conditional headers are caught
by reading the lease back after writing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Iterator

from common import storage
from common.processes import alive

log = logging.getLogger("common.claims")

CLAIM_NAME = "_claim.json"
TTL_S = 120.0  # a lease not renewed for this long is stale; the holder renews every TTL/4


class ClaimHeld(storage.StorageError):
    """Another run holds the output (a user error: exit 2, the flow does not retry it)."""


class ClaimLost(storage.StorageError):
    """This run's claim was broken or taken over while it ran; it must not publish."""


CLAIM_ERRORS = (ClaimHeld, ClaimLost)


def claim_uri(output: str) -> str:
    return storage.join(output, CLAIM_NAME)


def new_run_id(job: str) -> str:
    return f"{job}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True)
class Lease:
    """What the claim object holds."""

    run_id: str
    job: str
    host: str
    pid: int
    started: float  # unix time the claim was taken
    renewed: float  # unix time of the last renewal
    ttl_s: float = TTL_S

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> "Lease | None":
        try:
            d = json.loads(data)
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except (ValueError, TypeError, KeyError):
            return None

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why the holder is known to be gone, or None while it may still be writing."""
        now = time.time() if now is None else now
        if now - self.renewed > self.ttl_s:
            return f"not renewed for {now - self.renewed:.0f}s (lease {self.ttl_s:.0f}s)"
        if self.host == socket.gethostname() and not alive(self.pid):
            return f"its process {self.pid} on this host is gone"
        return None

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.started))
        return (f"run {self.run_id} ({self.job}, pid {self.pid} on {self.host}, since {since}, "
                f"renewed {now - self.renewed:.0f}s ago)")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A picklable handle on a held claim: workers call `check()` before they publish."""

    output: str
    run_id: str
    settings: storage.StorageSettings | None = None  # pickles without credentials (common.storage)

    @property
    def uri(self) -> str:
        return claim_uri(self.output)

    def check(self) -> None:
        """Raise ClaimLost unless the claim object still names this run."""
        try:
            data, _ = storage.read_versioned(self.uri, self.settings)
        except FileNotFoundError:
            raise ClaimLost(f"the claim on {self.output} was removed while run {self.run_id} wrote it: another "
                            "writer may have used the output; nothing published. Rerun the job.") from None
        lease = Lease.parse(data)
        if lease is None or lease.run_id != self.run_id:
            holder = lease.describe() if lease else "an unreadable claim"
            raise ClaimLost(f"{self.output} was claimed by {holder} while run {self.run_id} wrote it "
                            "(--break-claim?): nothing published by this run. Rerun one writer only.")


class _Keeper:
    """Renews the lease from a daemon thread until released."""

    def __init__(self, claim: Claim, lease: Lease, version: str):
        self.claim, self.lease, self.version = claim, lease, version
        # Few retries: renewing is periodic, and a release during an outage must not hold the job's exit.
        self.settings = dataclasses.replace(claim.settings or storage.StorageSettings.from_env(), max_attempts=2)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"claim-{claim.run_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / 4):
            lease = dataclasses.replace(self.lease, renewed=time.time())
            try:
                self.version = storage.replace_if(self.claim.uri, lease.to_bytes(), self.version, self.settings)
                self.lease = lease
            except storage.PreconditionFailed:
                self.lost = "the claim object changed under this run"
                log.error("claim on %s lost: %s", self.claim.output, self.lost)
                return
            except Exception as exc:  # noqa: BLE001 - an outage: keep trying, check() decides at the end
                log.info("could not renew the claim on %s: %s", self.claim.output, exc)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.lost:
            return
        try:
            storage.delete_if(self.claim.uri, self.version, self.settings)
        except storage.PreconditionFailed:
            log.warning("claim on %s was taken over by another run; left it in place", self.claim.output)
        except Exception as exc:  # noqa: BLE001 - the job's result stands; the lease goes stale by itself
            log.info("could not remove the claim on %s (%s); it goes stale in %.0fs", self.claim.output, exc,
                     self.lease.ttl_s)


def take(output: str, job: str, settings: storage.StorageSettings | None = None, *, break_claim: bool = False,
         ttl_s: float = TTL_S, run_id: str | None = None) -> tuple[Claim, _Keeper]:
    """Claim `output` for a new run; ClaimHeld (naming the holder) when another live run has it."""
    claim = Claim(output, run_id or new_run_id(job), settings)
    now = time.time()
    lease = Lease(claim.run_id, job, socket.gethostname(), os.getpid(), now, now, ttl_s)
    try:
        version = storage.create_exclusive(claim.uri, lease.to_bytes(), settings)
    except storage.PreconditionFailed:
        version = _take_over(claim, lease, settings, break_claim)
    data, version = storage.read_versioned(claim.uri, settings)
    back = Lease.parse(data)
    if back is None or back.run_id != claim.run_id:  # a store that ignored the conditional header
        raise ClaimHeld(_held_message(output, back))
    return claim, _Keeper(claim, lease, version)


def _take_over(claim: Claim, lease: Lease, settings, break_claim: bool) -> str:
    try:
        data, version = storage.read_versioned(claim.uri, settings)
    except FileNotFoundError:  # released between our create and this read: try once more
        return storage.create_exclusive(claim.uri, lease.to_bytes(), settings)
    holder = Lease.parse(data)
    reason = holder.stale_reason() if holder else None
    if reason is None and not break_claim:
        raise ClaimHeld(_held_message(claim.output, holder))
    try:
        new_version = storage.replace_if(claim.uri, lease.to_bytes(), version, settings)
    except storage.PreconditionFailed:
        raise ClaimHeld(_held_message(claim.output, None, "another run took it over first")) from None
    what = holder.describe() if holder else "an unreadable claim"
    log.warning("took over the claim on %s from %s: %s", claim.output, what, reason or "--break-claim")
    return new_version


def _held_message(output: str, holder: Lease | None, extra: str = "") -> str:
    who = holder.describe() if holder else "another run (unreadable claim)"
    return (f"{output} is being written by {who}{'; ' + extra if extra else ''}: wait for it or write elsewhere; "
            f"if that run is dead, rerun with --break-claim (or delete {claim_uri(output)})")


@contextlib.contextmanager
def hold(output: str, job: str, settings: storage.StorageSettings | None = None, *, break_claim: bool = False,
         ttl_s: float = TTL_S) -> Iterator[Claim]:
    """Claim `output` for the duration of the block; the lease is renewed meanwhile and deleted at the end."""
    claim, keeper = take(output, job, settings, break_claim=break_claim, ttl_s=ttl_s)
    log.info("%s: claimed %s as run %s", job, output, claim.run_id)
    try:
        yield claim
    finally:
        keeper.release()
