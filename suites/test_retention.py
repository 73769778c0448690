"""Retention: the backups a series keeps match its policy (GFS slots filled, nothing older than allowed)."""

from __future__ import annotations

import pytest

from backupcheck.checks import trends
from backupcheck.plugins.verdict import judge


@pytest.mark.when_configured("retention_rules")
def test_retention_policy_is_kept(series, settings, now, attach):
    """Every daily, weekly, monthly and yearly slot the series' retention promises holds a backup, and no backup
    is older than max_age."""
    cfg = settings.for_series(series.name)
    backups = list(series.backups)
    findings, notes = trends.retention(series.name, [b.taken_at for b in backups], dict(cfg.retention),
                                       cfg.max_age, now, [b.key for b in backups])
    attach("retention", "\n".join(notes))
    judge(findings)
