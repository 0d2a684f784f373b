"""A real two-node Slurm on this host for the tests: slurmctld, one slurmd per node, munge, no accounting.

    cluster = LocalSlurm(Path("/var/tmp/x")).start()    # raises SlurmUnavailable(reason) when it cannot
    subprocess.run(["sinfo"], env={**os.environ, **cluster.env()})
    leftovers = cluster.stop()                           # [] when everything it started is gone

Debian's `slurm-wlm` 22.05 and `munge`, as a cluster admin would run them, with what one host needs:
- munge with a key generated here (not /etc/munge) on its own socket, which slurm.conf names (AuthInfo);
- `slurmd -N nodeK` per node, each on its own port (NodeAddr 127.0.0.1); node 1 is the batch host and
  shares this process's /tmp; every other node gets a private /tmp: its slurmd starts in its own mount
  namespace (`unshare -m`) with a tmpfs on /tmp, so a file one node writes to /tmp is not on the others,
  as on separate machines. The state directory must therefore not be under /tmp (default /var/tmp);
- proctrack/linuxproc: a signal to a step reaches every descendant of its tasks, as proctrack/cgroup does
  on production clusters; task/none, no cgroups (not available in every container);
- accounting off (accounting_storage/none, jobacct_gather/none): sacct answers "disabled", as on
  clusters without slurmdbd;
- `cred_expire=10`: a requeued job may start again 11 s later instead of Slurm's default 121 s, and the
  main scheduling loop runs every 2 s instead of 60 s. Both only shorten waits.

Every daemon is started here and stopped by its PID; `stop()` cancels the jobs first and then looks for
any process still carrying this cluster's SLURM_CONF (a job's ranks, a slurmstepd) and kills it by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from common.ports import free_port

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "sinfo", "scancel", "unshare")
# Debian installs the daemons in /usr/sbin, which a non-login shell's PATH may lack.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the local cluster; the message says why (the tests skip with it)."""


def check_available() -> None:
    missing = [d for d in DAEMONS if not which(d)]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed (Debian: apt-get install slurmctld slurmd "
                               "slurm-client munge; .ci/run does it when it runs as root with apt-get)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd must run as root to start jobs")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise SlurmUnavailable("no private /tmp for the second node: `unshare -m` + a tmpfs mount is not permitted "
                               f"here ({probe.stderr.strip()})")


class LocalSlurm:
    def __init__(self, base: Path, nodes: int = 2, cpus: int | None = None):
        self.base = Path(base)
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.base / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env={**os.environ, **self.env()}, capture_output=True, text=True,
                              check=check, timeout=timeout)

    # ------------------------------------------------------------------ start
    def start(self, timeout: float = 60) -> "LocalSlurm":
        check_available()
        for d in ("munge", "state", "spool", "log", "jobs"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "munge").chmod(0o700)
        key = self.base / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock_dir = self.base / "munge-socket"  # munged wants a socket directory everyone can traverse
        sock_dir.mkdir(exist_ok=True)
        sock_dir.chmod(0o755)
        self.socket = sock_dir / "munge.sock"
        self._spawn("munged", [which("munged"), "-F", "-f", f"--key-file={key}", f"--socket={self.socket}",
                               f"--pid-file={self.base / 'munge' / 'munged.pid'}",
                               f"--log-file={self.base / 'log' / 'munged.log'}",
                               f"--seed-file={self.base / 'munge' / 'munged.seed'}"])
        self._wait(lambda: self.socket.exists(), timeout, "munged did not create its socket")
        self.write_conf()
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i"])
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, timeout,
                   "slurmctld did not answer `scontrol ping`")
        for i, node in enumerate(self.nodes):
            cmd = [which("slurmd"), "-D", "-N", node]
            if i:  # every node but the batch host: its own /tmp
                cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       f"mount -t tmpfs -o size=2g tmpfs /tmp && exec {which('slurmd')} -D -N {node}"]
            self._spawn(f"slurmd-{node}", cmd)
        self._wait(self._all_idle, timeout, "the nodes did not come up idle")
        return self

    def write_conf(self) -> None:
        b = self.base
        host = os.uname().nodename.split(".")[0]
        lines = [
            "ClusterName=electra-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.socket},cred_expire=10",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={b / 'state'}",
            f"SlurmdSpoolDir={b / 'spool'}/%n",
            f"SlurmctldPidFile={b / 'slurmctld.pid'}",
            f"SlurmdPidFile={b / 'spool'}/slurmd-%n.pid",
            f"SlurmctldLogFile={b / 'log'}/slurmctld.log",
            f"SlurmdLogFile={b / 'log'}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "MailProg=/bin/true",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=2",
            "ReturnToService=2", "SlurmdParameters=config_overrides",
        ]
        for node in self.nodes:
            (b / "spool" / node).mkdir(parents=True, exist_ok=True)
            lines.append(f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={host} Port={free_port()} "
                         f"CPUs={self.cpus} State=UNKNOWN")
        lines.append(f"PartitionName=test Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.base / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(cmd, env={**os.environ, **self.env()}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.base)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while starting the local Slurm; logs in {self.base / 'log'}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{what} within {timeout:.0f}s; logs in {self.base / 'log'}")

    def _all_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split("\n")
        states = dict(line.split() for line in out if line.strip())
        return all(states.get(n) == "idle" for n in self.nodes)

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 60) -> list[str]:
        """Cancel every job, stop the daemons by PID; returns what had to be killed afterwards (should be [])."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cancel_all(timeout)
        for name in sorted(self.procs, key=lambda n: (n == "munged", n == "slurmctld")):  # slurmds, ctld, munge
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        leftovers = []
        for pid in self.processes():
            leftovers.append(f"{pid} {_cmdline(pid)}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers

    def cancel_all(self, timeout: float = 60) -> list[str]:
        """Cancel every job and wait until the queue is empty; returns the jobs that were still there."""
        queued = self.run("squeue", "-h", "-o", "%i %j %T", check=False).stdout.split("\n")
        self.run("scancel", "--full", "--user", "root", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
            time.sleep(1)
        return [q for q in queued if q.strip()]

    def processes(self) -> list[int]:
        """PIDs this cluster started: its daemons, their slurmstepd, and job processes (SLURM_JOB_ID in this
        cluster's environment; the test process and its other children carry SLURM_CONF too, not a job id)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        ours = {p.pid for p in self.procs.values()}
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env and (int(d.name) in ours or any(e.startswith(b"SLURM_JOB_ID=") for e in env)
                                  or _cmdline(int(d.name)).startswith("slurmstepd")):
                out.append(int(d.name))
        return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
