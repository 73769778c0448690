"""Restore: the backup restores into a fresh disposable server, completely and in time."""

from __future__ import annotations

import pytest

from backupcheck.checks import restoring
from backupcheck.model import render


@pytest.mark.needs_restore
def test_restores_without_harmful_errors(restored, attach):
    """The backup restores into a fresh database with no error that loses a table, rows, an index or a constraint."""
    db = restored.require()
    attach("restore errors", db.result.report())
    attach("restore", f"tool: {db.result.tool}\nseconds: {db.result.seconds:.2f}\ndatabases: {', '.join(db.result.databases)}")
    findings = restoring.restored_cleanly(db)
    assert not findings, render(findings)


@pytest.mark.needs_restore
def test_every_table_in_the_dump_exists_after_restore(restored):
    """Every table the dump defines exists in the restored database."""
    findings = restoring.every_table_exists(restored.require())
    assert not findings, render(findings)


@pytest.mark.needs_restore
@pytest.mark.when_configured("rto")
def test_restore_time_is_within_rto(restored, series_settings):
    """The restore finished within the series' RTO."""
    findings = restoring.within_rto(restored.require(), series_settings.rto)
    assert not findings, render(findings)
