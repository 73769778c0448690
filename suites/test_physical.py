"""Physical backups: the WAL archive is whole, fresh and long enough, and the recovered cluster's pages are intact."""

from __future__ import annotations

import pytest

from backupcheck.checks import physical
from backupcheck.plugins.verdict import judge
from backupcheck.restore import recovery


def test_wal_archive_has_no_gap(series, wal_archive, now, attach, evidence_store):
    """Every WAL segment from the oldest base backup's first to the newest is in the archive: any moment in between can be recovered."""
    if wal_archive is not None:
        attach("WAL archive", f"{wal_archive.path}: {len(wal_archive.segments)} segment(s), "
                              f"newest {wal_archive.newest.name if wal_archive.newest else 'none'}")
    judge(physical.continuity(series, wal_archive, now, evidence_store.remote))


def test_newest_wal_is_within_rpo(series, wal_archive, settings, now, evidence_store):
    """The newest archived WAL segment is within the series' RPO: the latest moment point-in-time recovery reaches is recent."""
    judge(physical.wal_freshness(series, wal_archive, settings.for_series(series.name).rpo, now,
                                 evidence_store.remote))


@pytest.mark.when_configured("recovery_window")
def test_recovery_window_is_kept(series, wal_archive, settings, now, evidence_store):
    """An unbroken chain of base backup and WAL reaches back as far as the series' recovery_window promises."""
    judge(physical.window_kept(series, wal_archive, settings.for_series(series.name).recovery_window, now,
                               evidence_store.remote))


@pytest.mark.needs_restore
def test_recovered_pages_are_intact(backup, restored, series_settings, attach):
    """pg_amcheck finds every table and B-tree index page of the recovered cluster consistent, and no page failed its data checksum."""
    db = restored.require_data()
    problems, covered = recovery.amcheck(db.target, db.result.databases, series_settings.amcheck_budget.total_seconds())
    on, failures = recovery.checksum_failures(db.target)
    attach("pg_amcheck", f"covered: {covered}\ndata checksums: {'on' if on else 'off'}\n" + "\n".join(problems))
    judge(physical.pages_intact(backup.key, problems, covered, on, failures))
