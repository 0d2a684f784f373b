"""One place that knows how to read and write `s3://bucket/key` URIs and local paths.

Every other module speaks URIs and calls these functions; none imports boto3.
Endpoint and credentials come from the environment (the variables boto3 itself
reads: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_DEFAULT_REGION) or from an explicit `StorageSettings`, never from code.

Credentials never leave the process that holds them: a `StorageSettings` prints without
them and pickles without them (Beam job graphs, multiprocessing), so a worker that
unpickles one resolves credentials from its own environment or boto3's provider chain.
`beam_s3_args()` turns only the endpoint and region into Beam `S3Options` flags.

Errors say what to fix and which kind they are: `CredentialsError` (refused or missing
credentials), `BucketMissingError`, `StorageUnavailable` (the store cannot be reached or keeps
failing: an outage, worth retrying) and `StorageError` for the rest (docs/security.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Iterator

S3_SCHEME = "s3://"
_UMASK = os.umask(0)
os.umask(_UMASK)


class StorageError(RuntimeError):
    """A storage problem the user can fix (bad endpoint, missing object...)."""


class CredentialsError(StorageError):
    """No credentials, or the store refused them (403, unknown key, bad signature, expired token)."""


class BucketMissingError(StorageError):
    """The bucket a URI names does not exist at this endpoint."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object already exists (create) or changed since it was read (update)."""


class StorageUnavailable(StorageError):
    """The store could not be reached or kept failing (connection refused, timeouts, 5xx): an outage.
    The same command may succeed later, so callers retry it rather than ask the user to change anything."""


# Environment variables that hold credentials; their values are what docs/security.md promises never to print.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """How to reach object storage. Empty fields fall back to boto3's own lookup (env, profile, instance role)."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:8333 for the local SeaweedFS gateway
    # Credentials: left out of repr() and of pickles (see __reduce__), so they appear in no log or job graph.
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    region: str = "us-east-1"  # SeaweedFS ignores it; AWS needs one for signing
    max_attempts: int = 8  # botocore "standard" retry mode: throttling and 5xx back off
    session_token: str | None = dataclasses.field(default=None, repr=False)  # temporary (STS) credentials

    @classmethod
    def from_env(cls) -> "StorageSettings":
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL") or None,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )

    def to_env(self) -> dict[str, str]:
        """Environment for a child process (DeepSpeed ranks, Beam workers) to see the same store."""
        env = {"AWS_DEFAULT_REGION": self.region}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        env.update(self.credentials_env())
        return env

    def credentials_env(self) -> dict[str, str]:
        """Only the credential variables (empty when the settings carry none)."""
        pairs = zip(CREDENTIAL_ENV, (self.access_key_id, self.secret_access_key, self.session_token))
        return {k: v for k, v in pairs if v}

    def without_credentials(self) -> "StorageSettings":
        return dataclasses.replace(self, access_key_id=None, secret_access_key=None, session_token=None)

    def __reduce__(self):
        # A pickled copy travels to other processes and machines (Beam job graphs, multiprocessing): it
        # keeps where the store is but not the keys; the receiving process uses its own environment.
        s = self.without_credentials()
        return (StorageSettings, tuple(getattr(s, f.name) for f in dataclasses.fields(s)))

    # In-process copies are the object itself (it is immutable), so they keep the credentials.
    def __copy__(self) -> "StorageSettings":
        return self

    def __deepcopy__(self, memo) -> "StorageSettings":
        return self


def beam_s3_args(settings: StorageSettings | None = None) -> list[str]:
    """Beam `S3Options` flags for where the store is (endpoint, region); never the credentials.

    Beam logs every pipeline option at worker start-up and ships them with the job graph, so
    credentials stay in the environment, where Beam's own s3:// filesystem (boto3) finds them too.
    """
    s = settings or StorageSettings.from_env()
    args = [f"--s3_region_name={s.region}"]
    if s.endpoint_url:
        args.append(f"--s3_endpoint_url={s.endpoint_url}")
    return args


def settings_from_beam_options(options) -> StorageSettings:
    """StorageSettings from Beam PipelineOptions, falling back to the environment per field."""
    from apache_beam.options.pipeline_options import S3Options

    s3 = options.view_as(S3Options)
    env = StorageSettings.from_env()
    return StorageSettings(
        endpoint_url=s3.s3_endpoint_url or env.endpoint_url,
        access_key_id=s3.s3_access_key_id or env.access_key_id,
        secret_access_key=s3.s3_secret_access_key or env.secret_access_key,
        region=s3.s3_region_name or env.region,
        session_token=s3.s3_session_token or env.session_token,
    )


# ----------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    rest = uri[len(S3_SCHEME):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI or a local path."""
    out = str(base)
    for p in parts:
        p = str(p)
        if not p:
            continue
        out = out.rstrip("/") + "/" + p.lstrip("/")
    return out


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    uri = str(uri).rstrip("/")
    head, _, _ = uri.rpartition("/")
    return head


def normalize(uri: str) -> str:
    """Absolute local paths; s3 URIs unchanged."""
    return str(uri) if is_s3(uri) else str(Path(uri).expanduser().resolve())


# ----------------------------------------------------------------------------- client

_CLIENTS: dict[tuple, object] = {}
_CLIENT_LOCK = threading.Lock()


def client(settings: StorageSettings | None = None):
    """A cached boto3 S3 client with retries for these settings."""
    s = settings or StorageSettings.from_env()
    # Keyed by process too: a forked child (DataLoader workers, multiprocessing) must not reuse the
    # parent's connection pool, whose sockets the two processes would then share. Settings without
    # credentials (a worker's unpickled copy) resolve them from the environment, so that is keyed too.
    key = (os.getpid(), s, s.access_key_id is None and tuple(os.environ.get(k) for k in CREDENTIAL_ENV))
    with _CLIENT_LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            import boto3
            from botocore.config import Config

            cfg = Config(
                retries={"max_attempts": s.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},  # SeaweedFS and most on-prem gateways need path style
                connect_timeout=10,
                read_timeout=120,
                max_pool_connections=32,
            )
            # A session of its own: boto3's default session caches the first credentials it resolves, so a later
            # client without explicit keys would silently reuse another job's environment.
            c = boto3.session.Session().client(
                "s3",
                endpoint_url=s.endpoint_url,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token,
                region_name=s.region,
                config=cfg,
            )
            _CLIENTS[key] = c
    return c


# S3 error codes by what the user has to do about them.
_CREDENTIAL_CODES = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed",
                     "InvalidClientTokenId", "AllAccessDisabled", "AccountProblem"}
_OUTAGE_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                 "ServiceUnavailableException", "Throttling", "BadGateway"}
_PRECONDITION_CODES = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


def _where(settings: StorageSettings | None) -> str:
    s = settings or StorageSettings.from_env()
    return s.endpoint_url or "the default AWS endpoint"


def _translate(exc: Exception, uri: str, settings: StorageSettings | None = None) -> Exception:
    """A botocore exception as one of this module's errors, worded as what to fix."""
    from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                                     NoCredentialsError, PartialCredentialsError, ReadTimeoutError)

    where = _where(settings)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)):
        return StorageUnavailable(
            f"cannot reach the S3 endpoint {where} for {uri} ({type(exc).__name__}): if the store is down, retry "
            "when it is back; otherwise check AWS_ENDPOINT_URL / --s3_endpoint_url (local store: "
            "`bash infra/local/start.sh`)")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                "(or AWS_PROFILE / an instance role); `source .demo/env` for the local stack")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        bucket = split_s3(uri)[0] if is_s3(uri) else uri
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(uri)
        if code == "NoSuchBucket":
            return BucketMissingError(f"bucket {bucket!r} does not exist at {where} (for {uri}): create it "
                                      f"(`python -m common.buckets mb s3://{bucket}`) or fix the URI / AWS_ENDPOINT_URL")
        if code in _CREDENTIAL_CODES or status == "403":
            return CredentialsError(
                f"S3 refused the credentials for {uri} ({code or status} from {where}): check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY (or the role) and that they may access bucket {bucket!r}")
        if code in _PRECONDITION_CODES:
            return PreconditionFailed(f"{uri} changed or already exists (conditional write refused: {code})")
        if code in _OUTAGE_CODES or status.startswith("5"):
            return StorageUnavailable(f"the S3 endpoint {where} keeps failing for {uri} ({code or status}, after "
                                      "retries): retry when the store is healthy")
        return StorageError(f"S3 error on {uri}: {code} {err.get('Message', '')}".rstrip())
    return exc


@contextlib.contextmanager
def _s3_errors(uri: str, settings: StorageSettings | None = None):
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated into a message that says what to fix
        translated = _translate(exc, uri, settings)
        if translated is exc:
            raise
        raise translated from exc


def check_reachable(uri: str, settings: StorageSettings | None = None) -> None:
    """Fail fast, with one clear line, when an s3:// URI's endpoint, credentials or bucket are wrong."""
    if not is_s3(uri):
        return
    bucket, _ = split_s3(uri)
    try:
        with _s3_errors(uri, settings):
            client(settings).head_bucket(Bucket=bucket)
    except FileNotFoundError:  # HEAD on a bucket answers a bare 404
        raise BucketMissingError(f"bucket {bucket!r} does not exist at {_where(settings)} (for {uri}): create it "
                                 f"(`python -m common.buckets mb s3://{bucket}`) or fix the URI / AWS_ENDPOINT_URL"
                                 ) from None


def make_bucket(uri: str, settings: StorageSettings | None = None) -> None:
    bucket, _ = split_s3(uri)
    c = client(settings)
    with _s3_errors(uri, settings):
        try:
            c.head_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - absent: create it
            c.create_bucket(Bucket=bucket)


# ----------------------------------------------------------------------------- reads


def read_bytes(uri: str, settings: StorageSettings | None = None) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            return client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def read_text(uri: str, settings: StorageSettings | None = None) -> str:
    return read_bytes(uri, settings).decode("utf-8")


def read_range(uri: str, offset: int, length: int, settings: StorageSettings | None = None) -> bytes:
    """Bytes [offset, offset+length) without fetching the whole object (HTTP Range on S3)."""
    if length <= 0:
        return b""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            resp = client(settings).get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
            return resp["Body"].read()
    with open(uri, "rb") as f:
        f.seek(offset)
        return f.read(length)


def size(uri: str, settings: StorageSettings | None = None) -> int:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            return int(client(settings).head_object(Bucket=bucket, Key=key)["ContentLength"])
    return os.path.getsize(uri)


def exists(uri: str, settings: StorageSettings | None = None) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        from botocore.exceptions import ClientError

        try:
            client(settings).head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _translate(exc, uri, settings) from exc
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, uri, settings) from exc
    return os.path.exists(uri)


@contextlib.contextmanager
def open_read(uri: str, settings: StorageSettings | None = None) -> Iterator[IO[bytes]]:
    """A binary file object. S3 objects stream (no full download)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            body = client(settings).get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield io.BufferedReader(_StreamingBodyIO(body), buffer_size=1 << 20)
        finally:
            body.close()
    else:
        with open(uri, "rb") as f:
            yield f


class _StreamingBodyIO(io.RawIOBase):
    """Adapts botocore's StreamingBody to io.RawIOBase so gzip/zstd/pyarrow can wrap it."""

    def __init__(self, body):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n


@contextlib.contextmanager
def open_seekable(uri: str, settings: StorageSettings | None = None) -> Iterator[IO[bytes]]:
    """A seekable binary file object: on S3 every read is a ranged GET, so a Parquet reader fetches
    the footer and the column chunks it needs (one row group at a time), never the whole object."""
    if not is_s3(uri):
        with open(uri, "rb") as f:
            yield f
        return
    raw = _RangeReader(uri, settings)
    with io.BufferedReader(raw, buffer_size=1 << 20) as f:
        yield f


class _RangeReader(io.RawIOBase):
    def __init__(self, uri: str, settings: StorageSettings | None):
        self.uri, self.settings, self.pos = uri, settings, 0
        self.size = size(uri, settings)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self.pos))
        if n:
            data = read_range(self.uri, self.pos, n, self.settings)
            b[:len(data)] = data
            n = len(data)
            self.pos += n
        return n


def list_files(prefix: str, settings: StorageSettings | None = None) -> list[str]:
    """Every file under a prefix (recursive), sorted. Local: a directory tree."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        out: list[str] = []
        with _s3_errors(prefix, settings):
            paginator = client(settings).get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                for obj in page.get("Contents", []):
                    out.append(f"{S3_SCHEME}{bucket}/{obj['Key']}")
        return sorted(out)
    root = Path(prefix)
    if root.is_file():
        return [str(root)]
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def glob(pattern: str, settings: StorageSettings | None = None) -> list[str]:
    """Expand a glob (`*`, `?`, `[..]`, `**`) over local paths or s3:// keys; sorted, deduplicated files.

    Both sides follow Python's `glob.glob(recursive=True)`: `*`, `?` and `[..]` match within one
    path component (never across `/`); a component that is exactly `**` matches zero or more
    components; a wildcard never matches a name starting with `.` unless its pattern component
    does. (`fnmatch` on whole keys, used before, let `s3://b/crawl/*.gz` pick up `crawl/sub/x.gz`.)
    """
    if not _has_magic(pattern):
        return [pattern] if exists(pattern, settings) or (not is_s3(pattern) and os.path.isfile(pattern)) else []
    if is_s3(pattern):
        bucket, key = split_s3(pattern)
        literal = key[:min(key.index(c) for c in "*?[" if c in key)]  # list only under the literal prefix
        parts = key.split("/")
        found = (c for c in list_files(f"{S3_SCHEME}{bucket}/{literal}", settings)
                 if _match_parts(parts, split_s3(c)[1].split("/")))
        return sorted(set(found))
    import glob as _glob

    return sorted({p for p in _glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p)})


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


@functools.lru_cache(maxsize=256)
def _component_regex(part: str) -> re.Pattern:
    return re.compile(fnmatch.translate(part))


def _match_parts(pattern: list[str], key: list[str]) -> bool:
    """Component-wise glob match of a key, with the rules of Python's glob (see `glob`)."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "**":  # zero or more components, none of them hidden
        for i in range(len(key) + 1):
            if i and key[i - 1].startswith("."):
                return False
            if _match_parts(rest, key[i:]):
                return True
        return False
    if not key:
        return False
    if _has_magic(head):
        if key[0].startswith(".") and not head.startswith("."):
            return False
        if not _component_regex(head).match(key[0]):
            return False
    elif head != key[0]:
        return False
    return _match_parts(rest, key[1:])


# ----------------------------------------------------------------------------- writes


# Multipart part size. S3 wants >= 5 MiB per part except the last and at most 10,000 parts, so
# 16 MiB parts allow objects up to 156 GiB (far above any shard) while a writer holds one part.
PART_BYTES = 16 << 20
MIN_PART_BYTES = 5 << 20  # S3's own minimum (SeaweedFS refuses to complete smaller parts too)


def write_bytes(uri: str, data: bytes, settings: StorageSettings | None = None) -> None:
    """Write a whole object, atomically: S3 PUT (multipart above PART_BYTES); locally a temp file renamed."""
    if is_s3(uri) and len(data) <= PART_BYTES:  # one PUT (atomic) unless S3's 5 GB PUT limit could bite
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            client(settings).put_object(Bucket=bucket, Key=key, Body=data)
        return
    with open_write(uri, settings) as f:
        f.write(data)


@contextlib.contextmanager
def open_write(uri: str, settings: StorageSettings | None = None, part_bytes: int | None = None) -> Iterator[IO[bytes]]:
    """A binary stream whose object becomes visible, whole, only when the block exits normally.

    S3: a multipart upload, one part held in memory at a time (a single PUT when the data is
    smaller than one part); any exception aborts the upload, and a killed process leaves only an
    incomplete upload, which no reader sees (`abort_stale_uploads` reclaims it). Local: a hidden
    temp file beside the target, fsync'd and renamed over it; removed on failure.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        writer = _MultipartWriter(client(settings), bucket, key, uri, part_bytes or PART_BYTES, settings)
        try:
            yield writer
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files get the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _temp_beside(path: Path, data: bytes) -> str:
    """A finished, synced temporary file next to `path` (same file system: renames and links are atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files get the usual mode
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


class _MultipartWriter(io.RawIOBase):
    """Buffers writes into parts of exactly `part_bytes` (the last may be shorter) and uploads each."""

    def __init__(self, s3, bucket: str, key: str, uri: str, part_bytes: int, settings: StorageSettings | None = None):
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 multipart parts must be >= {MIN_PART_BYTES} bytes")
        self.s3, self.bucket, self.key, self.uri, self.part_bytes = s3, bucket, key, uri, part_bytes
        self.settings = settings  # for error messages that name the endpoint (_s3_errors)
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, b) -> int:
        n = len(b)
        self.buf += b
        self.written += n
        while len(self.buf) >= self.part_bytes:
            self._upload(bytes(self.buf[:self.part_bytes]))
            del self.buf[:self.part_bytes]
        return n

    def _upload(self, data: bytes) -> None:
        with _s3_errors(self.uri, self.settings):
            if self.upload_id is None:
                self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
            number = len(self.parts) + 1
            etag = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                       PartNumber=number, Body=data)["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})

    def finish(self) -> None:
        with _s3_errors(self.uri, self.settings):
            if self.upload_id is None:  # smaller than one part: a plain PUT is atomic too
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
            else:
                if self.buf:
                    self._upload(bytes(self.buf))
                self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.buf = bytearray()

    def abort(self) -> None:
        self.buf = bytearray()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # the original error is what the caller must see
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def abort_stale_uploads(prefix: str, settings: StorageSettings | None = None, older_than_s: float = 0.0) -> int:
    """Abort the incomplete multipart uploads under an s3:// prefix (a killed writer's leftovers:
    invisible, but billed until aborted). Returns how many. A no-op for local paths, whose temp
    files go with the directory. A bucket lifecycle rule (AbortIncompleteMultipartUpload) does the
    same for uploads nobody reruns."""
    if not is_s3(prefix):
        return 0
    bucket, key = split_s3(prefix)
    c, n = client(settings), 0
    cutoff = time.time() - older_than_s
    with _s3_errors(prefix, settings):
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
            for up in page.get("Uploads", []):
                if up["Initiated"].timestamp() <= cutoff:
                    c.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                    n += 1
    return n


def write_text(uri: str, text: str, settings: StorageSettings | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), settings)


# A small file (manifest, marker) is published atomically by the same mechanism.
publish_atomic = write_bytes


# ----------------------------------------------------------------------------- conditional writes
# Small objects that several processes race for (output claims, common/claims.py). The version token
# is the S3 ETag, or the sha256 of a local file's bytes.


def create_exclusive(uri: str, data: bytes, settings: StorageSettings | None = None) -> str:
    """Write `uri` only if nothing is there yet; returns its version. PreconditionFailed when it exists.

    S3: PutObject with `If-None-Match: *` (AWS, SeaweedFS, MinIO); a store that ignores the header
    overwrites instead, which callers detect by reading back. Local: a hard link to a finished
    temporary file, so the object appears whole or not at all.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            return client(settings).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"]
    path = Path(uri)
    tmp = _temp_beside(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise PreconditionFailed(f"{uri} already exists") from None
    finally:
        os.unlink(tmp)
    return sha256_bytes(data)


def read_versioned(uri: str, settings: StorageSettings | None = None) -> tuple[bytes, str]:
    """The bytes of `uri` and the version token `replace_if` / `delete_if` expect."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            resp = client(settings).get_object(Bucket=bucket, Key=key)
            return resp["Body"].read(), resp["ETag"]
    data = Path(uri).read_bytes()
    return data, sha256_bytes(data)


def replace_if(uri: str, data: bytes, version: str, settings: StorageSettings | None = None) -> str:
    """Overwrite `uri` only while it still holds `version`; returns the new version. PreconditionFailed otherwise."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            with _s3_errors(uri, settings):
                return client(settings).put_object(Bucket=bucket, Key=key, Body=data, IfMatch=version)["ETag"]
        except FileNotFoundError:
            raise PreconditionFailed(f"{uri} is gone") from None
    with _dir_lock(Path(uri).parent):
        try:
            current = Path(uri).read_bytes()
        except FileNotFoundError:
            raise PreconditionFailed(f"{uri} is gone") from None
        if sha256_bytes(current) != version:
            raise PreconditionFailed(f"{uri} changed")
        write_bytes(uri, data)
    return sha256_bytes(data)


def delete_if(uri: str, version: str, settings: StorageSettings | None = None) -> None:
    """Delete `uri` only while it still holds `version` (gone already is fine). PreconditionFailed otherwise."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            with _s3_errors(uri, settings):
                client(settings).delete_object(Bucket=bucket, Key=key, IfMatch=version)
        except FileNotFoundError:
            pass
        return
    with _dir_lock(Path(uri).parent):
        try:
            current = Path(uri).read_bytes()
        except FileNotFoundError:
            return
        if sha256_bytes(current) != version:
            raise PreconditionFailed(f"{uri} changed")
        os.unlink(uri)


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on a directory: compare-and-swap for the files in it, across processes."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def upload_file(local_path: str, uri: str, settings: StorageSettings | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            client(settings).upload_file(str(local_path), bucket, key)
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{uri}.tmp-{os.getpid()}"
    shutil.copyfile(local_path, tmp)
    os.replace(tmp, uri)


def download_file(uri: str, local_path: str, settings: StorageSettings | None = None) -> None:
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            client(settings).download_file(bucket, key, str(local_path))
        return
    shutil.copyfile(uri, local_path)


def upload_dir(local_dir: str, uri: str, settings: StorageSettings | None = None) -> list[str]:
    """Copy a local directory tree under a URI; returns the written URIs (sorted)."""
    written = []
    for p in sorted(Path(local_dir).rglob("*")):
        if p.is_file():
            dest = join(uri, p.relative_to(local_dir).as_posix())
            upload_file(str(p), dest, settings)
            written.append(dest)
    return written


def download_dir(uri: str, local_dir: str, settings: StorageSettings | None = None) -> list[str]:
    """Copy every file under a URI prefix into a local directory; returns local paths."""
    base = uri.rstrip("/") + "/"
    out = []
    for src in list_files(base, settings):
        rel = src[len(base):]
        dest = os.path.join(local_dir, rel)
        download_file(src, dest, settings)
        out.append(dest)
    return out


@contextlib.contextmanager
def local_copy(uri: str, settings: StorageSettings | None = None) -> Iterator[str]:
    """A local directory with the contents of `uri` (the directory itself when already local)."""
    if not is_s3(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="electra-dl-") as tmp:
        download_dir(uri, tmp, settings)
        yield tmp


def delete(uri: str, settings: StorageSettings | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri, settings):
            client(settings).delete_object(Bucket=bucket, Key=key)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(uri)


def delete_prefix(prefix: str, settings: StorageSettings | None = None) -> int:
    """Delete every file under a prefix; returns how many."""
    files = list_files(prefix, settings)
    if not is_s3(prefix):
        if os.path.isdir(prefix):
            shutil.rmtree(prefix)
        return len(files)
    for f in files:
        delete(f, settings)
    return len(files)


# ----------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_uri(uri: str, settings: StorageSettings | None = None) -> str:
    h = hashlib.sha256()
    with open_read(uri, settings) as f:
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
