"""Row counts: tables hold the rows they should, and none lost most of them overnight."""

from __future__ import annotations

import pytest

from backupcheck.checks import restoring
from backupcheck.plugins.verdict import judge
from backupcheck.restore.database import QueryFailed


def _table(counts, before=None):
    lines = [f"{'table':40} {'rows':>12} {'previous':>12}"]
    for key in sorted(counts):
        prev = "" if before is None else f"{before.get(key, 0):>12,}"
        now = "missing" if counts[key] is None else f"{counts[key]:,}"
        lines.append(f"{key:40} {now:>12} {prev}")
    return "\n".join(lines)


@pytest.fixture
def row_counts(restored, record_tables):
    db = restored.require_data()
    try:
        counts = db.row_counts()
    except QueryFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    record_tables(db.leaf_counts())
    return counts


def _costs(db) -> str:
    return ("\n\nlarge tables:\n" + "\n".join(db.costs)) if db.costs else ""


@pytest.mark.needs_restore
@pytest.mark.when_configured("critical_tables")
def test_critical_tables_meet_their_minimum_rows(backup, restored, row_counts, series_settings, attach):
    """Every critical table exists, is non-empty and holds at least its configured minimum of rows."""
    attach("row counts", _table(row_counts) + _costs(restored.require()))
    findings = restoring.critical_tables(backup.key, row_counts, series_settings, backup.series,
                                         restored.require().expected_tables())
    judge(findings)


@pytest.mark.needs_restore
def test_no_table_lost_more_rows_than_allowed_since_previous_backup(backup, restored, previous_counts, series_settings,
                                                                    record_tables, attach):
    """No table holds fewer rows than the previous backup by more than the allowed share (default 20%)."""
    previous_key, before = previous_counts
    if previous_key is None:
        pytest.skip(f"{backup.key} has no earlier readable backup to compare with")
    db = restored.require_data()
    row_counts = db.row_counts()
    record_tables(db.leaf_counts())
    attach("row counts", _table(row_counts, before) + _costs(db))
    findings = restoring.row_drops(backup.key, backup.series, previous_key, row_counts, before, series_settings)
    judge(findings)
