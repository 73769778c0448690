"""Run a plain SQL dump statement by statement, rewriting what a disposable server cannot take."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from .. import security, sqllex
from ..dumpscan import PlainScanner, created_extension
from ..stock import StockEventTriggers
from .errors import HARMFUL, NOTICE, RESTORER, RestoreError, classify

_OWNER_STATEMENT = re.compile(
    r'^\s*ALTER\s+(TABLE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|FOREIGN\s+TABLE|FUNCTION|PROCEDURE|AGGREGATE|SCHEMA|TYPE|'
    r'DOMAIN)\s+(?:ONLY\s+)?(.+?)\s+OWNER\s+TO\s+("(?:[^"]|"")+"|[\w$]+)\s*;?\s*$', re.I | re.S)


def owner_change(statement: str) -> tuple[str, str, str] | None:
    """(kind, name, owner) of a plain dump's ``ALTER … OWNER TO``; None for any other statement."""
    m = _OWNER_STATEMENT.match(statement)
    if not m:
        return None
    owner = m.group(3)
    owner = owner[1:-1].replace('""', '"') if owner.startswith('"') else owner.lower()
    name = m.group(2).strip()
    if m.group(1).upper() == "SCHEMA":
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
    return " ".join(m.group(1).upper().split()), name, owner


# --- plain SQL through psycopg: psql never sees the file ----------------------------------------


_CLUSTER_WIDE = re.compile(r"^\s*(?:CREATE|ALTER|DROP)\s+(?:ROLE|USER|GROUP|DATABASE|TABLESPACE)\b", re.I)
# A preload setting names a library of the production server (Supabase sets supautils for its roles): it cannot
# bring code from the dump, but sessions of that role would fail where the library is missing.
_PRELOAD = re.compile(r"^\s*(?:ALTER\s+(?:ROLE|USER|DATABASE)\b.*?\bSET\s+|SET\s+(?:SESSION\s+)?)"
                      r"(?:session|local)_preload_libraries\b", re.I | re.S)
_ALTER_ROLE = re.compile(r'^\s*(?:ALTER|DROP)\s+(?:ROLE|USER)\s+(?:IF\s+EXISTS\s+)?("(?:[^"]|"")+"|[\w$]+)', re.I)
_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+DATABASE\b", re.I)
_CREATE_DATABASE_NAME = re.compile(r'^\s*CREATE\s+DATABASE\s+("(?:[^"]|"")+"|[\w$]+)', re.I)
OWNER_TO = _OWNER_TO = re.compile(r'^\s*ALTER\s+.*\sOWNER\s+TO\s+(?:"(?:[^"]|"")+"|[\w$]+)\s*;?\s*$', re.I | re.S)
_DATABASE_OWNER = re.compile(r'\s+OWNER\s*=?\s*(?:"(?:[^"]|"")+"|[\w$]+)', re.I)
_LOCALE_CLAUSE = re.compile(r"\b(LOCALE|LC_COLLATE|LC_CTYPE)\s*=\s*'((?:[^']|'')*)'", re.I)
_IDENT = r'(?:"(?:[^"]|"")+"|[\w$]+)'
_TABLESPACE_DDL = re.compile(rf"^\s*(?:CREATE|ALTER|DROP)\s+TABLESPACE\s+(?:IF\s+EXISTS\s+)?({_IDENT})", re.I)
_TABLESPACE_CLAUSE = re.compile(rf"\s+TABLESPACE\s*=?\s*({_IDENT})", re.I)
_DEFAULT_TABLESPACE = re.compile(r"^\s*SET\s+default_tablespace\s*(?:=|TO)\s*'?([^';\s]+)'?\s*;?\s*$", re.I)
_SET_TABLESPACE = re.compile(rf"^\s*ALTER\s+(?:DATABASE|TABLE|INDEX|MATERIALIZED\s+VIEW)\s+.*\sSET\s+TABLESPACE\s+{_IDENT}",
                             re.I | re.S)


def map_tablespace(statement: str) -> tuple[str | None, str]:
    """A statement with its tablespace taken out, for a disposable server that has only the default one: (the
    statement to run, or None to leave it out; the tablespace it named, or "")."""
    m = _TABLESPACE_DDL.match(statement)
    if m:
        return None, m.group(1).strip('"')
    m = _DEFAULT_TABLESPACE.match(statement)
    if m:
        return "SET default_tablespace = '';", m.group(1)
    if _SET_TABLESPACE.match(statement):
        return None, _SET_TABLESPACE.match(statement).group(0).rsplit(None, 1)[-1].strip('"')  # type: ignore[union-attr]
    if re.match(r"^\s*CREATE\s+(?:DATABASE|(?:UNIQUE\s+)?INDEX|(?:UNLOGGED\s+)?TABLE|MATERIALIZED\s+VIEW)\b",
                statement, re.I):
        m = _TABLESPACE_CLAUSE.search(statement)
        if m and m.group(1).strip('"').lower() not in ("pg_default", "pg_global"):
            return statement[:m.start()] + statement[m.end():], m.group(1).strip('"')
    return statement, ""


def normal_locale(name: str) -> str:
    """``en_US.UTF-8`` and ``en_US.utf8`` are one locale to glibc: compare them folded."""
    base, dot, codeset = name.partition(".")
    return base + (dot + codeset.lower().replace("-", "") if dot else "")


def rewrite_locales(statement: str, available: frozenset[str], fallback: str) -> tuple[str, list[str]]:
    """``CREATE DATABASE`` with every libc locale the server lacks replaced by ``fallback``; the names replaced."""
    replaced: list[str] = []

    def swap(m: re.Match[str]) -> str:
        value = m.group(2)
        if normal_locale(value) in available or value in ("C", "POSIX"):
            return m.group(0)
        if value not in replaced:
            replaced.append(value)
        return f"{m.group(1)} = '{fallback}'"

    return _LOCALE_CLAUSE.sub(swap, statement), replaced


class PlainRunner:
    """Runs a plain dump statement by statement; meta-commands other than \\connect are never run.

    ``conninfo`` gives the connection parameters of a database. With ``confined`` (a shared server)
    statements that change other databases or cluster-wide roles are skipped and listed instead of run.
    """

    def __init__(self, conninfo: Callable[[str], dict], first_db: str, artifact: str, tolerated: Iterable[str] = (),
                 confined: bool = False, skip_extensions: Iterable[str] = (), locale_fallback: str = "",
                 locales: frozenset[str] = frozenset(), admin_conninfo: Callable[[str], dict] | None = None,
                 vetted_extensions: frozenset[str] = frozenset(), stock: StockEventTriggers | None = None,
                 owners: frozenset[str] = frozenset(), stop: threading.Event | None = None) -> None:
        self.conninfo = conninfo
        self.stop = stop  # set: the restore ran out of its time; no statement starts after it
        self.owners = owners  # roles the restoring role may hand objects to: their ALTER … OWNER TO is run
        self.stock = stock  # a platform's own event triggers to leave out (the Supabase profile)
        # Contained: the statements run as a role that is no superuser; the superuser connection creates only
        # the vetted extensions, and ownership changes (to roles the restoring role cannot become) are left out.
        self.admin_conninfo = admin_conninfo
        self.vetted = frozenset(e.lower() for e in vetted_extensions)
        self.owner_changes = 0
        self.owned: list[tuple[str, str, str, str]] = []  # (database, kind, name, owner): handed over afterwards
        # Neither the role restoring nor the superuser backupcheck works as is altered by the dump.
        self.own_roles = {str(c(first_db).get("user") or "") for c in (conninfo, admin_conninfo) if c} - {""}
        self.locale_fallback = locale_fallback
        self.locales = frozenset(normal_locale(x) for x in locales)
        self.db = first_db
        self.artifact = artifact
        self.tolerated = tuple(tolerated)
        self.confined = confined
        self.skip_extensions = {e.lower() for e in skip_extensions}
        self.errors: list[RestoreError] = []
        self.databases: list[str] = [first_db]
        self.skipped: list[str] = []
        self._conns: dict[str, object] = {}
        # Contained (a disposable server): the dump's tablespaces are mapped to the default one.
        self.map_tablespaces = admin_conninfo is not None
        self.tablespaces: list[str] = []
        self.lost_db = ""  # a database the dump \connects to that could not be reached: its statements are skipped
        self.lost_statements = 0
        self.failed_creates: set[str] = set()
        self.line = 0  # of the statement read last
        self.refused = ""  # "line N: why": the command for the checking host a restore that reads its dump met

    def _skip(self, statement: str) -> bool:
        if self.confined and _CLUSTER_WIDE.match(statement):
            self.skipped.append(" ".join(statement.split())[:120])
            return True
        if _PRELOAD.match(statement):
            self.skipped.append(f"{' '.join(statement.split())[:120]} (a library of the production server)")
            return True
        m = _ALTER_ROLE.match(statement)
        if m and (m.group(1).strip('"') if m.group(1).startswith('"') else m.group(1).lower()) in self.own_roles:
            self.skipped.append(f"{' '.join(statement.split())[:120]} (the role this restore runs as is not changed)")
            return True
        if self.skip_extensions:
            name = created_extension(statement)
            if name and name.lower() in self.skip_extensions:
                self.skipped.append(" ".join(statement.split())[:120])
                return True
        if self.admin_conninfo is not None and _OWNER_TO.match(statement):
            change = owner_change(statement)
            if change and change[2] in self.owners:  # handed over by backupcheck after the restore
                self.owned.append((self.db, *change))
            else:
                self.owner_changes += 1
            return True
        return False

    def _admin_statement(self, statement: str) -> bool:
        """A vetted CREATE EXTENSION, run by the superuser where the restore is contained."""
        if self.admin_conninfo is None:
            return False
        name = created_extension(statement)
        return bool(name) and name.lower() in self.vetted

    def _admin_conn(self):  # type: ignore[no-untyped-def]
        import psycopg

        key = f"admin:{self.db}"
        conn = self._conns.get(key)
        if conn is None or conn.closed:  # type: ignore[attr-defined]
            assert self.admin_conninfo is not None
            conn = psycopg.connect(**self.admin_conninfo(self.db), autocommit=True)  # type: ignore[arg-type]
            conn.add_notice_handler(lambda diag: None)
            self._conns[key] = conn
        return conn

    def _conn(self):  # type: ignore[no-untyped-def]
        import psycopg

        conn = self._conns.get(self.db)
        if conn is None or conn.closed:  # type: ignore[attr-defined]
            conn = psycopg.connect(**self.conninfo(self.db), autocommit=True)  # type: ignore[arg-type]
            conn.add_notice_handler(lambda diag: None)
            self._conns[self.db] = conn
        return conn

    def _record(self, exc: Exception, statement: str, line: int) -> None:
        import psycopg

        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
        context = (getattr(diag, "context", None) or "").strip() if diag is not None else ""
        if context:  # where a function called during the restore failed: what says why rows were lost
            message += " CONTEXT: " + " | ".join(context.splitlines()[:3])
        sev, lost = classify(message, statement, "", "", self.tolerated)
        self.errors.append(RestoreError(sev, message, statement, lost, self.artifact, f"line {line}"))
        if isinstance(exc, psycopg.OperationalError):
            conn = self._conns.pop(self.db, None)
            if conn is not None:
                conn.close()  # type: ignore[attr-defined]

    def _events(self, stream: BinaryIO, scanner: PlainScanner | None,
                on_roles: Callable[[list[str]], list[str]] | None) -> Iterator[sqllex.Event]:
        """The dump's events; with ``scanner``, each is read by it before it runs (the read that checks the dump is
        the restore's): one that carries a command for the checking host ends the restore before it runs, and the
        roles it names are made first (``on_roles``: the names made, which may own what the dump gives them)."""
        seen = 0
        for ev in sqllex.events(stream):
            self.line = ev.statement.line if isinstance(ev, sqllex.CopyIn) else ev.line
            if scanner is None:
                yield ev
                continue
            problems = scanner.check(ev)
            if problems:
                self.refused = problems[0]
                return
            scan = scanner.scan
            if on_roles is not None and len(scan.roles_created) + len(scan.roles_used) != seen:
                seen = len(scan.roles_created) + len(scan.roles_used)
                self.owners = self.owners | frozenset(on_roles(scan.roles_created + scan.roles_used))
            yield ev
            if isinstance(ev, sqllex.CopyIn):
                for _ in ev.data:  # a block left unread (its database lost): read through for its rows
                    pass
                scanner.counted(ev)

    def run(self, stream: BinaryIO, scanner: PlainScanner | None = None,
            on_roles: Callable[[list[str]], list[str]] | None = None) -> None:
        import psycopg

        for ev in self._events(stream, scanner, on_roles):
            if self.stop is not None and self.stop.is_set():
                line = ev.statement.line if isinstance(ev, sqllex.CopyIn) else ev.line
                self.skipped.append(f"everything from line {line} on: the restore was stopped (restore_timeout)")
                break
            if isinstance(ev, sqllex.Statement) and self.lost_db:
                self.lost_statements += 1
                continue
            if isinstance(ev, sqllex.CopyIn) and self.lost_db:
                for _ in ev.data:
                    pass
                self.lost_statements += 1
                continue
            if isinstance(ev, sqllex.Statement):
                text = ev.text.decode("utf-8", "replace")
                if self.stock is not None and "EVENT" in text.upper():
                    self.stock.function(text)
                    if self.stock.is_stock(text):
                        continue
                if self._skip(text):
                    continue
                sql: bytes | str = ev.text
                if self.map_tablespaces and "TABLESPACE" in text.upper():
                    mapped, space = map_tablespace(text)
                    if space and space not in self.tablespaces:
                        self.tablespaces.append(space)
                    if mapped is None:
                        continue
                    if mapped != text:
                        sql = text = mapped
                if self.locale_fallback and _CREATE_DATABASE.match(text):
                    sql, replaced = rewrite_locales(text, self.locales, self.locale_fallback)
                    if replaced:
                        self.skipped.append(f"locale {', '.join(replaced)} (not on the server) replaced by "
                                            f"{self.locale_fallback} (locale_fallback) at line {ev.line}")
                if self.admin_conninfo is not None and _CREATE_DATABASE.match(text):
                    # The restoring role creates the dump's databases and owns them, whoever owned them before.
                    sql = _DATABASE_OWNER.sub("", sql if isinstance(sql, str) else text)
                try:
                    conn = self._admin_conn() if self._admin_statement(text) else self._conn()
                    conn.execute(sql)  # type: ignore[attr-defined]
                except psycopg.Error as exc:
                    self._record(exc, ev.text.decode("utf-8", "replace"), ev.line)
                    created = _CREATE_DATABASE_NAME.match(text)
                    if created and self.errors[-1].severity == HARMFUL:
                        self.failed_creates.add(created.group(1).strip('"'))
            elif isinstance(ev, sqllex.CopyIn):
                try:
                    with self._conn().cursor() as cur:  # type: ignore[attr-defined]
                        with cur.copy(ev.statement.text) as cp:
                            for chunk in ev.data:
                                cp.write(chunk)
                except psycopg.Error as exc:
                    for _ in ev.data:
                        pass
                    self._record(exc, ev.statement.text.decode("utf-8", "replace"), ev.statement.line)
            elif isinstance(ev, sqllex.MetaCommand) and ev.name in ("connect", "c"):
                target = security.connect_target(ev.args)
                if target and self.confined and target != self.db:
                    self.skipped.append(f"\\connect {target} (the restore stays in its own database)")
                    self.errors.append(RestoreError(
                        HARMFUL, f"\\connect {target}: a shared server is restored into one fresh database only",
                        f"\\connect {target}", f"everything the dump puts in database {target}", self.artifact,
                        f"line {ev.line}"))
                    continue
                if target:
                    previous = self.db
                    self.db = target
                    try:
                        self._conn()
                        self.lost_db = ""
                        if target not in self.databases:
                            self.databases.append(target)
                    except psycopg.Error as exc:
                        # psql would go on in the previous database and put this one's objects there: the
                        # statements up to the next \connect are left out instead, and the loss is said once.
                        self.db = previous
                        self.lost_db = target
                        diag = getattr(exc, "diag", None)
                        message = (diag.message_primary if diag is not None and diag.message_primary
                                   else str(exc)).strip()
                        lost = f"database {target} and everything the dump puts in it"
                        self.errors.append(RestoreError(NOTICE if target in self.failed_creates else HARMFUL,
                                                        message, f"\\connect {target}",
                                                        "" if target in self.failed_creates else lost,
                                                        self.artifact, f"line {ev.line}"))
            elif isinstance(ev, sqllex.Unterminated):
                self.errors.append(RestoreError(HARMFUL, ev.what, "", "the rest of the file", self.artifact,
                                                f"line {ev.line}"))

    def finish(self) -> None:
        if self.stock is not None and self.stock.note():
            self.skipped.append(self.stock.note())
        if self.tablespaces:
            self.skipped.append(f"tablespace(s) {', '.join(self.tablespaces)}: a disposable server has only the "
                                "default one; their databases, tables and indexes were restored into it")
        if self.lost_statements:
            self.skipped.append(f"{self.lost_statements} statement(s) of databases that could not be reached")
        if self.owner_changes:
            self.skipped.append(f"{self.owner_changes} ownership change(s) (ALTER … OWNER TO) to roles of the "
                                f"server itself left out: those objects are owned by the restoring role {RESTORER}, "
                                "which is no superuser")

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        self._conns.clear()


def create_database(conn: Any, name: str, owner: str | None = None, throwaway: bool = False) -> None:
    """On ``conn``, the server's admin connection (autocommit). ``throwaway``: a server of ours, where copying
    template1's files after a checkpoint (PostgreSQL 15's FILE_COPY, about 20 ms against 30 ms WAL-logged)
    disturbs nobody; never on a user's server."""
    from psycopg import sql

    if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
        return
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                 + (sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL(""))
                 + (sql.SQL(" STRATEGY = FILE_COPY") if throwaway and conn.info.server_version >= 150000
                    else sql.SQL("")))
