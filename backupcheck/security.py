"""What a dump may not carry: host commands for psql and server-side escapes."""

from __future__ import annotations

import re

# psql meta-commands pg_dump itself writes; anything else never reaches a server.
ALLOWED_META = frozenset({"connect", "c", "restrict", "unrestrict"})

_UNTRUSTED_LANGS = r"(?:c|internal|plpythonu|plpython2u|plpython3u|plperlu|pltclu|plsh|plrustu|pljavau|plv8u)"
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bCOPY\b[^;]*?\b(?:FROM|TO)\s+PROGRAM\b", re.I | re.S),
     "COPY ... PROGRAM runs a shell command on the server's host"),
    (re.compile(r"\bCOPY\b[^;]*?\bTO\s+(?:E?'|\$)", re.I | re.S),
     "COPY ... TO a server file writes to the checking host's disk"),
    (re.compile(r"\bCOPY\b[^;]*?\bFROM\s+(?:E?'|\$)", re.I | re.S),
     "COPY ... FROM a server file reads the checking host's disk"),
    (re.compile(r"\bLANGUAGE\s+['\"]?" + _UNTRUSTED_LANGS + r"['\"]?(?![\w$])", re.I),
     "a function in C or an untrusted language can run arbitrary code on the host"),
    (re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TRUSTED\s+)?(?:PROCEDURAL\s+)?LANGUAGE\b", re.I),
     "CREATE LANGUAGE can install a handler that runs host code"),
    (re.compile(r"\bCREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?['\"]?(?:adminpack|file_fdw|plpython3u|"
                r"plpythonu|plpython2u|plperlu|pltclu|plsh)['\"]?", re.I),
     "this extension gives SQL access to host files or host code"),
    (re.compile(r"\b(?:lo_import|lo_export|pg_read_file|pg_read_binary_file|pg_ls_dir|pg_stat_file|"
                r"pg_file_write|pg_file_rename|pg_file_unlink|pg_file_sync)\s*\(", re.I),
     "a server-side file function reads or writes the checking host's disk"),
    (re.compile(r"\bALTER\s+SYSTEM\b", re.I), "ALTER SYSTEM rewrites the server's configuration"),
    (re.compile(r"^\s*LOAD\s+(?:E?'|\$)", re.I | re.M), "LOAD loads a shared library into the server"),
]


def statement_problems(sql: str) -> list[str]:
    """Reasons this statement could act on the host; empty when it cannot (as far as text shows)."""
    return [reason for pattern, reason in _RULES if pattern.search(sql)]


_RESTRICT_KEY = re.compile(r"^[A-Za-z0-9]{1,256}$")
_CONNINFO_BAD = re.compile(r"\b(?:host|hostaddr|port|service|sslmode|passfile|options)\s*=", re.I)


def meta_problem(name: str, args: str, inside_statement: bool) -> str | None:
    """Why this psql meta-command is refused, or None for the few pg_dump writes itself."""
    if name not in ALLOWED_META:
        shown = f"\\{name} {args}".strip()
        return f"psql meta-command {shown[:80]!r} would run on the checking host; pg_dump never writes it"
    if inside_statement:
        return f"\\{name} in the middle of a statement: pg_dump writes it on a line of its own"
    if "`" in args:
        return f"backtick command substitution in \\{name} would run a shell command (CVE-2026-18408)"
    if name in ("restrict", "unrestrict"):
        if not _RESTRICT_KEY.match(args):
            return f"\\{name} with an unexpected key {args[:40]!r}: pg_dump writes a random alphanumeric key"
        return None
    if _CONNINFO_BAD.search(args):
        return f"\\connect {args[:60]!r} points at another server; pg_dump only names a database"
    return None


def connect_target(args: str) -> str | None:
    """The database a pg_dump ``\\connect`` line names."""
    text = args.strip()
    if text.startswith("-reuse-previous=on"):
        text = text[len("-reuse-previous=on"):].strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"')
        m = re.search(r"dbname\s*=\s*'((?:[^'\\]|\\.)*)'", text)
        if m:
            return re.sub(r"\\(.)", r"\1", m.group(1))
        m = re.search(r"dbname\s*=\s*(\S+)", text)
        if m:
            return m.group(1)
        return text
    return text.split()[0] if text else None
