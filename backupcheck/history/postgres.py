"""A history shared by a team: tables in a PostgreSQL database (the password from PGPASSWORD or ~/.pgpass)."""

from __future__ import annotations

from typing import Any

from .store import HistoryError, Store


class PostgresStore(Store):
    placeholder = "%s"

    @classmethod
    def connect(cls, dsn: str) -> PostgresStore:
        import psycopg

        from . import describe

        where = describe(dsn)
        try:
            conn: Any = psycopg.connect(dsn, connect_timeout=10, autocommit=False)
        except psycopg.Error as exc:
            # psycopg's message names host and user, never the password; the DSN itself is not repeated.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HistoryError(f"cannot open the history at {where}: {first}") from None
        store = cls(conn)
        store.where = where
        try:
            store.migrate()
        except psycopg.Error as exc:
            conn.close()
            raise HistoryError(f"cannot prepare the history at {where}: {str(exc).strip().splitlines()[0]}") from None
        return store

    def _begin(self) -> None:
        self.conn.rollback()  # whatever a read left open: the write starts a transaction of its own
        # One writer at a time (two runs creating the tables at once would collide); released at commit.
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('backupcheck history'))")

    def version(self) -> int:
        version = self._locked_version()
        self.conn.rollback()
        return version

    def _locked_version(self) -> int:
        cur = self.conn.cursor()
        cur.execute("SELECT to_regclass('bc_meta') IS NOT NULL")
        version = 0
        if cur.fetchone()[0]:
            cur.execute("SELECT value FROM bc_meta WHERE key = 'schema_version'")
            row = cur.fetchone()
            version = int(row[0]) if row else 0
        return version
