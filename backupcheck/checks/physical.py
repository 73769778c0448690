"""Physical backups and point-in-time recovery: the WAL archive has no gap, is fresh, keeps the promised recovery
window, and the recovered cluster's pages are intact."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..model import Finding, Series
from ..schema import ConfigError, Setting, parse_duration
from ..sources import barman, basebackup, is_remote, pgbackrest
from ..sources.base import RemoteError
from ..sources.basebackup import WalArchive
from .freshness import duration_text

CHECK = "physical"
DEFAULT_RPO = timedelta(hours=26)


def parse_target(value: Any, key: str) -> str:
    """A moment with its offset (``2026-12-06 14:05Z``) or a restore point (``name:before-migration``)."""
    text = str(value).strip()
    if text.startswith("name:") and len(text) > 5:
        return text
    try:
        target_time(text)
    except ValueError:
        raise ConfigError(f"{key} = {value!r}: expected a moment with its offset, like '2026-12-06 14:05Z', or a "
                          "restore point, like 'name:before-migration'") from None
    return text


def target_time(text: str) -> datetime:
    from ..settings import parse_now

    try:
        return parse_now(text.replace(" ", "T", 1) if " " in text else text, "recover_to")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} = {value!r}: expected the path of a folder of archived WAL segments, or the "
                          "s3:// prefix they are under")
    return value.strip()


SETTINGS = (
    Setting("wal_archive", "physical", _path, "the folder (or s3:// prefix) of the series' archived WAL, where it is "
            "not beside its base backups", "found beside the base backups"),
    Setting("recovery_window", "physical", parse_duration, "how far back the series promises point-in-time "
            "recovery: \"14d\""),
    Setting("recover_to", "physical", parse_target, "recover the base backup to this moment (\"2026-12-06 14:05Z\") "
            "or restore point (\"name:before-migration\") instead of the archive's end (also --recover-to)",
            "the archive's end"),
    Setting("amcheck_budget", "physical", parse_duration, "the time pg_amcheck may take on one recovered backup",
            "10m"),
)


def archive_of(series: Series, configured: str = "", remote: Any = None) -> WalArchive | None:
    """The series' WAL archive: a pgBackRest stanza's own, else configured, else found beside its newest base
    backup. Raises OSError or PgBackRestError where it cannot be read."""
    newest = next((b.base_backup for b in reversed(series.backups) if b.base_backup is not None), None)
    if newest is not None and newest.format == "pgbackrest":
        return pgbackrest.archive(pgbackrest.repo_of(newest, remote), newest.path.parent.name)
    if newest is not None and newest.format == "barman":
        source, server, _id = barman.split_url(newest.url)
        return barman.list_archive(remote, source, server, None)
    if newest is not None and newest.wal_archive_url and not configured:
        return basebackup.remote_archive(remote, newest.wal_archive_url)
    if configured:
        if is_remote(configured):
            return basebackup.remote_archive(remote, configured)
        return basebackup.read_archive(Path(configured))
    for backup in reversed(series.backups):
        artifact = backup.base_backup
        if artifact is not None and artifact.wal_archive is not None:
            return basebackup.read_archive(artifact.wal_archive)
    return None


@functools.lru_cache(maxsize=4096)
def _start_segment(artifact: Any, remote: Any) -> str:
    """A base backup's first WAL segment ("" where its own tool cannot say: the integrity check's finding). Asked
    once per backup and run: for a repository's backup each answer is a command (pgbackrest info, Barman's
    backup-show) or a download (a remote backup_manifest), and three checks ask."""
    try:
        bb = basebackup.physical_of(artifact, remote)
    except (barman.BarmanError, pgbackrest.PgBackRestError, basebackup.PhysicalError, RemoteError):
        return ""
    return bb.start_segment if bb is not None else ""


def _starts(series: Series, remote: Any = None) -> list[tuple[datetime, str, str]]:
    """(taken, start segment, key) of every base backup of the series, oldest first."""
    out = []
    for b in series.backups:
        segment = _start_segment(b.base_backup, remote) if b.base_backup is not None else ""
        if segment:
            out.append((b.taken_at, segment, b.key))
    return out


def continuity(series: Series, archive: WalArchive | None, now: datetime, remote: Any = None) -> list[Finding]:
    """No segment missing from the oldest base backup's first segment to the archive's newest: a gap makes every
    moment after it unreachable from the base backups before it."""
    if archive is None:
        return [Finding(CHECK, series.name, "the series has no WAL archive: it can be recovered to the end of each "
                        "base backup only", "a folder of archived WAL segments beside the base backups (or "
                        "wal_archive in its config)", "none found", hint="set archive_command on the server, or "
                        "wal_archive = \"…\" for the series")]
    starts = _starts(series, remote)
    if not starts:
        return []
    findings = []
    for gap in archive.gaps(starts[0][1]):
        later = [(t, k) for t, seg, k in starts if archive.number(seg) > archive.number(gap.first_missing)]
        window_end = f"{later[0][0]:%Y-%m-%d %H:%M} UTC (base backup {later[0][1]})" if later else \
            f"now ({now:%Y-%m-%d %H:%M} UTC): no base backup after it"
        lost_from = gap.after.modified
        findings.append(Finding(
            CHECK, series.name, "the WAL archive has a gap: point-in-time recovery cannot cross it",
            f"every segment from {starts[0][1]} (the oldest base backup's first) to {archive.newest.name if archive.newest else '?'}",
            f"segment {gap.first_missing} is missing" + (f" with {gap.count - 1} after it" if gap.count > 1 else "")
            + f"; the archive resumes at {gap.resumes.name}. Unrecoverable window: {lost_from:%Y-%m-%d %H:%M} UTC "
            f"to {window_end}",
            hint="find why archive_command failed for it (the server log of that time); take a new base backup now "
                 "so that recovery to the present needs no segment before it", where=str(archive.path)))
    return findings


def wal_freshness(series: Series, archive: WalArchive | None, rpo: timedelta | None, now: datetime,
                  remote: Any = None) -> list[Finding]:
    """The newest archived segment is recent: for point-in-time recovery the newest WAL, not the newest base
    backup, is the latest moment that can be recovered."""
    if archive is None or archive.newest is None:
        return continuity(series, archive, now, remote) if archive is None else [
            Finding(CHECK, series.name, "the WAL archive holds no segment", "archived WAL segments", "none",
                    where=str(archive.path))]
    limit = rpo or DEFAULT_RPO
    newest = reachable_newest(series, archive, remote) or archive.newest
    age = now - newest.modified
    if age <= limit:
        return []
    base = series.newest.taken_at
    broken = newest is not archive.newest
    what = ("a gap in the WAL archive: the newest moment recovery can reach is old" if broken else
            "the WAL archive stopped: the newest moment recovery can reach is old")
    return [Finding(
        CHECK, series.name, what,
        f"a segment archived within the RPO ({duration_text(limit)}{'' if rpo else ', the default'})",
        f"the newest segment {'recovery reaches (the chain breaks after it) ' if broken else ''}{newest.name} was "
        f"archived {duration_text(age)} ago ({newest.modified:%Y-%m-%d %H:%M} UTC), while the newest base backup "
        f"is from {base:%Y-%m-%d %H:%M} UTC",
        hint=("take a new base backup now: no chain of WAL reaches the present from the ones there are" if broken else
              "archive_command is failing or archiving was turned off: see pg_stat_archiver on the server "
              "(failed_count, last_failed_wal)"), where=str(archive.path))]


def reachable_newest(series: Series, archive: WalArchive, remote: Any = None) -> basebackup.Segment | None:
    """The newest segment an unbroken chain from the newest base backup reaches (None: no base backup to start
    from)."""
    starts = _starts(series, remote)
    if not starts:
        return None
    gaps = archive.gaps(starts[-1][1])
    return gaps[0].after if gaps else archive.newest


def window_kept(series: Series, archive: WalArchive | None, window: timedelta, now: datetime,
                remote: Any = None) -> list[Finding]:
    """The oldest moment reachable by an unbroken chain (a base backup and every segment after it to the newest)
    is at least ``window`` ago."""
    if archive is None:
        return continuity(series, archive, now, remote)
    starts = _starts(series, remote)
    reachable = None
    for taken, seg, _key in starts:
        if not archive.gaps(seg):
            reachable = archive.stops.get(seg, taken)
            break
    promised = now - window
    if reachable is not None and reachable <= promised:
        return []
    found = (f"the oldest moment an unbroken chain reaches is {reachable:%Y-%m-%d %H:%M} UTC "
             f"({duration_text(now - reachable)} ago)") if reachable else "no base backup has an unbroken chain of WAL to the newest segment"
    return [Finding(CHECK, series.name, "the recovery window promised is not kept",
                    f"point-in-time recovery to any moment since {promised:%Y-%m-%d %H:%M} UTC "
                    f"(recovery_window {duration_text(window)})", found,
                    hint="keep base backups and WAL for the whole window (retention of the backup tool), and close "
                         "any gap in the archive")]


def pages_intact(key: str, problems: list[str], covered: str, checksums_on: bool,
                 failures: list[str]) -> list[Finding]:
    findings = [Finding(CHECK, key, "a page of the recovered cluster is corrupt", "every table and index page "
                        f"readable and consistent (pg_amcheck; covered: {covered})", p,
                        hint="the backup carries a damaged page: recover from an older base backup and check the "
                             "production server's disks (pg_amcheck there)")
                for p in problems[:20]]
    if failures:
        findings.append(Finding(CHECK, key, "pages failed their data checksum in the recovered cluster",
                                "no checksum failure", "; ".join(failures),
                                hint="a bit flipped on disk or in transit: the named database's pages are damaged"))
    if not checksums_on and findings:
        findings[0] = Finding(findings[0].check, key, findings[0].what, findings[0].expected,
                              findings[0].found + " (data checksums are off in this cluster: only amcheck can see "
                              "damage)", findings[0].hint, findings[0].where)
    return findings
