"""A migration rehearsed on a copy of a restored backup: applied file by file (or by the team's own command),
timed, its locks and rewrites measured, and the database compared before and after."""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import lint, sqllex
from .dumpscan import created_extension
from .faults import internal_fault
from .migrations import Migration, applied
from .restore.database import ThreadConnections
from .restore.errors import denied_extension
from .restore.plain import OWNER_TO

log = logging.getLogger("backupcheck.rehearsal")

# Lock modes that stop other sessions' writes (SHARE and up) or reads as well (ACCESS EXCLUSIVE), strongest first.
MODES = ("AccessExclusiveLock", "ExclusiveLock", "ShareRowExclusiveLock", "ShareLock")
SHOWN_MODE = {"AccessExclusiveLock": "ACCESS EXCLUSIVE", "ExclusiveLock": "EXCLUSIVE",
              "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE", "ShareLock": "SHARE"}
SAMPLE_EVERY = 0.01  # seconds between two looks at pg_locks while a statement runs outside a transaction

# Statements PostgreSQL refuses inside a transaction block: a file holding one runs statement by statement.
_NO_TRANSACTION = re.compile(
    rb"^\s*(create\s+(unique\s+)?index\s+concurrently|drop\s+index\s+concurrently|reindex\b.*\bconcurrently|"
    rb"vacuum\b|create\s+database\b|drop\s+database\b|alter\s+system\b|alter\s+type\s+\S+\s+add\s+value|"
    rb"refresh\s+materialized\s+view\s+concurrently|create\s+tablespace\b|drop\s+tablespace\b)", re.I)
# A file that opens and commits its own transactions is run as written.
_OWN_TRANSACTIONS = re.compile(rb"^\s*(begin|start\s+transaction|commit|end|rollback)\b", re.I)
_NO_TRANSACTION_HEADER = re.compile(rb"--\s*(flyway:executeInTransaction=false|backupcheck:no-transaction)", re.I)


@dataclass
class Lock:
    table: str
    mode: str  # as pg_locks names it
    seconds: float
    statement: str
    line: int = 0

    @property
    def shown(self) -> str:
        return SHOWN_MODE.get(self.mode, self.mode)


@dataclass
class Step:
    """One migration's rehearsal."""

    name: str
    status: str = "pending"  # applied, skipped (already in the backup), failed, not run (after a failure)
    seconds: float = 0.0
    transactional: bool = True
    locks: list[Lock] = field(default_factory=list)
    touched: dict[str, int] = field(default_factory=dict)  # table -> rows inserted, updated or deleted
    rewritten: dict[str, int] = field(default_factory=dict)  # table -> its rows, written anew (a new file)
    timings: dict[int, float] = field(default_factory=dict)  # statement line -> seconds
    error: str = ""
    error_line: int = 0
    error_statement: str = ""
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    def longest_lock(self, mode: str = "AccessExclusiveLock") -> Lock | None:
        held = [lk for lk in self.locks if lk.mode == mode]
        return max(held, key=lambda lk: lk.seconds) if held else None


@dataclass
class Snapshot:
    """What a database holds, to compare before and after."""

    oids: dict[int, str] = field(default_factory=dict)  # table oid -> schema.table
    filenodes: dict[int, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    not_valid: dict[str, int] = field(default_factory=dict)  # NOT VALID foreign key label -> orphan rows
    invariants: dict[str, Any] = field(default_factory=dict)  # name -> value found (or an error's text)


@dataclass
class Rehearsal:
    backup: str
    mode: str  # files or command
    copy: str = ""
    steps: list[Step] = field(default_factory=list)
    lint: list[lint.LintFinding] = field(default_factory=list)
    before: Snapshot = field(default_factory=Snapshot)
    after: Snapshot = field(default_factory=Snapshot)
    applied_from: str = ""  # the version table that said which migrations are applied
    seconds: float = 0.0  # the migrations alone
    total_seconds: float = 0.0  # the copy, the snapshots and the migrations
    phases: dict[str, float] = field(default_factory=dict)  # copy, before, migrations, after: seconds each
    output: str = ""  # the migrate command's output, its tail
    error: str = ""  # what stopped the rehearsal outside any migration

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def table_rows(self) -> list[dict[str, Any]]:
        """Per migration, as data (results.json and the job summary render it)."""
        out = []
        for s in self.steps:
            longest = s.longest_lock()
            out.append({
                "migration": s.name, "status": s.status, "seconds": round(s.seconds, 3),
                "transactional": s.transactional,
                "locks": [{"table": lk.table, "mode": lk.shown, "seconds": round(lk.seconds, 3), "line": lk.line}
                          for lk in s.locks],
                "longest_exclusive_lock": round(longest.seconds, 3) if longest else 0.0,
                "rows_touched": sum(s.touched.values()), "rows_rewritten": sum(s.rewritten.values()),
                "lint": [f.rule for f in self.lint if f.migration == s.name],
                "error": s.error, "notes": list(s.notes),
            })
        return out


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- reading the database ----------------------------------------------------------------------------

_TABLES = ("select c.oid, n.nspname, c.relname, c.relfilenode from pg_class c join pg_namespace n on n.oid = "
           "c.relnamespace where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
           "and n.nspname not like 'pg\\_toast%%' and n.nspname not like 'pg\\_temp%%' order by 2, 3")
_NOT_VALID = (
    "select c.conname, cn.nspname, ct.relname, pn.nspname, pt.relname, "
    "array(select a.attname from unnest(c.conkey) with ordinality k(n, i) join pg_attribute a on a.attrelid = "
    "c.conrelid and a.attnum = k.n order by k.i), "
    "array(select a.attname from unnest(c.confkey) with ordinality k(n, i) join pg_attribute a on a.attrelid = "
    "c.confrelid and a.attnum = k.n order by k.i) "
    "from pg_constraint c join pg_class ct on ct.oid = c.conrelid join pg_namespace cn on cn.oid = ct.relnamespace "
    "join pg_class pt on pt.oid = c.confrelid join pg_namespace pn on pn.oid = pt.relnamespace "
    "where c.contype = 'f' and not c.convalidated order by 2, 3, 1")


def filenodes(conn: Any) -> dict[int, int]:
    return {int(r[0]): int(r[3]) for r in conn.execute(_TABLES).fetchall()}


def snapshot(connect: Callable[[], Any], count: bool = True) -> Snapshot:
    """Tables, columns, row counts and NOT VALID keys' orphans of one database, as ``connect()`` sees it."""

    from psycopg import sql

    snap = Snapshot()
    with connect() as conn:
        for oid, schema, table, node in conn.execute(_TABLES).fetchall():
            key = f"{schema}.{table}"
            snap.oids[int(oid)] = key
            snap.filenodes[int(oid)] = int(node)
        cols: dict[int, list[str]] = {}
        for rel, name in conn.execute("select attrelid, attname from pg_attribute where attrelid = any(%s) and "
                                      "attnum > 0 and not attisdropped order by attrelid, attnum",
                                      (list(snap.oids),)).fetchall():
            cols.setdefault(int(rel), []).append(str(name))
        snap.columns = {snap.oids[o]: tuple(c) for o, c in cols.items()}
        keys = conn.execute(_NOT_VALID).fetchall()

    def ident(key: str) -> Any:
        schema, _, table = key.partition(".")
        return sql.Identifier(schema, table)

    def rows(key: str) -> tuple[str, int]:
        c = conns.get("")
        return key, int(c.execute(sql.SQL("select count(*) from {}").format(ident(key))).fetchone()[0])

    def orphans(k: tuple) -> tuple[str, int]:
        name, cs, ct, ps, pt, cols_, refs = k
        label = f"{cs}.{ct}({', '.join(cols_)}) -> {ps}.{pt}({', '.join(refs)}) [{name}]"
        q = sql.SQL("select count(*) from {} c where {} and not exists (select 1 from {} p where {})").format(
            sql.Identifier(cs, ct),
            sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(x)) for x in cols_),
            sql.Identifier(ps, pt),
            sql.SQL(" and ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(x))
                                  for x, r in zip(cols_, refs, strict=True)))
        return label, int(conns.get("").execute(q).fetchone()[0])

    with ThreadConnections(lambda _db: connect()) as conns, ThreadPoolExecutor(max_workers=2) as pool:
        if count:
            snap.rows = dict(pool.map(rows, list(snap.oids.values())))
        snap.not_valid = dict(pool.map(orphans, keys))
    return snap


# --- watching locks -----------------------------------------------------------------------------------

_LOCKS_OF = ("select l.relation, l.mode from pg_locks l where l.pid = %s and l.granted and l.locktype = 'relation' "
             "and l.mode = any(%s)")
_LOCKS_IN = ("select l.pid, l.relation, l.mode, a.query from pg_locks l join pg_stat_activity a on a.pid = l.pid "
             "where l.database = %s and l.granted and l.locktype = 'relation' and l.mode = any(%s) "
             "and l.pid <> pg_backend_pid()")


class Sampler:
    """Looks at pg_locks every SAMPLE_EVERY seconds from a connection of its own, for statements run outside a
    transaction and for a migration command: which tables were held in which mode, for how long, by what."""

    def __init__(self, connect: Callable[[], Any], tables: dict[int, str]) -> None:
        self.connect = connect
        self.tables = tables
        self.seen: dict[tuple[int, int, str], list[Any]] = {}  # (pid, oid, mode) -> [first, last, query]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""

    def __enter__(self) -> Sampler:
        self._conn = self.connect()
        self._db = self._conn.execute("select oid from pg_database where datname = current_database()").fetchone()[0]
        self._thread = threading.Thread(target=self._loop, name="backupcheck-locks", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for pid, rel, mode, query in self._conn.execute(_LOCKS_IN, (self._db, list(MODES))).fetchall():
                    if rel not in self.tables:
                        continue  # a table the migration made: nobody else waits for it
                    entry = self.seen.setdefault((pid, rel, mode), [now, now, query])
                    entry[1] = now
                self._stop.wait(SAMPLE_EVERY)
        except Exception as exc:  # the server went away: what was seen so far stands
            self.error = _first_line(exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self._conn.close()
        except Exception:
            pass

    def locks(self) -> list[Lock]:
        best: dict[tuple[int, str], Lock] = {}
        for (_pid, rel, mode), (first, last, query) in self.seen.items():
            lk = Lock(self.tables[rel], mode, last - first + SAMPLE_EVERY, _one_line(str(query)))
            key = (rel, mode)
            if key not in best or lk.seconds > best[key].seconds:
                best[key] = lk
        return sorted(best.values(), key=lambda lk: (MODES.index(lk.mode), -lk.seconds))


# --- running migration files --------------------------------------------------------------------------

@dataclass
class _Stmt:
    text: bytes
    line: int
    copy_data: list[bytes] | None = None


@dataclass
class Parsed:
    """A migration file read once: its statements, or what stops it from running (and where)."""

    stmts: list[_Stmt]
    problem: str = ""
    line: int = 0
    head: bytes = b""  # its first bytes, where a tool's directives are written


def parse_migration(m: Migration) -> Parsed:
    try:
        data = m.read()
    except OSError as exc:
        return Parsed([], f"cannot read {m.path}: {exc.strerror or exc}")
    stmts, problem, line = parse_file(data)
    return Parsed(stmts, problem, line, data[:2000])


def parse_file(data: bytes) -> tuple[list[_Stmt], str, int]:
    """The statements of a migration file; a psql meta-command or an unterminated statement is an error (its
    text and line): a migration is SQL, and nothing but SQL is run."""
    out: list[_Stmt] = []
    for ev in sqllex.events(io.BytesIO(data)):
        if isinstance(ev, sqllex.Statement):
            out.append(_Stmt(ev.text, ev.line))
        elif isinstance(ev, sqllex.CopyIn):
            out.append(_Stmt(ev.statement.text, ev.statement.line, list(ev.data)))
        elif isinstance(ev, sqllex.MetaCommand):
            return out, (f"psql meta-command \\{ev.name} is not run: the gate runs SQL statements only (no psql, "
                         "nothing on the checking host)"), ev.line
        elif isinstance(ev, sqllex.Unterminated):
            return out, ev.what, ev.line
    return out, "", 0


_XACT_COUNTS = ("select schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del from pg_stat_xact_user_tables "
                "where n_tup_ins + n_tup_upd + n_tup_del > 0")
_COUNTS = "select schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del from pg_stat_user_tables"


def _touched(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}


def _stat_counts(conn: Any, settle: float = 0.0) -> dict[str, int]:
    """Rows inserted, updated or deleted per table so far. A session reports its counts when it ends: with
    ``settle``, wait (that many seconds at most) until no other session is left in the database."""
    deadline = time.monotonic() + settle
    while settle and time.monotonic() < deadline and conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
    ).fetchone()[0]:
        time.sleep(0.02)
    conn.execute("select pg_stat_clear_snapshot()")
    return {str(k): int(v) for k, v in conn.execute(_COUNTS).fetchall()}


class Rehearser:
    """Applies migrations to one database: ``user`` connects as the role migrations run as (the restoring
    role), ``admin`` as the server's superuser (only to watch locks and statistics)."""

    def __init__(self, user: Callable[[], Any], admin: Callable[[], Any], tables: dict[int, str],
                 statement_timeout: str = "0", extensions: frozenset[str] = frozenset(),
                 contained: bool = False) -> None:
        """``contained``: migrations run as the restoring role, which owns every object (ownership changes are
        left out); ``extensions``: those the superuser then creates when a migration asks (on the server, none
        denied)."""
        self.user = user
        self.admin = admin
        self.tables = tables
        self.statement_timeout = statement_timeout
        self.extensions = extensions
        self.contained = contained

    def _by_admin(self, s: _Stmt) -> bool:
        name = created_extension(s.text.decode("utf-8", "replace")) if s.copy_data is None else ""
        return bool(name) and name.lower() in self.extensions

    def _rewritten(self, step: Step, before: dict[int, int], rows: dict[str, int]) -> None:
        with self.admin() as conn:
            after = filenodes(conn)
        for oid, node in before.items():
            if oid in after and after[oid] != node:
                step.rewritten[self.tables[oid]] = rows.get(self.tables[oid], 0)

    def apply(self, parsed: Parsed, step: Step, rows: dict[str, int]) -> None:
        import psycopg

        if parsed.problem:
            step.status, step.error, step.error_line = "failed", parsed.problem, parsed.line
            return
        stmts = parsed.stmts
        if self.contained:  # the restoring role owns every object, and cannot give them away
            kept = [s for s in stmts if not OWNER_TO.match(s.text.decode("utf-8", "replace"))]
            if len(kept) != len(stmts):
                step.notes.append(f"{len(stmts) - len(kept)} ownership change(s) (ALTER … OWNER TO) not run: the "
                                  "copy's objects belong to the restoring role")
            stmts = kept
        step.transactional = not (_NO_TRANSACTION_HEADER.search(parsed.head)
                                  or any(_NO_TRANSACTION.match(s.text) or _OWN_TRANSACTIONS.match(s.text)
                                         for s in stmts))
        with self.admin() as admin:
            nodes = filenodes(admin)
            counts_before = {} if step.transactional else _stat_counts(admin)
        t0 = time.monotonic()
        try:
            with psycopg.connect(**self.user(), autocommit=True) as conn:  # type: ignore[arg-type]
                conn.add_notice_handler(lambda diag: None)
                conn.execute(f"SET statement_timeout = '{self.statement_timeout}'")
                if step.transactional:
                    self._in_transaction(conn, stmts, step)
                else:
                    with Sampler(self.admin, self.tables) as sampler:
                        self._one_by_one(conn, stmts, step)
                    step.locks = sampler.locks()
        except psycopg.OperationalError as exc:
            step.status, step.error = "failed", f"the connection broke: {_first_line(exc)}"
        step.seconds = time.monotonic() - t0
        if not step.transactional:
            with self.admin() as admin:
                step.touched = _touched(counts_before, _stat_counts(admin, settle=5.0))
        if step.status != "failed":
            step.status = "applied"
            self._rewritten(step, nodes, rows)

    def command(self, command: str, info: dict[str, Any], step: Step, rows: dict[str, int], timeout: float) -> str:
        """Run the team's migration command against the database ``info`` points at; its output."""
        with self.admin() as admin:
            nodes = filenodes(admin)
            counts_before = _stat_counts(admin)
        output = run_command(command, info, step, lambda: Sampler(self.admin, self.tables), timeout)
        with self.admin() as admin:
            step.touched = _touched(counts_before, _stat_counts(admin, settle=5.0))
        self._rewritten(step, nodes, rows)
        return output

    def _execute(self, conn: Any, s: _Stmt) -> None:
        if self._by_admin(s):
            with self.admin() as admin:
                admin.execute(s.text)
            return
        if s.copy_data is None:
            conn.execute(s.text)
            return
        with conn.cursor() as cur, cur.copy(s.text) as cp:
            for chunk in s.copy_data:
                cp.write(chunk)

    def _fail(self, step: Step, s: _Stmt, exc: BaseException) -> None:
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag is not None and diag.message_primary else _first_line(exc)).strip()
        detail = getattr(diag, "message_detail", None) if diag is not None else None
        step.status, step.error_line = "failed", s.line
        step.error = message + (f" ({detail})" if detail else "")
        step.error_statement = _one_line(s.text.decode("utf-8", "replace"))

    def _in_transaction(self, conn: Any, stmts: list[_Stmt], step: Step) -> None:
        """One transaction; after each statement a second connection reads which tables it now holds: a lock
        taken inside a transaction is held until COMMIT, so it is held from that statement's start to the end."""
        import psycopg

        pid = conn.info.backend_pid
        first: dict[tuple[int, str], tuple[float, _Stmt]] = {}
        with self.admin() as watch:
            conn.execute("BEGIN")
            try:
                for s in stmts:
                    started = time.monotonic()
                    self._execute(conn, s)
                    step.timings[s.line] = time.monotonic() - started
                    for rel, mode in watch.execute(_LOCKS_OF, (pid, list(MODES))).fetchall():
                        if rel in self.tables and (rel, mode) not in first:
                            first[(rel, mode)] = (started, s)
                step.touched = {str(k): int(v) for k, v in conn.execute(_XACT_COUNTS).fetchall()}
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                self._fail(step, s, exc)
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass
                return
            end = time.monotonic()
        for (rel, mode), (started, s) in first.items():
            step.locks.append(Lock(self.tables[rel], mode, end - started,
                                   _one_line(s.text.decode("utf-8", "replace")), s.line))
        step.locks.sort(key=lambda lk: (MODES.index(lk.mode), -lk.seconds))

    def _one_by_one(self, conn: Any, stmts: list[_Stmt], step: Step) -> None:
        import psycopg

        for s in stmts:
            started = time.monotonic()
            try:
                self._execute(conn, s)
            except psycopg.Error as exc:
                self._fail(step, s, exc)
                return
            step.timings[s.line] = time.monotonic() - started


# --- a migration command -------------------------------------------------------------------------------

def database_url(info: dict[str, Any]) -> str:
    """A postgresql:// URL for libpq-style connection parameters (a socket folder goes in ?host=)."""

    user = quote(str(info.get("user") or ""), safe="")
    password = info.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = str(info.get("host") or "")
    port = str(info.get("port") or "")
    db = quote(str(info.get("dbname") or ""), safe="")
    if host.startswith("/"):
        query = f"?host={quote(host, safe='/')}" + (f"&port={port}" if port else "")
        return f"postgresql://{auth}/{db}{query}"
    return f"postgresql://{auth}{host}{':' + port if port else ''}/{db}"


def command_env(info: dict[str, Any]) -> dict[str, str]:
    """DATABASE_URL and the PG* variables pointing at the copy (and nothing of the checking user's own PG*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env["DATABASE_URL"] = database_url(info)
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("dbname", "PGDATABASE"),
                     ("password", "PGPASSWORD")):
        if info.get(key) is not None:
            env[var] = str(info[key])
    return env


def _run_group(argv: list[str], env: dict[str, str], cwd: Path | None, timeout: float) -> tuple[int | None, str]:
    """Run ``argv`` in a process group of its own; on a timeout, Ctrl-C or any error the whole group is killed
    (a tool like npx starts children of its own). The exit status (None after a timeout) and the output."""

    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace")
    except BaseException as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return None, out.decode("utf-8", "replace")
        raise


def run_command(command: str, info: dict[str, Any], step: Step, sampler_factory: Callable[[], Sampler],
                timeout: float, cwd: Path | None = None) -> str:
    """Run the team's migration command against the copy; its output, with the copy's password taken out."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        step.status, step.error = "failed", f"the command cannot be split into words: {exc}"
        return ""
    secret = str(info.get("password") or "")
    t0 = time.monotonic()
    output = ""
    try:
        with sampler_factory() as sampler:
            code, output = _run_group(argv, command_env(info), cwd, timeout)
        step.locks = sampler.locks()
        if code is None:
            step.status, step.error = "failed", f"did not finish within {timeout:.0f} s (gate.command_timeout)"
        elif code != 0:
            step.status, step.error = "failed", f"exited with status {code}"
    except FileNotFoundError:
        step.status, step.error = "failed", f"{argv[0] if argv else command!r}: no such program on this machine"
    except OSError as exc:
        step.status, step.error = "failed", f"{argv[0]!r} cannot be run: {exc.strerror or exc}"
    step.seconds = time.monotonic() - t0
    if step.status != "failed":
        step.status = "applied"
    if secret:
        output = output.replace(secret, "***")
    return output[-8000:]


# --- the whole rehearsal ---------------------------------------------------------------------------------

def lint_all(parsed: dict[str, Parsed], rows: dict[str, int], large: int) -> list[lint.LintFinding]:
    """Lint findings of every parsed migration, by name (a file that cannot be read is named as not linted)."""
    found: list[lint.LintFinding] = []
    for name, p in parsed.items():
        if p.problem.startswith("cannot read"):
            found.append(lint.LintFinding("unparsed", name, 0, p.problem))
        for s in p.stmts:
            found += lint.lint_statement(s.text.decode("utf-8", "replace"), name, s.line, rows, large)
    return found


def rehearse(db: Any, migrations: list[Migration], command: str, invariants: tuple[Any, ...] = (),
             large_rows: int = 100_000, command_timeout: float = 3600, statement_timeout: str = "0",
             evaluate: Callable[[Any, Any], Any] | None = None) -> Rehearsal:
    """Copy the restored backup ``db`` (a RestoredBackup) and run the pending ``migrations`` (or ``command``) on
    the copy; the restore itself stays untouched for the other checks. ``evaluate(conn, invariant)`` gives an
    invariant's value, read on the copy before and after the migrations."""

    r = Rehearsal(db.backup.key, "command" if command else "files")
    t0 = mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        r.phases[name] = round(now - mark, 3)
        mark = now

    try:
        r.copy = db.copy()
        phase("copy")
        target = db.target

        def user() -> Any:
            return db.connect_checks(r.copy)

        def admin() -> Any:
            return target.connect(r.copy)

        r.before = snapshot(user)
        if evaluate is not None:
            r.before.invariants = {inv.name: _value(evaluate, user, inv) for inv in invariants}
        phase("before")
        extensions = {e for e in target.inventory(r.copy).extensions if not denied_extension(e)} \
            if target.contained else set()
        rehearser = Rehearser(lambda: target.user_conninfo(r.copy), admin, r.before.oids, statement_timeout,
                              frozenset(extensions), contained=target.contained)
        if command:
            step = Step(command, transactional=False)
            r.steps.append(step)
            r.output = rehearser.command(command, target.user_conninfo(r.copy), step, r.before.rows,
                                         command_timeout)
        else:
            with user() as conn:
                done, r.applied_from = applied(conn, migrations)
            parsed = {m.name: parse_migration(m) for m in migrations if not (m.version and m.version in done)}
            r.lint = lint_all(parsed, r.before.rows, large_rows)
            for m in migrations:
                step = Step(m.name)
                r.steps.append(step)
                if m.name not in parsed:
                    step.status = "skipped"
                elif r.failed is not None:
                    step.status = "not run"
                else:
                    rehearser.apply(parsed[m.name], step, r.before.rows)
        r.seconds = sum(s.seconds for s in r.steps)
        phase("migrations")
        r.after = snapshot(user)
        if evaluate is not None:
            r.after.invariants = {inv.name: _value(evaluate, user, inv) for inv in invariants}
        phase("after")
    except Exception as exc:  # the server's fault or ours: every gate check says so, none hides the others
        import psycopg

        r.error = (f"the rehearsal stopped: {_first_line(exc)}" if isinstance(exc, psycopg.Error)
                   else internal_fault(exc))
        log.exception("rehearsing the migrations on %s failed", db.backup.key)
    r.total_seconds = time.monotonic() - t0
    return r


def _value(evaluate: Callable[[Any, Any], Any], connect: Callable[[], Any], invariant: Any) -> Any:
    with connect() as conn:
        return evaluate(conn, invariant)
