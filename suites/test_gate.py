"""The pre-migration gate: a fresh backup to roll back to, and the migrations rehearsed on a copy of its data."""

from __future__ import annotations

import pytest

from backupcheck.checks import gate, integrity, restoring
from backupcheck.plugins.verdict import judge


def test_newest_backup_is_young_enough_to_roll_back_to(backup, settings, now):
    """The newest backup of the series is younger than gate.max_age: there is something to roll back to."""
    judge(gate.young_enough(backup, now, settings.gate))


@pytest.mark.needs_restore
def test_newest_backup_reads_and_restores(restored, artifact_evidence, archive_data_problems, attach):
    """The backup to roll back to reads whole and restores with no error that loses data."""
    db = restored.require()
    attach("restore errors", db.result.report())
    findings = integrity.readable(restored.backup, artifact_evidence, archive_data_problems)
    judge(gate.to_roll_back_to(findings + restoring.restored_cleanly(db) + restoring.every_table_exists(db)))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_apply_on_the_backups_data(rehearsal, attach):
    """Every pending migration applies to a copy of the backup (those the backup records as applied are skipped)."""
    attach("migrations", gate.table_text(rehearsal))
    if rehearsal.output:
        attach("migrate command output", rehearsal.output)
    judge(gate.applied_cleanly(rehearsal))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_pass_lint(rehearsal, settings, attach):
    """No migration statement does what hurts production (drops, rewrites, blocking index builds, unvalidated keys,
    unbounded writes); gate.lint = "warn" reports them as notes, "fail" fails."""
    if settings.gate.lint == "off":
        pytest.skip("gate.lint = \"off\"")
    attach("lint", "\n".join(gate.lint_notes(rehearsal)) or "nothing found")
    judge(gate.lint_findings(rehearsal, settings.gate.lint))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_hold_no_long_exclusive_lock(rehearsal, settings):
    """No migration holds an ACCESS EXCLUSIVE lock on a table of the backup longer than gate.max_lock."""
    judge(gate.long_locks(rehearsal, settings.gate))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_lose_no_rows(rehearsal, settings):
    """No table has fewer rows after the migrations than in the backup, unless gate.allow_row_loss names it."""
    judge(gate.lost_rows(rehearsal, settings.gate))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_leave_no_new_orphans(rehearsal):
    """Every NOT VALID foreign key has no more orphaned rows after the migrations than before."""
    judge(gate.broken_relations(rehearsal))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
def test_migrations_drop_only_what_they_name(rehearsal):
    """Every table and column of the backup is still there, unless a migration drops or renames it by name."""
    if rehearsal.mode == "command" and not rehearsal.error:
        dropped = [f"{t}.{c}" if c else t for t, c in gate.gone(rehearsal)]
        pytest.skip("a migrate command's own files are not read, so what it drops on purpose cannot be told: "
                    + (f"gone after it: {', '.join(dropped[:20])}" if dropped else "nothing of the backup is gone"))
    judge(gate.kept_objects(rehearsal))


@pytest.mark.needs_restore
@pytest.mark.rehearsal
@pytest.mark.when_configured("invariants")
def test_invariants_hold_after_the_migrations(rehearsal, series_settings, attach):
    """Every invariant of the series that holds on the backup still holds after the migrations."""
    findings, notes = gate.invariants_after(rehearsal, series_settings.invariants)
    attach("invariants", "\n".join(notes))
    judge(findings)
