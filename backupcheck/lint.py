"""SQL read before it runs: migration statements that hurt production, and invariants that must only read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .dumpscan import created_extension
from .restore.plain import OWNER_TO

# What each rule means for production, said once (reports show it as the finding's fix).
RULES = {
    "drop_table": "drops a table: its data is gone for good; deploy the code that stops using it first",
    "drop_column": "drops a column: data lost, and running code that still reads it breaks",
    "alter_type": "changes a column's type: the table is rewritten under an ACCESS EXCLUSIVE lock",
    "index_not_concurrent": "builds an index without CONCURRENTLY: writes to the table wait for the whole build",
    "fk_not_valid": "adds a foreign key without NOT VALID: both tables are scanned while writes wait; add it NOT "
                    "VALID, then VALIDATE CONSTRAINT in a later migration",
    "check_not_valid": "adds a CHECK without NOT VALID: the table is scanned under lock; add it NOT VALID, then "
                       "VALIDATE CONSTRAINT",
    "set_not_null": "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock; add a CHECK (col IS NOT "
                    "NULL) NOT VALID, validate it, then SET NOT NULL",
    "rename": "renames a table or column that running code uses: it fails until the new code is deployed",
    "unbounded_write": "UPDATE or DELETE without WHERE: every row of the table",
    "truncate": "TRUNCATE: every row of the table is gone",
    "unparsed": "sqlglot cannot parse this statement, so it was not linted; read it yourself",
}


@dataclass(frozen=True)
class LintFinding:
    rule: str
    migration: str
    line: int
    statement: str  # the statement's first 200 characters, on one line
    table: str = ""  # schema.table, when the statement names one
    rows: int | None = None  # the table's rows in the backup
    column: str = ""

    @property
    def why(self) -> str:
        return RULES[self.rule]


# Statements sqlglot keeps as bare commands that cannot hurt production data or hold long locks.
_HARMLESS_COMMANDS = frozenset({"SET", "RESET", "COMMENT", "GRANT", "REVOKE", "ANALYZE", "NOTIFY", "SECURITY"})


def _quiet() -> Any:
    return logging.getLogger("sqlglot")


@contextmanager
def _silenced() -> Iterator[None]:
    """sqlglot logs a warning for each statement it parses as a bare Command: that is a finding here, not noise."""
    logger = _quiet()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def table_key(table: Any) -> str:
    """``schema.table`` of a sqlglot Table, public when unqualified."""
    return f"{table.db or 'public'}.{table.name}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def lint_statement(text: str, migration: str, line: int, rows: dict[str, int | None],
                   large: int) -> list[LintFinding]:
    """Findings for one statement; ``rows``: rows per ``schema.table`` in the backup; ``large``: from how many
    rows an index build or a full scan hurts."""
    import sqlglot
    from sqlglot import exp


    stmt = _one_line(text)
    if OWNER_TO.match(text) or created_extension(text):
        return []  # known without sqlglot (which keeps both as bare commands), and neither hurts production data
    with _silenced():
        try:
            parsed = sqlglot.parse(text, read="postgres")
        except sqlglot.errors.SqlglotError:
            return [LintFinding("unparsed", migration, line, stmt)]
    out: list[LintFinding] = []

    def add(rule: str, table: Any = None, column: str = "") -> None:
        key = table_key(table) if table is not None else ""
        out.append(LintFinding(rule, migration, line, stmt, key, rows.get(key) if key else None, column))

    def is_large(table: Any) -> bool:
        return (rows.get(table_key(table)) or 0) >= large

    def has_rows(table: Any) -> bool:
        return (rows.get(table_key(table)) or 0) > 0

    for e in parsed:
        if e is None:
            continue
        if isinstance(e, exp.Command):
            if str(e.this).upper() not in _HARMLESS_COMMANDS:
                out.append(LintFinding("unparsed", migration, line, stmt))
        elif isinstance(e, exp.Drop) and str(e.args.get("kind") or "").upper() == "TABLE":
            for t in e.args.get("tables") or e.expressions or [e.this]:
                if isinstance(t, exp.Table):
                    add("drop_table", t)
        elif isinstance(e, exp.Alter) and str(e.args.get("kind") or "").upper() == "TABLE":
            table = e.this
            for action in e.args.get("actions") or []:
                if isinstance(action, exp.Drop) and str(action.args.get("kind") or "").upper() == "COLUMN":
                    for c in action.args.get("tables") or action.expressions or [action.this]:
                        add("drop_column", table, getattr(c, "name", ""))
                elif isinstance(action, exp.AlterColumn):
                    if action.args.get("dtype") is not None and has_rows(table):
                        add("alter_type", table, action.name)
                    elif action.args.get("allow_null") is False and is_large(table):
                        add("set_not_null", table, action.name)
                elif isinstance(action, exp.AddConstraint) and not e.args.get("not_valid") and has_rows(table):
                    if any(action.find_all(exp.ForeignKey)):
                        add("fk_not_valid", table)
                    elif any(action.find_all(exp.CheckColumnConstraint)):
                        add("check_not_valid", table)
                elif isinstance(action, exp.RenameColumn) and table_key(table) in rows:
                    add("rename", table, action.this.name if action.this is not None else "")
                elif isinstance(action, exp.AlterRename) and table_key(table) in rows:
                    add("rename", table)
        elif isinstance(e, exp.Create) and str(e.args.get("kind") or "").upper() == "INDEX":
            index = e.this
            table = index.args.get("table") if isinstance(index, exp.Index) else None
            if table is not None and not e.args.get("concurrently") and is_large(table):
                add("index_not_concurrent", table)
        elif isinstance(e, (exp.Update, exp.Delete)) and e.args.get("where") is None:
            if isinstance(e.this, exp.Table) and has_rows(e.this):
                add("unbounded_write", e.this)
        elif isinstance(e, exp.TruncateTable):
            for t in e.expressions:
                if isinstance(t, exp.Table) and has_rows(t):
                    add("truncate", t)
    return out


# --- invariants: one read-only query ---------------------------------------------------------------

# Functions that write, reach outside the database, or run SQL of their own; a read-only transaction stops most
# writes anyway, but not these.
_DENIED_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export", "lo_unlink",
    "dblink", "dblink_exec", "dblink_connect", "dblink_send_query", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "set_config", "nextval", "setval", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_try_advisory_lock", "pg_notify", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "query_to_xml", "query_to_xml_and_xmlschema", "cursor_to_xml", "table_to_xml", "pg_logical_emit_message",
    "pg_switch_wal", "pg_create_restore_point", "txid_current", "pg_current_xact_id", "pg_file_write",
    "pg_file_unlink", "pg_file_rename", "http_get", "http_post", "http", "net.http_get", "net.http_post",
})


def invariant_problem(sql: str) -> str:
    """Why ``sql`` is not one read-only SELECT (or WITH … SELECT), or "" when it is."""
    import sqlglot
    from sqlglot import exp

    with _silenced():
        try:
            parsed = [e for e in sqlglot.parse(sql, read="postgres") if e is not None]
        except sqlglot.errors.SqlglotError as exc:
            return f"sqlglot cannot parse it ({str(exc).splitlines()[0][:160]})"
    if len(parsed) != 1:
        return f"it holds {len(parsed)} statements; give exactly one SELECT"
    e = parsed[0]
    if not isinstance(e, exp.Query):
        return f"it is a {type(e).__name__.upper()} statement, not a SELECT"
    for node in e.walk():
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Command, exp.Create, exp.Drop,
                             exp.Alter, exp.TruncateTable)):
            return f"it holds a {type(node).__name__.upper()} (a data-modifying part); an invariant only reads"
        if isinstance(node, exp.Into):
            return "SELECT … INTO creates a table; an invariant only reads"
        if isinstance(node, exp.Lock):
            return "SELECT … FOR UPDATE/SHARE locks rows; an invariant only reads"
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in _DENIED_FUNCTIONS or name.split(".")[-1] in _DENIED_FUNCTIONS:
                return f"it calls {name}(), which writes, waits or reaches outside the database"
    return ""
