"""The local stack of `make demo` and the end-to-end tests: SeaweedFS S3, Prefect server (SQLite), process worker.

    python -m flows.localstack start [--dir .demo] [--s3-port 8333] [--api-port 4200]
    python -m flows.localstack stop  [--dir .demo]
    python -m flows.localstack env   [--dir .demo]      # shell exports for this stack

Everything lives under one directory (default `.demo/`, gitignored):

    seaweedfs/        the S3 store's data, pid and endpoint (common.seaweedfs)
    prefect/          PREFECT_HOME: prefect.db (SQLite), server.pid, server.log
    worker.pid, worker.log
    env               `source .demo/env` points a shell's prefect CLI and boto3 at this stack

Start is idempotent: a part that is already running (and answers) is reused, so `make demo`
twice does not start a second server; a part that died, or whose process is a zombie, is
started again. Ports: the previous start's when free, else 8333 (S3) and 4200 (API and UI)
when free, else free ones. A worker started for
another S3 endpoint is restarted, so flow runs always reach the current store. `start` fails
(exit 1, one line) unless the S3 endpoint answers a signed request and the env file holds
its credentials. Stop ends only the processes this stack started (their process groups,
from the pid files). `env` and the env file (mode 0600) read the S3 secret from its 0600
file instead of spelling it out (docs/security.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import seaweedfs
from common.ports import first_free, free_port
from common.processes import REPO, alive, child_env, kill_group
from common.seaweedfs import LocalS3, write_private

POOL = "local-process"
BIN = Path(sys.executable).parent


def _prefect() -> str:
    p = BIN / "prefect"
    return str(p) if p.exists() else "prefect"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def check_server_deps() -> None:
    """Fail with the fix, not a traceback, when FastAPI is too new for this Prefect server.

    Prefect 3.8's server passes `min_items` to fastapi.Body (removed after FastAPI 0.154) and
    relies on explicit JSON nulls meaning "default" (changed after 0.150).
    """
    from importlib.metadata import version

    fastapi = version("fastapi")
    if tuple(int(x) for x in fastapi.split(".")[:2]) > (0, 150):
        raise RuntimeError(f"fastapi {fastapi} is too new for the Prefect {version('prefect')} server: "
                           "`.venv/bin/pip install 'fastapi==0.150.0'` (and pin it in requirements/cpu.lock)")


@dataclasses.dataclass
class LocalStack:
    base: Path
    s3_port: int = 8333
    api_port: int = 4200
    worker_name: str = "local-worker"
    external_s3: dict[str, str] | None = None  # AWS_* env of an S3 store started elsewhere (the pytest fixture)

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()

    # ------------------------------------------------------------ paths and env
    @property
    def prefect_home(self) -> Path:
        return self.base / "prefect"

    @property
    def state_file(self) -> Path:
        return self.base / "stack.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.state().get('api_port', self.api_port)}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url[: -len("/api")]

    def prefect_env(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}",
            # Stage loggers reach the Prefect UI, not only the worker's terminal.
            "PREFECT_LOGGING_EXTRA_LOGGERS": "pipelines,pretraining,evaluation,common,flows",
            "PREFECT_WORKER_QUERY_SECONDS": "2",  # pick a new run up fast (the default is 10s)
        }

    @property
    def s3_dir(self) -> str:
        return str(self.base / "seaweedfs")

    def env(self) -> dict[str, str]:
        """Everything a child needs to talk to this stack: S3 credentials, Prefect API, the repo."""
        env = dict(self.prefect_env())
        if self.external_s3:
            env.update(self.external_s3)
        else:
            endpoint = seaweedfs.running_endpoint(self.s3_dir)
            if endpoint:
                env.update(LocalS3(self.s3_dir, int(endpoint.rsplit(":", 1)[1])).settings.to_env())
        env["ELECTRA_FORGE_HOME"] = str(REPO)
        return env

    def exports(self) -> str:
        """`export` lines for a shell; the local store's secret is read from its 0600 file, not written out."""
        secret = None if self.external_s3 else str(seaweedfs.secret_file(self.s3_dir))
        lines = []
        for k, v in sorted(self.env().items()):
            value = f"\"$(cat '{secret}')\"" if k == "AWS_SECRET_ACCESS_KEY" and secret else shlex.quote(v)
            lines.append(f"export {k}={value}\n")
        return "".join(lines)

    def child_env(self) -> dict[str, str]:
        return child_env(self.env(), drop_prefix="PREFECT_")

    # ------------------------------------------------------------ parts
    def start_s3(self) -> str:
        if self.external_s3:
            return self.external_s3["AWS_ENDPOINT_URL"]
        endpoint = seaweedfs.running_endpoint(self.s3_dir)
        if endpoint:
            return endpoint
        LocalS3(self.s3_dir).stop()  # a dead, zombie or unresponsive server of this stack: clear it first
        return LocalS3(self.s3_dir, first_free(seaweedfs.previous_port(self.s3_dir), self.s3_port)).start().endpoint_url

    def serveralive(self) -> bool:
        try:
            with urllib.request.urlopen(self.api_url + "/health", timeout=3) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not up
            return False

    def start_server(self, timeout: float = 180.0) -> str:
        pid = _read_pid(self.prefect_home / "server.pid")
        if alive(pid) and self.serveralive():
            return self.api_url
        check_server_deps()
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        port = first_free(self.state().get("api_port"), self.api_port) or free_port()
        self._save(api_port=port)
        log = open(self.prefect_home / "server.log", "ab")
        proc = subprocess.Popen([_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=self.child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(self.base))
        (self.prefect_home / "server.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({proc.returncode}); "
                                   f"see {self.prefect_home / 'server.log'}")
            if self.serveralive():
                return self.api_url
            time.sleep(1)
        kill_group(proc.pid)
        raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f}s; "
                           f"see {self.prefect_home}/server.log")

    def prefect(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the prefect CLI against this stack, from the repo root (where prefect.yaml is)."""
        return subprocess.run([_prefect(), *args], env=self.child_env(), cwd=str(REPO), capture_output=True,
                              text=True, check=check, timeout=timeout)

    def ensure_pool(self) -> None:
        """The `local-process` pool (what `prefect work-pool create --type process` makes), through the API:
        two CLI round trips cost ~20 s on a small machine."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from prefect.workers.process import ProcessWorker

        with temporary_settings({PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as client:
            try:
                client.read_work_pool(POOL)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(
                    name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))

    def start_worker(self) -> int:
        """Start the process worker, or keep the running one if it was started for the current S3 endpoint."""
        pid = _read_pid(self.base / "worker.pid")
        endpoint = self.env().get("AWS_ENDPOINT_URL")
        if alive(pid):
            if self.state().get("worker_s3") == endpoint:
                return pid  # type: ignore[return-value]
            kill_group(pid)  # its environment points at an S3 endpoint that is gone: flow runs would fail
        log = open(self.base / "worker.log", "ab")
        proc = subprocess.Popen([_prefect(), "worker", "start", "--pool", POOL, "--type", "process",
                                 "--name", self.worker_name, "--install-policy", "never"],
                                env=self.child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(REPO))
        (self.base / "worker.pid").write_text(str(proc.pid))
        self._save(worker_s3=endpoint)
        return proc.pid

    def deploy(self, name: str = "electra-demo", pool: str | None = None) -> None:
        """`prefect deploy --name NAME` from prefect.yaml; `pool` moves it onto another work pool (tests)."""
        out = self.prefect("--no-prompt", "deploy", "--name", name, *(["--pool", pool] if pool else []), check=False)
        if out.returncode != 0:
            raise RuntimeError(f"prefect deploy --name {name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def start(self) -> "LocalStack":
        self.base.mkdir(parents=True, exist_ok=True)
        self.start_s3()
        self.start_server()
        self.ensure_pool()
        self.start_worker()
        self.write_env_file()
        self.check()
        return self

    def check(self) -> None:
        """Raise unless the env file's S3 endpoint answers a signed request with the env file's credentials."""
        from common import storage

        env = self.env()
        missing = [k for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(k)]
        if missing:
            raise RuntimeError(f"the local stack has no working S3 endpoint ({', '.join(missing)} unset): see "
                               f"{self.s3_dir}/weed.log, then `python -m flows.localstack stop` and start again")
        settings = storage.StorageSettings(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                                           secret_access_key=env["AWS_SECRET_ACCESS_KEY"], max_attempts=2)
        storage.client(settings).list_buckets()  # raises CredentialsError / StorageUnavailable with what to fix

    def stop(self) -> None:
        for pidfile in (self.base / "worker.pid", self.prefect_home / "server.pid"):
            pid = _read_pid(pidfile)
            if pid and alive(pid):
                kill_group(pid)
            pidfile.unlink(missing_ok=True)
        if not self.external_s3:
            LocalS3(str(self.base / "seaweedfs")).stop()

    def _save(self, **kw) -> None:
        st = self.state() | kw
        self.state_file.write_text(json.dumps(st))

    def write_env_file(self) -> Path:
        path = self.base / "env"
        write_private(path, self.exports())  # 0600: it names the credentials' file (or holds external ones)
        return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.localstack", description=__doc__.split("\n\n")[0])
    ap.add_argument("verb", choices=["start", "stop", "env"])
    ap.add_argument("--dir", default=str(REPO / ".demo"), help="state directory (default: %(default)s)")
    ap.add_argument("--s3-port", type=int, default=8333)
    ap.add_argument("--api-port", type=int, default=4200)
    a = ap.parse_args(argv)
    stack = LocalStack(Path(a.dir), a.s3_port, a.api_port)
    if a.verb == "stop":
        stack.stop()
        print(f"stopped the local stack in {a.dir}")
        return 0
    if a.verb == "start":
        try:
            stack.start()
        except Exception as exc:  # noqa: BLE001 - one line: what failed and where its log is
            print(f"error: the local stack did not start: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        print(f"local stack up: S3 {stack.env().get('AWS_ENDPOINT_URL')}, Prefect UI {stack.ui_url}, "
              f"worker on pool {POOL}; `source {stack.base / 'env'}` to use it from a shell")
        return 0
    print(stack.exports(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
