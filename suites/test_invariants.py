"""Invariants: the series' own SQL questions about the restored data, each with the number it must give."""

from __future__ import annotations

import pytest

from backupcheck.checks import invariants
from backupcheck.plugins.verdict import judge


@pytest.mark.needs_restore
def test_invariant_holds(restored, invariant, attach):
    """The invariant's read-only query on the restored backup gives the number the config expects."""
    db = restored.require_data()
    with db.connect_checks() as conn:
        value = invariants.evaluate(conn, invariant)
    attach("invariant", f"{invariant.sql}\nexpected {invariant.expected}, found {value}")
    judge(invariants.judged(restored.backup.key, invariant, value))
