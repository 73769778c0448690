"""What a restore may do, and how each error it raised is judged (benign, notice, harmful, security)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..pgarchive import DESCS

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
    if re.search(r"No space left on device|could not extend file", e.message, re.I):
        return ("the server ran out of disk during the restore",
                "give a folder on a larger disk with --work-dir (config: work_dir): the restored database needs "
                "about as much room as the database had (backupcheck dump's manifest records it)")
    if e.message.startswith("the restore took longer than restore_timeout"):
        return ("the restore was still running when its time was up: a slow disk, a restore larger than before, or a "
                "statement that waits (a lock, a function the restore calls that sleeps or loops)",
                "raise restore_timeout for the series if restores of this size take longer now; otherwise restore it "
                "by hand and watch pg_stat_activity for the statement that does not finish")
    if e.message.startswith("the dump restored does not match its checksum"):
        return ("the dump was restored as it downloaded, and its bytes turned out not to be the ones its checksum "
                "describes: changed after the checksum was written, or damaged on the way",
                "download it again (a second run fetches it anew); if it still differs, take a new backup")
    if e.message.startswith("the dump cannot be read past line"):
        return ("the dump was restored as it was read, and it ends (or breaks) there: what came after never ran",
                "take a new backup; see the integrity check for what is wrong with the file")
    if e.message.startswith("stopped at line"):
        return ("a statement past the dump's schema carries a command for the checking host (see the safety check)",
                "find out who wrote it into the dump; take a new backup with pg_dump")
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


_PREFIX_RUN = re.compile(r"^(?:(?:pg_restore|error):\s*)+")
_BARE_ERROR = re.compile(r"^(?:could not execute query:|COPY failed for table )")


def _untangled(stderr: str) -> list[str]:
    """pg_restore's lines with the tangles of parallel workers writing at once taken out: a line that starts with
    two workers' prefixes, in whatever interleaving (``pg_restore:pg_restore:  error: error: …``, ``pg_restore:
    error: pg_restore: error: …``), is one error's start, and the other worker's message follows later on a line
    of its own without the prefix (seen with -j 2 and two failing event triggers)."""
    lines = []
    for raw in stderr.splitlines():
        run = _PREFIX_RUN.match(raw)
        if run and (run.group(0).count("pg_restore:") > 1 or run.group(0).count("error:") > 1):
            raw = ("pg_restore: error: " if "error:" in run.group(0) else "pg_restore: ") + raw[run.end():]
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


def outcome_of_pg_restore(returncode: int, stderr: str, artifact: str,
                          tolerated: Iterable[str] = ()) -> tuple[list[RestoreError], str]:
    errors, fatal = parse_pg_restore_errors(stderr, artifact, tolerated)
    if returncode != 0 and not errors and not fatal:
        fatal = f"pg_restore exited with code {returncode}: {stderr.strip()[-500:]}"
    return errors, fatal
