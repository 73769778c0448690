"""The pre-migration gate's verdicts: a backup young enough to roll back to, and what the migrations did to a
copy of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..model import Backup, Finding
from ..schema import Invariant
from ..settings import GateSettings
from .freshness import duration_text
from .invariants import judged

if TYPE_CHECKING:  # a run without a gate loads neither the linter nor the rehearsal
    from ..lint import LintFinding
    from ..rehearsal import Rehearsal

# What the README tells a team to run when the gate says there is no fresh backup.
TAKE_A_BACKUP = 'pg_dump -Fc -f "backups/<series>_$(date -u +%Y%m%dT%H%M%SZ).dump" "$DATABASE_URL"'


def young_enough(backup: Backup, now: datetime, gate: GateSettings) -> list[Finding]:
    age = now - backup.taken_at
    if age <= gate.max_age:
        return []
    return [Finding("gate", backup.key, "take a backup first: the newest backup is too old to roll back to",
                    f"a backup younger than {duration_text(gate.max_age)} (gate.max_age)",
                    f"the newest is {duration_text(age)} old (taken {backup.taken_at:%Y-%m-%d %H:%M} UTC)",
                    hint=f"take one now ({TAKE_A_BACKUP.replace('<series>', backup.series)}), then run the gate "
                         "again")]


def to_roll_back_to(findings: list[Finding]) -> list[Finding]:
    """Integrity and restore findings, said as the gate says them: this backup cannot be rolled back to."""
    return [replace(f, check="gate", what=f"take a backup first: the newest backup cannot be rolled back to: {f.what}",
                    hint=f"{f.hint + '; ' if f.hint else ''}take one now ({TAKE_A_BACKUP}), then run the gate again")
            for f in findings]


def _stopped(r: Rehearsal) -> list[Finding]:
    if not r.error:
        return []
    return [Finding("gate", r.backup, "the rehearsal did not run to its end", "the migrations rehearsed on a copy",
                    r.error)]


def applied_cleanly(r: Rehearsal) -> list[Finding]:
    found = _stopped(r)
    for s in r.steps:
        if s.status != "failed":
            continue
        where = f"line {s.error_line}" if s.error_line else ""
        statement = f": {s.error_statement}" if s.error_statement else ""
        after = [x.name for x in r.steps if x.status == "not run"]
        found.append(Finding(
            "gate", r.backup, f"migration {s.name} fails on the backup's data",
            "every pending migration applies to a copy of the newest backup",
            f"{s.error}{statement}" + (f" ({len(after)} later migration(s) not run)" if after else ""),
            hint="production would fail the same way: fix the migration (or the data it meets) before deploying",
            where=f"{s.name}{' ' + where if where else ''}"))
    return found


def _measured(r: Rehearsal, f: LintFinding) -> str:
    step = next((s for s in r.steps if s.name == f.migration), None)
    if step is None or step.status not in ("applied", "failed"):
        return "not rehearsed"
    took = step.timings.get(f.line)
    lock = next((lk for lk in step.locks if lk.table == f.table and lk.line == f.line), None) if f.table else None
    parts = [f"took {took:.2f} s" if took is not None else "did not run"]
    if lock is not None:
        parts.append(f"held {lock.shown} on {lock.table} {lock.seconds:.2f} s")
    return ", ".join(parts)


def lint_notes(r: Rehearsal) -> list[str]:
    """One line per lint finding: the rule, the table's real rows, what the rehearsal measured."""
    out = []
    for f in r.lint:
        rows = f" ({f.rows:,} rows in the backup)" if f.rows is not None else ""
        target = f" {f.table}{'.' + f.column if f.column else ''}" if f.table else ""
        out.append(f"{f.migration}:{f.line} {f.rule}{target}{rows}; {_measured(r, f)}: {f.statement}")
    return out


def lint_findings(r: Rehearsal, mode: str) -> list[Finding]:
    """With gate.lint = "fail", each finding fails the gate. A statement sqlglot cannot parse (CREATE EXTENSION,
    a DO block, a policy) stays a note: what it does to tables, columns, rows and keys is judged by the
    before/after checks instead."""
    from ..lint import RULES

    out = _stopped(r)  # nothing rehearsed, nothing linted: not a pass
    if mode != "fail":
        return out
    for f in r.lint:
        if f.rule == "unparsed":
            continue
        rows = f"{f.rows:,} rows in the backup; " if f.rows is not None else ""
        out.append(Finding("gate", r.backup, f"{f.rule}: {RULES[f.rule].split(':')[0]}",
                           "no statement that hurts production (gate.lint = \"fail\")",
                           f"{rows}{_measured(r, f)}: {f.statement}", hint=RULES[f.rule],
                           where=f"{f.migration} line {f.line}"))
    return out


def long_locks(r: Rehearsal, gate: GateSettings) -> list[Finding]:
    limit = gate.max_lock.total_seconds()
    out = _stopped(r)
    for s in r.steps:
        for lk in s.locks:
            if lk.mode == "AccessExclusiveLock" and lk.seconds > limit:
                rows = r.before.rows.get(lk.table)
                out.append(Finding(
                    "gate", r.backup, f"migration {s.name} holds an ACCESS EXCLUSIVE lock on {lk.table} too long",
                    f"at most {limit:g} s (gate.max_lock)",
                    f"{lk.seconds:.2f} s on the backup's data" + (f" ({rows:,} rows)" if rows is not None else "")
                    + f", from: {lk.statement}",
                    hint="every read and write of the table waits that long in production: split the change "
                         "(add NOT VALID then VALIDATE, CREATE INDEX CONCURRENTLY, backfill in batches)",
                    where=f"{s.name}{' line ' + str(lk.line) if lk.line else ''}"))
    return out


def lost_rows(r: Rehearsal, gate: GateSettings) -> list[Finding]:
    out = _stopped(r)
    for table, before in r.before.rows.items():
        after = r.after.rows.get(table)
        if after is None or after >= before or gate.loses_rows_allowed(table):
            continue
        by = [s.name for s in r.steps if s.touched.get(table)]
        out.append(Finding(
            "gate", r.backup, f"the migrations delete rows of {table}", f"{before:,} rows (as in the backup)",
            f"{after:,} rows: {before - after:,} gone" + (f" (written by {', '.join(by)})" if by else ""),
            hint=f"if that is intended, name the table in gate.allow_row_loss (\"{table}\")", where=table))
    return out


def broken_relations(r: Rehearsal) -> list[Finding]:
    out = _stopped(r)
    for label, after in r.after.not_valid.items():
        before = r.before.not_valid.get(label)
        if after and (before is None or after > before):
            was = "the key is new" if before is None else f"{before:,} before"
            out.append(Finding(
                "gate", r.backup, "a NOT VALID foreign key has orphaned rows after the migrations",
                "no more orphans than before the migrations", f"{label}: {after:,} orphan row(s) ({was})",
                hint="VALIDATE CONSTRAINT will fail on production's data: clean the orphans in the migration first",
                where=label))
    return out


def _dropped_on_purpose(r: Rehearsal, table: str, column: str = "") -> bool:
    rules = ("drop_column", "rename") if column else ("drop_table", "rename")
    return any(f.table == table and f.rule in rules and (not column or f.column in (column, ""))
               for f in r.lint)


def gone(r: Rehearsal) -> list[tuple[str, str]]:
    """(table, column) of the backup not there after the migrations, column "" for a whole table."""
    out: list[tuple[str, str]] = []
    for table, cols in r.before.columns.items():
        now = r.after.columns.get(table)
        out += [(table, "")] if now is None else [(table, c) for c in cols if c not in now]
    return out


def kept_objects(r: Rehearsal) -> list[Finding]:
    """Tables and columns the backup had that are gone, though no migration drops or renames them by name."""
    out = _stopped(r)
    for table, col in gone(r):
        if _dropped_on_purpose(r, table, col):
            continue
        if col:
            out.append(Finding("gate", r.backup, f"column {table}.{col} is gone after the migrations",
                               "every column the backup had, unless a migration drops it by name",
                               "no such column", where=f"{table}.{col}"))
        else:
            out.append(Finding("gate", r.backup, f"table {table} is gone after the migrations",
                               "every table the backup had, unless a migration drops it by name", "no such table",
                               hint="a DROP … CASCADE, a DO block or a dropped schema took it", where=table))
    return out


def invariants_after(r: Rehearsal, invariants: tuple[Invariant, ...]) -> tuple[list[Finding], list[str]]:
    out, notes = _stopped(r), []
    for inv in invariants:
        before, after = r.before.invariants.get(inv.name), r.after.invariants.get(inv.name)
        if inv.holds(before):
            out += judged(r.backup, inv, after if after is not None else "not evaluated", "after the migrations")
            notes.append(f"{inv.name}: {before} before, {after} after")
        else:
            notes.append(f"{inv.name}: already broken in the backup ({before}); the invariants family reports it")
    return out, notes


def table_text(r: Rehearsal) -> str:
    """The per-migration table, as plain text for the report's attachment."""
    lines = [f"{'migration':44} {'status':9} {'seconds':>8} {'excl. lock':>10} {'rows touched':>13} "
             f"{'rewritten':>10}  lint"]
    for row in r.table_rows():
        lines.append(f"{row['migration'][:44]:44} {row['status']:9} {row['seconds']:8.2f} "
                     f"{row['longest_exclusive_lock']:10.2f} {row['rows_touched']:13,} {row['rows_rewritten']:10,}  "
                     f"{', '.join(row['lint'])}")
    if r.applied_from:
        lines.append(f"already applied according to {r.applied_from}: "
                     f"{', '.join(s.name for s in r.steps if s.status == 'skipped') or 'none'}")
    return "\n".join(lines)
