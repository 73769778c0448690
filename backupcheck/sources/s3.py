"""Backups in S3 and S3-compatible stores: a client that cannot write, paginated listing, verified downloads."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..arriving import Arriving
from ..schema import ConfigError, Setting, parse_bool, parse_count, parse_table
from .base import Fetched, RemoteError

# Everything a verification needs; any other operation is refused before it is sent.
READ_OPERATIONS = frozenset({
    "ListObjectsV2", "ListObjects", "ListObjectVersions", "GetObject", "HeadObject", "HeadBucket",
    "GetBucketLocation", "GetObjectAttributes",
})
_CHUNK = 1 << 20


class S3Error(RemoteError):
    """Something about a bucket or an object that a check reports; the message holds no secret."""


class ReadOnlyViolation(S3Error):
    """An operation that writes or deletes was attempted through the verification client."""


class _InBucket:
    """What the sources protocol asks of a place or an object (base.Place, base.Listed): an s3 bucket."""

    scheme = "s3"
    bucket: str

    @property
    def container(self) -> str:
        return self.bucket


@dataclass(frozen=True)
class S3Location(_InBucket):
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ValueError(f"{url!r} is not an s3:// URL")
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket or "@" in bucket or ":" in bucket:
            raise ValueError(f"{url!r}: expected s3://bucket/prefix/ (credentials never go in the URL)")
        return cls(bucket, prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Options:
    """Per-source connection settings; credentials come from boto3's standard chain, never from here."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    checksum_when_required: bool = False  # third-party endpoints with botocore >= 1.36
    max_attempts: int = 5


@dataclass(frozen=True)
class RemoteObject(_InBucket):
    bucket: str
    key: str
    size: int
    last_modified: datetime
    etag: str
    version_id: str | None = None  # the ETag only identifies a version for the cache: a multipart ETag is no MD5

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _refuse_writes(model: Any, **_: Any) -> None:
    if model.name not in READ_OPERATIONS:
        raise ReadOnlyViolation(
            f"refused S3 operation {model.name}: backupcheck only reads (allowed: {', '.join(sorted(READ_OPERATIONS))})"
        )


def make_client(options: S3Options):  # type: ignore[no-untyped-def]
    """An S3 client whose every non-read operation fails before a request is signed or sent."""
    import boto3
    from botocore.config import Config

    extra: dict[str, Any] = {}
    if options.checksum_when_required:
        extra = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
    config = Config(retries={"total_max_attempts": options.max_attempts, "mode": "standard"}, connect_timeout=10,
                    read_timeout=60, **extra)
    session = boto3.session.Session(profile_name=options.profile)
    client = session.client("s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config)
    client.meta.events.register("before-call.s3", _refuse_writes)
    return client


def explain(exc: BaseException, what: str) -> S3Error:
    """A one-line diagnosis of a boto3 failure, naming what was attempted and the likely fix."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3Error(f"{what}: no AWS credentials were found (environment, profile or instance role)")
    if isinstance(exc, ProfileNotFound):
        return S3Error(f"{what}: the AWS profile named in the config does not exist")
    if isinstance(exc, EndpointConnectionError):
        return S3Error(f"{what}: the S3 endpoint cannot be reached ({exc.kwargs.get('endpoint_url', 'endpoint')})")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hints = {
            "NoSuchBucket": "the bucket does not exist (check the URL and the region)",
            "NoSuchKey": "the object is gone (deleted after it was listed?)",
            "AccessDenied": "access denied: the credentials need s3:ListBucket on the prefix and s3:GetObject",
            "403": "access denied (without s3:ListBucket a missing key also answers 403)",
            "InvalidAccessKeyId": "the access key is not known to this endpoint",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
            "PreconditionFailed": "the object changed after it was listed",
            "412": "the object changed after it was listed",
            "SlowDown": "throttled by S3 after retries",
            "404": "not found",
        }
        hint = hints.get(code) or hints.get(str(status)) or f"S3 answered {code or status}"
        return S3Error(f"{what}: {hint}")
    return S3Error(f"{what}: {type(exc).__name__}")


def list_objects(client: Any, location: S3Location) -> list[RemoteObject]:
    """Every object under the prefix, following continuation tokens, sorted by key."""
    found: list[RemoteObject] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                found.append(RemoteObject(location.bucket, item["Key"], int(item["Size"]), modified.astimezone(UTC),
                                          str(item.get("ETag", "")).strip('"')))
    except Exception as exc:
        raise explain(exc, f"listing {location.url}") from None
    return sorted(found, key=lambda o: o.key)


_DECLARED = {"sha256": "sha256", "sha256sum": "sha256", "content-sha256": "sha256", "md5": "md5", "md5sum": "md5",
             "content-md5": "md5"}


def declared_checksums(metadata: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Checksums a backup job put in the object's user metadata (x-amz-meta-sha256 and the like)."""
    out = []
    for key, value in sorted(metadata.items()):
        algorithm = _DECLARED.get(key.lower())
        if algorithm and value.strip():
            out.append((algorithm, value.strip().lower()))
    return tuple(out)


class DownloadCache:
    """Downloads kept by bucket, key, version, ETag and size; an entry is re-hashed before it is trusted."""

    def __init__(self, root: Path, reserve: int = 512 * 1024**2, parts_from: int = 64 * 1024**2,
                 part_size: int = 16 * 1024**2, parts_at_once: int = 4) -> None:
        """Objects of ``parts_from`` bytes or more download in ranges of ``part_size``, ``parts_at_once`` at a
        time (one connection to S3 rarely carries more than 50-100 MB/s; the ranges together do)."""
        self.root = root
        self.reserve = reserve
        self.parts_from, self.part_size, self.parts_at_once = parts_from, part_size, parts_at_once
        self.stop = threading.Event()  # set when the run ends: a download still running is given up
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # downloaded backups: for the checking user only

    def _entry(self, obj: RemoteObject) -> Path:
        ident = f"{obj.bucket}\0{obj.key}\0{obj.version_id or ''}\0{obj.etag}\0{obj.size}"
        return self.root / hashlib.sha256(ident.encode()).hexdigest()[:32]

    @staticmethod
    def _data(entry: Path, obj: RemoteObject) -> Path:
        # The object's own file name: sidecars keep their suffix, messages their name.
        return entry / (obj.key.rsplit("/", 1)[-1] or "object")

    def cached(self, obj: RemoteObject) -> Fetched | None:
        entry = self._entry(obj)
        meta_path, data = entry / "meta.json", self._data(entry, obj)
        try:
            meta = json.loads(meta_path.read_text())
            if data.stat().st_size != obj.size:
                return None
        except (OSError, ValueError):
            return None
        digest = hashlib.sha256()
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != meta.get("sha256"):
            return None  # changed or corrupted on disk since it was fetched: never trusted
        return Fetched(data, meta["sha256"], 0, tuple(tuple(d) for d in meta.get("declared", [])))

    def fetch(self, client: Any, obj: RemoteObject, attempts: int = 3,
              progress: Callable[[int, int], None] | None = None, arrival: Arriving | None = None) -> Fetched:
        """The object's bytes on local disk, streamed and hashed once; from the cache when it is intact.
        ``arrival``: told where the bytes are written and how many from the start are there, so they can be read
        while they arrive (the ranges of a large object land out of order: it is told in order)."""

        lock = self.root / f"{self._entry(obj).name}.lock"
        with open(lock, "w") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)  # another worker fetching the same object: wait for it
            try:
                return self._fetch_locked(client, obj, attempts, self._told(progress, arrival), arrival)
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    @staticmethod
    def _told(progress: Callable[[int, int], None] | None,
              arrival: Arriving | None) -> Callable[[int, int], None] | None:
        """Progress (called with the bytes there from the start, in order) also told to the reader of ``arrival``."""
        if arrival is None:
            return progress

        def told(done: int, total: int) -> None:
            arrival.advance(done)
            if progress is not None:
                progress(done, total)

        return told

    def _fetch_locked(self, client: Any, obj: RemoteObject, attempts: int,
                      progress: Callable[[int, int], None] | None, arrival: Arriving | None = None) -> Fetched:
        hit = self.cached(obj)
        if hit is not None:
            return hit
        if self.stop.is_set():
            raise S3Error(f"downloading {obj.url}: not started, the run is ending")
        entry = self._entry(obj)
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        free = shutil.disk_usage(entry).free
        if free < obj.size + self.reserve:
            raise S3Error(f"downloading {obj.url}: {obj.size:,} bytes needed, only {free:,} free in {self.root} "
                          "(give a folder on a larger disk with --cache-dir, config: cache_dir)")
        last: BaseException | None = None
        for _attempt in range(attempts):
            try:
                return self._download(client, obj, entry, progress, arrival)
            except S3Error:
                raise
            except Exception as exc:  # a connection cut midway: try again from the start
                last = exc
        raise S3Error(f"downloading {obj.url}: failed {attempts} times, last: {explain(last, 'download')}") \
            if last else S3Error(f"downloading {obj.url}: failed")

    def _download(self, client: Any, obj: RemoteObject, entry: Path,
                  progress: Callable[[int, int], None] | None, arrival: Arriving | None = None) -> Fetched:
        from botocore.exceptions import ClientError

        params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            params["VersionId"] = obj.version_id
        if obj.etag:
            params["IfMatch"] = f'"{obj.etag}"'
        if obj.size >= self.parts_from and self.parts_at_once > 1:
            return self._download_parts(client, obj, entry, progress, params, arrival)
        try:
            response = client.get_object(**params)
        except ClientError as exc:
            raise explain(exc, f"downloading {obj.url}") from None
        fd, tmp = tempfile.mkstemp(dir=entry, prefix=".part-")
        if arrival is not None:
            arrival.begin(Path(tmp), self._data(entry, obj))
        digest = hashlib.sha256()
        done = 0
        try:
            with os.fdopen(fd, "wb") as out:
                body = response["Body"]
                for block in iter(lambda: body.read(_CHUNK), b""):
                    if self.stop.is_set():
                        raise S3Error(f"downloading {obj.url}: given up, the run is ending")
                    out.write(block)
                    if arrival is not None:
                        out.flush()  # in the file before progress says so: it is read as it arrives
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, obj.size)
            if done != obj.size:
                raise OSError(f"got {done:,} of {obj.size:,} bytes")
            Path(tmp).rename(self._data(entry, obj))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._keep(entry, obj, digest.hexdigest(), done, response.get("Metadata") or {})

    def _keep(self, entry: Path, obj: RemoteObject, sha256: str, done: int, metadata: dict[str, str]) -> Fetched:
        declared = declared_checksums(metadata)
        meta = {"url": obj.url, "etag": obj.etag, "version_id": obj.version_id, "size": obj.size,
                "sha256": sha256, "fetched_at": datetime.now(UTC).isoformat(), "declared": declared}
        (entry / "meta.json").write_text(json.dumps(meta))
        return Fetched(self._data(entry, obj), sha256, done, declared)

    def _download_parts(self, client: Any, obj: RemoteObject, entry: Path, progress: Callable[[int, int], None] | None,
                        params: dict[str, Any], arrival: Arriving | None = None) -> Fetched:
        """Ranges fetched ``parts_at_once`` at a time into their place in one file (each range tried three
        times, every one pinned to the listed ETag); this thread hashes the file in order as the ranges land,
        from the page cache, and reports progress as it goes."""
        from concurrent.futures import ThreadPoolExecutor

        from botocore.exceptions import ClientError

        ranges = [(start, min(start + self.part_size, obj.size) - 1) for start in range(0, obj.size, self.part_size)]
        landed = [threading.Event() for _ in ranges]
        failed: list[BaseException] = []
        metadata: dict[str, str] = {}
        fd, tmp = tempfile.mkstemp(dir=entry, prefix=".part-")
        if arrival is not None:
            arrival.begin(Path(tmp), self._data(entry, obj))

        def fetch(i: int) -> None:
            start, end = ranges[i]
            last: BaseException | None = None
            for _attempt in range(3):
                if self.stop.is_set() or failed:
                    return
                try:
                    response = client.get_object(**params, Range=f"bytes={start}-{end}")
                    if i == 0:
                        metadata.update(response.get("Metadata") or {})
                    at, read = start, response["Body"].read
                    while block := read(_CHUNK):
                        if self.stop.is_set() or failed:
                            return
                        os.pwrite(fd, block, at)
                        at += len(block)
                    if at != end + 1:
                        raise OSError(f"got {at - start:,} of {end + 1 - start:,} bytes of bytes {start}-{end}")
                    landed[i].set()
                    return
                except ClientError as exc:  # refused, not cut: no second try
                    failed.append(explain(exc, f"downloading {obj.url}"))
                    landed[i].set()
                    return
                except Exception as exc:  # noqa: BLE001 (a connection cut midway: this range again)
                    last = exc
            failed.append(S3Error(f"downloading {obj.url}: bytes {start}-{end} failed 3 times, last: "
                                  f"{explain(last, 'download') if last else 'unknown'}"))
            landed[i].set()

        digest, done = hashlib.sha256(), 0
        try:
            os.ftruncate(fd, obj.size)
            if progress:
                progress(0, obj.size)
            with ThreadPoolExecutor(self.parts_at_once, thread_name_prefix="backupcheck-s3-part") as pool:
                try:
                    for i in range(len(ranges)):
                        pool.submit(fetch, i)
                    for i, (start, end) in enumerate(ranges):
                        while not landed[i].wait(0.5) and not failed:  # a range that failed stops the rest
                            if self.stop.is_set():
                                raise S3Error(f"downloading {obj.url}: given up, the run is ending")
                        if failed:
                            raise failed[0]
                        at = start
                        while at <= end:
                            block = os.pread(fd, min(_CHUNK, end + 1 - at), at)
                            digest.update(block)
                            at += len(block)
                        done = end + 1
                        if progress:
                            progress(done, obj.size)
                except BaseException:
                    failed.append(S3Error("stopped"))  # the ranges still running give up
                    raise
            os.close(fd)
            fd = -1
            Path(tmp).rename(self._data(entry, obj))
        except BaseException:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._keep(entry, obj, digest.hexdigest(), done, metadata)


def remote_object(url: str, size: int, modified: datetime, etag: str) -> RemoteObject:
    bucket, _, key = url[len("s3://"):].partition("/")
    return RemoteObject(bucket, key, size, modified, etag)


class RemoteAccess:
    """Clients per source (each with its own endpoint and region) and the shared download cache."""

    streams = True  # fetch takes an arrival: a download read while it runs

    def __init__(self, options: dict[str, S3Options], cache: DownloadCache,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.options = options
        self.cache = cache
        self.progress = progress  # (url, bytes done, bytes in all), for long downloads
        self._clients: dict[S3Options, Any] = {}

    def options_for(self, url: str) -> S3Options:
        """The settings of the source ``url`` is under (its endpoint, region, profile)."""
        matches = [u for u in self.options if u and url.startswith(u)]
        return self.options[max(matches, key=len)] if matches else self.options.get("", S3Options())

    def client_for(self, url: str) -> Any:
        options = self.options_for(url)
        if options not in self._clients:
            self._clients[options] = make_client(options)
        return self._clients[options]

    def fetch(self, url: str, size: int, modified: datetime, etag: str, arrival: Arriving | None = None) -> Fetched:
        """The object in the cache; a download ahead (in a thread of its own, see EvidenceStore.prefetch) says no
        progress: the lines on the terminal are the backup being checked. ``arrival``: read while it downloads."""
        obj = remote_object(url, size, modified, etag)
        report = self.progress if threading.current_thread() is threading.main_thread() else None
        return self.cache.fetch(self.client_for(url), obj,
                                progress=(lambda done, total: report(url, done, total)) if report else None,
                                arrival=arrival)

    def close(self) -> None:
        """The run is ending: a download ahead that is still running stops and removes its part file."""
        self.cache.stop.set()

    def fetch_small(self, url: str, target: Path, limit: int = 1 << 20) -> None:
        """A sidecar object (a checksum line), read whole."""
        bucket, _, key = url[len("s3://"):].partition("/")
        try:
            body = self.client_for(url).get_object(Bucket=bucket, Key=key)["Body"].read(limit)
        except Exception as exc:
            raise explain(exc, f"downloading {url}") from None
        target.write_bytes(body)

    def head(self, url: str) -> dict[str, str]:
        """Server-side encryption of an object, read without downloading it."""
        bucket, _, key = url[len("s3://"):].partition("/")
        try:
            answer = self.client_for(url).head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise explain(exc, f"reading the metadata of {url}") from None
        return {"sse": answer.get("ServerSideEncryption", ""), "kms_key_id": answer.get("SSEKMSKeyId", "")}


# --- what the s3:// source kind (sources.py) calls -------------------------------------------------------

def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} = {value!r}: expected a text")
    return value


SETTINGS = (  # the keys of [s3] and of one sources = [{ url = "s3://…", … }] table
    Setting("endpoint_url", "s3", _text, "an S3-compatible endpoint (MinIO, R2, B2, Wasabi): \"https://…\"", "AWS"),
    Setting("region", "s3", _text, "the bucket's region", "boto3's default chain"),
    Setting("profile", "s3", _text, "a profile of ~/.aws/config (credentials never go in this file)",
            "boto3's default chain"),
    Setting("checksum_when_required", "s3", parse_bool, "third-party endpoints with botocore >= 1.36 that reject "
            "its default checksums", "false"),
    Setting("max_attempts", "s3", parse_count, "attempts per request, with backoff", "5"),
)


def parse_options(raw: dict[str, Any], base: S3Options | None, where: str) -> S3Options:
    """``[s3]`` or one ``sources = [{ url = "s3://…", … }]`` table: endpoint, region, profile, retries."""
    return replace(base or S3Options(), **parse_table(raw, SETTINGS, where, also=frozenset({"url"})))


def check_url(url: str) -> None:
    S3Location.parse(url)  # raises ValueError naming what is wrong


def access_for(settings: Any, cache_dir: Path, progress: Any) -> RemoteAccess:
    options = {k: v for k, v in settings.remote_options.items() if k.startswith("s3://")}
    return RemoteAccess(options, DownloadCache(cache_dir), progress)


def list_location(access: RemoteAccess, url: str) -> tuple[S3Location, list[RemoteObject]]:
    location = S3Location.parse(url)
    return location, list_objects(access.client_for(url), location)
