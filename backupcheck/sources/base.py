"""What every remote source kind gives the rest of backupcheck: where it lists (a place), what it lists (objects,
no byte read), how it fetches (a local file with its digest), and one error for what a check reports.

Discovery, evidence and the checks speak only to these; a kind (``s3.py``) maps its own client's answers and
errors onto them, and registers itself by URL scheme (``backupcheck.sources.register``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


class RemoteError(Exception):
    """Something about a remote place or object that a check reports (denied, missing, cut short); the message
    names it and holds no secret."""


class Place(Protocol):
    """Where a listing looks: ``scheme://container/prefix``."""

    @property
    def scheme(self) -> str: ...

    @property
    def container(self) -> str: ...  # a bucket, a share, a repository

    @property
    def prefix(self) -> str: ...

    @property
    def url(self) -> str: ...


class Listed(Protocol):
    """One object a listing found, with what it says of it (no byte read)."""

    @property
    def scheme(self) -> str: ...

    @property
    def container(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def last_modified(self) -> datetime: ...

    @property
    def etag(self) -> str: ...  # whatever identifies this version of the object for the download cache

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class Location:
    """A Place, for a kind that needs nothing more."""

    scheme: str
    container: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.container}/{self.prefix}"


@dataclass(frozen=True)
class Object:
    """A Listed object, for a kind that needs nothing more."""

    scheme: str
    container: str
    key: str
    size: int
    last_modified: datetime
    etag: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.container}/{self.key}"


@dataclass(frozen=True)
class Fetched:
    """An object made a local file."""

    path: Path
    sha256: str
    downloaded: int  # bytes fetched by this call: 0 when the cache served it
    declared: tuple[tuple[str, str], ...] = ()  # (algorithm, hex digest) the object's metadata states


class Access(Protocol):
    """How the objects of a kind are reached once listed."""

    def fetch(self, url: str, size: int, modified: datetime, etag: str) -> Fetched:
        """The object as a local file (cached, its digest computed while it is written)."""

    def fetch_small(self, url: str, target: Path, limit: int = 1 << 20) -> None:
        """A small object (a checksum sidecar) written whole to ``target``."""

    def head(self, url: str) -> dict[str, str]:
        """What the store says of the object without reading it (server-side encryption: sse, kms_key_id)."""


def container_path(obj: Listed | Place, key: str = "") -> Path:
    """The path discovery groups a remote object under: ``/<scheme>/<container>/<key>`` (never a local path)."""
    return Path("/") / obj.scheme / obj.container / key


__all__ = ["Access", "Fetched", "Listed", "Location", "Object", "Place", "RemoteError", "container_path"]
