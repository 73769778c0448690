"""The parts every settings schema is made of: the error, value parsers, and one declared setting.

A check family declares the series settings it reads next to its code (``SETTINGS`` in its module under
``checks/``), a source kind those of its config table; ``settings.py`` assembles them, and the README's table of
settings is generated from the same declarations (``settings.table_markdown``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Setting:
    """One key of ``[defaults]`` / ``[series.NAME]`` (or of a source kind's table)."""

    key: str
    family: str  # who reads it (a check family, or "series" for what every family shares)
    parse: Callable[[Any, str], Any]  # (value, "where.key") -> the typed value; raises ConfigError
    doc: str  # what it sets, one line (the README's table)
    default: str = "off"  # how its default reads in that table
    apply: Callable[[Any, Any], dict[str, Any]] | None = None  # (settings so far, value) -> fields; else {key: value}

    def fields(self, current: Any, value: Any) -> dict[str, Any]:
        return self.apply(current, value) if self.apply else {self.key: value}


def parse_table(raw: dict[str, Any], settings: tuple[Setting, ...], where: str, also: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
    """The values of one config table by its declared settings; an unknown key names the known ones."""
    known = {s.key: s for s in settings}
    unknown = set(raw) - set(known) - also
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return {key: s.parse(raw[key], f"{where}.{key}") for key, s in known.items() if key in raw}


def markdown_rows(settings: Any) -> list[str]:
    """Rows of a README table of settings: key, who reads it, default, what it sets."""
    return [f"| `{s.key}` | {s.family} | {s.default} | {s.doc} |" for s in settings]


class ConfigError(ValueError):
    """A setting has a value this tool cannot use; the message names it and the accepted forms."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, key: str) -> timedelta:
    """A duration with its unit: a bare number (``rpo = 26``) is refused, since hours were meant as often as
    seconds; 0 needs none."""
    m = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if not m:
        raise ConfigError(f"{key} = {value!r}: expected a duration like '90s', '15m', '26h', '7d' or '1w'")
    if m.group(2) is None and float(m.group(1)) != 0:
        raise ConfigError(f"{key} = {value!r}: a duration needs its unit: write '{m.group(1)}h' for hours "
                          f"(or '{m.group(1)}s', '{m.group(1)}m', '{m.group(1)}d', '{m.group(1)}w')")
    return timedelta(seconds=float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()])


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)


def parse_size(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"{key} = {value!r}: expected a size like 1024, '500KB', '10MB' or '2GiB'")
    unit = (m.group(2) or "b").lower().rstrip("b").rstrip("i")
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit]
    return int(float(m.group(1)) * 1024**power)


def parse_share(value: Any, key: str) -> float:
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            share = float(value.strip()[:-1]) / 100
        else:
            share = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} = {value!r}: expected a share like 0.2 or '20%'") from None
    if not 0 <= share <= 10:
        raise ConfigError(f"{key} = {value!r}: expected a share between 0 and 10 (1000%)")
    return share


def parse_count(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} = {value!r}: expected a whole number of at least {minimum}")
    return value
def parse_zone(value: Any, key: str) -> str:
    """An IANA zone name (``Europe/Paris``) or UTC."""

    text = str(value).strip()
    if text.upper() in ("UTC", "Z"):
        return "UTC"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{key} = {value!r}: expected a time zone name like 'Europe/Paris', 'America/New_York' "
                          "or 'UTC'") from None
    return text


def parse_patterns(errs: Any, key: str) -> tuple[str, ...]:
    if not isinstance(errs, list):
        raise ConfigError(f"{key}: expected a list of regular expressions")
    for e in errs:
        try:
            re.compile(str(e))
        except re.error as exc:
            raise ConfigError(f"{key}: {e!r} is not a regular expression ({exc})") from None
    return tuple(str(e) for e in errs)


def table_name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key}: expected table names like \"public.audit_log\"")
    return name if "." in name else f"public.{name}"


def parse_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r}: expected true or false")
    return value


def parse_choice(*choices: str, lower: bool = False) -> Callable[[Any, str], str]:
    def parse(value: Any, key: str) -> str:
        text = str(value).lower() if lower else value
        if text not in choices:
            raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(choices)}")
        return text

    return parse


_RELATION = re.compile(r"^\s*([\w.\"]+)\.(\w+)\s*->\s*([\w.\"]+)\.(\w+)\s*$")


@dataclass(frozen=True)
class Relation:
    """A relation the schema does not declare: child.column -> parent.column."""

    table: str
    column: str
    ref_table: str
    ref_column: str

    @classmethod
    def parse(cls, text: str, key: str) -> Relation:
        m = _RELATION.match(text)
        if not m:
            raise ConfigError(f"{key}: {text!r} is not of the form 'orders.user_id -> users.id'")
        child, col, parent, ref = m.groups()
        qualify = lambda t: t if "." in t else f"public.{t}"  # noqa: E731
        return cls(qualify(child), col, qualify(parent), ref)

    def __str__(self) -> str:
        return f"{self.table}.{self.column} -> {self.ref_table}.{self.ref_column}"


@dataclass(frozen=True)
class Invariant:
    """A query that must give an expected number: one read-only SELECT, checked before anything runs."""

    name: str
    sql: str
    expect: float | None = None
    expect_min: float | None = None
    expect_max: float | None = None

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return ((self.expect is None or value == self.expect) and (self.expect_min is None or value >= self.expect_min)
                and (self.expect_max is None or value <= self.expect_max))

    @property
    def expected(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else repr(v)

        bounds = (("=", self.expect), (">=", self.expect_min), ("<=", self.expect_max))
        return " and ".join(f"{op} {num(v)}" for op, v in bounds if v is not None)


_INVARIANT_KEYS = {"name", "sql", "expect", "expect_min", "expect_max"}


def parse_invariants(raw: Any, key: str) -> tuple[Invariant, ...]:
    """``[[series.NAME.invariants]]`` tables; ``key`` is ``series.NAME.invariants``."""
    from .lint import invariant_problem  # sqlglot, only where invariants are configured

    where = key.removesuffix(".invariants")

    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ConfigError(f"{where}.invariants: expected tables like [[{where}.invariants]] with name, sql and "
                          "expect (or expect_min / expect_max)")
    out: list[Invariant] = []
    for item in raw:
        name = str(item.get("name", "")).strip()
        label = f"{where}.invariants[{name or len(out)}]"
        unknown = set(item) - _INVARIANT_KEYS
        if unknown:
            raise ConfigError(f"{label}: unknown key(s) {', '.join(sorted(unknown))}; known: "
                              f"{', '.join(sorted(_INVARIANT_KEYS))}")
        if not name or not isinstance(item.get("sql"), str):
            raise ConfigError(f"{label}: needs name = \"...\" and sql = \"SELECT ...\"")
        if any(i.name == name for i in out):
            raise ConfigError(f"{label}: the name is used twice in {where}")
        bounds = {}
        for key in ("expect", "expect_min", "expect_max"):
            if key in item:
                v = item[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{label}.{key} = {v!r}: expected a number")
                bounds[key] = v
        if not bounds:
            raise ConfigError(f"{label}: give expect, expect_min or expect_max")
        problem = invariant_problem(item["sql"])
        if problem:
            raise ConfigError(f"invariant {name!r} ({label}): only one read-only SELECT is run, and {problem}")
        out.append(Invariant(name, item["sql"], **bounds))
    return tuple(out)




def parse_critical_tables(raw: Any, key: str) -> tuple[tuple[str, int], ...]:
    """``{ "public.users" = 100 }`` (a minimum of rows each) or a list of names (a minimum of 1)."""
    if isinstance(raw, list):
        raw = {name: 1 for name in raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a table like {{ \"public.users\" = 100 }} or a list of names")
    pairs = []
    for name, minimum in raw.items():
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
            raise ConfigError(f"{key}.{name} = {minimum!r}: expected a whole number of rows")
        pairs.append((table_name(name, key), minimum))
    return tuple(pairs)


def parse_relations(raw: Any, key: str) -> tuple[Relation, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{key}: expected a list like [\"orders.user_id -> users.id\"]")
    return tuple(Relation.parse(str(r), key) for r in raw)


def parse_locale(value: Any, key: str) -> str:
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", text):
        raise ConfigError(f"{key} = {value!r}: expected a locale name like 'C.UTF-8' or 'en_US.utf8'")
    return text


def parse_columns(raw: Any, key: str) -> tuple[str, ...]:
    """``[schema.]table.column`` names."""
    if not isinstance(raw, list) or not all(isinstance(c, str) and re.fullmatch(r"[\w$]+(\.[\w$]+){1,2}", c)
                                            for c in raw):
        raise ConfigError(f"{key} = {raw!r}: expected a list like [\"orders.created_at\", "
                          "\"public.events.inserted_at\"]")
    return tuple(raw)


RETENTION_PERIODS = ("daily", "weekly", "monthly", "yearly")


def parse_retention(raw: Any, key: str) -> tuple[tuple[str, int], ...]:
    """``{ daily = 7, weekly = 4, monthly = 12, yearly = 0 }``: the GFS slots promised."""
    if not isinstance(raw, dict) or set(raw) - set(RETENTION_PERIODS):
        raise ConfigError(f"{key} = {raw!r}: expected a table like "
                          "{ daily = 7, weekly = 4, monthly = 12, yearly = 0 }")
    return tuple((period, parse_count(raw[period], f"{key}.{period}", 0)) for period in RETENTION_PERIODS
                 if period in raw)


def parse_tables(raw: Any, key: str) -> tuple[tuple[str, ...], tuple[tuple[str, date], ...]]:
    """``[series.X.tables]``: ``static = ["audit_log"]`` (done growing), ``acknowledge = { "orders" = "2026-12-31" }``
    (a known stall or leak, until that day)."""
    if not isinstance(raw, dict) or set(raw) - {"static", "acknowledge"}:
        raise ConfigError(f"[{key}]: expected static = [\"table\", ...] and acknowledge = {{ \"table\" = "
                          f"\"YYYY-MM-DD\" }}")
    static = raw.get("static", [])
    if not isinstance(static, list):
        raise ConfigError(f"{key}.static = {static!r}: expected a list of tables")
    ack = raw.get("acknowledge", {})
    if not isinstance(ack, dict):
        raise ConfigError(f"{key}.acknowledge = {ack!r}: expected a table like {{ \"public.orders\" = \"2026-12-31\" }}")
    until = []
    for name, when in ack.items():
        if isinstance(when, datetime):
            when = when.date()
        elif not isinstance(when, date):
            try:
                when = date.fromisoformat(str(when))
            except ValueError:
                raise ConfigError(f"{key}.acknowledge.{name} = {when!r}: expected a date like \"2026-12-31\"") from None
        until.append((table_name(name, f"{key}.acknowledge"), when))
    return tuple(table_name(t, f"{key}.static") for t in static), tuple(until)
