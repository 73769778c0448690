"""A backup restored into its own disposable cluster, and the questions one can ask it."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from . import pgbin
from .cluster import Cluster, ClusterFactory
from .dumpscan import ForeignKey, split_ident
from .evidence import ArtifactEvidence, EvidenceStore
from .model import ARCHIVE_FORMATS, Backup
from .restore import HARMFUL, PlainRunner, RestoreError, RestoreResult, create_database, restore_archive
from .sniff import open_decompressed

log = logging.getLogger("backupcheck.restored")


class RestoreRefused(Exception):
    """The backup carries something that must not run; it is not restored."""


@dataclass(frozen=True)
class Orphans:
    relation: str
    count: int
    samples: tuple[str, ...]


def _split_key(key: str) -> tuple[str | None, str, str]:
    db, _, rest = key.rpartition("/")
    parts = split_ident(rest) if '"' in rest else rest.split(".", 1)
    if len(parts) == 1:
        parts = ["public", parts[0]]
    return (db or None), parts[0], parts[1]


class RestoredBackup:
    """Context manager: restore ``backup`` on enter, remove the cluster on exit."""

    def __init__(self, backup: Backup, factory: ClusterFactory, store: EvidenceStore, jobs: int = 2,
                 pg_bin: tuple[str, ...] = (), tolerated: tuple[str, ...] = ()) -> None:
        self.backup = backup
        self.factory = factory
        self.store = store
        self.jobs = jobs
        self.pg_bin = pg_bin
        self.tolerated = tolerated
        self.cluster: Cluster | None = None
        self.installation: pgbin.Installation | None = None
        self.result = RestoreResult(backup=backup.key, databases=[])
        self.evidence: list[ArtifactEvidence] = []
        self.main_db = "restored"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> RestoredBackup:
        try:
            self._prepare()
            self._restore()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _prepare(self) -> None:
        dumps = self.backup.dumps
        if not dumps:
            raise RestoreRefused(f"{self.backup.key} holds no database dump to restore "
                                 f"(found: {self.backup.format_summary()})")
        self.evidence = [self.store.inspect(a, full=False) for a in dumps]
        unsafe = [f"{a.name}: {s}" for a, ev in zip(dumps, self.evidence, strict=True) for s in ev.security]
        if unsafe:
            raise RestoreRefused("not restored, because the backup carries commands for the checking host:\n  "
                                 + "\n  ".join(unsafe[:10]))
        unreadable = [p for ev in self.evidence for p in ev.problems if ev.scan is None]
        if unreadable:
            raise RestoreRefused("not restored, because the dump cannot be read:\n  " + "\n  ".join(unreadable[:10]))
        need = max([ev.min_restore_major or ev.dump_major or 0 for ev in self.evidence] or [0])
        self.installation = pgbin.pick(need or None, self.pg_bin, why=f"the dump of {self.backup.key} needs it")
        for a in dumps:
            if a.format in ARCHIVE_FORMATS:
                from .pgarchive import read_archive

                info = read_archive(self.store.archive_path(a), a.format)
                if info.dbname and info.dbname not in ("postgres", "template1", "template0"):
                    self.main_db = info.dbname
                break

    def _restore(self) -> None:
        assert self.installation is not None
        # A restored database can take 20 times its compressed dump (18x measured on repetitive data);
        # plain SQL about twice its size, indexes included.
        need = sum(a.size * (20 if a.format in ARCHIVE_FORMATS or a.compression else 2) for a in self.backup.dumps)
        self.cluster = self.factory.cluster(self.installation, need).__enter__()
        t0 = time.monotonic()
        dumps = self.backup.dumps
        dumpall = any(a.format == "dumpall" for a in dumps)
        if not dumpall or any(a.format != "dumpall" for a in dumps):
            create_database(self.cluster, self.main_db)
            self.result.databases.append(self.main_db)
        for a, ev in zip(dumps, self.evidence, strict=True):
            if a.format in ARCHIVE_FORMATS:
                jobs = self.jobs if a.format != "tar" and ev.has_offsets else 1
                errors, fatal = restore_archive(self.cluster, self.store.archive_path(a), self.main_db, jobs,
                                                a.name, self.tolerated)
                self.result.errors += errors
                if fatal:
                    self.result.aborted = f"{a.name}: pg_restore stopped: {fatal}"
                    self.result.errors.append(RestoreError(HARMFUL, fatal, "", "everything after the failure",
                                                           a.name))
                self.result.tool = self.installation.describe() if self.installation else ""
            else:
                first = "postgres" if a.format == "dumpall" else self.main_db
                runner = PlainRunner(self.cluster, first, a.name, self.tolerated)
                try:
                    with open_decompressed(a.path, a.compression) as stream:
                        runner.run(stream)
                finally:
                    runner.close()
                self.result.errors += runner.errors
                for db in runner.databases:
                    if db not in self.result.databases:
                        self.result.databases.append(db)
                self.result.tool = "psycopg (plain SQL; psql is never used)"
        self.result.seconds = time.monotonic() - t0

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            try:
                cluster.__exit__(et, ev, tb)
            except Exception:
                log.exception("removing the cluster of %s failed", self.backup.key)
        for a in self.backup.dumps:
            try:
                self.store.release(a)
            except Exception:
                log.exception("removing a decompressed copy of %s failed", a.name)

    # -- questions ---------------------------------------------------------------------------

    def locate(self, key: str) -> tuple[str, str, str]:
        """(database, schema, table) of a table key such as ``public.users`` or ``shop/public.users``."""
        db, schema, table = _split_key(key)
        return db or self.main_db, schema, table

    def _connect(self, db: str):  # type: ignore[no-untyped-def]
        import psycopg

        assert self.cluster is not None
        return psycopg.connect(**self.cluster.conninfo(db), autocommit=True)  # type: ignore[arg-type]

    def expected_tables(self) -> list[str]:
        seen: list[str] = []
        for ev in self.evidence:
            if ev.scan:
                for t in ev.scan.tables:
                    if t not in seen:
                        seen.append(t)
        return seen

    def missing_tables(self) -> list[str]:
        missing = []
        by_db: dict[str, list[str]] = {}
        for key in self.expected_tables():
            by_db.setdefault(self.locate(key)[0], []).append(key)
        for db, keys in by_db.items():
            try:
                with self._connect(db) as conn:
                    for key in keys:
                        _, schema, table = self.locate(key)
                        row = conn.execute(
                            "select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                            "where n.nspname = %s and c.relname = %s and c.relkind in ('r','p')", (schema, table)
                        ).fetchone()
                        if row is None:
                            missing.append(key)
            except Exception:
                missing += keys  # the database itself is missing
        return missing

    def row_counts(self, keys: list[str] | None = None) -> dict[str, int | None]:
        """Exact COUNT(*) per table, two connections at a time; None where the table is missing."""
        from psycopg import sql

        keys = keys if keys is not None else self.expected_tables()

        def count(key: str) -> tuple[str, int | None]:
            db, schema, table = self.locate(key)
            try:
                with self._connect(db) as conn:
                    q = sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                    return key, conn.execute(q).fetchone()[0]  # type: ignore[index]
            except Exception:
                return key, None

        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(pool.map(count, keys))

    def foreign_keys(self) -> list[ForeignKey]:
        keys: list[ForeignKey] = []
        for ev in self.evidence:
            if ev.scan:
                keys += ev.scan.foreign_keys
        return keys

    def validated_constraints(self, db: str) -> set[tuple[str, str, str]]:
        """(schema, table, constraint) of every foreign key the server holds as validated."""
        with self._connect(db) as conn:
            rows = conn.execute(
                "select n.nspname, t.relname, c.conname from pg_constraint c "
                "join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace "
                "where c.contype = 'f' and c.convalidated"
            ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def orphans(self, table: str, columns: tuple[str, ...], ref_table: str, ref_columns: tuple[str, ...],
                label: str, sample: int = 5) -> Orphans:
        """Rows of ``table`` whose key has no match in ``ref_table`` (MATCH SIMPLE: NULL keys are not orphans)."""
        from psycopg import sql

        db, schema, name = self.locate(table)
        _, rschema, rname = self.locate(ref_table)
        child = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        parent = sql.SQL("{}.{}").format(sql.Identifier(rschema), sql.Identifier(rname))
        not_null = sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(c)) for c in columns)
        match = sql.SQL(" and ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c)) for c, r in zip(columns, ref_columns, strict=True)
        )
        shown = sql.SQL(" || ', ' || ").join(sql.SQL("c.{}::text").format(sql.Identifier(c)) for c in columns)
        q = sql.SQL(
            "select count(*) over (), {shown} from {child} c where {not_null} "
            "and not exists (select 1 from {parent} p where {match}) limit {n}"
        ).format(shown=shown, child=child, not_null=not_null, parent=parent, match=match, n=sql.Literal(sample))
        with self._connect(db) as conn:
            rows = conn.execute(q).fetchall()
        count = rows[0][0] if rows else 0
        return Orphans(label, count, tuple(str(r[1]) for r in rows))


class RestoreCache:
    """Keeps the one backup this process restored last; restoring another removes it first.

    Tests are ordered backup by backup, so each backup is restored once per run
    while at most one cluster's disk is in use per process.
    """

    def __init__(self, factory: ClusterFactory, store: EvidenceStore, jobs: int, pg_bin: tuple[str, ...]) -> None:
        self.factory = factory
        self.store = store
        self.jobs = jobs
        self.pg_bin = pg_bin
        self._current: RestoredBackup | None = None
        self._failures: dict[str, Exception] = {}

    def get(self, backup: Backup, tolerated: tuple[str, ...] = ()) -> RestoredBackup:
        if backup.key in self._failures:
            raise self._failures[backup.key]
        if self._current is not None and self._current.backup.key == backup.key:
            return self._current
        self.close()
        restored = RestoredBackup(backup, self.factory, self.store, self.jobs, self.pg_bin, tolerated)
        try:
            self._current = restored.__enter__()
        except Exception as exc:
            self._failures[backup.key] = exc
            raise
        return self._current

    def peek(self, backup: Backup) -> RestoredBackup | None:
        if self._current is not None and self._current.backup.key == backup.key:
            return self._current
        return None

    def close(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.__exit__(None, None, None)
