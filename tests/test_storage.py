"""The storage module against a real S3 endpoint (SeaweedFS) and the local filesystem."""

import pytest

from common import manifest, storage

pytestmark = pytest.mark.integration


@pytest.fixture
def root(local_and_s3):
    """Each test below runs on local disk and in S3 (conftest.py)."""
    return local_and_s3


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


# ----------------------------------------------------------------------------- globs

GLOB_TREE = ["a.gz", "b.txt", ".hidden.gz", "x[1].gz", "sub/c.gz", "sub/d.txt", "sub/.h.gz", "sub/deep/e.gz",
             "sub/deep/f.txt", ".hdir/g.gz", "sub2/h.gz", "sub2/deeper/more/i.gz", "sa/j.gz"]
GLOB_PATTERNS = ["*.gz", "*", "sub/*.gz", "*/*.gz", "*/*", "**/*.gz", "**", "sub/**", "sub/**/*.gz", "**/e.gz",
                 "?.gz", "[ab].*", "[!a]*.gz", "s*/*", "s?b*/*.gz", "*/deep/*", ".*", ".hdir/*", "sub/.*",
                 "**/.h.gz", "x[[]1].gz", "sub*/**/*.gz", "**/deep*/**", "sub/deep/e.gz", "sub/nope/*.gz"]


def test_s3_glob_answers_exactly_as_the_local_glob(tmp_path, s3_bucket):
    """Same tree locally and on S3, same patterns, same answers: `*`, `?` and `[..]` stay inside
    one path component, `**` spans any number, wildcards skip dot-names (Python's glob rules)."""
    local, remote = str(tmp_path / "tree"), f"{s3_bucket}/tree"
    for rel in GLOB_TREE:
        storage.write_bytes(storage.join(local, rel), b"x")
        storage.write_bytes(storage.join(remote, rel), b"x")
    for pattern in GLOB_PATTERNS:
        want = [p[len(local) + 1:] for p in storage.glob(storage.join(local, pattern))]
        got = [p[len(remote) + 1:] for p in storage.glob(storage.join(remote, pattern))]
        assert got == want, pattern
    assert [p[len(remote) + 1:] for p in storage.glob(f"{remote}/*.gz")] == ["a.gz", "x[1].gz"]  # not sub/c.gz


# ----------------------------------------------------------------------------- streaming writes


def test_multipart_object_larger_than_a_part_and_ranges_across_parts(s3_bucket):
    uri = f"{s3_bucket}/big/object.bin"
    part = 5 << 20
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with storage.open_write(uri, part_bytes=part) as f:
        for i in range(12):  # 12 MiB in 1 MiB writes: parts of 5, 5 and 2 MiB
            f.write(bytes([i]) + chunk[1:])
        assert f.parts and len(f.parts) == 2  # the third goes up with the completion
        assert not storage.exists(uri), "nothing is visible before the upload completes"
    assert storage.size(uri) == 12 << 20
    data = storage.read_bytes(uri)
    assert data[part - 2:part + 2] == storage.read_range(uri, part - 2, 4)
    assert [data[i << 20] for i in range(12)] == list(range(12))
    with storage.open_seekable(uri) as f:  # ranged GETs behind a file object
        f.seek((11 << 20) + 1)
        assert f.read(3) == chunk[1:4]


def test_failed_write_leaves_no_object_and_no_upload(root):
    uri = storage.join(root, "out/failed.bin")
    with pytest.raises(RuntimeError, match="boom"), storage.open_write(uri, part_bytes=5 << 20) as f:
        f.write(b"y" * (11 << 20))  # two parts already uploaded on S3
        raise RuntimeError("boom")
    assert not storage.exists(uri)
    assert storage.list_files(storage.join(root, "out")) == []
    if storage.is_s3(root):
        bucket, key = storage.split_s3(root)
        assert not storage.client().list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads")
