"""Memory across runs: what each run verified (backups, restore times, row counts, check outcomes), kept in a
SQLite file or a shared PostgreSQL database, and read back by trend checks, streaks, metrics and the evidence
report.

``open_store`` takes the ``history`` setting: ``off``, a file path, or a ``postgresql://`` DSN (its password
from PGPASSWORD or ~/.pgpass, never from the setting shown anywhere).
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import SCHEMA_VERSION, HistoryError, Store

__all__ = ["SCHEMA_VERSION", "HistoryError", "Store", "default_path", "describe", "is_dsn", "open_store"]


def default_path() -> Path:
    """Where the history lives when nothing is configured: $XDG_DATA_HOME/backupcheck/history.sqlite, else
    ~/.local/share/backupcheck/history.sqlite."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "backupcheck" / "history.sqlite"


def is_dsn(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://")) or ("=" in spec and "host" in spec)


def describe(spec: str) -> str:
    """The setting as it may be shown: a DSN without its password."""
    if not is_dsn(spec):
        return spec
    from psycopg.conninfo import conninfo_to_dict

    from ..restore.targets import describe_dsn

    try:
        return "PostgreSQL " + describe_dsn(conninfo_to_dict(spec))
    except Exception:
        return "PostgreSQL (a connection string that does not parse)"


def open_store(spec: str) -> Store | None:
    """The store the setting names, schema created or migrated; None for ``off``."""
    if spec.strip().lower() in ("off", "none", "false", ""):
        return None
    if is_dsn(spec):
        from .postgres import PostgresStore

        return PostgresStore.connect(spec)
    from .sqlite import SqliteStore

    return SqliteStore.connect(Path(spec).expanduser())
