"""The handle checks use on a restored backup: connect as the restoring role, count, and copy the restore for a
check that changes data."""

from __future__ import annotations

import psycopg
import pytest

from backupcheck.discovery import discover
from backupcheck.evidence import EvidenceStore
from backupcheck.restore.database import RestoredBackup
from backupcheck.restore.errors import RESTORER
from backupcheck.restore.providers import LocalProvider
from backupcheck.servers.cluster import RunDir

from . import farm as farmlib


def test_a_copy_of_the_restore_can_change_while_the_restore_stays_as_it_was(farm, pg_run, tmp_path):
    when = farmlib.nights(farm.now)[-1]
    farmlib.stamp(farm.dump(farm.states[-1], tmp_path / "b" / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    backup = discover([tmp_path / "b"]).backups()[0]
    with RunDir() as rundir:
        store = EvidenceStore(rundir)
        with RestoredBackup(store.localize(backup), LocalProvider(pg_run), store) as db:
            before = db.row_counts(["public.audit_log"])["public.audit_log"]
            copy = db.copy()
            with db.connect_checks(copy) as conn:
                assert conn.execute("select current_user").fetchone()[0] == RESTORER
                conn.execute("delete from audit_log where id % 2 = 0")
                conn.execute("create table scratch (a int)")
            assert db.row_counts(["public.audit_log"])["public.audit_log"] == before
            assert db.row_counts([f"{copy}/public.audit_log"])[f"{copy}/public.audit_log"] < before
            assert db.copies == [copy]
            target = db.target
        with pytest.raises(psycopg.OperationalError):  # dropped with the restore (and its server gone)
            psycopg.connect(**target.conninfo(copy), connect_timeout=3).close()
