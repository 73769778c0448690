"""Restore: the backup restores into a fresh disposable server, completely and in time."""

from __future__ import annotations

import pytest

from backupcheck.checks import restoring
from backupcheck.plugins.verdict import judge


@pytest.mark.needs_restore
def test_restoring_server_fits_the_dump(restore_attempt, attach):
    """Before restoring: pg_restore reads the archive's version, the server is not older than the dump's pg_dump, and the roles, extensions and tablespaces the dump needs exist."""
    attempt = restore_attempt
    if attempt.compat is None:  # refused before any server was asked for: the restore test says why
        attempt.require()
    where = attempt.db.target_label if attempt.db is not None else ""
    attach("compatibility", attempt.compat.report())
    findings = restoring.compatible(attempt.backup.key, attempt.compat, where)
    judge(findings)


@pytest.mark.needs_restore
def test_restores_without_harmful_errors(restored, attach):
    """The backup restores into a fresh database with no error that loses a table, rows, an index or a constraint."""
    db = restored.require()
    attach("restore errors", db.result.report() + (f"\nskipped: {', '.join(db.skipped)}" if db.skipped else ""))
    attach("restore", f"tool: {db.result.tool}\nseconds: {db.result.seconds:.2f}\ndatabases: {', '.join(db.result.databases)}")
    findings = restoring.restored_cleanly(db)
    judge(findings)


@pytest.mark.needs_restore
def test_every_table_in_the_dump_exists_after_restore(restored):
    """Every table the dump defines exists in the restored database."""
    if restored.backup.base_backup is not None:
        pytest.skip(f"{restored.backup.key} is a physical backup: the recovered cluster is its own list of tables")
    findings = restoring.every_table_exists(restored.require())
    judge(findings)


@pytest.mark.needs_restore
@pytest.mark.when_configured("rto")
def test_restore_time_is_within_rto(restored, series_settings):
    """The restore finished within the series' RTO."""
    findings = restoring.within_rto(restored.require(), series_settings.rto)
    judge(findings)
