"""Content freshness: the newest rows of the restored database are about as new as the backup itself."""

from __future__ import annotations

import pytest

from backupcheck.checks import content, freshness
from backupcheck.plugins.verdict import judge


def test_newest_rows_are_about_as_new_as_the_backup(backup, restored, series_settings, listing, attach):
    """The newest created_at / updated_at / inserted_at (or the columns in content_columns) is within
    content_max_age (default: the series' RPO) of the backup's time."""
    db = restored.require_data()
    if series_settings.content_max_age is not None:
        max_age, why = series_settings.content_max_age, "configured"
    else:
        max_age, why = freshness.rpo_for(listing.series_of(backup), series_settings)
        why = f"the series' RPO, {why}"
    findings, notes, not_applicable = content.content_fresh(db, series_settings.content_columns, max_age, why)
    attach("newest rows", "\n".join(notes) or "no timestamp column")
    if not_applicable:
        pytest.skip(not_applicable)
    judge(findings)
