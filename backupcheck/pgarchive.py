"""Read a pg_dump archive's header and table of contents without a server."""

from __future__ import annotations

import struct
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

# Archive format version -> the oldest PostgreSQL major whose pg_restore reads it.
ARCHIVE_MIN_MAJOR = {(1, 12): 9, (1, 13): 11, (1, 14): 12, (1, 15): 16, (1, 16): 17}

_OFFSET_NOT_SET = 1
_OFFSET_SET = 2


class ArchiveError(Exception):
    """The header or table of contents cannot be read."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    desc: str
    namespace: str
    tag: str
    owner: str
    defn: str
    copy_stmt: str
    has_data: bool
    offset_set: bool
    filename: str = ""
    tablespace: str = ""


@dataclass
class ArchiveInfo:
    version: tuple[int, int, int]
    format_byte: int
    compression: str
    created: datetime | None
    dbname: str
    server_version: str
    dump_version: str
    entries: list[TocEntry] = field(default_factory=list)

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def min_restore_major(self) -> int:
        return ARCHIVE_MIN_MAJOR.get(self.version[:2], 99)

    @property
    def dump_major(self) -> int | None:
        return major_of(self.dump_version)

    @property
    def has_offsets(self) -> bool:
        """False for an archive written to a pipe: it restores only sequentially."""
        return all(e.offset_set for e in self.entries if e.has_data and e.desc in DATA_DESCS)

    def tables(self) -> list[tuple[str, str]]:
        return [(e.namespace, e.tag) for e in self.entries if e.desc in TABLE_DESCS]

    def data_tables(self) -> list[tuple[str, str]]:
        return [(e.namespace, e.tag) for e in self.entries if e.desc == "TABLE DATA"]


TABLE_DESCS = frozenset({"TABLE"})
DATA_DESCS = frozenset({"TABLE DATA", "BLOBS", "BLOB", "LARGE OBJECTS", "SEQUENCE SET"})


def major_of(version: str) -> int | None:
    """``15.4 (Debian 15.4-1)`` -> 15; ``9.6.3`` -> 9."""
    try:
        head = version.strip().split()[0]
        return int(head.split(".")[0])
    except (ValueError, IndexError):
        return None


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.int_size = 4
        self.off_size = 8

    def take(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise ArchiveError(f"the table of contents ends early (wanted {n} bytes, got {len(data)})")
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        raw = self.take(self.int_size)
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str(self) -> str | None:
        n = self.int()
        if n < 0:
            return None
        if n > 256 * 1024 * 1024:
            raise ArchiveError(f"implausible string length {n} in the table of contents")
        return self.take(n).decode("utf-8", errors="replace")

    def offset(self) -> tuple[int, int]:
        flag = self.byte()
        raw = self.take(self.off_size)
        return flag, int.from_bytes(raw, "little")


def _read_header(r: _Reader) -> ArchiveInfo:
    if r.take(5) != b"PGDMP":
        raise ArchiveError("no PGDMP signature")
    vmaj, vmin, vrev = r.byte(), r.byte(), r.byte()
    if (vmaj, vmin) < (1, 12):
        raise ArchiveError(f"archive version {vmaj}.{vmin} is older than this reader supports")
    r.int_size = r.byte()
    r.off_size = r.byte()
    if not (1 <= r.int_size <= 8 and 1 <= r.off_size <= 16):
        raise ArchiveError(f"implausible int size {r.int_size} / offset size {r.off_size}")
    fmt = r.byte()
    if (vmaj, vmin) >= (1, 15):
        algo = r.byte()
        compression = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}.get(algo, f"unknown({algo})")
    else:
        level = r.int()
        compression = "none" if level == 0 else f"gzip(level {level})"
    tm = [r.int() for _ in range(7)]
    try:
        created = datetime(tm[5] + 1900, tm[4] + 1, tm[3], tm[2], tm[1], tm[0], tzinfo=UTC)
    except ValueError:
        created = None
    dbname = r.str() or ""
    server_version = r.str() or ""
    dump_version = r.str() or ""
    return ArchiveInfo((vmaj, vmin, vrev), fmt, compression, created, dbname, server_version, dump_version)


def _read_toc(r: _Reader, info: ArchiveInfo, container: str) -> None:
    count = r.int()
    if not 0 <= count <= 10_000_000:
        raise ArchiveError(f"implausible number of table-of-contents entries: {count}")
    v = info.version[:2]
    for _ in range(count):
        dump_id = r.int()
        has_data = r.int() != 0
        r.str()  # table oid
        r.str()  # oid
        tag = r.str() or ""
        desc = r.str() or ""
        r.int()  # section
        defn = r.str() or ""
        r.str()  # drop statement
        copy_stmt = r.str() or ""
        namespace = r.str() or ""
        tablespace = r.str() or ""
        r.str()  # table access method
        if v >= (1, 16):
            r.int()  # relkind
        owner = r.str() or ""
        r.str()  # "false": tables WITH OIDS are gone
        while r.str() is not None:  # dependencies
            pass
        offset_set = True
        filename = ""
        if container == "custom":
            flag, _pos = r.offset()
            offset_set = flag != _OFFSET_NOT_SET
        else:
            filename = r.str() or ""
        info.entries.append(
            TocEntry(dump_id, desc, namespace, tag, owner, defn, copy_stmt, has_data, offset_set, filename, tablespace)
        )


def read_archive(path: Path, fmt: str, stream: BinaryIO | None = None) -> ArchiveInfo:
    """Read the header and TOC of a custom, directory or tar archive.

    ``stream`` is the decompressed content of a custom or tar archive when the
    file itself is compressed; otherwise ``path`` is opened.
    """
    try:
        if fmt == "directory":
            with open(path / "toc.dat", "rb") as f:
                return _parse(f, "directory")
        if fmt == "tar":
            src = stream if stream is not None else open(path, "rb")
            try:
                with tarfile.open(fileobj=src, mode="r|") as tar:
                    member = tar.next()
                    if member is None or member.name != "toc.dat":
                        raise ArchiveError("the tar archive does not start with toc.dat")
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise ArchiveError("toc.dat is not a regular member")
                    return _parse(handle, "tar")  # type: ignore[arg-type]
            finally:
                if stream is None:
                    src.close()
        if stream is not None:
            return _parse(stream, "custom")
        with open(path, "rb") as f:
            return _parse(f, "custom")
    except (OSError, tarfile.TarError, EOFError, struct.error) as exc:
        raise ArchiveError(str(exc)) from exc


def _parse(stream: BinaryIO, container: str) -> ArchiveInfo:
    r = _Reader(stream)
    info = _read_header(r)
    _read_toc(r, info, container)
    return info
