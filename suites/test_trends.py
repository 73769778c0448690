"""Trends: each table's rows and the restore time against the series' own history of earlier runs."""

from __future__ import annotations

from datetime import datetime

import pytest

from backupcheck.checks import trends
from backupcheck.history.backfill import backfill
from backupcheck.plugins.verdict import judge


@pytest.mark.needs_restore
def test_no_table_drops_leaks_or_stalls_against_its_history(backup, restored, history, series_settings, listing,
                                                            evidence_store, record_tables, now, attach):
    """Every table's rows hold against the series' earlier backups: not far below where they were heading, not
    leaking since their peak, not flat since the last night they grew (static tables excepted)."""
    db = restored.require_data()
    counts = db.leaf_counts()
    record_tables(counts)
    store = history.require()
    cfg = trends.settings_of(series_settings)
    counted = backfill(store, listing.series_of(backup), backup, evidence_store, max(cfg.window, trends.BACKFILL))
    past = store.series_rows(backup.series, backup.taken_at.isoformat(), trends.MEMORY)
    attach("history of row counts", trends.rows_table(past[-cfg.window:], counts)
           + ("\n\ncounted without a restore, from their manifests or dumps (no run had restored them):\n"
              + "\n".join(counted) if counted else ""))
    if len(past) < cfg.min_history:
        pytest.skip(f"{backup.series} has {len(past)} earlier backup(s) with row counts in the history "
                    f"({history.where}); trends are judged from {cfg.min_history} (trend_min_history)")
    judge(trends.row_trends(backup.key, backup.series, past, counts, series_settings.max_row_drop, cfg,
                            backup.taken_at, series_settings.quiet_tables(now.date())))


@pytest.mark.needs_restore
@pytest.mark.when_configured("rto")
def test_restore_time_will_not_cross_the_rto_soon(backup, restored, history, series_settings, now, attach):
    """At the growth of the last restore times, the RTO is not crossed within rto_horizon (default 30 days)."""
    db = restored.require()
    store = history.require()
    cfg = trends.settings_of(series_settings)
    past = store.restore_times(backup.series, backup.taken_at.isoformat(), cfg.restore_window - 1)
    points = [(datetime.fromisoformat(t), s) for t, s in past] + [(backup.taken_at, db.result.seconds)]
    assert series_settings.rto is not None
    findings, text = trends.restore_forecast(backup.key, backup.series, points, series_settings.rto, now, cfg)
    attach("restore time trend", text)
    if len(points) < 5:
        pytest.skip(f"{backup.series}: {text} ({history.where})")
    judge(findings)
