"""Relations: no orphaned rows behind any foreign key or configured relation."""

from __future__ import annotations

import pytest

from backupcheck.checks import restoring
from backupcheck.plugins.verdict import judge


@pytest.mark.needs_restore
def test_every_foreign_key_has_no_orphans(restored, attach):
    """Every foreign key, NOT VALID ones included, has zero orphan rows (keys the restore validated are proven already)."""
    findings, notes = restoring.foreign_key_orphans(restored.require_data())
    attach("foreign keys", "\n".join(notes) or "the dump declares no foreign key")
    judge(findings)


@pytest.mark.needs_restore
@pytest.mark.when_configured("relations")
def test_every_configured_relation_has_no_orphans(restored, series_settings, attach):
    """Every relation declared in the config (child.column -> parent.column) has zero orphan rows."""
    findings, notes = restoring.relation_orphans(restored.require_data(), series_settings.relations)
    attach("configured relations", "\n".join(notes))
    judge(findings)
