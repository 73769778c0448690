"""A physical backup restored the only way it can be: recovered. The base backup is unpacked into a disposable data
directory, the WAL it needs is staged beside it from the archive, and a server of the backup's own major version
replays it (to the end of the archive, or to a target time or restore point) and is promoted; then the restored
databases answer every family's questions as a dump's restore does.

The backup's own settings never run: its postgresql.conf, postgresql.auto.conf, pg_hba.conf and pg_ident.conf are
replaced (no archive_command, no preload library, no listening address: a private socket only), its event triggers
are disabled before any command of ours, and the server runs as its own OS account, reading WAL only from a
staging folder of its own (the archive is never written to).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..servers import pgbin
from ..servers.cluster import Cluster, ClusterFactory, ServerStartError, _pdeathsig, server_user
from ..servers.containers import ContainerInstallation, installation_in_image
from ..sniff import open_decompressed
from ..sources import barman, basebackup, is_remote, pgbackrest
from ..sources.barman import BarmanBackup
from ..sources.base import RemoteError
from ..sources.basebackup import BaseBackup
from ..sources.pgbackrest import RestBackup
from . import progress
from .database import NoServer, RestoredBackup, RestoreRefused, table_sizes
from .errors import HARMFUL, RestoreError
from .providers import LocalProvider
from .targets import LocalTarget

log = logging.getLogger(__name__)
_HOMES = itertools.count(1)  # recovery folders made by this process

Physical = BaseBackup | RestBackup | BarmanBackup  # what a recovery starts from


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: the end of the archive (neither set), a time, or a named restore point."""

    time: datetime | None = None
    name: str = ""

    def describe(self) -> str:
        if self.time is not None:
            return f"recovery to {self.time:%Y-%m-%d %H:%M:%S} UTC"
        if self.name:
            return f"recovery to the restore point {self.name!r}"
        return "recovery to the end of the WAL archive"


def options(series: Any, run_default: str = "") -> dict[str, Any]:
    """What ``RecoveredBackup`` is asked for a series (its ``SeriesSettings``): the target (the series'
    ``recover_to``, else the run's ``--recover-to``, else the archive's end) and a configured WAL archive."""
    from ..checks.physical import target_time

    text = series.recover_to or run_default
    target = RecoveryTarget(name=text[5:]) if text.startswith("name:") else \
        RecoveryTarget(target_time(text) if text else None)
    if is_remote(series.wal_archive):
        return {"target": target, "wal_archive_url": series.wal_archive}
    return {"target": target, "wal_archive": Path(series.wal_archive) if series.wal_archive else None}


def installation_for(major: int, tools: pgbin.Tools) -> pgbin.Installation:
    """A server of exactly ``major``: a physical backup recovers on its own major version only."""
    found = [i for i in tools.installations() if i.major == major]
    if found:
        return max(found, key=lambda i: i.minor)
    why = "no container image configured"
    if tools.image:  # none here: the major's container image, where an engine answers
        inst, why = installation_in_image(tools.image, major)
        if inst is not None:
            return inst
    have = ", ".join(i.describe() for i in tools.installations()) or "none"
    raise pgbin.NoSuitableBinaries(
        f"a PostgreSQL {major} base backup recovers only on a PostgreSQL {major} server; installed here: {have}; "
        f"in a container: {why}. Fix: install PostgreSQL {major} (e.g. apt-get install postgresql-{major}), point "
        "--pg-bin (config: pg_bin) at its bin folder, or give a Docker engine and an image of it "
        "(--container-image, config: container.image)")


# --- the data directory -------------------------------------------------------------------------------------


def _extract(tar_path: Path, into: Path) -> None:
    """A tar of the backup, unpacked with the ``data`` filter: no absolute path, no link or file outside ``into``,
    no device (a hostile tar cannot write anywhere else). Each tar's own compression is told by its bytes
    (pg_basebackup may compress base.tar and leave pg_wal.tar as it is)."""
    into.mkdir(parents=True, exist_ok=True)
    layers = basebackup.tar_layers(tar_path)
    with open_decompressed(tar_path, layers) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(into, filter="data")


# The folders of a data directory that may be empty (PostgreSQL 10+): an object store or a sync tool drops them.
_EMPTY_AT_TIMES = ("pg_wal/archive_status", "pg_commit_ts", "pg_dynshmem", "pg_logical/mappings",
                   "pg_logical/snapshots", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat",
                   "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_twophase")


def unpack(bb: Physical, datadir: Path, spaces: Path) -> None:
    """The base backup as a data directory at ``datadir``; its tablespaces under ``spaces``/OID, mapped there."""
    if isinstance(bb, RestBackup | BarmanBackup):  # a repository's backup: its own tool puts the files back
        bb.restore_into(datadir)
        (datadir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        return
    if bb.layout == "tar":
        _extract(bb.tars[0], datadir)
        for tar in bb.tars[1:]:
            _extract(tar, spaces / tar.name.split(".", 1)[0])
        if bb.wal_tar is not None:
            _extract(bb.wal_tar, datadir / "pg_wal")
        if bb.tablespaces:
            (datadir / "tablespace_map").write_text("".join(f"{oid} {spaces / oid}\n" for oid in bb.tablespaces))
        (datadir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        return
    links = [p for p in bb.path.rglob("*") if p.is_symlink()]
    carried = {link: target for link in links if (target := _carried_tablespace(bb.path, link)) is not None}
    outside = [p for p in links if p not in carried]
    if outside:
        raise RestoreRefused(f"not recovered: {bb.path} holds symbolic links ({', '.join(str(p) for p in outside[:3])})"
                             " that point outside the backup; take the backup in tar format (pg_basebackup -Ft), "
                             "which carries tablespaces as files")
    shutil.copytree(bb.path, datadir, symlinks=True)
    for link, target in carried.items():  # a copy of the recovery's own; the server never writes into the backup
        place = spaces / link.name
        shutil.copytree(target, place, symlinks=True)
        (datadir / "pg_tblspc" / link.name).unlink()
        (datadir / "pg_tblspc" / link.name).symlink_to(place)
    # Copies that carry files only (an upload to S3, a sync tool) lose the empty folders a server needs.
    for name in _EMPTY_AT_TIMES:
        (datadir / name).mkdir(parents=True, exist_ok=True)


def _carried_tablespace(backup: Path, link: Path) -> Path | None:
    """The folder a plain backup's ``pg_tblspc/OID`` link names, when the backup carries it: beside the data folder
    in the folder that holds it (pg_basebackup -T into the backup's folder, as Barman's postgres method does), with
    no link of its own. Any other link is refused."""
    if link.parent != backup / "pg_tblspc" or not link.name.isdigit():
        return None
    try:
        target = link.resolve(strict=True)
        holder = backup.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_dir() or not target.is_relative_to(holder) or target == holder or \
            backup.resolve().is_relative_to(target) or any(p.is_symlink() for p in target.rglob("*")):
        return None
    return target


def configure(datadir: Path, sockdir: Path, restore_script: Path, target: RecoveryTarget) -> None:
    """Replace every setting the backup carries with ours, and ask for recovery."""
    for name in ("postgresql.auto.conf", "pg_ident.conf"):
        (datadir / name).write_text("")
    for name in ("standby.signal", "recovery.conf", "postmaster.pid", "postmaster.opts"):
        (datadir / name).unlink(missing_ok=True)
    (datadir / "pg_hba.conf").write_text("local all all trust\n")
    settings = {
        "listen_addresses": "''", "port": "5432", "unix_socket_directories": f"'{sockdir}'",
        "unix_socket_permissions": "0700", "archive_mode": "off", "archive_command": "''",
        # A hard link, not a copy: the staged file is the recovery's own already (a second copy of every segment
        # doubled the writes while WAL replays; the server may write into a recycled segment: only the stage sees it)
        "restore_command": f"'\"{restore_script}\" \"%f\" \"%p\"'", "recovery_target_action": "'promote'",
        "recovery_target_timeline": "'latest'", "hot_standby": "off", "shared_preload_libraries": "''",
        "session_preload_libraries": "''", "local_preload_libraries": "''", "wal_level": "replica",
        "max_wal_senders": "0", "max_replication_slots": "0", "fsync": "off", "synchronous_commit": "off",
        "autovacuum": "off", "jit": "off", "logging_collector": "off", "shared_buffers": "'256MB'",
        "max_connections": "30", "dynamic_shared_memory_type": "mmap", "max_wal_size": "'4GB'",
        "log_checkpoints": "off", "primary_conninfo": "''",
    }
    if target.time is not None:
        settings["recovery_target_time"] = f"'{target.time:%Y-%m-%d %H:%M:%S}+00'"
    elif target.name:
        settings["recovery_target_name"] = "'" + target.name.replace("'", "''") + "'"
    (datadir / "postgresql.conf").write_text(
        "# written by backupcheck: none of the backup's own settings is used\n"
        + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    (datadir / "recovery.signal").write_text("")


# restore_command: a segment the stager will bring is waited for; any other name (the segment after the archive's
# end, a timeline's history that does not exist) is refused at once, and so is everything once the stager ended.
_RESTORE_SCRIPT = """#!/bin/sh
s='{stage}'
grep -qxF "$1" "$s/.expected" || exit 1
while [ ! -e "$s/$1" ]; do
    [ -e "$s/.end" ] && exit 1
    sleep 0.05
done
exec ln "$s/$1" "$2"
"""


class Stager:
    """The archive's segments from the backup's first on, staged for the server while it replays: a thread copies
    (decompresses, downloads) each into the stage at most ``lead`` segments ahead of the ones the server took (a
    hard link from pg_wal marks a segment taken), so the copying overlaps the replay, the stage never holds more
    than ``lead`` segments the server has not reached, and a recovery that stops early (a target time) stops the
    copying with it. Timeline histories are staged before the server starts."""

    def __init__(self, archive: basebackup.WalArchive | None, start: str, stage: Path, datadir: Path,
                 user: tuple[int, int] | None, lead: int = 32) -> None:
        self.archive, self.stage, self.datadir, self.user, self.lead = archive, stage, datadir, user, lead
        first = archive.number(start) if archive is not None and start else 0
        # In the order the server asks for them: by position in the WAL, each timeline's copy side by side
        self.segments = sorted((seg for seg in (archive.segments if archive is not None else [])
                                if seg.number >= first and not seg.partial), key=lambda seg: (seg.number, seg.timeline))
        self.staged = 0
        self.busy = 0.0  # seconds spent copying
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def script(self) -> Path:
        return self.stage.parent / "restore_wal.sh"

    def prepare(self) -> None:
        """The stage, its list of what is coming, the restore script and the histories (before the server starts)."""
        self.stage.mkdir(parents=True, exist_ok=True)
        names = [seg.name for seg in self.segments]
        if self.archive is not None:
            for name in self.archive.histories:
                plain = name.removesuffix(".gz")
                self._copy(plain, lambda target, name=name: self._history(name, target))
        (self.stage / ".expected").write_text("".join(f"{n}\n" for n in names))
        self.script.write_text(_RESTORE_SCRIPT.format(stage=self.stage))
        os.chmod(self.script, 0o755)
        if not self.segments:
            (self.stage / ".end").write_text("")

    def _history(self, name: str, target: Path) -> bool:
        assert self.archive is not None
        if self.archive.fetch is not None:
            return self.archive.fetch(name, target, self.datadir)
        with open_decompressed(self.archive.path / name, basebackup.file_layers(self.archive.path / name)) as src, \
                open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return True

    def _segment(self, seg: basebackup.Segment, target: Path) -> bool:
        assert self.archive is not None
        if self.archive.fetch is not None:
            return self.archive.fetch(seg.name, target, self.datadir)
        with open_decompressed(seg.path, basebackup.file_layers(seg.path)) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return True

    def _copy(self, name: str, write: Any) -> bool:
        """One file into the stage under a temporary name, the server's own, then renamed: the script never sees
        half a file."""
        part = self.stage / f".{name}.part"
        if not write(part) or not part.exists():
            part.unlink(missing_ok=True)
            return False
        if self.user:
            os.chown(part, *self.user)  # the server hard-links it: a file of its own (protected_hardlinks)
        os.rename(part, self.stage / name)
        return True

    def start(self) -> None:
        if self.segments:
            self._thread = threading.Thread(target=self._run, name="backupcheck-stage-wal", daemon=True)
            self._thread.start()

    def _taken(self, upto: int) -> int:
        """How many of the staged segments the server has linked into pg_wal (in order: a later one taken means
        every earlier one was)."""
        for k in range(upto - 1, -1, -1):
            try:
                if (self.stage / self.segments[k].name).stat().st_nlink > 1:
                    return k + 1
            except OSError:
                continue
        return 0

    def _run(self) -> None:
        taken = 0
        try:
            for k, seg in enumerate(self.segments):
                while k - taken >= self.lead:
                    if self._stop.wait(0.05):
                        return
                    taken = max(taken, self._taken(k))
                if self._stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    ok = self._copy(seg.name, lambda target, seg=seg: self._segment(seg, target))
                except Exception as exc:  # noqa: BLE001 (the restore's error; the server stops at the segment)
                    self.error = f"WAL segment {seg.name} cannot be read ({type(exc).__name__}: {exc})"
                    return
                finally:
                    self.busy += time.monotonic() - t0
                if not ok:
                    self.error = f"WAL segment {seg.name} could not be fetched from the archive"
                    return
                self.staged += 1
        finally:
            with contextlib.suppress(OSError):
                (self.stage / ".end").write_text("")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)
            self._thread = None


def bootstrap_role(datadir: Path) -> str:
    """The name of the cluster's bootstrap superuser (OID 10), read from pg_authid's heap file (PostgreSQL 12+,
    where oid is its first column): not every cluster calls it postgres (Supabase: supabase_admin)."""
    path = datadir / "global" / "1260"
    try:
        data = path.read_bytes()
    except OSError:
        return "postgres"
    live, dead = [], []
    for page in range(0, len(data) - 8191, 8192):
        lower = struct.unpack_from("<H", data, page + 12)[0]
        for at in range(page + 24, page + min(lower, 8192), 4):
            raw = struct.unpack_from("<I", data, at)[0]
            off, flags = raw & 0x7FFF, (raw >> 15) & 3
            if flags != 1 or off < 24 or off + 96 > 8192:
                continue
            tup = page + off
            hoff = data[tup + 22]
            infomask = struct.unpack_from("<H", data, tup + 20)[0]
            oid = struct.unpack_from("<I", data, tup + hoff)[0]
            if oid == 10:
                name = data[tup + hoff + 4: tup + hoff + 68].split(b"\0", 1)[0].decode(errors="replace")
                (live if infomask & 0x0800 else dead).append(name)  # HEAP_XMAX_INVALID: not deleted
    found = live or dead
    return found[-1] if found and re.fullmatch(r"[\w$.-]{1,63}", found[-1]) else "postgres"


class RecoveredCluster(Cluster):
    """A server started on a recovered base backup; it is up once recovery ended and it was promoted."""

    def __init__(self, installation: pgbin.Installation, bb: Physical, archive: basebackup.WalArchive | None,
                 home: Path, target: RecoveryTarget, timeout: float | None, remove: Any = None,
                 unpacked: Callable[[Path], None] | None = None) -> None:
        """``unpacked``: called with the data directory once the base backup is unpacked, before anything of ours
        is written into it or a server starts on it (the integrity check's verification of a tar backup)."""
        super().__init__(installation, bb.path, home, remove)
        self.bb, self.archive, self.target, self.timeout = bb, archive, target, timeout
        self.unpacked = unpacked
        self.stage = home / "wal"
        self.superuser = "postgres"
        self.phases: dict[str, float] = {}
        self.stager: Stager | None = None
        self.final_log = ""
        self.step = "start"  # what it is doing, for the progress lines
        self.argv: list[str] = []

    def sample(self) -> progress.Sample:
        """What the recovery is doing: its step, and while WAL is replayed, the segments replayed of those staged
        (as bytes: the progress line's figures)."""
        size = self.archive.segment_size if self.archive is not None else 16 << 20
        if self.step != "WAL replay":
            return progress.Sample(self.step, 0, None)
        done = len(set(_RESTORED.findall(self.log_text())))
        total = len(self.stager.segments) if self.stager is not None else 0
        return progress.Sample(self.step, done * size, total * size or None)

    def conninfo(self, dbname: str = "postgres") -> dict[str, str | int]:
        return {"host": str(self.sockdir), "port": 5432, "user": self.superuser, "dbname": dbname,
                "options": "-c session_preload_libraries= -c local_preload_libraries="}

    def env(self) -> dict[str, str]:
        return {**super().env(), "PGUSER": self.superuser,
                "PGOPTIONS": "-c session_preload_libraries= -c local_preload_libraries="}

    def _start(self) -> None:
        user = server_user()
        t0 = time.monotonic()
        self.home.mkdir(parents=True)
        os.chmod(self.home, 0o700)
        self.step = "unpack base backup"
        unpack(self.bb, self.datadir, self.home / "tablespaces")
        verified = 0.0
        if self.unpacked is not None:
            self.step = "verify base backup"
            t_verify = time.monotonic()
            self.unpacked(self.datadir)
            verified = time.monotonic() - t_verify
        self.step = "stage WAL"
        t1 = time.monotonic()
        self.stager = Stager(self.archive, self.bb.start_segment, self.stage, self.datadir, user)
        self.stager.prepare()
        self.step = "WAL replay"
        self.sockdir.mkdir(mode=0o700)
        configure(self.datadir, self.sockdir, self.stager.script, self.target)
        self.superuser = bootstrap_role(self.datadir)
        if user:
            for root, dirs, files in os.walk(self.home):
                os.chown(root, *user)
                for name in dirs + files:
                    os.chown(os.path.join(root, name), *user, follow_symlinks=False)
        os.chmod(self.datadir, 0o700)
        t2 = time.monotonic()
        self.phases = {"unpack base backup": round(t1 - t0 - verified, 3)} | \
            ({"verify base backup": round(verified, 3)} if verified else {})
        # In a container, the client runs as this process's own account (the engine's socket is its) and the
        # server as the server's account inside; SIGQUIT reaches it through the client.
        self.argv = [*self.installation.command("postgres", ((self.home, True),), None, user), "-D", str(self.datadir)]
        run_as = None if self.installation.in_container else user
        with open(self.logfile, "wb") as logf:
            self.process = subprocess.Popen(
                self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                user=run_as[0] if run_as else None, group=run_as[1] if run_as else None,
                extra_groups=[] if run_as else None, preexec_fn=_pdeathsig, start_new_session=True, cwd=str(self.home),
            )
        self.stager.start()
        try:
            self._wait_ready(timeout=self.timeout or 24 * 3600.0)
        except ServerStartError:
            self.final_log = self.log_text()  # read before the folder goes
            raise
        finally:
            self.stager.stop()
            # Staging runs beside the replay: its time is part of the replay's, said apart
            self.phases["staging WAL (beside the replay)"] = round(self.stager.busy + t2 - t1, 3)
            self.phases["WAL replay and promotion"] = round(time.monotonic() - t2, 3)

    def _wait_ready(self, timeout: float) -> None:
        """Until the server says it accepts connections (its log), then one connection proves it: a server in
        recovery refuses every connection, and each refused one costs it a process while it replays."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(f"PostgreSQL exited with code {self.process.returncode} during recovery.\n"
                                       f"{self.log_tail()}")
            try:
                with open(self.logfile, "rb") as f:
                    f.seek(max(seen - 256, 0))
                    tail = f.read()
                    seen = f.tell()
            except OSError:
                tail = b""
            if b"ready to accept connections" in tail:
                return super()._wait_ready(max(deadline - time.monotonic(), 1.0))
            time.sleep(0.1)
        raise ServerStartError(f"PostgreSQL did not accept connections within {timeout:.0f} s.\n{self.log_tail()}")

    def _stop_server(self) -> None:
        try:
            super()._stop_server()
        finally:
            if self.argv:
                self.installation.stop(self.argv)  # a container outlives a client that was killed

    def log_text(self) -> str:
        if self.final_log:
            return self.final_log
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


class RecoveredTarget(LocalTarget):
    """The recovered server: the databases are the backup's own, asked as its superuser; thrown away after."""

    kind = "local"
    contained = False
    wanted_again = False

    @property
    def label(self) -> str:
        return f"recovered cluster, {self.installation.describe()}"

    @property
    def containment(self) -> str:
        where = (f"in a container of {self.installation.image} with no network, as OS account {self.cluster.os_user}"
                 if isinstance(self.installation, ContainerInstallation) else f"as OS account {self.cluster.os_user}")
        return ("the backup's own settings replaced (no archive_command, no preload library, a private socket only); "
                f"event triggers disabled; server {where}")

    def __enter__(self) -> RecoveredTarget:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close_admin()
        self.cluster.__exit__(et, ev, tb)


_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+(.*)")


def _recovery_errors(log_text: str, archive: basebackup.WalArchive | None, target: RecoveryTarget,
                     key: str, stager: Stager | None = None) -> list[RestoreError]:
    """What the server's log says went wrong, what could not be staged, and the archive's segments recovery never
    reached."""
    errors = []
    if stager is not None and stager.error:
        errors.append(RestoreError(HARMFUL, f"recovery stopped where the archive could not be read: {stager.error}",
                                   "", "every change after it", key))
    for m in _FATAL.finditer(log_text):
        if "the database system is" in m.group(1) or "terminating connection" in m.group(1):
            continue
        errors.append(RestoreError(HARMFUL, m.group(1).strip(), "", "everything after the failure", key))
    restored = _RESTORED.findall(log_text)
    if archive is not None and target.time is None and not target.name and restored:
        last = max(restored, key=archive.number)
        later = [s for s in archive.segments if s.number > archive.number(last) + 1 and not s.partial]
        if later and not any(s.number == archive.number(last) + 1 for s in archive.segments):
            missing = archive.name_of(int(last[:8], 16), archive.number(last) + 1)
            errors.append(RestoreError(
                HARMFUL, f"recovery stopped after WAL segment {last}: the next one, {missing}, is not in the archive "
                f"{archive.path}, so the {len(later)} segment(s) after it (to {later[-1].name}, archived "
                f"{later[-1].modified:%Y-%m-%d %H:%M} UTC) were never replayed", "",
                f"every change after {_segment_time(archive, last)}", key))
    return errors


def _segment_time(archive: basebackup.WalArchive, name: str) -> str:
    seg = next((s for s in archive.segments if s.name == name), None)
    return f"{seg.modified:%Y-%m-%d %H:%M} UTC" if seg else name


class RecoveredBackup(RestoredBackup):
    """A base backup recovered into a disposable server, then asked what a restored dump is asked."""

    def __init__(self, *args: Any, target: RecoveryTarget | None = None, wal_archive: Path | None = None,
                 factory: ClusterFactory | None = None, wal_archive_url: str = "", **kwargs: Any) -> None:
        """``factory``: where disposable data directories go, whatever the run's provider (a physical backup is
        recovered on this machine: containers and a given server restore dumps only)."""
        super().__init__(*args, **kwargs)
        self.factory = factory
        self.recovery_target = target or RecoveryTarget()
        self.wal_path = wal_archive
        self.wal_url = wal_archive_url  # a series' WAL archive under a remote prefix (wal_archive = "s3://…")
        self.bb: Physical | None = None
        self.archive: basebackup.WalArchive | None = None
        self._tables: list[str] | None = None
        self.replayed = 0

    def _prepare(self) -> None:
        artifact = self.backup.base_backup
        try:
            bb = basebackup.physical_of(artifact, self.store.remote) if artifact is not None else None
        except (barman.BarmanError, pgbackrest.PgBackRestError) as exc:
            raise RestoreRefused(f"not recovered: {exc}") from None
        if artifact is None or bb is None:
            raise RestoreRefused(f"{self.backup.key} holds no base backup to recover"
                                 + (f" ({artifact.path} no longer reads as one)" if artifact is not None else ""))
        self.bb = bb
        if isinstance(bb, RestBackup):
            self.archive = pgbackrest.archive(bb.repo, bb.stanza)
        elif isinstance(bb, BarmanBackup):
            self.archive = barman.list_archive(self.store.remote, bb.source, bb.server, bb.major)
        elif self.wal_url or (artifact.wal_archive_url and self.wal_path is None):
            try:
                self.archive = basebackup.remote_archive(self.store.remote, self.wal_url or artifact.wal_archive_url)
            except (basebackup.PhysicalError, RemoteError) as exc:
                raise RestoreRefused(f"not recovered: its WAL archive cannot be read: {exc}") from None
        else:
            path = self.wal_path or artifact.wal_archive
            self.archive = basebackup.read_archive(path) if path is not None else None
        self.profile_reason = "a physical backup: the cluster as it was"

    def need_major(self) -> int | None:
        return self.bb.major if self.bb else None

    def wanted_extensions(self) -> frozenset[str]:
        return frozenset()

    def _space_needed(self) -> tuple[int, str]:
        assert self.bb is not None
        size = self.backup.size * (4 if self.bb.compression else 1)
        wal = len(self.archive.segments) * self.archive.segment_size if self.archive else 0  # staged whole
        return size + wal, "the base backup's size, unpacked, and its WAL staged (an estimate)"

    def _acquire(self) -> None:
        assert self.bb is not None
        factory = self.factory or (self.provider.factory if isinstance(self.provider, LocalProvider) else None)
        if factory is None:
            raise NoServer(f"a physical backup is recovered on this machine's PostgreSQL {self.bb.major} only "
                           f"(--pg-provider {self.provider.kind} cannot recover it): use --pg-provider local",
                           self.compat)
        try:
            inst = installation_for(self.bb.major, self.tools)
        except pgbin.NoSuitableBinaries as exc:
            self.compat.mismatches.append(str(exc))
            raise NoServer(str(exc), self.compat) from None
        need, basis = self.space_needed()
        # A name of its own: the folder of the backup recovered before may still be being removed (in the
        # background), and an object's id() is reused once it is freed (two recoveries collided on it).
        home = factory.place(need) / f"recovery-{os.getpid()}-{next(_HOMES)}"
        cluster = RecoveredCluster(inst, self.bb, self.archive, home, self.recovery_target, self.timeout,
                                   factory.remove_later, self._verify_here())
        self.target = RecoveredTarget(cluster)
        self.target_label = self.target.label
        self.compat.compared += [f"{self.bb.describe()} -> {inst.describe()} on this machine (its own major "
                                 "version; physical backups are recovered here whatever the provider)",
                                 self.recovery_target.describe()]
        self._preflight()

    def _verify_here(self) -> Callable[[Path], None] | None:
        """A tar base backup the integrity check has not verified yet is verified in the recovery's own data
        directory, unpacked and untouched (pg_verifybackup before 18 reads folders only: the check would unpack
        every tar a second time); the check then takes that result. Not where tablespaces are mapped (the data
        directory's tablespace_map is the recovery's own, not the backup's)."""
        artifact, bb = self.backup.base_backup, self.bb
        if artifact is None or artifact.format != "basebackup" or not isinstance(bb, BaseBackup) or \
                bb.layout != "tar" or bb.manifest is None or bb.tablespaces or self.store.known(artifact):
            return None

        def verify_here(datadir: Path) -> None:
            try:
                self.store.verify_unpacked(artifact, datadir)
            except Exception:  # noqa: BLE001 (the integrity check then verifies on its own)
                log.warning("verifying %s in the recovery's folder failed", artifact.name, exc_info=True)

        return verify_here

    def _restore(self) -> None:
        target = self.target
        assert isinstance(target, RecoveredTarget) and self.bb is not None
        cluster = target.cluster
        assert isinstance(cluster, RecoveredCluster)
        t0 = time.monotonic()
        self.result.tool = (f"{target.label}; {self.recovery_target.describe()}, WAL from "
                            f"{self.archive.path if self.archive else 'the backup alone'}; {target.containment}")
        reporter = self.progress
        watch = progress.Watch(cluster.sample, reporter.say if reporter else None, self.backup.key,
                               reporter.every if reporter else 60.0, reporter.first if reporter else 60.0,
                               self.expected_seconds)
        try:
            with watch:
                cluster.__enter__()
        except ServerStartError as exc:
            self.phases.update(cluster.phases)
            late = self.timeout is not None and "did not accept connections within" in str(exc)
            self.result.aborted = (f"{self.backup.key}: the recovery took longer than restore_timeout "
                                   f"({self.timeout:g} s) and was stopped" if late else
                                   f"{self.backup.key}: recovery did not bring the server up")
            errors = _recovery_errors(cluster.log_text(), self.archive, self.recovery_target, self.bb.path.name,
                                      cluster.stager)
            if not errors:
                errors = [RestoreError(HARMFUL, str(exc).splitlines()[0], "", "everything", self.bb.path.name)]
            self.result.errors += errors
            self.result.seconds = time.monotonic() - t0
            return
        except (RestoreRefused, OSError, tarfile.TarError, EOFError) as exc:
            self.result.aborted = f"{self.backup.key}: the base backup could not be unpacked: {exc}"
            self.result.seconds = time.monotonic() - t0
            return
        finally:
            if reporter is not None:
                reporter.done()
        self.phases.update(cluster.phases)
        self.replayed = len(set(_RESTORED.findall(cluster.log_text())))
        self.result.errors += _recovery_errors(cluster.log_text(), self.archive, self.recovery_target,
                                               self.bb.path.name, cluster.stager)
        with target.admin() as conn:
            target.server_version = str(conn.execute("show server_version").fetchone()[0]).split()[0]
            dbs = [r[0] for r in conn.execute(
                "select datname from pg_database where datallowconn and not datistemplate order by datname")]
        self._disable_event_triggers(dbs)
        own = [d for d in dbs if d != "postgres"]
        self.main_db = own[0] if len(own) == 1 else "postgres"
        self.result.databases = [self.main_db, *(d for d in dbs if d != self.main_db)]
        # The time to recover (the RTO's figure) leaves out the integrity check's verification done on the way
        self.result.seconds = time.monotonic() - t0 - cluster.phases.get("verify base backup", 0.0)

    def _disable_event_triggers(self, dbs: list[str]) -> None:
        """Before any command of ours (an extension for amcheck, a copy): a command on an event trigger fires none."""
        from psycopg import sql

        assert self.target is not None
        for db in dbs:
            with self.target.connect(db) as conn:
                names = [r[0] for r in conn.execute("select evtname from pg_event_trigger where evtenabled <> 'D'")]
                for name in names:
                    conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))
                if names:
                    self.skipped.append(f"event trigger(s) of {db} disabled before any check: {', '.join(names)}")

    def expected_tables(self) -> list[str]:
        """The recovered cluster's own tables (a physical backup carries no list of them to compare with)."""
        if self._tables is None:
            found: list[str] = []
            if self.target is not None and not self.result.aborted:
                for db in self.result.databases:
                    prefix = "" if db == self.main_db else f"{db}/"
                    with self.session(db) as conn:
                        found += [f"{prefix}{schema}.{table}" for schema, table, _size, _part in table_sizes(conn)]
            self._tables = found
        return list(self._tables)

    def missing_tables(self) -> list[str]:
        return []


def amcheck(target: RecoveredTarget, databases: list[str], budget: float) -> tuple[list[str], str]:
    """pg_amcheck over every database (heap and B-tree indexes, the amcheck extension installed where missing):
    (one line per corruption or failure, what was covered)."""
    cluster = target.cluster
    inst = cluster.installation
    if not inst.provides("pg_amcheck"):
        return [], (f"nothing by pg_amcheck, which {inst.describe()} lacks (PostgreSQL 14+ ships it): data "
                    "checksums only")
    env = cluster.env()
    argv = [*inst.command("pg_amcheck", ((cluster.sockdir, True),), {k: v for k, v in env.items() if k.startswith("PG")},
                          server_user()),
            "--install-missing", "--no-strict-names", "-j", "2", "--all", "--verbose"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=budget, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out, err = (_text(exc.stdout), _text(exc.stderr))
        started = set(_AMCHECKING.findall(err))
        left = _not_reached(target, databases, started)
        more = f" and {len(left) - 10} more" if len(left) > 10 else ""
        return _amcheck_lines(out), (
            f"stopped after its time budget of {budget:.0f} s (amcheck_budget): {len(started)} table(s) and B-tree "
            "index(es) checked or begun, the largest first; "
            + (f"not reached: {', '.join(left[:10])}{more}" if left else "every table of the databases begun"))
    finally:
        inst.stop(argv)
    problems = _amcheck_lines(proc.stdout + proc.stderr)
    if proc.returncode not in (0, 2) and not problems:
        problems = [f"pg_amcheck failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[:500]}"]
    checked = len(set(_AMCHECKING.findall(proc.stderr)))
    return problems, f"every table and B-tree index ({checked}) of {len(databases)} database(s)"


_AMCHECKING = re.compile(r'^pg_amcheck: checking (?:heap table|btree index) "(.+)"$', re.M)


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _not_reached(target: RecoveredTarget, databases: list[str], started: set[str]) -> list[str]:
    """The tables of the recovered databases (outside the system's schemas) pg_amcheck never began, as
    ``db.schema.table``, largest first: what a budget that ran out left unchecked."""
    left: list[tuple[int, str]] = []
    for db in databases:
        try:
            with target.connect(db) as conn:
                rows = conn.execute(
                    "select n.nspname, c.relname, pg_relation_size(c.oid) from pg_class c join pg_namespace n "
                    "on n.oid = c.relnamespace where c.relkind in ('r', 'm') and n.nspname not in "
                    "('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'").fetchall()
        except Exception:  # noqa: BLE001 (a database that cannot be asked is named as not reached)
            left.append((0, f"{db} (every table)"))
            continue
        left += [(size, f"{db}.{schema}.{name}") for schema, name, size in rows
                 if f"{db}.{schema}.{name}" not in started]
    return [name for _size, name in sorted(left, key=lambda x: (-x[0], x[1]))]


def _amcheck_lines(text: str) -> list[str]:
    out, current = [], ""
    for line in text.splitlines():
        if re.match(r"^(heap table|btree index|toast table|pg_amcheck: error)", line):
            if current:
                out.append(current)
            current = line.strip()
        elif current and line.startswith("    "):
            current += " " + line.strip()
    if current:
        out.append(current)
    return out


def checksum_failures(target: RecoveredTarget) -> tuple[bool, list[str]]:
    """(whether data checksums are on, "database: N" for each database whose pages failed their checksum)."""
    with target.admin() as conn:
        on = conn.execute("show data_checksums").fetchone()[0] == "on"
        rows = conn.execute("select coalesce(datname, '(shared)'), checksum_failures from pg_stat_database "
                            "where coalesce(checksum_failures, 0) > 0").fetchall()
    return on, [f"{r[0]}: {r[1]} page(s) failed their checksum" for r in rows]


def verify(bb: BaseBackup, tools: pgbin.Tools, scratch: Path, archive: Path | None,
           unpacked: Path | None = None) -> tuple[list[str], list[str]]:
    """pg_verifybackup of the backup's own major version: every file against backup_manifest's checksums, and the
    WAL the backup needs present and parseable (from the backup, else from an uncompressed archive beside it).
    (problems, notes). A tar backup is unpacked into ``scratch`` first (pg_verifybackup reads tars from 18 on),
    unless it is ``unpacked`` already (a recovery's data directory, before the server starts on it)."""
    if bb.manifest is None:
        return [], ["no backup_manifest (pg_basebackup 13+ writes one): its files cannot be checked against "
                    "checksums; the recovery is the proof"]
    try:
        inst = installation_for(bb.major, tools)
    except pgbin.NoSuitableBinaries as exc:
        return [f"{bb.path.name}: not verified: {exc}"], []
    if not inst.provides("pg_verifybackup"):
        return [], [f"{inst.describe()} has no pg_verifybackup: not verified before the recovery"]
    notes: list[str] = []
    folder = bb.path
    ours = False  # a folder unpacked here, removed afterwards
    try:
        if bb.layout == "tar" and unpacked is not None:
            folder = unpacked
            shutil.copyfile(bb.manifest, folder / "backup_manifest")
        elif bb.layout == "tar":
            folder, ours = scratch / "verify", True
            shutil.rmtree(folder, ignore_errors=True)
            _extract(bb.tars[0], folder)
            if bb.wal_tar is not None:
                _extract(bb.wal_tar, folder / "pg_wal")
            shutil.copyfile(bb.manifest, folder / "backup_manifest")
        args = ["--quiet"]
        mounts: list[tuple[Path, bool]] = [(folder, False)]
        has_wal = any(basebackup.SEGMENT_NAME.match(p.name) for p in (folder / "pg_wal").glob("*"))
        if not has_wal:
            # pg_verifybackup reads a flat folder of uncompressed segments (a suffix or the bytes say compressed)
            first = next((p for p in sorted(archive.iterdir()) if basebackup.SEGMENT_NAME.match(p.name)
                          and not p.suffix), None) if archive is not None else None
            plain_archive = first is not None and not basebackup.file_layers(first)
            if plain_archive:
                args += ["--wal-directory", str(archive)]
                mounts.append((archive, False))
                notes.append(f"the WAL it needs was read from the archive {archive}")
            else:
                args.append("--no-parse-wal")
                notes.append("its WAL was not parsed: not in the backup (-X none) and no uncompressed archive beside it")
        if bb.tablespaces:
            args += ["--ignore", "pg_tblspc"]
            notes.append("tablespaces not verified (their files are in their own tars)")
        argv = [*inst.command("pg_verifybackup", tuple(mounts)), *args, str(folder)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=6 * 3600, stdin=subprocess.DEVNULL)
        finally:
            inst.stop(argv)
    except (OSError, tarfile.TarError, EOFError, subprocess.SubprocessError) as exc:
        return [f"{bb.path.name}: cannot be read for verification: {exc}"], notes
    finally:
        if ours:
            shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode == 0:
        return [], notes or ["every file matches backup_manifest and the WAL it needs parses (pg_verifybackup)"]
    lines = [ln.removeprefix("pg_verifybackup: ").removeprefix("error: ").strip()
             for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return [f"{bb.path.name}: pg_verifybackup: {ln}" for ln in lines[:20]], notes
