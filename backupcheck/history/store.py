"""The history's tables and queries, the same for SQLite and PostgreSQL (text timestamps in ISO 8601 UTC, which
sort as times; ``?`` placeholders, turned into ``%s`` for psycopg)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 2

# One list entry per schema version: what takes a store from the version before to this one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE bc_runs (
            id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT NOT NULL, now TEXT NOT NULL,
            host TEXT NOT NULL, provider TEXT NOT NULL, versions TEXT NOT NULL, exit_status INTEGER NOT NULL)""",
        """CREATE TABLE bc_backups (
            key TEXT PRIMARY KEY, series TEXT NOT NULL, taken_at TEXT NOT NULL, format TEXT NOT NULL,
            size BIGINT NOT NULL)""",
        "CREATE INDEX bc_backups_series ON bc_backups (series, taken_at)",
        """CREATE TABLE bc_verified (
            run_id TEXT NOT NULL REFERENCES bc_runs (id), backup_key TEXT NOT NULL REFERENCES bc_backups (key),
            verdict TEXT NOT NULL, restore_seconds DOUBLE PRECISION, server TEXT,
            PRIMARY KEY (run_id, backup_key))""",
        "CREATE INDEX bc_verified_backup ON bc_verified (backup_key)",
        """CREATE TABLE bc_table_rows (
            run_id TEXT NOT NULL REFERENCES bc_runs (id), backup_key TEXT NOT NULL, name TEXT NOT NULL,
            rows BIGINT NOT NULL, PRIMARY KEY (run_id, backup_key, name))""",
        "CREATE INDEX bc_table_rows_backup ON bc_table_rows (backup_key)",
        """CREATE TABLE bc_checks (
            run_id TEXT NOT NULL REFERENCES bc_runs (id), nodeid TEXT NOT NULL, name TEXT NOT NULL,
            family TEXT NOT NULL, series TEXT NOT NULL, backup_key TEXT NOT NULL, outcome TEXT NOT NULL,
            seconds DOUBLE PRECISION NOT NULL, findings TEXT NOT NULL, PRIMARY KEY (run_id, nodeid))""",
        "CREATE INDEX bc_checks_series ON bc_checks (series, name)",
    ),
    (
        # Rows per table counted from a dump's own data (no restore), for backups no run restored: the trends of a
        # first run over a month of dumps. ``identity`` says which bytes were counted (a replaced file is recounted).
        """CREATE TABLE bc_dump_rows (
            backup_key TEXT NOT NULL, identity TEXT NOT NULL, name TEXT NOT NULL, rows BIGINT NOT NULL,
            PRIMARY KEY (backup_key, name))""",
        # A run that selected part of the checks (-k, -m, node ids, --lf, a gate run): what it selected, or "".
        "ALTER TABLE bc_runs ADD COLUMN partial TEXT NOT NULL DEFAULT ''",
    ),
)


class HistoryError(Exception):
    """The history cannot be opened, read or written; the message says which and why."""


class Store:
    """A history on a DB-API connection. Subclasses connect and say how placeholders are written."""

    placeholder = "?"
    where = ""  # for messages: the file, or the server without its password

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # -- plumbing ---------------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def _begin(self) -> None:
        """Start a transaction (SQLite: taking the write lock at once)."""

    def close(self) -> None:
        self.conn.close()

    def version(self) -> int:
        raise NotImplementedError

    def _locked_version(self) -> int:
        """The schema version, read inside the migration's transaction (after its lock)."""
        return self.version()

    def migrate(self) -> None:
        """Create the tables, or bring an older history up to this version, in one transaction."""
        current = self.version()
        if current > SCHEMA_VERSION:
            raise HistoryError(f"the history at {self.where} was written by a newer backupcheck (schema "
                               f"{current}; this one knows up to {SCHEMA_VERSION}): upgrade backupcheck, or "
                               "point --history elsewhere")
        if current == SCHEMA_VERSION:
            return
        self._begin()
        try:
            current = self._locked_version()  # another process may have migrated while this one waited
            if current >= SCHEMA_VERSION:
                self.conn.commit()
                return
            cur = self.conn.cursor()
            if current == 0:
                cur.execute("CREATE TABLE IF NOT EXISTS bc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for steps in MIGRATIONS[current:]:
                for statement in steps:
                    cur.execute(statement)
            cur.execute("DELETE FROM bc_meta WHERE key = 'schema_version'")
            cur.execute(self._sql("INSERT INTO bc_meta (key, value) VALUES ('schema_version', ?)"),
                        (str(SCHEMA_VERSION),))
            cur.close()
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    # -- writing ------------------------------------------------------------------------------------

    def record(self, document: dict[str, Any], host: str) -> None:
        """One run's results document, in one transaction: a run killed midway leaves the history as it was."""
        run = document["run"]
        self._begin()
        try:
            cur = self.conn.cursor()
            cur.execute(self._sql("INSERT INTO bc_runs (id, started, finished, now, host, provider, versions, "
                                  "exit_status, partial) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                        (run["id"], _utc(run["started"]), _utc(run["finished"]), _utc(run["now"]), host,
                         run["provider"]["kind"], json.dumps(run["versions"], sort_keys=True), run["exit_status"],
                         run.get("partial") or ""))
            checked = [b for b in document["backups"] if b["verdict"] != "not run"]
            cur.executemany(self._sql(
                "INSERT INTO bc_backups (key, series, taken_at, format, size) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET size = excluded.size, format = excluded.format"),
                [(b["key"], b["series"], _utc(b["taken_at"]), b["format"], b["size"]) for b in checked])
            cur.executemany(self._sql(
                "INSERT INTO bc_verified (run_id, backup_key, verdict, restore_seconds, server) VALUES (?, ?, ?, ?, ?)"),
                [(run["id"], b["key"], b["verdict"], (b["restore"] or {}).get("seconds"),
                  (b["restore"] or {}).get("server")) for b in checked])
            cur.executemany(self._sql(
                "INSERT INTO bc_table_rows (run_id, backup_key, name, rows) VALUES (?, ?, ?, ?)"),
                [(run["id"], b["key"], name, n) for b in checked for name, n in (b.get("tables") or {}).items()
                 if n is not None])
            cur.executemany(self._sql(
                "INSERT INTO bc_checks (run_id, nodeid, name, family, series, backup_key, outcome, seconds, findings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [(run["id"], c["nodeid"], c["name"], c["family"], c["series"], c["backup"], c["outcome"],
                  c["seconds"], json.dumps(c["findings"])) for c in document["checks"]])
            cur.close()
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    # -- reading ------------------------------------------------------------------------------------

    def tables_of(self, backup_key: str) -> dict[str, int] | None:
        """Row counts of a backup as the latest full run that counted them saw them, else as counted from its
        dump; None when neither did."""
        rows = self._rows(
            "SELECT t.name, t.rows FROM bc_table_rows t WHERE t.backup_key = ? AND t.run_id = ("
            " SELECT r.id FROM bc_runs r JOIN bc_table_rows t2 ON t2.run_id = r.id WHERE t2.backup_key = ?"
            " AND r.partial = '' ORDER BY r.started DESC LIMIT 1)", (backup_key, backup_key))
        if not rows:
            rows = self._rows("SELECT name, rows FROM bc_dump_rows WHERE backup_key = ?", (backup_key,))
        return {name: int(n) for name, n in rows} if rows else None

    def series_rows(self, series: str, before: str, limit: int) -> list[tuple[str, str, dict[str, int]]]:
        """(backup, taken_at, rows per table) of the newest ``limit`` backups of a series taken before
        ``before`` whose rows were counted, oldest first: as the latest full run that restored it counted them,
        else as counted from its dump. Partial runs are no trend points."""
        keys = self._rows(
            "SELECT b.key, b.taken_at FROM bc_backups b WHERE b.series = ? AND b.taken_at < ? AND (EXISTS ("
            " SELECT 1 FROM bc_table_rows t JOIN bc_runs r ON r.id = t.run_id WHERE t.backup_key = b.key"
            " AND r.partial = '') OR EXISTS (SELECT 1 FROM bc_dump_rows d WHERE d.backup_key = b.key))"
            " ORDER BY b.taken_at DESC LIMIT ?", (series, _utc(before), limit))
        if not keys:
            return []
        marks = ", ".join("?" for _ in keys)
        rows = self._rows(
            f"SELECT t.backup_key, t.name, t.rows, r.started FROM bc_table_rows t JOIN bc_runs r ON r.id = t.run_id "
            f"WHERE t.backup_key IN ({marks}) AND r.partial = '' ORDER BY r.started", [k for k, _ in keys])
        latest: dict[str, str] = {}
        for key, _, _, started in rows:
            latest[key] = max(latest.get(key, ""), str(started))
        counts: dict[str, dict[str, int]] = {}
        for key, name, n, started in rows:
            if str(started) == latest[key]:
                counts.setdefault(key, {})[name] = int(n)
        for key, name, n in self._rows(f"SELECT backup_key, name, rows FROM bc_dump_rows WHERE backup_key IN ({marks})",
                                       [k for k, _ in keys]):
            if key not in latest:
                counts.setdefault(key, {})[name] = int(n)
        return [(k, str(t), counts[k]) for k, t in reversed(keys) if k in counts]

    def dump_rows_identity(self, backup_key: str) -> str | None:
        """The identity of the bytes whose rows were counted for ``backup_key``, or None."""
        rows = self._rows("SELECT identity FROM bc_dump_rows WHERE backup_key = ? LIMIT 1", (backup_key,))
        return str(rows[0][0]) if rows else None

    def counted_by_a_run(self, backup_key: str) -> bool:
        """Whether a full run restored the backup and counted its rows."""
        return bool(self._rows("SELECT 1 FROM bc_table_rows t JOIN bc_runs r ON r.id = t.run_id WHERE "
                               "t.backup_key = ? AND r.partial = '' LIMIT 1", (backup_key,)))

    def record_dump_rows(self, backup: dict[str, Any], identity: str, counts: dict[str, int]) -> None:
        """Rows per table counted from a backup's dump (``backup``: key, series, taken_at, format, size), in one
        transaction; a later count of other bytes replaces it."""
        self._begin()
        try:
            cur = self.conn.cursor()
            cur.execute(self._sql(
                "INSERT INTO bc_backups (key, series, taken_at, format, size) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING"),
                (backup["key"], backup["series"], _utc(backup["taken_at"]), backup["format"], backup["size"]))
            cur.execute(self._sql("DELETE FROM bc_dump_rows WHERE backup_key = ?"), (backup["key"],))
            cur.executemany(self._sql("INSERT INTO bc_dump_rows (backup_key, identity, name, rows) VALUES (?, ?, ?, ?)"),
                            [(backup["key"], identity, name, n) for name, n in sorted(counts.items())])
            cur.close()
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def restore_times(self, series: str, before: str, limit: int) -> list[tuple[str, float]]:
        """(taken_at, restore seconds) of the newest ``limit`` restored backups taken before ``before``, oldest
        first; a backup restored in several runs counts with its latest restore."""
        rows = self._rows(
            "SELECT b.taken_at, v.restore_seconds, r.started FROM bc_verified v JOIN bc_backups b ON b.key = v.backup_key "
            "JOIN bc_runs r ON r.id = v.run_id WHERE b.series = ? AND b.taken_at < ? AND v.restore_seconds IS NOT NULL "
            "AND r.partial = '' "
            "ORDER BY b.taken_at DESC, r.started DESC", (series, _utc(before)))
        latest: dict[str, float] = {}
        for taken, seconds, _ in rows:
            if taken not in latest:
                latest[taken] = float(seconds)
            if len(latest) >= limit:
                break
        return sorted(latest.items())

    def check_runs(self, series: str, name: str, before: str, limit: int) -> list[tuple[str, bool]]:
        """(run start, failed) of the newest ``limit`` runs before ``before`` that ran check ``name`` on the
        series, newest first; a run failed it when any backup's test of that name failed or erred."""
        rows = self._rows(
            "SELECT r.started, MAX(CASE WHEN c.outcome IN ('failed', 'error') THEN 1 ELSE 0 END) FROM bc_checks c "
            "JOIN bc_runs r ON r.id = c.run_id WHERE c.series = ? AND c.name = ? AND r.started < ? "
            "GROUP BY r.id, r.started ORDER BY r.started DESC LIMIT ?", (series, name, _utc(before), limit))
        return [(str(started), bool(failed)) for started, failed in rows]

    def runs_between(self, since: str, until: str) -> list[dict[str, Any]]:
        """Runs that started in [since, until), oldest first, each with what it verified per backup."""
        runs = self._rows("SELECT id, started, finished, host, provider, exit_status FROM bc_runs "
                          "WHERE started >= ? AND started < ? ORDER BY started", (_utc(since), _utc(until)))
        out = []
        verified = self._rows(
            "SELECT v.run_id, b.key, b.series, b.taken_at, b.size, v.verdict, v.restore_seconds FROM bc_verified v "
            "JOIN bc_backups b ON b.key = v.backup_key JOIN bc_runs r ON r.id = v.run_id "
            "WHERE r.started >= ? AND r.started < ?", (_utc(since), _utc(until)))
        by_run: dict[str, list[dict[str, Any]]] = {}
        for run_id, key, series, taken, size, verdict, seconds in verified:
            by_run.setdefault(run_id, []).append({"key": key, "series": series, "taken_at": taken, "size": int(size),
                                                  "verdict": verdict, "restore_seconds": seconds})
        failed = self._rows(
            "SELECT c.run_id, c.series, c.name FROM bc_checks c JOIN bc_runs r ON r.id = c.run_id "
            "WHERE r.started >= ? AND r.started < ? AND c.outcome IN ('failed', 'error')", (_utc(since), _utc(until)))
        fails: dict[str, list[tuple[str, str]]] = {}
        for run_id, series, name in failed:
            fails.setdefault(run_id, []).append((series, name))
        for run_id, started, finished, host, provider, status in runs:
            out.append({"id": run_id, "started": started, "finished": finished, "host": host, "provider": provider,
                        "exit_status": int(status), "backups": by_run.get(run_id, []),
                        "failed": sorted(set(fails.get(run_id, [])))})
        return out

    def sizes(self, series: str, limit: int) -> list[tuple[str, str, int]]:
        """(backup, taken_at, size) of the newest ``limit`` backups of a series any run checked, oldest first."""
        rows = self._rows("SELECT key, taken_at, size FROM bc_backups WHERE series = ? ORDER BY taken_at DESC LIMIT ?",
                          (series, limit))
        return [(str(k), str(t), int(n)) for k, t, n in reversed(rows)]

    def restore_costs(self, series: str, limit: int) -> list[tuple[int, float]]:
        """(backup bytes, restore seconds) of the newest ``limit`` restores of a series: a plan's expected cost."""
        rows = self._rows(
            "SELECT b.size, v.restore_seconds FROM bc_verified v JOIN bc_backups b ON b.key = v.backup_key "
            "WHERE b.series = ? AND v.restore_seconds IS NOT NULL ORDER BY b.taken_at DESC LIMIT ?", (series, limit))
        return [(int(n), float(x)) for n, x in rows]

    def last_passed(self, series: str) -> str:
        """When a restored backup of the series last passed every check (the run's end), or ""."""
        rows = self._rows(
            "SELECT max(r.finished) FROM bc_verified v JOIN bc_backups b ON b.key = v.backup_key "
            "JOIN bc_runs r ON r.id = v.run_id WHERE b.series = ? AND v.verdict = 'passed' "
            "AND v.restore_seconds IS NOT NULL AND r.partial = ''", (series,))
        return str(rows[0][0]) if rows and rows[0][0] else ""

    def counts(self) -> dict[str, int]:
        """How much the history holds (for messages and tests)."""
        return {t: int(self._rows(f"SELECT count(*) FROM {t}")[0][0])
                for t in ("bc_runs", "bc_backups", "bc_verified", "bc_table_rows", "bc_checks", "bc_dump_rows")}


def _utc(text: str) -> str:
    """ISO 8601 in UTC with a ``+00:00`` offset, so that text order is time order."""

    return datetime.fromisoformat(text).astimezone(UTC).isoformat(timespec="seconds")

