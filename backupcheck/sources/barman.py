"""Barman's backups.

Cloud backups (``barman-cloud-backup``) under an S3 prefix, read with Barman's own commands
(``barman-cloud-backup-show``, ``barman-cloud-restore``, ``barman-cloud-wal-restore``, from its PyPI package): the
layout ``<prefix>/<server>/base/<backup id>/backup.info`` with ``<prefix>/<server>/wals/`` beside it is found in
the listing; each server is a series, each backup id one backup of it. Nothing of it is downloaded by us.

A Barman server's own folder (``barman backup``, rsync or postgres method): ``<server>/base/<id>/data`` is a base
backup as pg_basebackup or rsync left it (plain, or tars with ``backup_compression``), ``<server>/wals/`` the WAL
archive (segments in a folder per timeline and log, compressed by ``compression`` without a suffix: told by their
bytes), ``<server>/meta/<id>-backup.info`` (``base/<id>/backup.info`` before 3.13.2) what Barman recorded of the
backup. Those are read as files (Barman's own reader is no public interface: it wants a configured server, and
its module cannot be imported alone); ``barman`` itself is never run on them: its commands take locks and write
in the folder, and a source is never changed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .base import Listed
from .basebackup import SEGMENT_NAME, Segment, WalArchive

LAYOUT = re.compile(r"^(?P<server>(?:.*/)?(?P<name>[^/]+))/base/(?P<id>[^/]+)/backup\.info$")


class BarmanError(Exception):
    """Barman's commands are missing or failed; the message says which and what to do (no secret in it)."""


@dataclass(frozen=True)
class Found:
    """One backup of a Barman cloud layout in a listing."""

    source: str  # s3://bucket/<prefix>: Barman's source_url
    server: str
    backup_id: str
    info: Listed  # its backup.info object
    size: int  # bytes of its objects


def find(objects: list[Listed]) -> tuple[list[Found], set[str]]:
    """The Barman backups among a listing's objects, and the keys that belong to their layouts (read with them,
    not as backups of their own: data.tar, WAL files)."""
    found, servers = [], set()
    for o in objects:
        m = LAYOUT.match(o.key)
        if m:
            server_key = m.group("server")
            servers.add(server_key)
            base = f"{server_key}/base/{m.group('id')}/"
            size = sum(x.size for x in objects if x.key.startswith(base))
            prefix = server_key.rsplit("/", 1)[0] if "/" in server_key else ""
            source = f"{o.scheme}://{o.container}" + (f"/{prefix}" if prefix else "")
            found.append(Found(source, m.group("name"), m.group("id"), o, size))
    consumed = {o.key for o in objects if any(o.key.startswith(s + "/") for s in servers)}
    return found, consumed


def command(name: str) -> str:
    """A barman-cloud command: on PATH, or beside the interpreter that runs backupcheck (its virtualenv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise BarmanError(f"{name} is not installed here, and Barman's cloud backups are read with it: "
                          "pip install barman (its barman-cloud-* commands need boto3)")
    return found


@dataclass(frozen=True)
class Access:
    """How Barman's commands reach the store: the source's endpoint, profile and region (credentials stay in
    boto3's standard chain)."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None

    def args(self) -> list[str]:
        out = ["--cloud-provider", "aws-s3"]
        if self.endpoint_url:
            out += ["--endpoint-url", self.endpoint_url]
        if self.profile:
            out += ["--aws-profile", self.profile]
        return out  # the region goes in the environment: not every barman-cloud command takes --aws-region


def run(name: str, access: Access, *args: str, timeout: float = 6 * 3600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if access.region:
        env["AWS_DEFAULT_REGION"] = access.region
    return subprocess.run([command(name), *access.args(), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stderr or proc.stdout).strip()[-800:]


@functools.lru_cache(maxsize=256)
def show(source: str, server: str, backup_id: str, access: Access) -> dict[str, Any]:
    """What Barman recorded of a cloud backup (asked once per process: the integrity check, the archive checks
    and the recovery each want it, and each asking is a command that lists the bucket)."""
    proc = run("barman-cloud-backup-show", access, "--format", "json", source, server, backup_id, timeout=600)
    if proc.returncode != 0:
        raise BarmanError(f"barman-cloud-backup-show of {server}/{backup_id} failed: {_said(proc)}")
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BarmanError(f"barman-cloud-backup-show of {server}/{backup_id} gave no JSON ({exc})") from None
    if not isinstance(doc, dict):
        return {}
    if server in doc:
        return doc[server]
    inner = list(doc.values())  # {server_name: backup.info}, whatever name the backup recorded
    return inner[0] if len(inner) == 1 and isinstance(inner[0], dict) else doc


@dataclass(frozen=True)
class BarmanBackup:
    """A Barman cloud backup, as barman-cloud-backup-show describes it."""

    source: str
    server: str
    backup_id: str
    access: Access
    major: int
    start_segment: str
    status: str
    path: Path  # where discovery groups it (/s3/bucket/…/base/ID)
    compression: tuple[str, ...] = ()
    tablespaces: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        return f"Barman cloud backup {self.backup_id} of server {self.server}, PostgreSQL {self.major}"

    def restore_into(self, datadir: Path) -> None:
        """``barman-cloud-restore`` into an empty ``datadir``; recovery is configured by the caller."""
        datadir.mkdir(parents=True, exist_ok=True)
        proc = run("barman-cloud-restore", self.access, self.source, self.server, self.backup_id, str(datadir))
        if proc.returncode != 0:
            raise OSError(f"barman-cloud-restore of {self.backup_id} failed: {_said(proc)}")


def backup(source: str, server: str, backup_id: str, access: Access, path: Path) -> BarmanBackup:
    doc = show(source, server, backup_id, access)
    version = int(doc.get("server_information", {}).get("server_version", doc.get("version", 0)) or 0)
    major = version // 10000 if version >= 100000 else version // 100
    return BarmanBackup(source, server, backup_id, access, major, str(doc.get("begin_wal") or ""),
                        str(doc.get("status", "")), path, details=doc)


def archive(objects: list[Listed], source: str, server: str, access: Access, major: int | None) -> WalArchive:
    """The server's WAL archive as the listing shows it (``wals/<timeline+log>/<segment>[.gz|…]``); fetching a file
    is ``barman-cloud-wal-restore`` (decompressed by Barman)."""
    bucket_prefix = source.split("://", 1)[1].partition("/")[2]
    wals = (f"{bucket_prefix}/" if bucket_prefix else "") + f"{server}/wals/"
    wal = WalArchive(Path("/") / source.split("://", 1)[0] / source.split("://", 1)[1] / server / "wals",
                     16 << 20, major)
    for o in objects:
        if not o.key.startswith(wals):
            continue
        base = o.key.rsplit("/", 1)[-1]
        name = base.split(".", 1)[0]
        if SEGMENT_NAME.match(name) and not base.endswith(".backup") and ".partial" not in base:
            wal.segments.append(Segment(name, Path(o.key), int(name[:8], 16), wal.number(name),
                                        _utc(o.last_modified), ()))
        elif re.fullmatch(r"[0-9A-F]{8}\.history(\..+)?", base):
            wal.histories.append(base.split(".history", 1)[0] + ".history")
    wal.segments.sort(key=lambda s: (s.number, s.timeline))

    def fetch(name: str, target: Path, _datadir: Path) -> bool:
        proc = run("barman-cloud-wal-restore", access, source, server, name, str(target), timeout=3600)
        return proc.returncode == 0 and target.exists()

    wal.fetch = fetch
    return wal


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/prefix/<server>/base/<id>`` -> (source, server, backup id)."""
    head, _, backup_id = url.rpartition("/base/")
    source, _, server = head.rpartition("/")
    return source, server, backup_id


def access_of(remote: Any, url: str) -> Access:
    """The endpoint, profile and region the run's settings give the source ``url`` is under."""
    options = remote.options_for(url) if remote is not None and hasattr(remote, "options_for") else None
    if options is None:
        return Access()
    return Access(options.endpoint_url, options.profile, options.region)


def list_archive(remote: Any, source: str, server: str, major: int | None) -> WalArchive:
    """The server's WAL archive, listed through the run's own (read-only) access to the store."""
    from . import kind_of

    url = f"{source}/{server}/wals/"
    kind = kind_of(url)
    if kind is None or remote is None:
        raise BarmanError(f"{url}: no access to its store configured")
    _location, objects = kind.list_location(remote, url)
    return archive(objects, source, server, access_of(remote, url), major)


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.astimezone()


# --- a Barman server's own folder ---------------------------------------------------------------------------------


def is_server(folder: Path) -> bool:
    """A Barman server's folder: ``base/`` and ``wals/`` with Barman's own files beside them."""
    try:
        return (folder / "base").is_dir() and (folder / "wals").is_dir() and (
            (folder / "identity.json").is_file() or (folder / "meta").is_dir()
            or any(p.name.endswith("xlog.db") for p in (folder / "wals").iterdir()))
    except OSError:
        return False


def parse_info(text: str) -> dict[str, str]:
    """A backup.info file: ``key=value`` lines (values as Barman printed them; ``None`` for none)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ServerBackup:
    """One backup of a Barman server's folder, with what Barman recorded of it."""

    server: Path  # the server's folder
    backup_id: str
    info: dict[str, str]

    @property
    def data(self) -> Path:
        return self.server / "base" / self.backup_id / "data"

    @property
    def status(self) -> str:
        return self.info.get("status", "")

    @property
    def error(self) -> str:
        return "" if self.info.get("error", "None") == "None" else self.info["error"]

    @property
    def incremental(self) -> bool:
        return self.info.get("backup_type") == "incremental" or self.info.get("parent_backup_id", "None") != "None"

    @property
    def begun(self) -> datetime | None:
        try:
            when = datetime.fromisoformat(self.info.get("begin_time", ""))
        except ValueError:
            return None
        return _utc(when)

    def describe(self) -> str:
        return f"Barman backup {self.backup_id} of server {self.server.name}"

    def refusal(self) -> str:
        """Why it cannot be recovered as it is ("" when it can)."""
        if self.incremental:
            return (f"{self.describe()} is a block-level incremental backup (PostgreSQL 17+): it is recovered only "
                    "with its parents through pg_combinebackup, which backupcheck does not run")
        return ""


def _info_text(server: Path, backup_id: str) -> str:
    for place in (server / "meta" / f"{backup_id}-backup.info", server / "base" / backup_id / "backup.info"):
        try:
            return place.read_text(errors="replace")[: 1 << 20]
        except OSError:
            continue
    return ""


def server_backups(server: Path) -> list[ServerBackup]:
    """Every backup of a Barman server's folder, oldest first (a folder of ``base/`` with no backup.info anywhere
    is a backup Barman never finished recording: status unknown)."""
    try:
        ids = sorted(p.name for p in (server / "base").iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [ServerBackup(server, i, parse_info(_info_text(server, i))) for i in ids]


def server_backup_of(data: Path) -> ServerBackup | None:
    """The Barman backup whose ``data`` folder this is, or None for a base backup outside any Barman server."""
    server = data.parent.parent.parent
    if data.name != "data" or data.parent.parent.name != "base" or not is_server(server):
        return None
    return ServerBackup(server, data.parent.name, parse_info(_info_text(server, data.parent.name)))
