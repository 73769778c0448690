"""Read a pg_dump archive's header and table of contents without a server."""

from __future__ import annotations

import re
import struct
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

# Archive format version -> the oldest PostgreSQL major whose pg_restore reads it.
ARCHIVE_MIN_MAJOR = {(1, 10): 8, (1, 11): 8, (1, 12): 9, (1, 13): 11, (1, 14): 12, (1, 15): 16, (1, 16): 17}
# The oldest archive this reader parses: 1.10 (PostgreSQL 8.1) added the versions to the header.
OLDEST = (1, 10)

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
    listed_by_pg_restore: bool = False  # read through pg_restore --list: entries carry no definitions
    reader: str = ""  # the pg_restore that listed it

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


# Every entry kind pg_dump writes, longest first, so "TABLE DATA" is not taken for "TABLE".
DESCS = sorted(
    ["TABLE DATA", "TABLE", "INDEX", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "SEQUENCE SET", "SEQUENCE",
     "SEQUENCE OWNED BY", "DEFAULT ACL", "ACL", "COMMENT", "SCHEMA", "EXTENSION", "FUNCTION", "PROCEDURE", "VIEW",
     "MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "TRIGGER", "POLICY", "ROW SECURITY", "TYPE", "DOMAIN",
     "DEFAULT", "TABLE ATTACH", "INDEX ATTACH", "RULE", "AGGREGATE", "SECURITY LABEL", "PUBLICATION",
     "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "EVENT TRIGGER",
     "COLLATION", "CONVERSION", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "CAST", "DATABASE PROPERTIES",
     "DATABASE", "LARGE OBJECT", "BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECTS", "ENCODING", "STDSTRINGS",
     "SEARCHPATH", "FOREIGN TABLE", "FOREIGN DATA WRAPPER", "SERVER", "USER MAPPING", "TEXT SEARCH CONFIGURATION",
     "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "PROCEDURAL LANGUAGE", "TRANSFORM",
     "ACCESS METHOD", "STATISTICS", "SHELL TYPE", "DUMMY TYPE"],
    key=len, reverse=True,
)
TABLE_DESCS = frozenset({"TABLE"})
DATA_DESCS = frozenset({"TABLE DATA", "BLOBS", "BLOB", "LARGE OBJECTS", "SEQUENCE SET"})


_MAJOR = re.compile(r"(?<![\w.])(\d+)(?:\.\d+)*(?:devel|beta\d*|rc\d*|alpha\d*)?(?![\w.])", re.I)


def major_of(version: str | None) -> int | None:
    """``15.4 (Debian 15.4-1)`` -> 15; ``9.6.24`` -> 9; ``15beta2``, ``16devel``, ``17rc1`` -> 15, 16, 17.

    Anything without a version number (vendor text alone, an empty string) is unknown: None.
    """
    if not version:
        return None
    m = _MAJOR.search(version.strip())
    if not m:
        return None
    major = int(m.group(1))
    return major if 7 <= major <= 99 else None


def version_key(version: str) -> tuple[int, str]:
    """Sort key for version strings of any shape; unknown ones sort first."""
    return (major_of(version) or 0, version)


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
    if (vmaj, vmin) < OLDEST:
        raise ArchiveError(f"archive version {vmaj}.{vmin} is older than this reader supports")
    if vmaj != 1 or vmin > 99:
        raise ArchiveError(f"implausible archive version {vmaj}.{vmin}.{vrev}")
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
        if v >= (1, 14):
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


def read_archive(path: Path, fmt: str, stream: BinaryIO | None = None, header_only: bool = False) -> ArchiveInfo:
    """Read the header and TOC of a custom, directory or tar archive (``header_only``: the header, no entries).

    ``stream`` is the decompressed content of a custom or tar archive when the
    file itself is compressed; otherwise ``path`` is opened.
    """
    try:
        if fmt == "directory":
            with open(path / "toc.dat", "rb") as f:
                return _parse(f, "directory", header_only)
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
                    return _parse(handle, "tar", header_only)  # type: ignore[arg-type]
            finally:
                if stream is None:
                    src.close()
        if stream is not None:
            return _parse(stream, "custom", header_only)
        with open(path, "rb") as f:
            return _parse(f, "custom", header_only)
    except (OSError, tarfile.TarError, EOFError, struct.error) as exc:
        raise ArchiveError(str(exc)) from exc


def _parse(stream: BinaryIO, container: str, header_only: bool = False) -> ArchiveInfo:
    r = _Reader(stream)
    info = _read_header(r)
    if not header_only:
        _read_toc(r, info, container)
    return info


_LIST_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_LIST_HEADER = {
    "Dump Version": "version", "Format": "format", "dbname": "dbname", "Compression": "compression",
    "Dumped from database version": "server_version", "Dumped by pg_dump version": "dump_version",
}


def split_list_entry(rest: str) -> tuple[str, str, str, str]:
    """``TABLE DATA public actor postgres`` -> (desc, namespace, tag, owner), as ``pg_restore --list`` prints it."""
    for d in DESCS:
        if rest.startswith(d + " "):
            parts = rest[len(d) + 1:].split(" ")
            if len(parts) >= 3:
                namespace = "" if parts[0] == "-" else parts[0]
                return d, namespace, " ".join(parts[1:-1]), parts[-1]
            return d, "", " ".join(parts), ""
    return "", "", rest, ""


def parse_list(text: str) -> ArchiveInfo:
    """An ArchiveInfo from ``pg_restore --list`` output: names and kinds of entries, no definitions.

    Used where this reader cannot parse an archive that pg_restore itself reads.
    """
    head: dict[str, str] = {}
    entries: list[TocEntry] = []
    for line in text.splitlines():
        if line.startswith(";"):
            key, sep, value = line.lstrip(";").strip().partition(":")
            if sep and key.strip() in _LIST_HEADER:
                head[_LIST_HEADER[key.strip()]] = value.strip()
            continue
        m = _LIST_ENTRY.match(line)
        if m:
            desc, namespace, tag, owner = split_list_entry(m.group(4))
            entries.append(TocEntry(int(m.group(1)), desc, namespace, tag, owner, "", "",
                                    desc in DATA_DESCS, False))
    nums = re.findall(r"\d+", head.get("version", ""))
    version = tuple(int(n) for n in (nums + ["0", "0", "0"])[:3]) if nums else (0, 0, 0)
    fmt = {"CUSTOM": 1, "TAR": 3, "DIRECTORY": 5}.get(head.get("format", "").upper(), 0)
    info = ArchiveInfo(version, fmt, head.get("compression", ""), None, head.get("dbname", ""),  # type: ignore[arg-type]
                       head.get("server_version", ""), head.get("dump_version", ""))
    info.entries = entries
    info.listed_by_pg_restore = True
    return info


_ZERO_BLOCK = bytes(512)


def _tar_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def tar_problems(path: Path, expected: list[str]) -> list[str]:
    """What is wrong with a tar file's structure: damaged headers, members cut short, members the
    table of contents names but the file lacks, and a missing end-of-archive marker.

    Python's tarfile stops quietly at a short or missing end; pg_restore then restores what is there,
    so a tar-format dump cut in half would otherwise pass.
    """
    problems: list[str] = []
    size = path.stat().st_size
    found: set[str] = set()
    pos = 0
    with open(path, "rb") as f:
        while True:
            f.seek(pos)
            block = f.read(512)
            if len(block) < 512:
                problems.append(f"the tar archive ends at byte {size:,} without its end-of-archive blocks: "
                                "it was cut short")
                break
            if block == _ZERO_BLOCK:
                if f.read(512) != _ZERO_BLOCK:
                    problems.append(f"the tar archive's end-of-archive marker at byte {pos:,} is incomplete")
                break
            stored = block[148:156]
            computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
            try:
                declared = _tar_number(stored)
                length = _tar_number(block[124:136])
            except ValueError:
                problems.append(f"the tar header at byte {pos:,} is damaged (unreadable numbers)")
                break
            if declared != computed:
                problems.append(f"the tar header at byte {pos:,} is damaged (checksum {declared} != {computed})")
                break
            name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if block[257:262] == b"ustar" else ""
            name = f"{prefix}/{name}" if prefix else name
            end = pos + 512 + length
            if end > size:
                problems.append(f"tar member {name} is cut short: {max(0, size - pos - 512):,} of {length:,} bytes")
                break
            found.add(name)
            pos += 512 + (length + 511) // 512 * 512
    missing = [m for m in expected if m not in found]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        problems.append(f"the table of contents names data member(s) the tar archive lacks: {shown}")
    return problems


def directory_problems(path: Path, info: ArchiveInfo) -> list[str]:
    """Data files the table of contents of a directory-format dump names but the folder lacks."""
    missing = []
    for e in info.entries:
        if e.filename and not any((path / (e.filename + sfx)).is_file() for sfx in ("", ".gz", ".lz4", ".zst")):
            missing.append(e.filename)
    if not missing:
        return []
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return [f"the table of contents names data file(s) the folder lacks: {shown}"]


def member_problems(path: Path, fmt: str, info: ArchiveInfo) -> list[str]:
    """Structural damage a TOC read alone does not show, for tar and directory archives."""
    if fmt == "tar":
        return tar_problems(path, ["toc.dat", *(e.filename for e in info.entries if e.filename)])
    if info.listed_by_pg_restore:
        return []
    if fmt == "directory":
        return directory_problems(path, info)
    return []
