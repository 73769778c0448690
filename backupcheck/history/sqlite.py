"""The embedded history: one SQLite file, for the checking user alone."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .store import HistoryError, Store


class SqliteStore(Store):
    placeholder = "?"

    @classmethod
    def connect(cls, path: Path) -> SqliteStore:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # row counts of your tables: yours only
            # isolation_level=None: transactions are begun here, explicitly, so one run is one transaction.
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the history {path}: {exc}") from None
        store = cls(conn)
        store.where = str(path)
        try:
            store.migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise HistoryError(f"{path} is not a backupcheck history ({exc}); point --history elsewhere or "
                               "move that file away") from None
        return store

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def version(self) -> int:
        found = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'bc_meta'").fetchone()
        if not found:
            return 0
        row = self.conn.execute("SELECT value FROM bc_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0
