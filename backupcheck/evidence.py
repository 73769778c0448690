"""Read each artifact once and keep what the read showed, for every check and every worker."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .arriving import Arriving
from .discovery import artifact_of, role_from_content
from .dumpscan import (
    DumpScan,
    ForeignKey,
    scan_archive_data,
    scan_archive_sql,
    scan_archive_toc,
    scan_head,
    scan_plain,
)
from .faults import internal_fault
from .gpg import DecryptError, decrypt
from .manifest import MAX_BYTES as MANIFEST_BYTES
from .model import ARCHIVE_FORMATS, Artifact, Backup
from .pgarchive import ArchiveError, ArchiveInfo, member_problems, parse_list, read_archive
from .servers import pgbin
from .sniff import UnreadableError, open_decompressed, open_sql, read_all, read_tar_members, sha_of, sniff
from .sources.base import Access, Fetched, RemoteError


@dataclass
class ArtifactEvidence:
    """What reading one artifact showed."""

    path: str
    format: str
    problems: list[str] = field(default_factory=list)  # integrity problems
    security: list[str] = field(default_factory=list)
    checksums: list[str] = field(default_factory=list)  # sidecar mismatches, or "" lines for matches
    checksum_ok: list[str] = field(default_factory=list)
    scan: DumpScan | None = None
    archive_version: str = ""
    min_restore_major: int | None = None
    has_offsets: bool = True
    data_read: bool = False
    bytes_read: int = 0
    members: int = 0
    broken: str = ""  # damage that pg_restore does not stop on (a tar archive cut short): neither read nor restored

    @property
    def dump_major(self) -> int | None:
        return self.scan.dump_major if self.scan else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ArtifactEvidence:
        raw = json.loads(text)
        scan = raw.pop("scan")
        ev = cls(**raw)
        if scan is not None:
            fks = [ForeignKey(**{**fk, "columns": tuple(fk["columns"]), "ref_columns": tuple(fk["ref_columns"])})
                   for fk in scan.pop("foreign_keys")]
            ev.scan = DumpScan(**scan, foreign_keys=fks)
        return ev


def _extract_safely(a: Artifact, target: Path) -> None:
    """Extract regular files and folders only (tarfile's "data" filter: no links out, no devices, no absolute
    or ``..`` paths), leaving out macOS AppleDouble ``._*`` files and ``__MACOSX`` folders."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    try:
        with open_decompressed(a.path, a.compression) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if any(p.startswith("._") or p == "__MACOSX" for p in parts):
                    continue
                if not (member.isfile() or member.isdir()):
                    continue
                tar.extract(member, tmp, filter="data")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dumps_in(folder: Path) -> list[Artifact]:
    """The pg_dump outputs in an extracted tarball: directory-format folders and dump files, by content."""

    found: list[Artifact] = []
    dirs = sorted(p.parent for p in folder.rglob("toc.dat"))
    for d in dirs:
        found.append(artifact_of(d))
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not any(f.is_relative_to(d) for d in dirs):
            candidate = artifact_of(f)
            if candidate.is_database_dump:
                found.append(candidate)
    return found


@contextlib.contextmanager
def _said_in(a: Artifact, ev: ArtifactEvidence) -> Iterator[None]:
    """What stops a read becomes a problem of the artifact's, in a sentence."""
    try:
        yield
    except UnreadableError as exc:
        ev.problems.append(f"{a.name}: {exc}")
    except (OSError, EOFError) as exc:
        ev.problems.append(f"{a.name}: cannot be read ({exc})")
    except Exception as exc:  # a fault of ours: a sentence on this artifact, and the other checks go on
        ev.problems.append(f"{a.name}: not read: {internal_fault(exc)}")


def _write(path: Path, ev: ArtifactEvidence) -> None:
    """The evidence for the other workers: whole or not at all (written aside, then renamed)."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(ev.to_json())
    tmp.rename(path)


def _key(artifact: Artifact, full: bool) -> str:
    try:
        st = artifact.path.stat()
        ident = f"{artifact.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{full}"
    except OSError:
        ident = f"{artifact.path}|missing|{full}"
    return hashlib.sha1(ident.encode()).hexdigest()[:20]


class OneFetchPerObject:
    """A source's access that fetches an object once at a time in this process: the download ahead of a backup
    and the check that wants the same object wait for each other. A kind's own access (a team's, from its
    conftest) need not be safe for two threads writing the same cache file: the check read the half-written
    file of the other thread as an empty dump."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def fetch(self, url: str, size: int, modified: Any, etag: str, **how: Any) -> Fetched:
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            return self.access.fetch(url, size, modified, etag, **how)

    @property
    def streams(self) -> bool:
        """Whether the kind's download can be read while it runs (its fetch takes an ``arrival``)."""
        return bool(getattr(self.access, "streams", False))

    def __getattr__(self, name: str) -> Any:  # fetch_small, head, close, options_for: the kind's own
        return getattr(self.access, name)


class EvidenceStore:
    """Per-process memo over a run-wide disk cache (shared by xdist workers) of artifact reads."""

    def __init__(self, rundir: Path, shared_cache: Path | None = None, tools: pgbin.Tools = pgbin.ANY_TOOLS,
                 remote: Access | None = None, passphrase_env: str = "BACKUPCHECK_GPG_PASSPHRASE",
                 one_pass_from: Callable[[Backup], int | None] | None = None) -> None:
        """``one_pass_from``: for a backup this run restores, the size from which its plain dumps are read once, by
        the restore (restore.database.read_by_restore); such a dump in S3 is restored while it downloads."""
        self.rundir = rundir
        self.one_pass_from = one_pass_from
        self._arrivals: dict[str, Arriving] = {}  # final path -> the download a streamed dump is read from
        self.remote = OneFetchPerObject(remote) if remote is not None else None
        self.passphrase_env = passphrase_env
        self._local: dict[str, Backup] = {}
        self.cache = shared_cache or (rundir / "evidence")
        self.cache.mkdir(parents=True, exist_ok=True)
        self.tools = tools
        self._memo: dict[str, ArtifactEvidence] = {}
        self._materialized: dict[str, Path] = {}
        self._tocs: dict[tuple[str, str, int, int], ArchiveInfo] = {}  # read once per file: the evidence and the restore ask
        self._lock = threading.Lock()
        self.downloads: dict[str, float] = {}  # url -> seconds its download took in this process
        self.ahead: dict[str, float] = {}  # url -> seconds a download ahead took (while another backup was checked)
        self.alongside: dict[str, float] = {}  # url -> seconds a download read by its restore took (during it)
        self._prefetching: list[threading.Thread] = []

    # -- remote objects become local files ----------------------------------------------------------

    def localize(self, backup: Backup) -> Backup:
        """The backup as local plaintext: remote objects downloaded (cached, verified), gpg files decrypted, and
        tarballs that hold a pg_dump replaced by the dump(s) inside them."""
        if not any(a.is_remote or a.format in ("gpg", "tarball", "dump-tarball") for a in backup.artifacts):
            return backup
        with self._lock:
            if backup.key in self._local:
                return self._local[backup.key]
        one_pass = self.one_pass_from(backup) if self.one_pass_from is not None else None
        local = replace(backup, artifacts=tuple(
            inner for a in backup.artifacts
            for inner in self._unwrap(self._decrypt(self._localize(a, one_pass) if a.is_remote else a))
        ))
        with self._lock:
            self._local[backup.key] = local
        return local

    def localized(self, key: str) -> bool:
        """Whether this process has made the backup's objects local files."""
        with self._lock:
            return key in self._local

    def prefetch(self, backup: Backup) -> None:
        """Download the backup's remote objects in a thread of its own, while this process checks another backup:
        the checks of this one find them in the download cache. A failure here is no finding (the checks fetch
        again and say what fails)."""
        remote = [a for a in backup.artifacts if a.is_remote]
        if self.remote is None or not remote:
            return

        def fetch() -> None:
            for a in remote:
                started = time.monotonic()
                try:
                    got = self.remote.fetch(a.url, a.size, a.mtime, a.etag)
                except Exception:  # noqa: BLE001 (said by the check that fetches it again)
                    continue
                if got.downloaded:
                    self.ahead[a.url] = time.monotonic() - started

        thread = threading.Thread(target=fetch, name=f"backupcheck-prefetch-{backup.key}", daemon=True)
        self._prefetching.append(thread)
        thread.start()

    def close(self) -> None:
        """The run is ending: downloads ahead stop (their part files removed) before the folders go."""
        stop = getattr(self.remote, "close", None)
        if self._prefetching and stop is not None:
            stop()
        for thread in self._prefetching:
            thread.join(timeout=30)
        self._prefetching.clear()

    def _localize(self, a: Artifact, one_pass_from: int | None = None) -> Artifact:
        if self.remote is None:
            return replace(a, format="unknown", note=f"{a.url} cannot be downloaded: no access to its source configured")
        if a.role == "basebackup":
            return self._localize_folder(a)
        started = time.monotonic()
        arrival = None
        if one_pass_from is not None and a.size >= one_pass_from and self.remote.streams:
            streamed = self._arriving(a, started)
            if isinstance(streamed, Artifact):
                return streamed
            arrival = streamed
        try:
            got = arrival.wait() if arrival is not None else self.remote.fetch(a.url, a.size, a.mtime, a.etag)
        except RemoteError as exc:
            return replace(a, format="unknown", note=f"cannot be downloaded: {exc}")
        if arrival is not None and a.url in self.alongside:  # waited for (not a plain dump): a download like any
            self.downloads[a.url] = self.alongside.pop(a.url)
        elif got.downloaded and arrival is None:
            self.downloads[a.url] = time.monotonic() - started
        sidecars, manifest = self._companions(a, got.path)
        fmt, layers, note = sniff(got.path)
        role = a.role or (role_from_content(got.path, layers) if fmt in ("plain", "dumpall") else "")
        return replace(a, path=got.path, format=fmt, compression=layers, note=note, role=role,
                       sidecars=tuple(self._declared(got) + sidecars), manifest=manifest, sha256=got.sha256)

    def _arriving(self, a: Artifact, started: float) -> Artifact | Arriving:
        """Download ``a`` in a thread of its own and, where its first bytes show a plain dump, give it as a local
        artifact at once: its restore reads it as it arrives (arriving.open_bytes), which reads it once. Else the
        download, to wait for (another format needs the whole file, and the cache may have held it)."""
        arrival = Arriving()
        remote = self.remote
        assert remote is not None

        def download() -> None:
            try:
                got = remote.fetch(a.url, a.size, a.mtime, a.etag, arrival=arrival)
            except BaseException as exc:  # noqa: BLE001 (the readers are told: the bytes stop there)
                arrival.end(error=exc)
                return
            if got.downloaded:
                self.alongside[a.url] = time.monotonic() - started
            arrival.end(got)

        thread = threading.Thread(target=download, name=f"backupcheck-download-{a.name}", daemon=True)
        self._prefetching.append(thread)  # joined when the run ends, as downloads ahead are
        thread.start()
        final = arrival.started()
        if final is None or arrival.part is None:  # failed before a byte, or the cache held it: nothing arrives
            return arrival
        fmt, layers, note = sniff(final)  # the first bytes, as they come
        if fmt not in ("plain", "dumpall"):
            return arrival
        with self._lock:
            self._arrivals[str(final)] = arrival
        sidecars, manifest = self._companions(a, final)
        role = a.role or role_from_content(final, layers)
        return replace(a, path=final, format=fmt, compression=layers, note=note, role=role, sidecars=tuple(sidecars),
                       manifest=manifest)

    def _companions(self, a: Artifact, path: Path) -> tuple[list[Path], Path | None]:
        """The object's sidecar checksums and manifest, fetched beside its download."""
        assert self.remote is not None
        sidecars = []
        for url in a.sidecar_urls:
            target = path.parent / url.rsplit("/", 1)[-1]
            try:
                self.remote.fetch_small(url, target)
                sidecars.append(target)
            except RemoteError:
                pass  # a sidecar that vanished is no checksum to compare with
        manifest = None
        if a.manifest_url:
            manifest = path.parent / a.manifest_url.rsplit("/", 1)[-1]
            try:
                self.remote.fetch_small(a.manifest_url, manifest, MANIFEST_BYTES + 1)  # more: refused as too large
            except RemoteError:
                manifest = None  # listed, then gone: the manifest check says there is none
        return sidecars, manifest

    @staticmethod
    def _declared(got: Fetched) -> list[Path]:
        """A checksum from the object's metadata, checked like a sidecar file of that algorithm."""
        out = []
        for algorithm, digest in got.declared:
            declared = got.path.parent / f"{got.path.name}.metadata.{algorithm}"
            declared.write_text(f"{digest}  {got.path.name}\n")
            out.append(declared)
        return out

    def settled(self, a: Artifact) -> Artifact:
        """``a`` once its download ended, with the sha256 it was hashed to (a dump read while it arrived has none
        before); its download's error raised."""
        with self._lock:
            arrival = self._arrivals.get(str(a.path))
        if arrival is None or a.sha256:
            return a
        got = arrival.wait()
        return replace(a, sha256=got.sha256, sidecars=tuple(self._declared(got) + list(a.sidecars)))

    def _localize_folder(self, a: Artifact) -> Artifact:
        """A remote base backup: each of its objects downloaded (cached, verified, several at a time: a plain
        backup is a thousand small files), gathered in a private folder under their paths below the backup's
        folder, and read as a local base backup (its bytes say whether it is one)."""
        from concurrent.futures import ThreadPoolExecutor

        from .sources import basebackup

        assert self.remote is not None
        remote = self.remote
        started = time.monotonic()
        folder = self.rundir / "remote-folders" / hashlib.sha256(a.url.encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        folder_url = a.url.rsplit("/", 1)[0] + "/"
        objects = ((a.url, a.size - sum(m[1] for m in a.members), a.mtime, a.etag), *a.members)
        wanted = [(o, basebackup.member_path(folder_url, o[0])) for o in objects]
        strays = [o[0] for o, rel in wanted if rel is None]
        if strays:
            return replace(a, path=folder, format="unknown",
                           note=f"not recovered: object {strays[0]} would be written outside the backup's folder")

        plain = a.url.endswith("/backup_label")

        def gather(item: tuple[tuple[str, int, Any, str], Path]) -> int:
            (url, size, modified, etag), rel = item
            got = remote.fetch(url, size, modified, etag)
            place = folder / rel
            if not (place.exists() or place.is_symlink()):
                place.parent.mkdir(parents=True, exist_ok=True)
                if not plain:
                    place.symlink_to(got.path)  # a tar is only read: the cache's copy serves, none is made
                    return got.downloaded
                try:  # a file of the backup's own, not a link: a plain backup is refused for holding links
                    os.link(got.path, place)
                except OSError:
                    shutil.copyfile(got.path, place)
            return got.downloaded

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                downloaded = sum(pool.map(gather, wanted))
        except RemoteError as exc:
            return replace(a, format="unknown", note=f"cannot be downloaded: {exc}")
        if downloaded:
            self.downloads[a.url] = time.monotonic() - started
        bb = basebackup.read(folder)
        if bb is None:
            return replace(a, path=folder, format="unknown",
                           note=f"holds a {a.url.rsplit('/', 1)[-1]} that is no pg_basebackup output")
        return replace(a, path=folder, format="basebackup", compression=bb.compression, note=bb.describe())

    def _decrypt(self, a: Artifact) -> Artifact:
        if a.format != "gpg":
            return a

        name = a.path.name
        for suffix in (".gpg", ".pgp", ".asc"):
            name = name.removesuffix(suffix)
        target = self.rundir / "decrypted" / _key(a, False) / name
        try:
            decrypt(a.path, target, os.environ.get(self.passphrase_env))
        except DecryptError as exc:
            return replace(a, format="unknown", encrypted="gpg", note=f"{exc} (passphrase from ${self.passphrase_env})")
        fmt, layers, note = sniff(target)
        role = a.role or (role_from_content(target, layers) if fmt in ("plain", "dumpall") else "")
        return replace(a, path=target, format=fmt, compression=layers, note=note, role=role, encrypted="gpg")

    def _unwrap(self, a: Artifact) -> tuple[Artifact, ...]:
        """A tar or tar.gz that holds a pg_dump (a directory-format folder, a custom archive, plain SQL) stands for
        the dump(s) inside it, extracted into the run's private folder; any other tarball stays as it is."""
        if a.format not in ("tarball", "dump-tarball"):
            return (a,)
        target = self.rundir / "unwrapped" / _key(a, False)
        try:
            if not target.is_dir():
                _extract_safely(a, target)
            dumps = _dumps_in(target)
        except (OSError, tarfile.TarError, EOFError, UnreadableError, ValueError):
            return (a,)  # the tarball's own integrity read says what is wrong with it
        if not dumps:
            return (replace(a, format="tarball"),)
        return tuple(replace(inner, role=inner.role or a.role, sidecars=a.sidecars if i == 0 else (),
                             note=f"inside {a.name}", encrypted=a.encrypted)
                     for i, inner in enumerate(dumps))

    # -- archives a tool can open --------------------------------------------------------------

    def archive_path(self, artifact: Artifact) -> Path:
        """A real, uncompressed file or folder pg_restore can read (decompressed once per process)."""
        if not artifact.compression:
            return artifact.path
        key = _key(artifact, False)
        with self._lock:
            if key in self._materialized:
                return self._materialized[key]
        target_dir = self.rundir / "materialized"
        target_dir.mkdir(exist_ok=True)
        target = target_dir / f"{key}.{artifact.format}"
        fd, tmp = tempfile.mkstemp(dir=target_dir)
        try:
            with open(fd, "wb") as sink:
                read_all(artifact.path, artifact.compression, sink=sink)
            Path(tmp).rename(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._materialized[key] = target
        return target

    def release(self, artifact: Artifact) -> None:
        with self._lock:
            path = self._materialized.pop(_key(artifact, False), None)
        if path is not None:
            path.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------

    def inspect(self, artifact: Artifact, full: bool = True) -> ArtifactEvidence:
        """Read ``artifact``; with ``full`` False an archive's data blocks are left to the restore."""
        if artifact.format not in ARCHIVE_FORMATS:
            full = True
        key = _key(artifact, full)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        path = self.cache / f"{key}.json"
        lock = self.cache / f"{key}.lock"
        with open(lock, "w") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)  # another worker reading the same file: wait for its result
            try:
                if path.exists():
                    ev = ArtifactEvidence.from_json(path.read_text())
                else:
                    ev = self._read(artifact, full)
                    _write(path, ev)
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)
        with self._lock:
            self._memo[key] = ev
        return ev

    def known(self, artifact: Artifact) -> bool:
        """Whether this run has read the artifact whole (this process or another worker)."""
        key = _key(artifact, True)
        with self._lock:
            if key in self._memo:
                return True
        return (self.cache / f"{key}.json").exists()

    def head(self, a: Artifact) -> ArtifactEvidence:
        """A plain dump read to its first rows (dumpscan.scan_head): enough to choose a server and make its roles.
        The restore that runs the dump reads the rest, and what it read becomes the whole evidence (``remember``)."""
        ev = ArtifactEvidence(path=str(a.path), format=a.format)
        if a.size == 0 or a.format == "empty":
            ev.problems.append(f"{a.name} is empty ({a.note or '0 bytes'})")
            return ev
        with _said_in(a, ev):
            with open_sql(a.path, a.compression) as (stream, _):
                self._plain(a, ev, scan_head(stream))
        return ev

    def remember(self, a: Artifact, scan: DumpScan, problems: list[str]) -> ArtifactEvidence:
        """A plain dump a restore read to its end: its whole evidence, which the checks then take from here (and
        the other workers from the run's cache) instead of reading the dump again."""
        ev = ArtifactEvidence(path=str(a.path), format=a.format)
        self._check_sidecars(a, ev)
        self._plain(a, ev, scan)
        ev.problems += problems
        return self._keep(a, ev)

    def _keep(self, a: Artifact, ev: ArtifactEvidence) -> ArtifactEvidence:
        """Evidence of ``a`` read whole by something else than ``inspect`` (a restore, a recovery): the checks take
        it from here, the other workers from the run's cache."""
        key = _key(a, True)
        _write(self.cache / f"{key}.json", ev)
        with self._lock:
            self._memo[key] = ev
        return ev

    @staticmethod
    def _plain(a: Artifact, ev: ArtifactEvidence, scan: DumpScan) -> None:
        ev.scan = scan
        ev.data_read = scan.data_read
        ev.security += scan.security
        ev.problems += [f"{a.name}: {p}" for p in scan.errors]
        if scan.statements == 0:
            ev.problems.append(f"{a.name}: no SQL statement in the file")

    def _read(self, a: Artifact, full: bool) -> ArtifactEvidence:
        ev = ArtifactEvidence(path=str(a.path), format=a.format)
        self._check_sidecars(a, ev)
        if a.size == 0 or a.format == "empty":
            ev.problems.append(f"{a.name} is empty ({a.note or '0 bytes'})")
            return ev
        with _said_in(a, ev):
            if a.format in ARCHIVE_FORMATS:
                self._read_archive(a, ev, full)
            elif a.format in ("plain", "dumpall"):
                with open_sql(a.path, a.compression) as (stream, _):
                    self._plain(a, ev, scan_plain(stream))
            elif a.format == "json":
                with open_decompressed(a.path, a.compression) as stream:
                    try:
                        json.load(stream)
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        ev.problems.append(f"{a.name} is not valid JSON: {exc}")
                ev.data_read = True
            elif a.format in ("tarball", "dump-tarball"):
                with open_decompressed(a.path, a.compression) as stream:
                    names = read_tar_members(stream)
                ev.members = len(names)
                if not names:
                    ev.problems.append(f"{a.name}: a tar archive with no members")
                ev.data_read = True
            elif a.format == "git-bundle":
                self._verify_bundle(a, ev)
            elif a.format == "basebackup":
                self._verify_base_backup(a, ev)
            elif a.format == "pgbackrest":
                self._verify_repository(a, ev)
            elif a.format == "barman":
                self._verify_barman(a, ev)
            else:
                ev.problems.append(f"{a.name}: format not recognised ({a.note or 'unknown content'})")
        return ev

    def archive_info(self, a: Artifact) -> ArchiveInfo:
        """The archive's header and table of contents: this package's reader, else ``pg_restore --list`` (read once
        per file and process).

        An archive version or shape this reader does not know is no damage while pg_restore reads it.
        """
        real = self.archive_path(a)
        st = real.stat()
        key = (str(real), a.format, st.st_size, st.st_mtime_ns)
        known = self._tocs.get(key)
        if known is None:
            known = self._tocs[key] = self._archive_info(real, a.format)
        return known

    def _archive_info(self, real: Path, fmt: str) -> ArchiveInfo:
        try:
            return read_archive(real, fmt)
        except ArchiveError as own:
            tool = self._newest_pg_restore()
            if tool is None:
                raise ArchiveError(f"{own}; no pg_restore was found here to try it") from None
            proc = subprocess.run([tool, "--list", str(real)], capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                said = " | ".join(proc.stderr.strip().splitlines()[-2:])
                raise ArchiveError(f"{own}; {tool} --list cannot read it either: {said}") from None
            info = parse_list(proc.stdout)
            info.reader = tool
            return info

    def _newest_pg_restore(self) -> str | None:
        found = self.tools.installations()
        return max(found, key=lambda i: (i.major, i.minor)).tool("pg_restore") if found else None

    def _read_archive(self, a: Artifact, ev: ArtifactEvidence, full: bool) -> None:
        try:
            real = self.archive_path(a)  # decompresses outer layers: every byte and CRC is read
        except UnreadableError as exc:
            ev.problems.append(f"{a.name}: {exc}")
            return
        try:
            info = self.archive_info(a)
        except ArchiveError as exc:
            ev.problems.append(f"{a.name}: the archive's header or table of contents is unreadable ({exc})")
            return
        structure = member_problems(real, a.format, info)
        ev.problems += [f"{a.name}: {p}" for p in structure]
        if structure and a.format == "tar":
            # pg_restore (15-18) reading a tar archive cut short spins forever on the missing bytes: neither the
            # data read below nor a restore may hand it this file.
            ev.broken = structure[0]
            ev.scan = scan_archive_toc(info) if not info.listed_by_pg_restore else None
            ev.archive_version = info.version_text
            return
        if info.listed_by_pg_restore:
            # pg_restore read what this reader could not: its full read is the evidence.
            ev.scan = scan_archive_sql(str(real), info.reader)
            ev.security += ev.scan.security
            ev.archive_version = info.version_text
            ev.min_restore_major = max(info.min_restore_major, info.dump_major or 0)
            ev.has_offsets = False
            ev.data_read = ev.scan.data_read
            ev.problems += [f"{a.name}: {p}" for p in ev.scan.errors]
            return
        ev.scan = scan_archive_toc(info)
        ev.security += ev.scan.security
        ev.archive_version = info.version_text
        ev.min_restore_major = max(info.min_restore_major, info.dump_major or 0)
        ev.has_offsets = info.has_offsets
        if not full:
            return
        try:
            inst = self.tools.pick(ev.min_restore_major, why=f"archive {info.version_text}, pg_dump {info.dump_version}")
        except pgbin.NoSuitableBinaries as exc:
            ev.problems.append(f"{a.name}: cannot read its data blocks: {exc}")
            return
        scan_archive_data(str(real), inst.tool("pg_restore"), ev.scan)
        ev.data_read = ev.scan.data_read
        ev.problems += [f"{a.name}: {p}" for p in ev.scan.errors]
        # A full read means this run does not restore it: its decompressed copy is not needed again.
        self.release(a)

    def verify_unpacked(self, a: Artifact, datadir: Path) -> ArtifactEvidence:
        """A tar base backup a recovery has just unpacked into ``datadir``, verified there before anything else
        touches it; the integrity check takes this evidence (here, and from the run's cache) instead of
        unpacking the tars again."""
        ev = ArtifactEvidence(path=str(a.path), format=a.format)
        self._check_sidecars(a, ev)
        with _said_in(a, ev):
            self._verify_base_backup(a, ev, datadir)
        return self._keep(a, ev)

    def _verify_base_backup(self, a: Artifact, ev: ArtifactEvidence, unpacked: Path | None = None) -> None:
        """pg_verifybackup, before any recovery: files against the manifest, and the WAL the backup needs."""
        from .restore import recovery  # the recovery package reads evidence itself
        from .sources import barman, basebackup

        bb = basebackup.read(a.path)
        if bb is None:
            ev.problems.append(f"{a.name}: no longer reads as a base backup")
            return
        problems, notes = recovery.verify(bb, self.tools, self.rundir, a.wal_archive, unpacked)
        ev.problems += problems
        ev.checksum_ok += notes
        ev.data_read = True
        recorded = barman.server_backup_of(a.path)  # a Barman server's backup: what Barman recorded of it too
        if recorded is not None and recorded.status != "DONE":
            ev.problems.append(f"{a.name}: Barman records {recorded.describe()} as {recorded.status or 'unknown'}"
                               + (f": {recorded.error}" if recorded.error else ""))

    def _verify_repository(self, a: Artifact, ev: ArtifactEvidence) -> None:
        """``pgbackrest verify`` of the backup's stanza: every file of its backups and WAL against its checksums."""
        from .sources import pgbackrest

        stanza = a.path.parent.name
        try:
            problems = pgbackrest.verify(pgbackrest.repo_of(a, self.remote), stanza)
        except pgbackrest.PgBackRestError as exc:
            problems = [str(exc)]
        ev.problems += [f"stanza {stanza}: {p}" for p in problems]
        if not problems:
            ev.checksum_ok.append(f"pgbackrest verify: every file of stanza {stanza} matches its checksum")
        ev.data_read = True

    def _verify_barman(self, a: Artifact, ev: ArtifactEvidence) -> None:
        """What Barman says of the backup (barman-cloud-backup-show): done, or failed and why. Barman keeps no
        checksum of its files to verify: the recovery reads every byte."""
        from .sources import barman, basebackup

        try:
            b = basebackup.physical_of(a, self.remote)
        except barman.BarmanError as exc:
            ev.problems.append(str(exc))
            return
        if b.status != "DONE":
            ev.problems.append(f"{a.name}: Barman records the backup as {b.status or 'unknown'}"
                               + (f": {b.details.get('error')}" if b.details.get("error") else ""))
        else:
            ev.checksum_ok.append("Barman records the backup as DONE (it keeps no file checksums: the recovery "
                                  "reads every byte)")
        ev.data_read = True

    def _verify_bundle(self, a: Artifact, ev: ArtifactEvidence) -> None:
        git = shutil.which("git")
        if git is None:
            ev.problems.append(f"{a.name}: git is not installed, so the bundle cannot be verified (apt-get install git)")
            return
        with tempfile.TemporaryDirectory(dir=self.rundir) as repo:
            subprocess.run([git, "init", "-q", repo], check=True, capture_output=True)
            src = self.archive_path(a) if a.compression else a.path
            proc = subprocess.run([git, "-C", repo, "bundle", "verify", str(src.resolve())],
                                  capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            ev.problems.append(f"{a.name}: git bundle verify failed: {proc.stderr.strip()[-300:]}")
        ev.data_read = proc.returncode == 0

    def _check_sidecars(self, a: Artifact, ev: ArtifactEvidence) -> None:
        try:
            a = self.settled(a)
        except Exception as exc:  # noqa: BLE001 (the download's own error, said as the artifact's problem)
            ev.problems.append(f"{a.name}: cannot be downloaded: {exc}")
            return
        for sidecar in a.sidecars:
            algorithm = sidecar.suffix.lstrip(".")
            try:
                text = sidecar.read_text(errors="replace").split()
            except OSError as exc:
                ev.checksums.append(f"{sidecar.name} cannot be read ({exc.strerror})")
                continue
            expected = text[0].lower() if text else ""
            with contextlib.suppress(OSError):
                # A download was hashed as it was written (and a cached copy again before it was trusted).
                found = a.sha256 if algorithm == "sha256" and a.sha256 else sha_of(a.path, algorithm)
                if expected != found:
                    ev.checksums.append(f"{sidecar.name} says {algorithm} {expected or '(empty)'}, the file's is {found}")
                else:
                    ev.checksum_ok.append(f"{sidecar.name}: {algorithm} matches")
