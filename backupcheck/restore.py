"""Restore a backup into a disposable cluster and classify every error it raised."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from . import security, sqllex
from .dumpscan import created_extension
from .pgarchive import DESCS, TocEntry

BENIGN, NOTICE, HARMFUL, SECURITY = "benign", "notice", "harmful", "security"

# The role every restore runs as, where backupcheck runs the server: not a superuser, no member of
# pg_execute_server_program / pg_read_server_files / pg_write_server_files, no CREATEROLE (which before
# PostgreSQL 16 could grant those), BYPASSRLS so that counts see every row.
RESTORER = "backupcheck_restore"

# Extensions the restore never gets, even where the server has them: they reach the network or the server's
# files, or bring an untrusted language. Others the server has are created by backupcheck as superuser.
DENIED_EXTENSIONS = frozenset({
    "dblink", "postgres_fdw", "file_fdw", "adminpack", "plpython3u", "plpythonu", "plpython2u", "plperlu",
    "pltclu", "plsh", "pljava", "log_fdw", "mysql_fdw", "oracle_fdw", "tds_fdw", "http",
    "pgsql_http", "pg_net",
})


def denied_extension(name: str) -> bool:
    """An extension a restore never gets: listed above, or an untrusted procedural language (plperlu, …)."""
    name = name.lower()
    return name in DENIED_EXTENSIONS or (name.startswith("pl") and name.endswith("u"))


# What a refused attempt at the host looks like in the server's words: (pattern, what the dump tried).
_REFUSED = [
    (re.compile(r"external program", re.I),
     "to run a program on the server (COPY … PROGRAM)"),
    (re.compile(r"pg_write_server_files|COPY to a file|lo_export|lo_import.*server", re.I),
     "to write a file on the server"),
    (re.compile(r"pg_read_server_files|COPY from a file|pg_read_(?:binary_)?file|pg_ls_dir|pg_stat_file", re.I),
     "to read a file of the server"),
    (re.compile(r"event trigger", re.I), "to create an event trigger (code that runs on other sessions' DDL)"),
    (re.compile(r"untrusted|permission denied for language|must be superuser to create (?:a )?(?:procedural )?language",
                re.I), "to use an untrusted language"),
    (re.compile(r'(?:permission denied to create|must be superuser to create) extension "?(\w+)', re.I),
     "to install extension {0}"),
    (re.compile(r"dblink|postgres_fdw|password is required|foreign-data wrapper", re.I),
     "to connect to a server (dblink / postgres_fdw)"),
    (re.compile(r"ALTER SYSTEM", re.I), "to change the server's configuration"),
    (re.compile(r"must be superuser to (?:set|alter) (?:superuser|replication|bypassrls)|"
                r"permission denied to (?:create|alter) role|must have CREATEROLE", re.I), ""),  # roles: benign
]


def refused_attempt(message: str, statement: str = "") -> str:
    """What a dump tried, when ``message`` is the server refusing it access to the host; else ""."""
    for pattern, what in _REFUSED:
        m = pattern.search(message)
        if m:
            if not what:
                return ""
            if "{0}" in what:
                name = m.group(1).lower()
                if not denied_extension(name):
                    return ""  # an extension this server lacks or the profile skips: not an attempt at the host
                return what.format(name)
            return what
    if re.match(r"^\s*ALTER\s+SYSTEM\b", statement, re.I):
        return "to change the server's configuration"
    return ""


@dataclass(frozen=True)
class RestoreError:
    severity: str  # benign, notice or harmful
    message: str
    statement: str
    lost: str  # what the error left out, for harmful ones: "table public.orders"
    artifact: str
    where: str = ""  # a TOC entry or a line

    def line(self) -> str:
        stmt = " ".join(self.statement.split())[:160]
        head = f"[{self.severity}] {self.artifact}{(' ' + self.where) if self.where else ''}: {self.message}"
        return head + (f"\n      statement: {stmt}" if stmt else "") + (f"\n      lost: {self.lost}" if self.lost else "")


@dataclass
class RestoreResult:
    backup: str
    databases: list[str]
    seconds: float = 0.0
    errors: list[RestoreError] = field(default_factory=list)
    tool: str = ""
    aborted: str = ""  # set when the restore could not run to the end

    @property
    def harmful(self) -> list[RestoreError]:
        return [e for e in self.errors if e.severity == HARMFUL]

    def report(self) -> str:
        if not self.errors and not self.aborted:
            return "no errors"
        lines = [e.line() for e in self.errors]
        if self.aborted:
            lines.insert(0, f"[aborted] {self.aborted}")
        return "\n".join(lines)


_QN = r'((?:"(?:[^"]|"")+"|[\w$]+)(?:\.(?:"(?:[^"]|"")+"|[\w$]+))?)'
_LOSS_BY_STATEMENT = [
    (re.compile(rf"^\s*CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QN}", re.I), "table {}"),
    (re.compile(rf"^\s*COPY\s+{_QN}", re.I), "rows of table {}"),
    (re.compile(rf"^\s*INSERT\s+INTO\s+{_QN}", re.I), "rows of table {}"),
    (re.compile(rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?{_QN}", re.I), "index {}"),
    (re.compile(rf"^\s*ALTER\s+TABLE\s+(?:ONLY\s+)?{_QN}\s+ADD\s+CONSTRAINT\s+{_QN}", re.I), "constraint {1} on {0}"),
    (re.compile(rf"^\s*ALTER\s+TABLE\s+(?:ONLY\s+)?{_QN}\s+ATTACH\s+PARTITION\s+{_QN}", re.I), "partition {1} of {0}"),
    (re.compile(rf"^\s*CREATE\s+(?:MATERIALIZED\s+)?VIEW\s+{_QN}", re.I), None),
]
_LOSS_BY_DESC = {
    "TABLE": "table {}", "TABLE DATA": "rows of table {}", "INDEX": "index {}", "CONSTRAINT": "constraint {}",
    "FK CONSTRAINT": "constraint {}", "CHECK CONSTRAINT": "constraint {}", "TABLE ATTACH": "partition {}",
}
_BENIGN_DESC = {"ACL", "DEFAULT ACL", "COMMENT", "SECURITY LABEL", "DATABASE PROPERTIES", "SCHEMA", "EXTENSION COMMENT"}
_BENIGN_STATEMENT = re.compile(
    r"^\s*(?:GRANT|REVOKE|COMMENT\s+ON|SECURITY\s+LABEL|ALTER\s+DEFAULT\s+PRIVILEGES|SET\s|RESET\s|"
    r"SELECT\s+pg_catalog\.set_config|ALTER\s+\w+(?:\s+\w+)?\s+.*\bOWNER\s+TO\b|ALTER\s+ROLE|ALTER\s+DATABASE|"
    r"CREATE\s+ROLE)",
    re.I | re.S,
)


def classify(message: str, statement: str, desc: str, tag: str, tolerated: Iterable[str] = ()) -> tuple[str, str]:
    """(severity, what was lost) for one error."""
    if refused_attempt(message, statement):
        lost = ""
        for pattern, template in _LOSS_BY_STATEMENT:
            m = pattern.match(statement)
            if m and template:
                lost = template.format(*m.groups())
                break
        return SECURITY, lost or (_LOSS_BY_DESC[desc].format(tag) if desc in _LOSS_BY_DESC else "")
    for pattern in tolerated:
        if re.search(pattern, message) or re.search(pattern, statement):
            return BENIGN, ""
    if "already exists" in message:
        return BENIGN, ""
    if desc in _BENIGN_DESC or (desc == "" and _BENIGN_STATEMENT.match(statement)):
        return BENIGN, ""
    if desc.endswith("OWNER") or re.search(r"\bOWNER\s+TO\b", statement, re.I) and desc not in _LOSS_BY_DESC:
        return BENIGN, ""
    if desc in _LOSS_BY_DESC:
        return HARMFUL, _LOSS_BY_DESC[desc].format(tag)
    for pattern, template in _LOSS_BY_STATEMENT:
        m = pattern.match(statement)
        if m:
            if template is None:
                return NOTICE, ""
            return HARMFUL, template.format(*m.groups())
    return NOTICE, ""


# --- archives through pg_restore ---------------------------------------------------------------

_TOC_LINE = re.compile(r"^pg_restore: from TOC entry (\d+); \d+ \d+ (.*)$")
_COPY_FAILED = re.compile(r'^error: COPY failed for table "((?:[^"]|"")+)":\s*(?:ERROR:\s+)?(.*)$')
def _split_desc(rest: str) -> tuple[str, str]:
    for d in DESCS:
        if rest.startswith(d + " "):
            parts = rest[len(d) + 1 :].split()
            # "<schema> <name> <owner>" for most; keep schema.name
            if len(parts) >= 3:
                return d, f"{parts[0]}.{parts[1]}"
            return d, " ".join(parts[:-1]) if len(parts) > 1 else (parts[0] if parts else "")
    return "", rest


def parse_pg_restore_errors(stderr: str, artifact: str, tolerated: Iterable[str] = ()) -> tuple[list[RestoreError], str]:
    """Turn pg_restore's stderr into classified errors; the second value is a fatal error, if any."""
    errors: list[RestoreError] = []
    fatal = ""
    desc = tag = where = ""
    message = ""
    statement_lines: list[str] = []
    in_command = False

    def flush() -> None:
        nonlocal message, statement_lines, in_command
        if message:
            stmt = "\n".join(statement_lines).strip()
            sev, lost = classify(message, stmt, desc, tag, tolerated)
            errors.append(RestoreError(sev, message, stmt, lost, artifact, where))
        message, statement_lines, in_command = "", [], False

    for raw in stderr.splitlines():
        if raw.startswith("pg_restore:"):
            if in_command or message:
                flush()
            m = _TOC_LINE.match(raw)
            if m:
                where = f"TOC entry {m.group(1)}"
                desc, tag = _split_desc(m.group(2))
                continue
            body = raw[len("pg_restore:"):].strip()
            copy = _COPY_FAILED.match(body)
            if copy:  # the rows of one table were refused; pg_restore goes on with the next entry
                if desc != "TABLE DATA" or not tag:
                    tag = copy.group(1)
                desc = "TABLE DATA"
                message = copy.group(2).strip()
            elif body.startswith("error: could not execute query:"):
                message = body.split("could not execute query:", 1)[1].strip()
                message = re.sub(r"^ERROR:\s+", "", message)
            elif body.startswith("error:") or body.startswith("[archiver") or "fatal" in body:
                text = body.split(":", 1)[1].strip() if body.startswith("error:") else body
                if "errors ignored on restore" not in text:
                    fatal = fatal or text
            # warnings and progress lines are ignored
        elif raw.startswith("Command was:"):
            in_command = True
            statement_lines.append(raw[len("Command was:"):].strip())
        elif in_command:
            statement_lines.append(raw)
        elif message and raw.startswith(("DETAIL:", "HINT:", "LINE ", "CONTEXT:")):
            message += " " + raw.strip()
    flush()
    return errors, fatal


def pg_restore_args(dbname: str, jobs: int, archive: str, list_file: str | None = None,
                    no_owner: bool = False) -> list[str]:
    """Arguments after the program name; the same inside a container and on this machine."""
    args = ["--no-password", "-d", dbname] + (["--no-owner"] if no_owner else [])
    if jobs > 1:
        args += ["-j", str(jobs)]
    if list_file:
        args += ["-L", list_file]
    return [*args, archive]


def outcome_of_pg_restore(returncode: int, stderr: str, artifact: str,
                          tolerated: Iterable[str] = ()) -> tuple[list[RestoreError], str]:
    errors, fatal = parse_pg_restore_errors(stderr, artifact, tolerated)
    if returncode != 0 and not errors and not fatal:
        fatal = f"pg_restore exited with code {returncode}: {stderr.strip()[-500:]}"
    return errors, fatal


@dataclass(frozen=True)
class Pass:
    """One pg_restore run over part of an archive: as the restoring role, or (vetted extensions) as superuser."""

    as_admin: bool
    listing: str | None  # a -L list, or None for every entry
    parallel: bool


def restore_passes(entries: list[TocEntry], skip_extensions: Iterable[str], vetted: frozenset[str],
                   contained: bool) -> tuple[list[Pass], list[str]]:
    """How to restore an archive: one pass, or (where a vetted extension must be created by the superuser)
    schemas as the restoring role, those extensions as superuser, then the rest as the restoring role."""
    listing, skipped = restore_list(entries, skip_extensions)
    wanted = [e for e in entries if not (e.desc == "EXTENSION" and e.tag in set(skipped))]
    admin = [e for e in wanted if contained and e.desc == "EXTENSION" and e.tag in vetted]
    if not admin:
        return [Pass(False, listing if skipped else None, True)], skipped

    def lines(chosen: list[TocEntry]) -> str:
        return "".join(f"{e.dump_id}; 0 0 {e.desc} {e.namespace or '-'} {e.tag}\n" for e in chosen)

    schemas = [e for e in wanted if e.desc == "SCHEMA"]
    rest = [e for e in wanted if e.desc != "SCHEMA" and e not in admin]
    passes = [Pass(False, lines(schemas), False)] if schemas else []
    return passes + [Pass(True, lines(admin), False), Pass(False, lines(rest), True)], skipped


def restore_list(entries: Iterable[TocEntry], skip_extensions: Iterable[str]) -> tuple[str, list[str]]:
    """A ``pg_restore -L`` list of every TOC entry but the skipped extensions; the second value names those."""
    skip = set(skip_extensions)
    lines, skipped = [], []
    for e in entries:
        desc, tag = e.desc, e.tag
        if (desc == "EXTENSION" and tag in skip) or (desc == "COMMENT" and tag.startswith("EXTENSION ")
                                                      and tag.split(" ", 1)[1] in skip):
            if desc == "EXTENSION":
                skipped.append(tag)
            continue
        lines.append(f"{e.dump_id}; 0 0 {desc} {e.namespace or '-'} {tag}")
    return "\n".join(lines) + "\n", skipped


# --- plain SQL through psycopg: psql never sees the file ----------------------------------------


_CLUSTER_WIDE = re.compile(r"^\s*(?:CREATE|ALTER|DROP)\s+(?:ROLE|USER|GROUP|DATABASE|TABLESPACE)\b", re.I)
# A preload setting names a library of the production server (Supabase sets supautils for its roles): it cannot
# bring code from the dump, but sessions of that role would fail where the library is missing.
_PRELOAD = re.compile(r"^\s*(?:ALTER\s+(?:ROLE|USER|DATABASE)\b.*?\bSET\s+|SET\s+(?:SESSION\s+)?)"
                      r"(?:session|local)_preload_libraries\b", re.I | re.S)
_ALTER_ROLE = re.compile(r'^\s*(?:ALTER|DROP)\s+(?:ROLE|USER)\s+(?:IF\s+EXISTS\s+)?("(?:[^"]|"")+"|[\w$]+)', re.I)
_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+DATABASE\b", re.I)
OWNER_TO = _OWNER_TO = re.compile(r'^\s*ALTER\s+.*\sOWNER\s+TO\s+(?:"(?:[^"]|"")+"|[\w$]+)\s*;?\s*$', re.I | re.S)
_DATABASE_OWNER = re.compile(r'\s+OWNER\s*=?\s*(?:"(?:[^"]|"")+"|[\w$]+)', re.I)
_LOCALE_CLAUSE = re.compile(r"\b(LOCALE|LC_COLLATE|LC_CTYPE)\s*=\s*'((?:[^']|'')*)'", re.I)


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
                 vetted_extensions: frozenset[str] = frozenset()) -> None:
        self.conninfo = conninfo
        # Contained: the statements run as a role that is no superuser; the superuser connection creates only
        # the vetted extensions, and ownership changes (to roles the restoring role cannot become) are left out.
        self.admin_conninfo = admin_conninfo
        self.vetted = frozenset(e.lower() for e in vetted_extensions)
        self.owner_changes = 0
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
        sev, lost = classify(message, statement, "", "", self.tolerated)
        self.errors.append(RestoreError(sev, message, statement, lost, self.artifact, f"line {line}"))
        if isinstance(exc, psycopg.OperationalError):
            conn = self._conns.pop(self.db, None)
            if conn is not None:
                conn.close()  # type: ignore[attr-defined]

    def run(self, stream: BinaryIO) -> None:
        import psycopg

        for ev in sqllex.events(stream):
            if isinstance(ev, sqllex.Statement):
                text = ev.text.decode("utf-8", "replace")
                if self._skip(text):
                    continue
                sql: bytes | str = ev.text
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
                        if target not in self.databases:
                            self.databases.append(target)
                    except psycopg.Error as exc:
                        self.db = previous  # like psql: the previous connection is kept
                        self._record(exc, f"\\connect {target}", ev.line)
            elif isinstance(ev, sqllex.Unterminated):
                self.errors.append(RestoreError(HARMFUL, ev.what, "", "the rest of the file", self.artifact,
                                                f"line {ev.line}"))

    def finish(self) -> None:
        if self.owner_changes:
            self.skipped.append(f"{self.owner_changes} ownership change(s) (ALTER … OWNER TO): every object is "
                                f"owned by the restoring role {RESTORER}, which is no superuser")

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        self._conns.clear()


def create_database(conninfo: dict, name: str, owner: str | None = None, throwaway: bool = False) -> None:
    """``throwaway``: a server of ours, where copying template1's files after a checkpoint (PostgreSQL 15's
    FILE_COPY, about 20 ms against 30 ms WAL-logged) disturbs nobody; never on a user's server."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                         + (sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL(""))
                         + (sql.SQL(" STRATEGY = FILE_COPY") if throwaway and conn.info.server_version >= 150000
                            else sql.SQL("")))
