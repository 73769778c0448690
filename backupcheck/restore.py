"""Restore a backup into a disposable cluster and classify every error it raised."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from . import security, sqllex
from .dumpscan import created_extension
from .pgarchive import DESCS, TocEntry
from .stock import StockEventTriggers

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
    (re.compile(rf"^\s*CREATE\s+DATABASE\s+{_QN}", re.I), "database {} and everything the dump puts in it"),
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


# --- why a restore error happened, and what to change -------------------------------------------

_MISSING = re.compile(r'(relation|function|type|operator|schema) "?([^"\s]+(?:\([^)]*\))?)"? does not exist', re.I)
_IN_FUNCTION = re.compile(r'(?:PL/pgSQL|SQL) function "?([\w$."]+?)"?(?:\(([^)]*)\))?(?: line \d+| statement \d+|'
                          r' during inlining|\s|$)', re.I)
DATA_LOSS = ("rows of table", "table ", "database ", "everything after", "the rest of the file")


def advice(e: RestoreError, qualify: Callable[[str, str], str] = lambda kind, name: name) -> tuple[str, str]:
    """(the cause in words, what to change) for one harmful restore error; ("", "") when nothing more is known.
    ``qualify(kind, name)`` gives a function's or table's schema-qualified name where the message has none."""
    missing = _MISSING.search(e.message)
    inside = _IN_FUNCTION.search(e.message)
    if missing and inside and "search_path" not in e.message:
        function = qualify("function", inside.group(1).replace('"', ""))
        kind, name = missing.group(1).lower(), missing.group(2)
        return (f"function {function} names {kind} {name} without its schema; pg_dump restores with an empty "
                f"search_path (the CVE-2018-1058 fix), so the function fails while the restore calls it "
                f"(a CHECK constraint, index expression, generated column or default)",
                f"schema-qualify the names inside {function} (e.g. public.{name.split('.')[-1]}), or pin its "
                f"search_path at the source: ALTER FUNCTION {function} SET search_path = public; then take a new "
                f"backup")
    if re.search(r"invalid locale name|locale .* does not exist|collation .* for encoding", e.message, re.I):
        return ("the dump asks for a locale the restoring server lacks",
                'set locale_fallback = "C.UTF-8" for the series, or install the locale on the server')
    if re.search(r"permission denied to create tablespace|directory .* does not exist", e.message, re.I):
        return ("the dump creates a tablespace the restoring server cannot have",
                "nothing to change for a disposable server (tablespaces are mapped to the default one); on a "
                "server of yours given with --pg-dsn, create the tablespace first")
    if re.search(r'extension "?[\w-]+"? is not available|could not open extension control file', e.message, re.I):
        return ("the dump creates an extension the restoring server does not have",
                "see the compatibility check for which server has it")
    return "", ""


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


_PREFIXES = re.compile(r"^(?:pg_restore:\s*){2,}(?:error:\s*)*|^pg_restore:\s*(?:error:\s*){2,}")
_BARE_ERROR = re.compile(r"^(?:could not execute query:|COPY failed for table )")


def _untangled(stderr: str) -> list[str]:
    """pg_restore's lines with the tangles of parallel workers writing at once taken out: ``pg_restore:pg_restore:
    error: error: could not execute query: …`` is one error's start, and the other worker's message follows later
    on a line of its own without the prefix (seen with -j 2 and two failing event triggers)."""
    lines = []
    for raw in stderr.splitlines():
        if _PREFIXES.match(raw):
            raw = "pg_restore: error: " + _PREFIXES.sub("", raw)
        elif _BARE_ERROR.match(raw):
            raw = "pg_restore: error: " + raw
        lines.append(raw)
    return lines


def parse_pg_restore_errors(stderr: str, artifact: str, tolerated: Iterable[str] = ()) -> tuple[list[RestoreError], str]:
    """Turn pg_restore's stderr into classified errors; the second value is a fatal error, if any."""
    errors: list[RestoreError] = []
    fatal = ""
    desc = tag = where = ""
    message = ""
    statement_lines: list[str] = []
    in_command = False
    fresh = False  # desc and tag were just named by a "from TOC entry" line

    def flush() -> None:
        nonlocal message, statement_lines, in_command
        if message:
            stmt = "\n".join(statement_lines).strip()
            sev, lost = classify(message, stmt, desc, tag, tolerated)
            errors.append(RestoreError(sev, message, stmt, lost, artifact, where))
        message, statement_lines, in_command = "", [], False

    for raw in _untangled(stderr):
        if raw.startswith("pg_restore:"):
            if in_command or message:
                flush()
            m = _TOC_LINE.match(raw)
            if m:
                where = f"TOC entry {m.group(1)}"
                desc, tag = _split_desc(m.group(2))
                fresh = True
                continue
            body = raw[len("pg_restore:"):].strip()
            if body.startswith("error:") and not fresh:  # no TOC line names this error's entry: not the last one's
                desc = tag = where = ""
            fresh = False
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
    # A disposable server (no_owner) has no tablespace but the default: objects of the dump's go there.
    args = ["--no-password", "-d", dbname] + (["--no-owner", "--no-tablespaces"] if no_owner else [])
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
                   contained: bool, omit: frozenset[int] = frozenset()) -> tuple[list[Pass], list[str]]:
    """How to restore an archive: one pass, or (where a vetted extension must be created by the superuser)
    schemas as the restoring role, those extensions as superuser, then the rest as the restoring role. Entries
    whose dump id is in ``omit`` are left out (a platform's own event triggers)."""
    listing, skipped = restore_list(entries, skip_extensions, omit)
    wanted = [e for e in entries if not (e.desc == "EXTENSION" and e.tag in set(skipped)) and e.dump_id not in omit]
    admin = [e for e in wanted if contained and e.desc == "EXTENSION" and e.tag in vetted]
    if not admin:
        return [Pass(False, listing if skipped or omit else None, True)], skipped

    def lines(chosen: list[TocEntry]) -> str:
        return "".join(f"{e.dump_id}; 0 0 {e.desc} {e.namespace or '-'} {e.tag}\n" for e in chosen)

    schemas = [e for e in wanted if e.desc == "SCHEMA"]
    rest = [e for e in wanted if e.desc != "SCHEMA" and e not in admin]
    passes = [Pass(False, lines(schemas), False)] if schemas else []
    return passes + [Pass(True, lines(admin), False), Pass(False, lines(rest), True)], skipped


def restore_list(entries: Iterable[TocEntry], skip_extensions: Iterable[str],
                 omit: frozenset[int] = frozenset()) -> tuple[str, list[str]]:
    """A ``pg_restore -L`` list of every TOC entry but the skipped extensions and the omitted entries; the second
    value names the extensions skipped."""
    skip = set(skip_extensions)
    lines, skipped = [], []
    for e in entries:
        desc, tag = e.desc, e.tag
        if e.dump_id in omit:
            continue
        if (desc == "EXTENSION" and tag in skip) or (desc == "COMMENT" and tag.startswith("EXTENSION ")
                                                      and tag.split(" ", 1)[1] in skip):
            if desc == "EXTENSION":
                skipped.append(tag)
            continue
        lines.append(f"{e.dump_id}; 0 0 {desc} {e.namespace or '-'} {tag}")
    return "\n".join(lines) + "\n", skipped


# The kinds of object whose owner a dump sets (pg_restore's --no-owner leaves them to the restoring role).
OWNED_KINDS = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "FUNCTION", "PROCEDURE",
               "AGGREGATE", "SCHEMA", "TYPE", "DOMAIN")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def archive_owners(entries: Iterable[TocEntry], owners: frozenset[str]) -> list[tuple[str, str, str]]:
    """(kind, name as the dump writes it, owner) of an archive's objects owned by one of ``owners``."""
    out = []
    for e in entries:
        if e.desc not in OWNED_KINDS or e.owner not in owners:
            continue
        if e.desc == "SCHEMA":
            out.append((e.desc, e.tag, e.owner))
        elif e.desc in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
            name, paren, args = e.tag.partition("(")
            if paren:
                out.append((e.desc, f"{_ident(e.namespace)}.{_ident(name)}({args}", e.owner))
        else:
            out.append((e.desc, f"{_ident(e.namespace)}.{_ident(e.tag)}", e.owner))
    return out


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
                 owners: frozenset[str] = frozenset()) -> None:
        self.conninfo = conninfo
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

    def run(self, stream: BinaryIO) -> None:
        import psycopg

        for ev in sqllex.events(stream):
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
