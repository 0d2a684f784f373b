"""The storage module against a real S3 endpoint (SeaweedFS) and the local filesystem."""

import pytest

from common import manifest, storage

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_roundtrip_list_glob_range(root):
    storage.write_bytes(storage.join(root, "a/x.txt"), b"hello world")
    storage.write_text(storage.join(root, "a/y.json"), "{}")
    storage.write_bytes(storage.join(root, "b/z.txt"), b"zz")
    assert storage.read_bytes(storage.join(root, "a/x.txt")) == b"hello world"
    assert storage.read_range(storage.join(root, "a/x.txt"), 6, 5) == b"world"
    assert storage.size(storage.join(root, "a/x.txt")) == 11
    assert storage.exists(storage.join(root, "b/z.txt"))
    assert not storage.exists(storage.join(root, "b/nope.txt"))
    files = storage.list_files(storage.join(root, "a"))
    assert [storage.basename(f) for f in files] == ["x.txt", "y.json"]
    assert [storage.basename(f) for f in storage.glob(storage.join(root, "*/*.txt"))] == ["x.txt", "z.txt"]
    with storage.open_read(storage.join(root, "a/x.txt")) as f:
        assert f.read(5) == b"hello"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing"))


def test_manifest_roundtrip_and_tamper(root):
    m = manifest.build("documents", inputs=[], config={"a": 1}, shards=[{"path": "p", "records": 2}])
    manifest.write(root, m)
    back = manifest.read(root, kind="documents")
    assert back["manifest_hash"] == m["manifest_hash"]
    with pytest.raises(manifest.ManifestError, match="expected 'pack'"):
        manifest.read(root, kind="pack")
    storage.write_text(manifest.manifest_uri(root), storage.read_text(manifest.manifest_uri(root)).replace('"a": 1', '"a": 2'))
    with pytest.raises(manifest.ManifestError, match="hash"):
        manifest.read(root)


def test_unreachable_endpoint_says_what_to_fix():
    bad = storage.StorageSettings(endpoint_url="http://127.0.0.1:9", access_key_id="x", secret_access_key="y",
                                  max_attempts=1)
    with pytest.raises(storage.StorageError, match="cannot reach the S3 endpoint"):
        storage.check_reachable("s3://bucket/x", bad)


def test_local_s3_restarts_on_kept_data(tmp_path):
    """The demo stops and restarts SeaweedFS on the same data directory; objects survive."""
    from common.seaweedfs import LocalS3

    server = LocalS3(str(tmp_path / "sw")).start()
    try:
        storage.make_bucket("s3://keep", server.settings)
        storage.write_bytes("s3://keep/a.txt", b"kept", server.settings)
    finally:
        server.stop()
    again = LocalS3(str(tmp_path / "sw")).start(timeout=60)
    try:
        assert storage.read_bytes("s3://keep/a.txt", again.settings) == b"kept"
    finally:
        again.stop()
