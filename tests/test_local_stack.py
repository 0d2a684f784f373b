"""The local stack (common/seaweedfs.py, flows/localstack.py): nothing it opens answers without credentials,
its secrets sit in 0600 files, and it comes back after its `weed` dies."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from common import storage
from common.seaweedfs import AUTH, LocalS3

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def _listeners(pid: int) -> tuple[set[int], set[str]]:
    """Every TCP port and Unix socket path the process listens on."""
    proc = psutil.Process(pid)
    tcp = {c.laddr.port for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    unix = {c.laddr for c in proc.net_connections(kind="unix") if c.laddr and c.status in (psutil.CONN_LISTEN,
                                                                                           psutil.CONN_NONE)}
    return tcp, unix


def _http(method: str, path: str, *, port: int | None = None, unix: str | None = None, tls: bool = False,
          cert: tuple[str, str] | None = None, body: bytes | None = None) -> tuple[int | None, bytes]:
    """(status, body) of one request without any S3 signature; (None, b"") when the connection is refused."""
    try:
        if unix:
            conn = http.client.HTTPConnection("localhost", timeout=5)
            conn.sock = socket.socket(socket.AF_UNIX)
            conn.sock.settimeout(5)
            conn.sock.connect(unix)
        elif tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(*cert)
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None, b""


def test_every_port_refuses_unsigned_reads_and_writes(s3_server, s3_bucket):
    """An unsigned GET of an existing object and an unsigned PUT of a new one, on every TCP port and Unix
    socket `weed` listens on, in plain HTTP and in TLS without the stack's client certificate: none returns the
    object, none stores one. With the certificate the internal ports do answer, so the probes reach real servers."""
    bucket = storage.split_s3(s3_bucket)[0]
    secret_body = f"object-{uuid.uuid4().hex}".encode()
    storage.write_bytes(f"{s3_bucket}/kept.txt", secret_body)
    tcp, unix = _listeners(s3_server.process.pid)
    ports = json.loads(Path(s3_server.data_dir, "ports.json").read_text())
    assert set(ports.values()) <= tcp and len(tcp) >= 8, (ports, tcp)  # S3, 3 HTTP and 4 gRPC ports at least
    reads = [f"/buckets/{bucket}/kept.txt", f"/{bucket}/kept.txt"]  # filer path and S3 path
    writes = [f"/buckets/{bucket}/evil-{{}}.txt", f"/{bucket}/evil-{{}}.txt", "/submit"]
    targets = [{"port": p} for p in sorted(tcp)] + [{"port": p, "tls": True} for p in sorted(tcp)]
    targets += [{"unix": u} for u in sorted(unix)]
    assert unix, "weed opens Unix sockets too; the probe must cover them"
    for i, target in enumerate(targets):
        for path in reads:
            status, body = _http("GET", path, **target)
            assert not (status and status < 300) and secret_body not in body, (target, path, status, body[:200])
        for path in writes:
            status, _ = _http("PUT", path.format(i), body=b"unsigned", **target)
            assert not (status and status < 300), (target, path, status)
    keys = [storage.basename(u) for u in storage.list_files(s3_bucket + "/")]
    assert keys == ["kept.txt"], keys  # nothing unsigned landed

    tls = Path(s3_server.data_dir, AUTH, "tls")
    cert = (str(tls / "cert.pem"), str(tls / "key.pem"))
    assert _http("GET", "/dir/status", port=ports["master"], tls=True, cert=cert)[0] == 200
    assert _http("GET", "/status", port=ports["volume"], tls=True, cert=cert)[0] == 200
    # The filer wants a JWT on top of the certificate: its Unix socket speaks plain HTTP.
    assert _http("GET", f"/buckets/{bucket}/kept.txt", port=ports["filer"], tls=True, cert=cert)[0] == 401


def test_credentials_are_generated_per_directory_and_private(s3_server):
    auth = Path(s3_server.data_dir, AUTH)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    for f in auth.rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    s = s3_server.settings
    assert s.secret_access_key and s.secret_access_key in (auth / "secret_access_key").read_text()
    assert "electra-local" not in s.secret_access_key and len(s.secret_access_key) >= 32
    assert s.secret_access_key not in repr(s)


def _check_flow(st) -> str:
    from flows import demo

    run_id = demo.start_run(st, {}, "local-stack-check/stack-check")
    return demo.watch(st, run_id, 300)


def _kill_weed(st) -> int:
    """SIGKILL the stack's weed. It was started by this process, so it stays a zombie until reaped."""
    pid = int(Path(st.s3_dir, "weed.pid").read_text())
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


def _start_cli(st) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "flows.localstack", "start", "--dir", str(st.base)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))


def test_stack_restarts_after_weed_dies_on_its_port_and_worker_follows(tmp_path):
    """Kill -9 the stack's weed (a zombie until reaped): `localstack start` sees it as dead, brings S3 back on the
    same port, and a flow run on the same worker succeeds. With that port taken, S3 moves and the worker is
    restarted with the new endpoint in its environment (which its flow runs inherit)."""
    from common import seaweedfs
    from flows.localstack import LocalStack

    st = LocalStack(tmp_path / "stack", s3_port=0, api_port=0)
    try:
        st.start()
        env_file = st.base / "env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        secret = LocalS3(st.s3_dir).settings.secret_access_key
        assert secret not in env_file.read_text() and "secret_access_key" in env_file.read_text()
        st.deploy("stack-check")
        assert _check_flow(st) == "Completed"
        port = seaweedfs.previous_port(st.s3_dir)
        worker = int((st.base / "worker.pid").read_text())

        _kill_weed(st)
        assert seaweedfs.running_endpoint(st.s3_dir) is None  # a zombie is not a running server
        out = _start_cli(st)
        assert out.returncode == 0 and f"S3 http://127.0.0.1:{port}," in out.stdout, out
        assert LocalS3(st.s3_dir, port).healthy()
        assert int((st.base / "worker.pid").read_text()) == worker  # same endpoint: the worker is kept
        assert _check_flow(st) == "Completed"

        _kill_weed(st)
        with socket.socket() as squatter:  # someone else takes the port meanwhile
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the dead weed left TIME_WAITs
            deadline = time.monotonic() + 20
            while True:  # the killed weed's last threads may still hold the listening socket for a moment
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"port {port} stays taken after weed was killed"
                    time.sleep(0.2)
            squatter.listen()
            out = _start_cli(st)
        assert out.returncode == 0, out
        moved = seaweedfs.previous_port(st.s3_dir)
        assert moved != port and f"S3 http://127.0.0.1:{moved}," in out.stdout
        new_worker = int((st.base / "worker.pid").read_text())
        assert new_worker != worker  # restarted: flow runs inherit the worker's environment, now the new endpoint
        assert psutil.Process(new_worker).environ()["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{moved}"
        assert f"127.0.0.1:{moved}" in env_file.read_text()
    finally:
        st.stop()


def test_start_fails_in_one_line_without_a_working_endpoint(tmp_path, monkeypatch, capsys):
    """`start` must not exit 0 with an env file that points nowhere."""
    from flows import localstack

    monkeypatch.setattr(localstack.LocalStack, "start_server", lambda self: self.api_url)
    monkeypatch.setattr(localstack.LocalStack, "ensure_pool", lambda self: None)
    monkeypatch.setattr(localstack.LocalStack, "start_worker", lambda self: 0)
    monkeypatch.setattr(localstack.LocalStack, "start_s3", lambda self: "http://127.0.0.1:9")  # nothing serves S3
    assert localstack.main(["start", "--dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no working S3 endpoint" in err, err
