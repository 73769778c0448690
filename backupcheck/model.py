"""The nouns of the engine: artifacts, backups, series and findings."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """One file or pg_dump directory that belongs to a backup."""

    path: Path
    size: int
    mtime: datetime
    format: str = "unknown"  # custom, directory, tar, plain, dumpall, basebackup, json, tarball, dump-tarball, git-bundle, empty, unknown
    compression: tuple[str, ...] = ()  # outermost first, e.g. ("gzip",)
    role: str = ""  # schema, data, roles, config or "" for a whole dump
    sidecars: tuple[Path, ...] = ()
    note: str = ""  # why sniffing could not tell, if it could not
    url: str = ""  # the object's URL (a remote source's) while it is not downloaded yet (format "remote")
    encrypted: str = ""  # "gpg" when this is the decrypted content of an encrypted file
    etag: str = ""
    sidecar_urls: tuple[str, ...] = ()
    manifest: Path | None = None  # PATH.manifest.json beside it (backupcheck dump), downloaded when remote
    manifest_url: str = ""
    sha256: str = ""  # of the bytes as downloaded, for a remote object (computed while it was fetched)
    wal_archive: Path | None = None  # a base backup's WAL archive (found beside it, or configured)
    wal_archive_url: str = ""  # the same under a remote prefix
    members: tuple[tuple[str, int, datetime, str], ...] = ()  # a remote base backup's other objects (url, size,
    # modified, etag): its folder is downloaded whole

    @property
    def is_remote(self) -> bool:
        return self.format == "remote"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_database_dump(self) -> bool:
        return self.format in DUMP_FORMATS

    def describe(self) -> str:
        if self.is_remote:  # its bytes are read where a check needs them, not when listing
            return f"{self.url.partition('://')[0].upper() or 'remote'} object"
        layers = "+".join(self.compression)
        return f"{self.format}{' in ' + layers if layers else ''}"


PHYSICAL_FORMATS = frozenset({"basebackup", "pgbackrest", "barman"})
DUMP_FORMATS = frozenset({"custom", "directory", "tar", "plain", "dumpall"})
ARCHIVE_FORMATS = frozenset({"custom", "directory", "tar"})


@dataclass(frozen=True)
class Backup:
    """The artifacts of one series taken at one moment."""

    series: str
    taken_at: datetime  # UTC
    artifacts: tuple[Artifact, ...]
    time_source: str = "name"  # name, header or mtime

    @functools.cached_property
    def key(self) -> str:
        """A test id that is readable, stable and safe for ``-k`` (computed once: tens of thousands of uses)."""
        return f"{safe_id(self.series)}-{self.taken_at.strftime('%Y%m%dT%H%M%SZ')}"

    @property
    def size(self) -> int:
        return sum(a.size for a in self.artifacts)

    @property
    def dumps(self) -> tuple[Artifact, ...]:
        """The database dumps, in restore order (roles, schema, whole, data)."""
        order = {"roles": 0, "schema": 1, "": 2, "data": 3}
        found = [a for a in self.artifacts if a.is_database_dump]
        return tuple(sorted(found, key=lambda a: (order.get(a.role, 2), a.name)))

    @property
    def room_needed(self) -> int:
        """Bytes a restore of the dumps may take on the server: a restored database can take 20 times its
        compressed dump (18x measured on repetitive data); plain SQL about twice its size, indexes included."""
        return sum(a.size * (20 if a.format in ARCHIVE_FORMATS or a.compression else 2) for a in self.dumps)

    @property
    def base_backup(self) -> Artifact | None:
        """The physical base backup (pg_basebackup's folder) this backup is, if it is one."""
        return next((a for a in self.artifacts
                     if a.format in PHYSICAL_FORMATS or (a.is_remote and a.role == "basebackup")), None)

    @property
    def restorable(self) -> bool:
        """Holds a dump, or artifacts that may hold one: objects not downloaded yet, files not decrypted yet,
        tarballs not unpacked yet (their bytes will tell)."""
        return bool(self.dumps) or any(a.is_remote or a.format in ("gpg", "dump-tarball", *PHYSICAL_FORMATS)
                                       for a in self.artifacts)

    def holds_no_database(self, local: Backup) -> bool:
        """Once its bytes are here (``local``: downloaded, decrypted, unpacked), whether this backup turned out to
        hold no database at all: only config files, bundles or plain tarballs, where the listing could not tell
        (objects not downloaded, tarballs not unpacked). A local file that is empty or unknown is no such case:
        it was meant to be a dump, and its restore fails."""
        undecided = any(a.format == "tarball" for a in local.artifacts) or all(a.is_remote for a in self.artifacts)
        return (not local.dumps and bool(self.artifacts) and undecided
                and all(a.format in ("json", "tarball", "git-bundle", "empty") for a in local.artifacts))

    def format_summary(self) -> str:
        return ", ".join(sorted({a.describe() for a in self.artifacts})) or "none"

    @property
    def form(self) -> tuple[tuple[str, str, tuple[str, ...]], ...] | None:
        """What kind of files the backup is (each artifact's role, format and compression), for comparing sizes
        with backups written the same way; None where that is not known for every artifact (an object not read
        yet, a file nothing recognised: its size is compared with all the others)."""
        kinds = []
        for a in self.artifacts:
            if a.format not in DUMP_FORMATS | PHYSICAL_FORMATS:
                return None
            kinds.append((a.role, a.format, a.compression))
        return tuple(sorted(kinds)) or None


@dataclass(frozen=True)
class Series:
    """Backups that share a name once the timestamp is taken out, oldest first."""

    name: str
    backups: tuple[Backup, ...]

    @property
    def newest(self) -> Backup:
        return self.backups[-1]

    def previous(self, backup: Backup) -> tuple[Backup, ...]:
        """Backups taken before ``backup``, oldest first."""
        return tuple(b for b in self.backups if b.taken_at < backup.taken_at)


@dataclass(frozen=True)
class Finding:
    """One thing a check found wrong: what, where, expected, found and a hint."""

    check: str
    subject: str  # the backup key or series name
    what: str
    expected: str
    found: str
    hint: str = ""
    where: str = ""  # a file, a table, a line

    def __repr__(self) -> str:  # pytest prints it after the message: keep it one short line
        return f"<{self.check}: {self.what}>"


def render(findings: list[Finding] | tuple[Finding, ...]) -> str:
    """Text for an assertion message: one paragraph per finding."""
    lines: list[str] = []
    for f in findings:
        head = f"[{f.check}] {f.subject}: {f.what}"
        if f.where:
            head += f" ({f.where})"
        lines.append(head)
        lines.append(f"    expected: {f.expected}")
        lines.append(f"    found:    {f.found}")
        if f.hint:
            lines.append(f"    fix:      {f.hint}")
    return "\n".join(lines)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(text: str) -> str:
    """Fold a name into the characters pytest's ``-k`` accepts."""
    return _UNSAFE.sub("-", text).strip("-") or "backup"


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class Listing:
    """Everything discovery found, in a stable order."""

    series: list[Series] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # sources that could not be read
    _by_name: dict[str, Series] | None = field(default=None, repr=False, compare=False)
    _by_key: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def backups(self) -> list[Backup]:
        return [b for s in self.series for b in s.backups]

    def series_of(self, backup: Backup) -> Series:
        return self._index()[backup.series]

    def newest_first_position(self, backup: Backup) -> int:
        """0 for the newest backup of its series, 1 for the one before, and so on."""
        backups = self.series_of(backup).backups
        return len(backups) - 1 - self._positions()[backup.key]

    def _index(self) -> dict[str, Series]:
        # Built once: tests ask per item, and a bucket can hold tens of thousands of backups.
        if self._by_name is None:
            self._by_name = {s.name: s for s in self.series}
        return self._by_name

    def _positions(self) -> dict[str, int]:
        if self._by_key is None:
            self._by_key = {b.key: i for s in self.series for i, b in enumerate(s.backups)}
        return self._by_key
