"""Physical backups, found by content: ``pg_basebackup`` outputs (plain or tar, gzip/lz4/zstd) and WAL archives.

A base backup is a folder holding a data directory (``PG_VERSION`` and ``backup_label``) or the tar files
pg_basebackup writes (``base.tar`` whose first member is ``backup_label``), whatever the folder is called. A WAL
archive is a folder of files named as WAL segments whose first page is a WAL segment's long header. Nothing here
starts a server or runs a tool: it reads bytes.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..sniff import compression_of, open_decompressed

# A WAL page's magic number names the major version that wrote it (src/include/access/xlog_internal.h).
WAL_MAGIC = {0xD093: 9, 0xD097: 10, 0xD098: 11, 0xD101: 12, 0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16,
             0xD116: 17, 0xD118: 18}
XLP_LONG_HEADER = 0x0002
SEGMENT_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})((?:\.partial)?)(\.gz|\.zst|\.lz4|\.xz|\.bz2)?$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history(\.gz)?$")
BACKUP_NAME = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup(\.gz)?$")
_LABEL_FILE = re.compile(r"\(file ([0-9A-F]{24})\)")
_BASE_TAR = re.compile(r"^base\.tar(\.gz|\.lz4|\.zst)?$")
_TABLESPACE_TAR = re.compile(r"^(\d+)\.tar(\.gz|\.lz4|\.zst)?$")
_WAL_TAR = re.compile(r"^pg_wal\.tar(\.gz|\.lz4|\.zst)?$")


class PhysicalError(Exception):
    """A physical backup or WAL archive that cannot be read as one; the message names the file."""


def parse_label(text: str) -> dict[str, str]:
    """``backup_label`` (or an archived ``.backup`` file): ``KEY: value`` per line."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def label_time(value: str) -> datetime | None:
    """``2026-12-07 14:34:42 UTC`` (or another zone abbreviation PostgreSQL writes) as UTC."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\s+(\S+))?", value or "")
    if not m:
        return None
    when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    zone = m.group(2) or "UTC"
    if re.fullmatch(r"[+-]\d\d(:?\d\d)?", zone):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[-2:]) if len(zone) > 3 else 0
        return (when - sign * timedelta(hours=hours, minutes=minutes)).replace(tzinfo=UTC)
    return when.replace(tzinfo=UTC)  # GMT, UTC; another abbreviation is read as UTC (said by the start time)


def lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def label_start(label: dict[str, str]) -> str:
    """The first WAL segment a backup_label names ("" when it names none)."""
    m = _LABEL_FILE.search(label.get("START WAL LOCATION", ""))
    return m.group(1) if m else ""


@dataclass(frozen=True)
class BaseBackup:
    """What a base backup says of itself, read without a server."""

    path: Path
    layout: str  # plain or tar
    major: int
    label: dict[str, str]
    compression: tuple[str, ...] = ()  # of its tar files
    tars: tuple[Path, ...] = ()  # base.tar*, then tablespaces' OID.tar*
    wal_tar: Path | None = None  # pg_wal.tar* (-X stream in tar format)
    manifest: Path | None = None  # backup_manifest (13+)
    tablespaces: tuple[str, ...] = ()  # OIDs

    @property
    def started(self) -> datetime | None:
        return label_time(self.label.get("START TIME", ""))

    @property
    def start_segment(self) -> str:
        return label_start(self.label)

    @property
    def timeline(self) -> int:
        try:
            return int(self.label.get("START TIMELINE", "1"))
        except ValueError:
            return 1

    def describe(self) -> str:
        layers = "+".join(self.compression)
        return f"pg_basebackup {self.layout}{' in ' + layers if layers else ''}, PostgreSQL {self.major}"


def tablespace_folders(bb: BaseBackup) -> list[Path]:
    """The folders a plain base backup's ``pg_tblspc`` links lead to (resolved; none for a tar backup)."""
    if bb.layout != "plain":
        return []
    out = []
    for oid in bb.tablespaces:
        try:
            out.append((bb.path / "pg_tblspc" / oid).resolve(strict=True))
        except (OSError, RuntimeError):
            continue
    return out


def tar_layers(path: Path) -> tuple[str, ...]:
    with open(path, "rb") as f:
        kind = compression_of(f.read(8))
    return (kind,) if kind else ()


def _read_tar_head(path: Path, layers: tuple[str, ...], budget: int = 4096) -> dict[str, bytes]:
    """backup_label and PG_VERSION from the start of a base.tar (read no further than they are)."""
    found: dict[str, bytes] = {}
    try:
        with open_decompressed(path, layers) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for i, member in enumerate(tar):
                name = member.name.removeprefix("./")
                if name in ("backup_label", "PG_VERSION", "tablespace_map") and member.isfile() and \
                        member.size < 65536:
                    handle = tar.extractfile(member)
                    found[name] = handle.read() if handle is not None else b""
                if i >= budget or (i > 64 and "backup_label" not in found) or \
                        ("backup_label" in found and "PG_VERSION" in found):
                    break
    except (OSError, tarfile.TarError, EOFError, ValueError):
        if "backup_label" not in found:
            raise  # damage further on is the integrity check's to find: the start says what the file is
    return found


def read(folder: Path) -> BaseBackup | None:
    """The base backup ``folder`` holds, or None when it holds none (a pg_dump folder, anything else)."""
    try:
        if not folder.is_dir():
            return None
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return None
    manifest = folder / "backup_manifest" if "backup_manifest" in names else None
    if "PG_VERSION" in names and "backup_label" in names:
        try:
            major = int((folder / "PG_VERSION").read_text().strip().split(".")[0])
            label = parse_label((folder / "backup_label").read_text(errors="replace"))
        except (OSError, ValueError):
            return None
        spaces = tuple(sorted(p.name for p in (folder / "pg_tblspc").glob("*")))
        return BaseBackup(folder, "plain", major, label, manifest=manifest, tablespaces=spaces)
    base = next((folder / n for n in sorted(names) if _BASE_TAR.match(n)), None)
    if base is None:
        return None
    try:
        layers = tar_layers(base)
        head = _read_tar_head(base, layers)
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return None
    if "backup_label" not in head or "PG_VERSION" not in head:
        return None
    try:
        major = int(head["PG_VERSION"].decode().strip().split(".")[0])
    except ValueError:
        return None
    spaces = tuple(sorted(m.group(1) for n in names if (m := _TABLESPACE_TAR.match(n))))
    tars = (base, *(folder / n for n in sorted(names) if _TABLESPACE_TAR.match(n)))
    wal = next((folder / n for n in sorted(names) if _WAL_TAR.match(n)), None)
    return BaseBackup(folder, "tar", major, parse_label(head["backup_label"].decode(errors="replace")), layers,
                      tars, wal, manifest, spaces)


# --- WAL archives ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    name: str  # the 24 hex digits
    path: Path
    timeline: int
    number: int  # segment number within the WAL, across log files
    modified: datetime  # when the archive received it
    compression: tuple[str, ...] = ()
    partial: bool = False


@dataclass(frozen=True)
class Gap:
    """Segments missing between two that are in the archive."""

    first_missing: str
    count: int
    after: Segment  # the last segment before the gap
    resumes: Segment  # the first after it


@dataclass
class WalArchive:
    path: Path
    segment_size: int
    major: int | None
    segments: list[Segment] = field(default_factory=list)
    stops: dict[str, datetime] = field(default_factory=dict)  # start segment of a base backup -> its STOP TIME
    histories: list[str] = field(default_factory=list)
    # (name, target, the restored data directory it is for): a repository's own way to get a file
    fetch: Callable[[str, Path, Path], bool] | None = None

    def per_log(self) -> int:
        return 0x100000000 // self.segment_size

    def number(self, name: str) -> int:
        return int(name[8:16], 16) * self.per_log() + int(name[16:24], 16)

    def name_of(self, timeline: int, number: int) -> str:
        return f"{timeline:08X}{number // self.per_log():08X}{number % self.per_log():08X}"

    @property
    def newest(self) -> Segment | None:
        whole = [s for s in self.segments if not s.partial]
        return max(whole, key=lambda s: (s.number, s.timeline)) if whole else None

    def gaps(self, start: str | None = None) -> list[Gap]:
        """Runs of segment numbers with no segment on any timeline, from ``start`` (a segment name: the oldest
        base backup's first) to the newest segment."""
        by_number: dict[int, Segment] = {}
        for s in self.segments:
            if not s.partial and (s.number not in by_number or s.timeline > by_number[s.number].timeline):
                by_number[s.number] = s
        if not by_number:
            return []
        numbers = sorted(by_number)
        first = self.number(start) if start else numbers[0]
        numbers = [n for n in numbers if n >= first]
        gaps: list[Gap] = []
        if numbers and numbers[0] > first:  # the backup's own first segment is not there
            return [Gap(self.name_of(by_number[numbers[0]].timeline, first), numbers[0] - first,
                        by_number[numbers[0]], by_number[numbers[0]])]
        for before, after in zip(numbers, numbers[1:], strict=False):
            if after > before + 1:
                missing = self.name_of(by_number[after].timeline, before + 1)
                gaps.append(Gap(missing, after - before - 1, by_number[before], by_number[after]))
        return gaps


def segment_header(path: Path, layers: tuple[str, ...] = ()) -> tuple[int, int] | None:
    """(major, segment size) from a WAL segment's first page, or None when it is not one."""
    try:
        with open_decompressed(path, layers) as f:
            head = f.read(40)
    except Exception:  # noqa: BLE001 (an unreadable file is no segment)
        return None
    if len(head) < 40:
        return None
    magic, info = struct.unpack_from("<HH", head, 0)
    if magic not in WAL_MAGIC or not info & XLP_LONG_HEADER:
        return None
    seg_size = struct.unpack_from("<I", head, 32)[0]
    if seg_size < 1 << 20 or seg_size > 1 << 30 or seg_size & (seg_size - 1):
        return None
    return WAL_MAGIC[magic], seg_size


def _layers_of(name: str) -> tuple[str, ...]:
    return {".gz": ("gzip",), ".zst": ("zstd",), ".lz4": ("lz4",), ".xz": ("xz",), ".bz2": ("bz2",)}.get(
        Path(name).suffix, ())


def file_layers(path: Path) -> tuple[str, ...]:
    """A WAL file's compression: its suffix says, else its first bytes (Barman compresses segments under their
    own names); a file that cannot be read is taken as it is (reading it then says what is wrong)."""
    layers = _layers_of(path.name)
    if layers:
        return layers
    try:
        return tar_layers(path)
    except OSError:
        return ()


_HASH_DIR = re.compile(r"^[0-9A-F]{16}$")


def _archive_entries(folder: Path) -> list[os.DirEntry[str]]:
    """The files of an archive: at its top, and in Barman's folders of one timeline and log each."""
    entries = []
    for e in os.scandir(folder):
        if e.is_file():
            entries.append(e)
        elif _HASH_DIR.match(e.name) and e.is_dir(follow_symlinks=False):
            entries += [inner for inner in os.scandir(e.path) if inner.is_file()]
    return sorted(entries, key=lambda e: e.name)


def is_wal_archive(folder: Path) -> bool:
    """A folder whose files are WAL segments (and the history and backup files an archive holds), the first
    segment's header proving it: an archive found by what it holds, whatever it is called."""
    try:
        entries = [e for e in _archive_entries(folder) if not e.name.startswith(".")]
    except OSError:
        return False
    segments = sorted(e.path for e in entries if SEGMENT_NAME.match(e.name))
    if not segments:
        return False
    others = [e for e in entries if not (SEGMENT_NAME.match(e.name) or HISTORY_NAME.match(e.name)
                                          or BACKUP_NAME.match(e.name))]
    if len(others) > len(segments):
        return False
    return segment_header(Path(segments[0]), file_layers(Path(segments[0]))) is not None


def read_archive(folder: Path) -> WalArchive:
    """Every segment of the archive (named, not read: the first one's header gives the size), the stop times of
    the base backups it recorded, its timeline histories."""
    entries = _archive_entries(folder)
    first = next((e for e in entries if SEGMENT_NAME.match(e.name)), None)
    header = segment_header(Path(first.path), file_layers(Path(first.path))) if first else None
    archive = WalArchive(folder, header[1] if header else 16 << 20, header[0] if header else None)
    for e in entries:
        m = SEGMENT_NAME.match(e.name)
        if m:
            st = e.stat()
            archive.segments.append(Segment(
                e.name[:24], Path(e.path), int(m.group(1), 16), archive.number(e.name[:24]),
                datetime.fromtimestamp(st.st_mtime, UTC), _layers_of(e.name), bool(m.group(4))))
        elif BACKUP_NAME.match(e.name):
            try:
                with open_decompressed(Path(e.path), file_layers(Path(e.path))) as f:
                    label = parse_label(f.read(65536).decode(errors="replace"))
            except Exception:  # noqa: BLE001 (an unreadable .backup file only loses a stop time)
                continue
            stop = label_time(label.get("STOP TIME", ""))
            if stop is not None:
                archive.stops[e.name[:24]] = stop
        elif HISTORY_NAME.match(e.name):
            archive.histories.append(e.name)
    return archive


# --- under a remote prefix -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteBase:
    """A folder of a listing holding a base backup: pg_basebackup's tar output (``base`` is its ``base.tar``) or a
    plain data directory (``base`` is its ``backup_label``, ``PG_VERSION`` beside it), told by its bytes once
    downloaded; and its WAL archive's folder where one is beside it."""

    folder: str  # key prefix, ending with /
    base: Any  # the base.tar or backup_label object (base.Listed)
    others: tuple[Any, ...]  # every other object of the backup (a plain one's under its subfolders too)
    wal_folder: str = ""

    @property
    def size(self) -> int:
        return self.base.size + sum(o.size for o in self.others)

    @property
    def plain(self) -> bool:
        return self.base.key.endswith("/backup_label")


def member_path(folder_url: str, url: str) -> Path | None:
    """Where an object of a remote base backup goes inside the folder it is gathered in: its key below the
    backup's folder, or None when that path would leave it (an empty, ``.`` or ``..`` part: keys are anybody's)."""
    if not url.startswith(folder_url):
        return None
    parts = url[len(folder_url):].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return Path(*parts)


def remote_layout(objects: list[Any]) -> tuple[list[RemoteBase], set[str]]:
    """The base backups and WAL archives among a listing's objects (by name: no byte is read while listing), and
    the keys they account for."""
    keys = {o.key for o in objects}
    plain_folders = sorted({o.key[: -len("backup_label")] for o in objects if o.key.endswith("/backup_label")
                            and o.key[: -len("backup_label")] + "PG_VERSION" in keys})
    plain_folders = [f for f in plain_folders if not any(f != g and f.startswith(g) for g in plain_folders)]
    by_folder: dict[str, list[Any]] = {}
    in_plain: dict[str, list[Any]] = {f: [] for f in plain_folders}
    for o in objects:
        if o.key.endswith("/"):
            continue
        owner = next((f for f in plain_folders if o.key.startswith(f)), None)
        if owner is not None:
            in_plain[owner].append(o)
        else:
            by_folder.setdefault(o.key[: o.key.rfind("/") + 1], []).append(o)

    def wal_folder(items: list[Any]) -> bool:
        names = [o.key.rsplit("/", 1)[-1] for o in items]
        return any(SEGMENT_NAME.match(n) for n in names) and all(
            SEGMENT_NAME.match(n) or HISTORY_NAME.match(n) or BACKUP_NAME.match(n) for n in names)

    def beside(folder: str) -> str:
        parent = folder.rstrip("/").rsplit("/", 1)[0] + "/" if "/" in folder.rstrip("/") else ""
        grand = parent.rstrip("/").rsplit("/", 1)[0] + "/" if "/" in parent.rstrip("/") else ""
        near = [w for w in wals if w.startswith(parent) and w.count("/") == parent.count("/") + 1] or \
               [w for w in wals if w.startswith(grand) and w.count("/") == grand.count("/") + 1]
        return near[0] if near else ""

    wals = sorted(f for f, items in by_folder.items() if wal_folder(items))
    found, consumed = [], set()
    for folder, items in sorted(in_plain.items()):
        label = next(o for o in items if o.key == folder + "backup_label")
        found.append(RemoteBase(folder, label, tuple(o for o in items if o is not label), beside(folder)))
        consumed |= {o.key for o in items}
    for folder, items in sorted(by_folder.items()):
        base = next((o for o in items if _BASE_TAR.match(o.key.rsplit("/", 1)[-1])), None)
        if base is None:
            continue
        found.append(RemoteBase(folder, base, tuple(o for o in items if o is not base), beside(folder)))
        consumed |= {o.key for o in items}
    for w in wals:
        consumed |= {o.key for o in by_folder[w]}
    return found, consumed


def start_from_manifest(text: bytes, segment_size: int = 16 << 20) -> str:
    """The first WAL segment a backup needs, from its backup_manifest's first WAL range ("" when it gives none)."""
    try:
        doc = json.loads(text)
        first = doc["WAL-Ranges"][0]
        start, timeline = lsn(first["Start-LSN"]), int(first["Timeline"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    number = start // segment_size
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


@dataclass(frozen=True)
class RemoteStart:
    """What a listing-level check needs of a remote base backup without downloading it."""

    start_segment: str


def remote_archive(remote: Any, url: str) -> WalArchive:
    """A WAL archive under a remote prefix: its segments as listed; fetching one downloads it (through the run's
    download cache) and decompresses it into place."""
    from . import kind_of

    kind = kind_of(url)
    if kind is None or remote is None:
        raise PhysicalError(f"{url}: no access to its store configured")
    _location, objects = kind.list_location(remote, url)
    wal = WalArchive(Path("/") / url.replace("://", "/", 1), 16 << 20, None)
    by_name: dict[str, Any] = {}
    for o in objects:
        base = o.key.rsplit("/", 1)[-1]
        m = SEGMENT_NAME.match(base)
        if m:
            wal.segments.append(Segment(base[:24], Path(o.key), int(m.group(1), 16), wal.number(base[:24]),
                                        o.last_modified, _layers_of(base), bool(m.group(4))))
            by_name.setdefault(base[:24], o)
        elif HISTORY_NAME.match(base):
            wal.histories.append(base.removesuffix(".gz"))
            by_name[base.removesuffix(".gz")] = o

    def fetch(name: str, target: Path, _datadir: Path) -> bool:
        o = by_name.get(name)
        if o is None:
            return False
        got = remote.fetch(o.url, o.size, o.last_modified, o.etag)
        with open_decompressed(got.path, _layers_of(o.key)) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return True

    wal.fetch = fetch
    return wal


def physical_of(artifact: Any, remote: Any = None) -> Any:
    """What a physical artifact is (a ``BaseBackup``, a pgBackRest or Barman backup read through their own
    commands), or None. ``remote``: the run's access to remote sources (a Barman backup's endpoint and profile)."""
    if artifact.format == "basebackup":
        return read(artifact.path)
    if artifact.format == "pgbackrest":
        from . import pgbackrest

        return pgbackrest.find(artifact, remote)
    if artifact.is_remote and artifact.role == "basebackup":  # not downloaded: its label or manifest gives the start
        folder_url = artifact.url.rsplit("/", 1)[0] + "/"
        label = artifact.url.endswith("/backup_label")
        small = artifact.url if label else \
            next((m[0] for m in artifact.members if m[0] == folder_url + "backup_manifest"), None)
        if small is None or remote is None:
            return None
        import tempfile

        with tempfile.TemporaryDirectory(prefix="backupcheck-manifest-") as tmp:
            target = Path(tmp) / "small"
            remote.fetch_small(small, target, 256 << 20)
            text = target.read_bytes()
        return RemoteStart(label_start(parse_label(text.decode(errors="replace"))) if label
                           else start_from_manifest(text))
    if artifact.format == "barman":
        from . import barman

        source, server, backup_id = barman.split_url(artifact.url)
        return barman.backup(source, server, backup_id, barman.access_of(remote, artifact.url), artifact.path)
    return None


def find_archive(backup_folder: Path) -> Path | None:
    """The WAL archive beside a base backup: a sibling folder, or one beside the folder that holds the base
    backups (``backups/base/<each>`` with ``backups/wal``), found by content; the nearest wins. ``backup_folder``
    is the backup's own folder: for ``backups/shop/<night>/data``, the night's."""
    for place in (backup_folder.parent, backup_folder.parent.parent):
        try:
            siblings = sorted(p for p in place.iterdir() if p.is_dir() and p != backup_folder)
        except OSError:
            continue
        for p in siblings:
            if not p.name.startswith(".") and is_wal_archive(p):
                return p
    return None
