"""A series' own SQL invariants: one read-only SELECT each, run in a read-only transaction with a timeout."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..model import Finding
from ..schema import Invariant, Setting, parse_invariants

SETTINGS = (
    Setting("invariants", "invariants", parse_invariants, "[[series.NAME.invariants]]: name, sql (one read-only "
            "SELECT giving a number), expect or expect_min / expect_max", "none"),
)


TIMEOUT = "5min"


def evaluate(conn: Any, invariant: Invariant) -> float | int | str:
    """The number the invariant's query gives (first column of its first row), or a sentence saying why none."""
    import psycopg

    try:
        conn.execute("BEGIN READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = '{TIMEOUT}'")
        row = conn.execute(invariant.sql).fetchone()
    except psycopg.Error as exc:
        return f"the query failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}"
    finally:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass
    if row is None or not row:
        return "the query returned no row"
    value = row[0]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the query returned {value!r}, not a number"
    return value


def judged(subject: str, invariant: Invariant, value: float | int | str, where: str = "") -> list[Finding]:
    if invariant.holds(value):
        return []
    found = value if isinstance(value, str) else f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return [Finding("invariants", subject, f"invariant {invariant.name!r} does not hold" + (f" {where}" if where else ""),
                    f"{' '.join(invariant.sql.split())[:200]} gives {invariant.expected}", str(found),
                    hint="the query is the series' own (invariants in the config): fix the data, or the invariant")]
