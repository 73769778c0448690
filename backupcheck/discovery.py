"""Walk backup folders and group what is there into series and backups."""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .model import Artifact, Backup, Listing, Series, utc
from .pgarchive import ArchiveError, read_archive
from .sniff import head_bytes, open_decompressed, sniff, tar_holds_dump
from .sources import barman, basebackup, pgbackrest
from .sources.base import Listed, Place, container_path
from .timestamps import find_timestamp, split_role, strip_extensions

SIDECAR_SUFFIXES = (".sha256", ".md5", ".sha1", ".sha512")
MANIFEST_SUFFIX = ".manifest.json"  # backupcheck dump's manifest, read with the artifact it describes


COMPRESSED = (".gz", ".gzip", ".zst", ".zstd", ".lz4", ".bz2", ".xz")


def _described(name: str, names: set[str]) -> bool:
    """A sidecar checksum or a manifest of another listed file: read with that file, not a backup of its own (a
    manifest of ``x.sql`` describes ``x.sql.gz`` too: the dump compressed after it was written)."""
    if name.endswith(MANIFEST_SUFFIX):
        base = name[:-len(MANIFEST_SUFFIX)]
        return base in names or any(base + c in names for c in COMPRESSED)
    return name.endswith(SIDECAR_SUFFIXES) and name.rsplit(".", 1)[0] in names


def manifest_names(name: str) -> tuple[str, ...]:
    """Where the manifest of ``name`` may be: beside it, or beside the uncompressed name it was written under."""
    plain = next((name[: -len(c)] for c in COMPRESSED if name.endswith(c)), None)
    return (name + MANIFEST_SUFFIX,) + ((plain + MANIFEST_SUFFIX,) if plain else ())


@dataclass(frozen=True)
class _Candidate:
    path: Path
    folder: Path  # the folder the backup lives in (for grouping)
    stem: str  # series stem
    role: str
    when: datetime | None
    source: str  # name, header, mtime
    unit: Path | None = None  # a timestamped folder that is one backup
    remote: Listed | None = None
    remote_sidecars: tuple[str, ...] = ()
    zoned: bool = False  # the time came from a name that states its offset
    remote_manifest: str = ""
    artifact: Artifact | None = None  # known already: a physical backup of a repository, or a remote folder


def _remote_candidates(location: Place, objects: list[Listed], access: Any = None,
                       problems: list[str] | None = None) -> list[_Candidate]:
    """Objects under a remote prefix, grouped like files: no byte is read; the listing's time stands in for mtime."""
    keys = {o.key for o in objects}
    out = []
    base = location.prefix if location.prefix.endswith("/") or not location.prefix else location.prefix + "/"
    physical, consumed = _physical_candidates(location, objects, access, problems if problems is not None else [])
    out += physical
    for o in objects:
        if o.key.endswith("/") or o.key in consumed:
            continue  # a folder marker, or a file of a physical backup's layout (read with that backup)
        if _described(o.key, keys):
            continue
        rel = o.key[len(base):] if o.key.startswith(base) else o.key.rsplit("/", 1)[-1]
        parts = rel.split("/")
        name, dirs = parts[-1], parts[:-1]
        path = container_path(o, o.key)
        sidecars = tuple(f"{o.url}{sfx}" for sfx in SIDECAR_SUFFIXES if o.key + sfx in keys)
        folder_key = o.key[: o.key.rfind("/") + 1]
        described = next((o.url[: len(o.url) - len(o.key)] + folder_key + m
                          for m in manifest_names(o.key[len(folder_key):]) if folder_key + m in keys), "")
        unit_index = next((i for i, d in enumerate(dirs) if find_timestamp(d)), None)
        if unit_index is not None:
            unit_name = dirs[unit_index]
            stamp = find_timestamp(unit_name)
            assert stamp is not None
            folder = container_path(o, base) / "/".join(dirs[:unit_index])
            stem, _ = split_role(strip_extensions(stamp.stem))
            role = split_role(strip_extensions(name))[1]
            out.append(_Candidate(path, folder, stem or folder.name, role, stamp.when, "name",
                                  folder / unit_name, o, sidecars, stamp.zoned, described))
            continue
        folder = container_path(o, base) / "/".join(dirs)
        stamp = find_timestamp(name)
        if stamp:
            stem, role = split_role(strip_extensions(stamp.stem))
            out.append(_Candidate(path, folder, stem, role, stamp.when, "name", None, o, sidecars, stamp.zoned,
                                  described))
        else:
            stem, role = split_role(strip_extensions(name))
            out.append(_Candidate(path, folder, stem, role, o.last_modified, "mtime", None, o, sidecars,
                                  remote_manifest=described))
    return out


def _physical_candidates(location: Place, objects: list[Listed], access: Any,
                         problems: list[str]) -> tuple[list[_Candidate], set[str]]:
    """Physical backups among a listing's objects (Barman's cloud layout, pgBackRest repositories, pg_basebackup's
    tar output with a WAL folder beside it), and the keys they account for."""
    out: list[_Candidate] = []
    found, consumed = barman.find(objects)
    for b in found:
        url = f"{b.source}/{b.server}/base/{b.backup_id}"
        path = container_path(b.info, b.info.key.rsplit("/", 1)[0])
        artifact = Artifact(path=path, size=b.size, mtime=b.info.last_modified, format="barman", url=url,
                            note=f"Barman cloud backup {b.backup_id} of server {b.server}")
        stamp = find_timestamp(b.backup_id)
        out.append(_Candidate(path, container_path(b.info, b.info.key.split("/base/", 1)[0]), b.server, "",
                              stamp.when if stamp else b.info.last_modified, "name" if stamp else "mtime",
                              zoned=bool(stamp and stamp.zoned), artifact=artifact))
    roots, repository_keys = pgbackrest.in_listing(objects)
    consumed |= repository_keys
    for root in roots:
        url = f"{location.scheme}://{location.container}/{root.rstrip('/')}"
        options = access.options_for(url) if access is not None and hasattr(access, "options_for") else None
        out += _repository_candidates(pgbackrest.s3_repo(url, options), problems)
    bases, held = basebackup.remote_layout(objects)
    consumed |= held
    for rb in bases:
        folder_url = rb.base.url[: len(rb.base.url) - len(rb.base.key)] + rb.folder
        path = container_path(rb.base, rb.folder.rstrip("/"))
        parent = path.parent
        artifact = Artifact(path=path, size=rb.size, mtime=rb.base.last_modified, format="remote", role="basebackup",
                            url=rb.base.url, etag=rb.base.etag,
                            note=f"pg_basebackup {'plain' if rb.plain else 'tar'} output under {folder_url}",
                            members=tuple((o.url, o.size, o.last_modified, o.etag) for o in rb.others),
                            wal_archive_url=(folder_url[: len(folder_url) - len(rb.folder)] + rb.wal_folder
                                             if rb.wal_folder else ""))
        stamp = find_timestamp(path.name)
        out.append(_Candidate(path, parent.parent, parent.name, "", stamp.when if stamp else rb.base.last_modified,
                              "name" if stamp else "mtime", zoned=bool(stamp and stamp.zoned), artifact=artifact))
    return out, consumed


def _remote_artifact(c: _Candidate) -> Artifact:
    o = c.remote
    assert o is not None
    return Artifact(path=c.path, size=o.size, mtime=o.last_modified, format="remote", role=c.role,
                    url=o.url, etag=o.etag, sidecar_urls=c.remote_sidecars,
                    manifest_url=c.remote_manifest)


def artifact_of(path: Path, role: str = "") -> Artifact:
    """One file or pg_dump folder as an artifact: its format told from its content."""
    return _artifact(path, role)


def _artifact(path: Path, role: str = "") -> Artifact:
    try:
        st = path.stat()
    except OSError as exc:
        return Artifact(path=path, size=0, mtime=utc(0), format="unknown", note=f"cannot be read: {exc.strerror}")
    size = st.st_size
    if path.is_dir():
        size = _folder_size(path)
        physical = basebackup.read(path)
        if physical is not None:
            return _base_backup_artifact(path, physical, size, utc(st.st_mtime), role)
    fmt, layers, note = sniff(path)
    if fmt == "tarball" and tar_holds_dump(path, layers) is not False:
        fmt = "dump-tarball"  # unpacked, verified and restored as the dump inside it
    if fmt == "json" or path.suffix.lower() == ".json" and fmt == "unknown":
        role = role or "config"
    sidecars = tuple(p for p in (Path(str(path) + s) for s in SIDECAR_SUFFIXES) if p.is_file())
    if fmt in ("plain", "dumpall") and not role:
        role = role_from_content(path, layers)
    manifest = next((p for p in (path.with_name(m) for m in manifest_names(path.name)) if p.is_file()), None)
    return Artifact(path=path, size=size, mtime=utc(st.st_mtime), format=fmt, compression=layers,
                    role=role, sidecars=sidecars, note=note, manifest=manifest)


def role_from_content(path: Path, layers: tuple[str, ...]) -> str:
    """A Supabase ``roles.sql`` has no name timestamp to say what it is; its content does."""
    try:
        head = head_bytes(path, layers, 16384).decode("utf-8", "replace")
    except Exception:
        return ""
    statements = [ln for ln in head.splitlines() if ln.strip() and not ln.startswith("--")]
    if statements and all(ln.upper().startswith(("CREATE ROLE", "ALTER ROLE", "SET ", "GRANT ", "RESET "))
                          for ln in statements[:50]) and "CREATE TABLE" not in head and "COPY " not in head:
        return "roles"
    return ""


def _header_time(path: Path) -> datetime | None:
    """The start time a custom archive records (the dumping host's local time, taken as UTC)."""
    fmt, layers, _ = sniff(path)
    if fmt not in ("custom", "directory"):
        return None

    try:
        if fmt == "directory":
            return read_archive(path, fmt, header_only=True).created

        with open_decompressed(path, layers) as stream:
            return read_archive(path, fmt, stream=stream, header_only=True).created
    except (ArchiveError, Exception):
        return None


def _walk(root: Path, candidates: list[_Candidate], problems: list[str], skip: frozenset[Path] = frozenset(),
          physicals: dict[str, basebackup.BaseBackup | None] | None = None) -> None:
    """``physicals``: what each subfolder of ``root`` holds as a base backup, when the caller read it already."""
    if root.resolve() in skip:
        return  # our own reports or work folder, nested under a source
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        problems.append(f"{root}: cannot be listed ({exc.strerror})")
        return
    names = {e.name for e in entries}
    if physicals is None:
        physicals = _base_backups_in(root)
    # A plain base backup's tablespaces, beside its data folder (pg_basebackup -T into the backup's folder)
    carried = {t for bb in physicals.values() if bb is not None for t in basebackup.tablespace_folders(bb)}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if (path / "toc.dat").is_file():
                candidates.append(_file_candidate(path, root))
                continue
            physical = physicals.get(entry.name)
            if physical is None and path.resolve() in carried:
                continue  # read with the base backup whose tablespace it is (a backup is never hidden so)
            if physical is not None:
                candidates.append(_base_backup_candidate(path, root, physical))
                continue
            if basebackup.is_wal_archive(path):
                continue  # a WAL archive: read with the base backups beside it, not a backup of its own
            if pgbackrest.is_repository(path):
                candidates += _repository_candidates(path, problems)
                continue
            if barman.is_server(path):
                candidates += _barman_server_candidates(path)
                continue
            stamp = find_timestamp(entry.name)
            held = _base_backups_in(path) if stamp else {}
            if stamp and not any(held.values()):
                # A timestamped folder is one backup: every file below it is one of its artifacts.
                stem, _ = split_role(strip_extensions(stamp.stem))
                for inner in sorted(path.rglob("*")):
                    if any(part.startswith(".") for part in inner.relative_to(path).parts):
                        continue
                    if inner.is_dir():
                        if (inner / "toc.dat").is_file():
                            candidates.append(_Candidate(inner, root, stem or root.name, "", stamp.when, "name", path))
                        continue
                    if any(parent != path and (parent / "toc.dat").is_file() for parent in inner.parents
                           if parent.is_relative_to(path)):
                        continue
                    if inner.name.endswith(SIDECAR_SUFFIXES + (MANIFEST_SUFFIX,)):
                        continue
                    role = split_role(strip_extensions(inner.name))[1]
                    candidates.append(_Candidate(inner, root, stem or root.name, role, stamp.when, "name", path))
                continue
            _walk(path, candidates, problems, skip, held or None)
        elif entry.is_file():
            if _described(entry.name, names):
                continue  # a checksum or manifest of another file: read with it
            candidates.append(_file_candidate(path, root))


def _base_backups_in(folder: Path) -> dict[str, basebackup.BaseBackup | None]:
    """Each subfolder of ``folder`` and the base backup it holds (None: none). A night's folder with one right
    inside it (``2026-12-07/data``) is walked, not taken as one backup's files."""
    try:
        return {e.name: basebackup.read(Path(e.path)) for e in os.scandir(folder)
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}
    except OSError:
        return {}


def _base_backup_artifact(path: Path, physical: basebackup.BaseBackup, size: int, mtime: datetime,
                          role: str = "", archive: Path | None = None, note: str = "") -> Artifact:
    """``archive``: the WAL archive where its layout says which (a Barman server's), else the one beside it."""
    night = path.parent if find_timestamp(path.parent.name) is not None else path  # shop/<night>/data
    return Artifact(path=path, size=size, mtime=mtime, format="basebackup", compression=physical.compression,
                    role=role, note=note or physical.describe(),
                    wal_archive=archive if archive is not None else basebackup.find_archive(night))


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _base_backup_candidate(path: Path, folder: Path, physical: basebackup.BaseBackup) -> _Candidate:
    """A base backup is one backup of the series named after the folder that holds it, taken when its
    backup_label says it started (its name may say nothing). Its artifact is made here, from the read that
    found it."""
    if find_timestamp(folder.name) is not None:  # shop/2026-12-07/data: the series is shop, not each night
        folder = folder.parent
    mtime = utc(path.stat().st_mtime)
    artifact = _base_backup_artifact(path, physical, _folder_size(path), mtime)
    if physical.started is not None:
        return _Candidate(path, folder, folder.name, "", physical.started, "header", artifact=artifact)
    stamp = find_timestamp(path.name)
    if stamp:
        return _Candidate(path, folder, folder.name, "", stamp.when, "name", zoned=stamp.zoned, artifact=artifact)
    return _Candidate(path, folder, folder.name, "", mtime, "mtime", artifact=artifact)


def _barman_server_candidates(server: Path) -> list[_Candidate]:
    """Each backup of a Barman server's folder: the server is the series, the backup's ``data`` folder the base
    backup (read as any other), ``wals/`` its archive; taken when Barman says it began. A backup whose data
    folder holds no base backup, or that needs others to be recovered, is an artifact that says so."""
    out = []
    for sb in barman.server_backups(server):
        physical = basebackup.read(sb.data)
        taken = (physical.started if physical is not None else None) or sb.begun
        refusal = sb.refusal()
        if physical is not None and not refusal:
            artifact = _base_backup_artifact(sb.data, physical, _folder_size(sb.data), utc(sb.data.stat().st_mtime),
                                             archive=server / "wals", note=f"{sb.describe()}: {physical.describe()}")
        else:
            try:
                mtime = utc((server / "base" / sb.backup_id).stat().st_mtime)
            except OSError:
                mtime = utc(0)
            artifact = Artifact(path=sb.data, size=0, mtime=mtime, format="unknown",
                                note=refusal or f"{sb.describe()} (status {sb.status or 'not recorded'}): its data "
                                                "folder holds no base backup")
        out.append(_Candidate(sb.data, server.parent, server.name, "", taken or artifact.mtime,
                              "header" if taken else "mtime", artifact=artifact))
    return out


def _repository_candidates(repo: pgbackrest.Repo, problems: list[str]) -> list[_Candidate]:
    """Each backup of each stanza of a pgBackRest repository, as its binary lists them: the stanza is the series."""
    try:
        found = pgbackrest.backups(repo)
    except (pgbackrest.PgBackRestError, OSError, subprocess.SubprocessError) as exc:
        problems.append(f"{repo}: a pgBackRest repository that cannot be listed: {exc}")
        return []
    out = []
    for b in found:
        artifact = Artifact(path=b.path, size=b.size, mtime=b.stopped, format="pgbackrest", note=b.describe(),
                            url=b.url)
        out.append(_Candidate(b.path, b.path.parent.parent.parent, b.stanza, "", b.started, "header",
                              artifact=artifact))
    return out


def _file_candidate(path: Path, folder: Path) -> _Candidate:
    stamp = find_timestamp(path.name)
    if stamp:
        stem, role = split_role(strip_extensions(stamp.stem))
        return _Candidate(path, folder, stem, role, stamp.when, "name", zoned=stamp.zoned)
    stem, role = split_role(strip_extensions(path.name))
    when = _header_time(path)
    if when is not None:
        return _Candidate(path, folder, stem, role, when, "header")
    try:
        return _Candidate(path, folder, stem, role, utc(path.stat().st_mtime), "mtime")
    except OSError:
        return _Candidate(path, folder, stem, role, None, "mtime")


_PARTS = ("roles", "schema", "data")
PARTS_WINDOW = timedelta(minutes=30)


def _merge_parts(candidates: list[_Candidate]) -> list[_Candidate]:
    """Roles, schema and data files with no time in their names (``supabase db dump``'s roles.sql, schema.sql and
    data.sql; ``pagila-schema.sql`` and ``pagila-data.sql``) written within half an hour of each other in one
    folder are one backup, taken when the first was written."""
    parts: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
    rest = []
    for c in candidates:
        if c.unit is None and c.source == "mtime" and c.when is not None and c.role in _PARTS:
            parts[(str(c.folder), c.stem)].append(c)
        else:
            rest.append(c)
    for members in parts.values():
        members.sort(key=lambda c: c.when)  # type: ignore[arg-type, return-value]
        start = previous = members[0].when
        for c in members:
            assert c.when is not None and previous is not None
            if c.when - previous > PARTS_WINDOW:
                start = c.when
            previous = c.when
            rest.append(replace(c, when=start))
    return rest


def discover(sources: list[Path] | tuple[Path, ...], exclude: tuple[Path, ...] = (),
             remote: list[tuple[Place, list[Listed]]] | None = None,
             name_zone: Callable[[str], str] | None = None, access: Any = None) -> Listing:
    """Group every artifact under ``sources`` (and listed S3 objects) into series of backups, oldest first.

    Folders in ``exclude`` (the reports and work folders) are never read as backups. ``name_zone`` gives a
    series' time zone for times written in names without an offset (``date +%Y%m%d_%H%M%S`` on a host in
    Paris writes Paris time); by default such times are UTC.
    """
    skip = frozenset(Path(p).resolve() for p in exclude)
    listing = Listing()
    candidates: list[_Candidate] = []
    for location, objects in remote or []:
        candidates += _remote_candidates(location, objects, access, listing.problems)
    for source in sources:
        source = Path(source)
        if not source.exists():
            listing.problems.append(f"{source}: no such file or folder")
            continue
        if source.is_file():
            candidates.append(_file_candidate(source, source.parent))
        elif (source / "toc.dat").is_file():
            candidates.append(_file_candidate(source, source.parent))
        elif (physical := basebackup.read(source)) is not None:
            candidates.append(_base_backup_candidate(source, source.parent, physical))
        elif pgbackrest.is_repository(source):
            candidates += _repository_candidates(source, listing.problems)
        elif barman.is_server(source):
            candidates += _barman_server_candidates(source)
        else:
            _walk(source, candidates, listing.problems, skip)

    candidates = _merge_parts(candidates)
    groups: dict[tuple[str, str, datetime | None, Path | None], list[_Candidate]] = defaultdict(list)
    for c in candidates:
        groups[(str(c.folder), c.stem, c.when if c.unit is None and c.source == "name" else c.when, c.unit)].append(c)

    # Series are named by stem; a stem left empty (schema_/data_ pairs) takes its folder's name.
    by_series: dict[str, list[Backup]] = defaultdict(list)
    folders_for_name: dict[str, set[str]] = defaultdict(set)
    for folder, stem, _when, _unit in groups:
        folders_for_name[stem or Path(folder).name].add(folder)
    for (folder, stem, when, _unit), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))):
        name = stem or Path(folder).name or "backup"
        if len(folders_for_name[name]) > 1:
            name = f"{Path(folder).name}-{name}"
        artifacts = tuple(c.artifact or (_artifact(c.path, c.role) if c.remote is None else _remote_artifact(c))
                          for c in sorted(members, key=lambda c: str(c.path)))
        taken = when if when is not None else utc(0)
        source = members[0].source
        zone = name_zone(name) if name_zone is not None else "UTC"
        if source == "name" and zone != "UTC" and not any(c.zoned for c in members):
            taken = taken.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
        backup = Backup(series=name, taken_at=taken, artifacts=artifacts, time_source=source)
        by_series[name].append(backup)

    for name in sorted(by_series):
        backups = sorted(by_series[name], key=lambda b: b.taken_at)
        # Two backups of a series within the same second would share a test id: they are one backup.
        unique: list[Backup] = []
        for b in backups:
            if unique and unique[-1].key == b.key:
                prev = unique[-1]
                unique[-1] = replace(prev, artifacts=prev.artifacts + b.artifacts)
                continue
            unique.append(b)
        listing.series.append(Series(name=name, backups=tuple(unique)))
    return listing
