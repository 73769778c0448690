"""Supabase's own event triggers, recognised by name, event, function and the shape of that function's body.

Every Supabase project has six event triggers that keep its platform's grants and PostgREST's schema cache in
step. A restore runs as a role that may not create event triggers, so a dump's event trigger is a finding,
except these. A name alone proves nothing (a hostile dump can copy it): the trigger must fire on the platform's
event and call the platform's function, and that function's body may do only what those functions do (grant,
revoke, notify PostgREST, put back graphql_public.graphql), with no dynamic SQL and no call to anything but
the event-trigger functions and a few pure built-ins. Bodies differ from one platform release to the next, so
their shape is checked, not their bytes.
"""

from __future__ import annotations

import re

# trigger -> (event, function)
EVENT_TRIGGERS = {
    "issue_graphql_placeholder": ("sql_drop", "extensions.set_graphql_placeholder"),
    "issue_pg_cron_access": ("ddl_command_end", "extensions.grant_pg_cron_access"),
    "issue_pg_graphql_access": ("ddl_command_end", "extensions.grant_pg_graphql_access"),
    "issue_pg_net_access": ("ddl_command_end", "extensions.grant_pg_net_access"),
    "pgrst_ddl_watch": ("ddl_command_end", "extensions.pgrst_ddl_watch"),
    "pgrst_drop_watch": ("sql_drop", "extensions.pgrst_drop_watch"),
}
FUNCTIONS = frozenset(f for _, f in EVENT_TRIGGERS.values())

_IDENT = r'(?:"(?:[^"]|"")+"|[\w$]+)'
_CREATE_TRIGGER = re.compile(
    rf"^\s*CREATE\s+EVENT\s+TRIGGER\s+({_IDENT})\s+ON\s+(\w+)\s+(?:WHEN\s+TAG\s+IN\s*\([^)]*\)\s+)?"
    rf"EXECUTE\s+(?:FUNCTION|PROCEDURE)\s+({_IDENT}(?:\.{_IDENT})?)\s*\(\s*\)\s*;?\s*$", re.I | re.S)
_OTHER_TRIGGER_STATEMENT = re.compile(rf"^\s*(?:ALTER|COMMENT\s+ON)\s+EVENT\s+TRIGGER\s+({_IDENT})", re.I)
_CREATE_FUNCTION = re.compile(
    rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+({_IDENT}(?:\.{_IDENT})?)\s*\(\s*\)\s*RETURNS\s+event_trigger\b",
    re.I | re.S)
_BODY = re.compile(r"\bAS\s+(\$[\w]*\$)(.*)\1", re.I | re.S)

# What a statement of these bodies may start with.
_STATEMENT_STARTS = re.compile(
    r"^(?:(?:GRANT|REVOKE)\s[^;]*?\bON\b|NOTIFY\s+pgrst\b|ALTER\s+DEFAULT\s+PRIVILEGES|RETURN\b|RAISE\s+(?:DEBUG|NOTICE|LOG|INFO)\b|"
    r"ALTER\s+FUNCTION\s+(?:net|graphql_public|graphql)\.|ALTER\s+EXTENSION\s+pg_graphql\s+ADD\s+FUNCTION\s+graphql_public\.|"
    r"DROP\s+FUNCTION\s+IF\s+EXISTS\s+graphql_public\.|CREATE\s+OR\s+REPLACE\s+FUNCTION\s+graphql_public\.graphql\b|"
    r"CREATE\s+(?:USER|ROLE)\s+supabase_functions_admin\s+NOINHERIT\s+CREATEROLE\s+LOGIN\s+NOREPLICATION$|"
    r"SELECT\s+graphql\.resolve\b|[a-z_][\w]*\s*(?::=|=)\s*\(?\s*SELECT\b|[a-z_][\w]*\s+(?:record|bool|boolean|float|text|int)$)",
    re.I | re.S)
# Control words that may stand before a statement in PL/pgSQL.
_LEADING = re.compile(r"^(?:(?:DECLARE|BEGIN|THEN|ELSE|LOOP|END\s+IF|END\s+LOOP|END|IF\s+.*?\s+THEN|ELSIF\s+.*?\s+THEN|"
                      r"FOR\s+\w+\s+IN\s+SELECT\s+\*\s+FROM\s+pg_event_trigger_(?:ddl_commands|dropped_objects)\(\)\s+LOOP)"
                      r"\b\s*)+", re.I | re.S)
# Functions such a body may call.
_CALLS = frozenset({
    "pg_event_trigger_ddl_commands", "pg_event_trigger_dropped_objects", "coalesce", "split_part", "version",
    "jsonb_build_object", "jsonb_build_array", "graphql.resolve", "nullif",
})
_KEYWORDS = frozenset({
    "in", "exists", "as", "and", "or", "not", "then", "if", "select", "from", "where", "on", "when", "returns",
    "values", "is", "return", "elsif", "to", "with", "option",
})
_FORBIDDEN = re.compile(r"\b(?:EXECUTE(?!\s+ON\b)|PERFORM|COPY|PROGRAM|DO|INTO|TRUNCATE|DELETE|UPDATE|INSERT|"
                        r"SECURITY\s+DEFINER\s*\$|LANGUAGE\s+(?!sql\b|plpgsql\b)\w+|SET\s+ROLE|SESSION|SYSTEM|"
                        r"SUPERUSER|BYPASSRLS|REPLICATION)\b", re.I)  # \b: NOREPLICATION is no match


def _clean(body: str) -> str:
    """The body without comments, with every string literal emptied."""
    body = re.sub(r"/\*.*?\*/", " ", body, flags=re.S)
    body = re.sub(r"--[^\n]*", " ", body)
    return re.sub(r"'(?:[^']|'')*'", "''", body)


def body_problem(body: str) -> str:
    """Why ``body`` is not the shape of a Supabase platform event-trigger function; "" when it is."""
    text = _clean(body)
    m = _FORBIDDEN.search(text)
    if m:
        return f"it uses {m.group(0).split()[0].upper()}"
    # Signatures named after FUNCTION (in GRANT/REVOKE/ALTER/CREATE) are no calls.
    text = re.sub(r"\bFUNCTION\s+([\w.\"]+)\s*\([^)]*\)", r"FUNCTION \1", text, flags=re.I)
    for call in re.finditer(r"([A-Za-z_][\w.]*)\s*\(", text):
        name = call.group(1).lower()
        if name not in _CALLS and name not in _KEYWORDS and not name.endswith(".graphql"):
            return f"it calls {call.group(1)}()"
    # Nested function bodies (graphql_public.graphql) are checked by the same rules, statement by statement.
    for statement in re.split(r";|\$\w*\$", text):
        s = " ".join(statement.split())
        s = _LEADING.sub("", s).strip()
        if not s:
            continue
        if not _STATEMENT_STARTS.match(s):
            return f"it runs {s[:60]!r}"
    return ""


class StockEventTriggers:
    """Recognises Supabase's own event triggers in one dump: feed it the dump's statements in order."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}  # function -> why its body is not the platform's ("" when it is)
        self.recognised: list[str] = []

    def function(self, statement: str) -> None:
        """Note a ``CREATE FUNCTION … RETURNS event_trigger`` of the platform's names."""
        m = _CREATE_FUNCTION.match(statement)
        if not m:
            return
        name = _unquote(m.group(1))
        if name in FUNCTIONS:
            body = _BODY.search(statement)
            self.bodies[name] = body_problem(body.group(2)) if body else "no body"

    def is_stock(self, statement: str) -> bool:
        """Whether ``statement`` creates, alters or comments on one of the platform's event triggers (as recognised
        from its CREATE statement)."""
        m = _CREATE_TRIGGER.match(statement)
        if m:
            name, event, function = _unquote(m.group(1)), m.group(2).lower(), _unquote(m.group(3))
            if EVENT_TRIGGERS.get(name) == (event, function) and self.bodies.get(function) == "":
                if name not in self.recognised:
                    self.recognised.append(name)
                return True
            return False
        m = _OTHER_TRIGGER_STATEMENT.match(statement)
        return bool(m) and _unquote(m.group(1)) in self.recognised

    def note(self) -> str:
        if not self.recognised:
            return ""
        return (f"Supabase's own event trigger(s) {', '.join(self.recognised)} (recognised by name, event, function "
                "and body): not created, as on any restore outside the platform")


def _unquote(name: str) -> str:
    return ".".join(p[1:-1].replace('""', '"') if p.startswith('"') else p.lower()
                    for p in re.findall(_IDENT, name))
