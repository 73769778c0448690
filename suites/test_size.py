"""Size: each backup is of a normal size for its series."""

from __future__ import annotations

import pytest

from backupcheck.checks import size
from backupcheck.plugins.verdict import judge


def test_backup_meets_minimum_size(backup, listing, series_settings):
    """The backup is at least the series' minimum size (default: not empty)."""
    findings = size.minimum_size(listing.series_of(backup), backup.key, backup.size, series_settings)
    judge(findings)


def test_backup_size_is_within_tolerance_of_usual(backup, listing, series_settings):
    """The backup's size is within tolerance of the median of the series' earlier backups (default ±50%)."""
    findings, not_applicable = size.within_tolerance(listing.series_of(backup), backup.key, series_settings)
    if not_applicable:
        pytest.skip(not_applicable)
    judge(findings)
