"""Freshness: each series' newest backup is within its RPO and no backups were skipped."""

from __future__ import annotations

import pytest

from backupcheck.checks import freshness
from backupcheck.plugins.verdict import judge


def test_newest_backup_is_within_rpo(series, settings, now):
    """The newest backup of the series is younger than its RPO (default: usual spacing + 2 h)."""
    findings = freshness.newest_within_rpo(series, settings.for_series(series.name), now)
    judge(findings)


def test_no_gap_between_backups_exceeds_schedule(series, settings):
    """No gap between consecutive backups is longer than the schedule allows (default: 1.5 x usual spacing)."""
    findings, not_applicable = freshness.gaps_within_schedule(series, settings.for_series(series.name))
    if not_applicable:
        pytest.skip(not_applicable)
    judge(findings)
