"""Restore, row counts and relations: what a restored backup shows."""

from __future__ import annotations

from datetime import timedelta

from ..dumpscan import ForeignKey
from ..model import Finding
from ..restore.compat import Compatibility
from ..restore.database import Orphans, RestoredBackup
from ..restore.errors import SECURITY, advice, refused_attempt
from ..schema import (
    Relation,
    Setting,
    parse_critical_tables,
    parse_duration,
    parse_locale,
    parse_patterns,
    parse_relations,
    parse_share,
    parse_size,
)
from ..settings import SeriesSettings

SETTINGS = (
    Setting("rto", "restore", parse_duration, "the longest a restore may take (trends forecast against it too)"),
    Setting("restore_timeout", "restore", parse_duration, "a restore still running after this is stopped, with a "
            "finding (a hung restore ends, not the CI job)"),
    Setting("one_pass_from", "restore", parse_size, "a plain SQL dump this large or larger is read once, by its "
            "restore: it starts after the schema part, and a statement that carries a command for the checking host "
            "ends it there", "64MB"),
    Setting("profile", "restore", lambda v, key: str(v), "\"vanilla\", \"supabase\" or one of [profiles.NAME]: what "
            "the dumps expect of a server", "detected from the dump"),
    Setting("tolerated_errors", "restore", parse_patterns, "regular expressions of restore errors to treat as benign",
            "none"),
    Setting("locale_fallback", "restore", parse_locale, "create databases with this locale where the dump's is not "
            "installed here, e.g. \"C.UTF-8\""),
    Setting("critical_tables", "row_counts", parse_critical_tables, "tables that must hold a minimum of rows: "
            "{ \"public.users\" = 1000 } or a list of names (a minimum of 1)", "none"),
    Setting("max_row_drop", "row_counts", parse_share, "the share of a table's rows it may lose since the previous "
            "backup (trends: over the last 7): 0.1 or \"10%\"", "0.2"),
    Setting("relations", "relations", parse_relations, "relations the schema does not declare, checked for orphans: "
            "[\"audit_log.user_id -> users.id\"]", "none"),
)



def compatible(key: str, compat: Compatibility, where: str) -> list[Finding]:
    return [Finding("compatibility", key, m, "a restoring server that fits the dump", where or "no server")
            for m in compat.mismatches]


def restored_cleanly(r: RestoredBackup) -> list[Finding]:
    findings = []
    for e in r.result.errors:
        if e.severity != SECURITY:
            continue
        stmt = " ".join(e.statement.split())[:200]
        findings.append(Finding(
            "restore", r.backup.key,
            f"SECURITY: the dump tried {refused_attempt(e.message, e.statement)} while it was restored; "
            "the server refused", "a dump that asks the server for nothing outside its own database",
            f"{e.message}" + (f" (statement: {stmt})" if stmt else "") + (f"; lost: {e.lost}" if e.lost else ""),
            where=f"{e.artifact} {e.where}".strip(),
            hint="the restore runs without superuser, so nothing ran on the host; find out how this object got "
                 "into the production database before trusting the backup",
        ))
    if r.result.aborted:
        findings.append(Finding("restore", r.backup.key, "the restore stopped before the end",
                                "a restore that runs to the end", r.result.aborted))
    for e in r.result.harmful:
        cause, fix = advice(e, r.qualify)
        lost = r.qualified_loss(e.lost)
        findings.append(Finding(
            "restore", r.backup.key, f"a restore error lost {lost or 'part of the database'}",
            "no error that leaves out a table, its rows, an index or a constraint",
            f"{e.message}" + (f"; cause: {cause}" if cause else ""), where=f"{e.artifact} {e.where}".strip(),
            hint=fix or "restore it by hand to see the full context; add a pattern to tolerated_errors only if the "
                        "loss is intended",
        ))
    return findings


def every_table_exists(r: RestoredBackup) -> list[Finding]:
    missing = r.missing_tables()
    if not missing:
        return []
    return [Finding("restore", r.backup.key, "tables in the dump are missing after the restore",
                    f"all {len(r.expected_tables())} tables of the dump", f"missing: {', '.join(missing[:20])}",
                    hint="see the restore errors attached to the restore test")]


def within_rto(r: RestoredBackup, rto: timedelta) -> list[Finding]:
    if r.result.seconds <= rto.total_seconds():
        return []
    return [Finding("restore", r.backup.key, "the restore took longer than the RTO",
                    f"at most {rto.total_seconds():.0f} s", f"{r.result.seconds:.1f} s",
                    hint=f"speed the restore up or revisit series.{r.backup.series}.rto")]


def critical_tables(key: str, counts: dict[str, int | None], cfg: SeriesSettings, series: str = "",
                    in_dump: list[str] | None = None) -> list[Finding]:
    findings = []
    for table, minimum in cfg.critical_tables:
        found = counts.get(table)
        if found is None and in_dump is not None and table not in in_dump:
            shown = ", ".join(sorted(in_dump)[:10]) + (" ..." if len(in_dump) > 10 else "")
            findings.append(Finding(
                "row_counts", key, f"critical table {table} is not in the dump",
                f"{table} with at least {max(minimum, 1)} rows (series.{series}.critical_tables)",
                f"the dump defines no table {table}; it has {shown or 'no table'}",
                hint=f"correct series.{series}.critical_tables (schema.table as the dump names it), or find out "
                     "why the backup job leaves the table out (pg_dump -t/-T, a different database)"))
        elif found is None:
            findings.append(Finding("row_counts", key, f"critical table {table} is missing",
                                    f"{table} with at least {max(minimum, 1)} rows", "no such table after the restore"))
        elif found < max(minimum, 1):
            findings.append(Finding("row_counts", key, f"critical table {table} has too few rows",
                                    f"at least {max(minimum, 1):,} rows", f"{found:,} rows",
                                    hint="set critical_tables to the real minimum if it changed"))
    return findings


def row_drops(key: str, series: str, previous_key: str, counts: dict[str, int | None], before: dict[str, int],
              cfg: SeriesSettings) -> list[Finding]:
    findings = []
    for table, old in sorted(before.items()):
        now = counts.get(table)
        if old <= 0:
            continue
        if now is None:
            findings.append(Finding("row_counts", key, f"table {table} has vanished since the previous backup",
                                    f"{table} with about {old:,} rows (as in {previous_key})", "no such table"))
            continue
        drop = (old - now) / old
        if drop > cfg.max_row_drop:
            findings.append(Finding(
                "row_counts", key, f"table {table} lost {drop:.0%} of its rows since the previous backup",
                f"a drop of at most {cfg.max_row_drop:.0%} (before: {old:,} rows in {previous_key})",
                f"after: {now:,} rows", hint=f"if the deletion was intended, raise series.{series}.max_row_drop",
            ))
    return findings


def foreign_key_orphans(r: RestoredBackup) -> tuple[list[Finding], list[str]]:
    """Anti-joins only for keys the restore did not validate, run side by side; the second value is the evidence
    per key."""
    findings: list[Finding] = []
    notes: list[str | None] = []
    validated: dict[str, set[tuple[str, str, str]] | None] = {}
    asked: list[tuple[str, tuple[str, ...], str, tuple[str, ...], str]] = []
    pending: list[tuple[int, ForeignKey, str]] = []  # (index in notes, key, why) of each anti-join asked
    for fk in r.foreign_keys():
        db, schema, table = r.locate(fk.table)
        if db not in validated:
            try:
                validated[db] = r.validated_constraints(db)
            except Exception as exc:  # the database the key lives in is not there after the restore
                validated[db] = None
                said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                findings.append(Finding(
                    "relations", r.backup.key, f"the foreign keys of database {db} cannot be checked",
                    f"database {db} exists after the restore", said,
                    hint="see the restore errors attached to the restore test"))
        known = validated[db]
        if known is None:
            notes.append(f"{fk.table} [{fk.name}]: database {db} cannot be reached after the restore")
            continue
        label = f"{fk.table}({', '.join(fk.columns)}) -> {fk.ref_table}({', '.join(fk.ref_columns)}) [{fk.name}]"
        if (schema, table, fk.name) in known:
            notes.append(f"{label}: validated by the server during the restore: no orphans")
            continue
        why = "declared NOT VALID" if fk.not_valid else "not created by the restore"
        pending.append((len(notes), fk, why))
        notes.append(None)
        asked.append((fk.table, fk.columns, fk.ref_table, fk.ref_columns, label))
    for (at, fk, why), (*_, label), o in zip(pending, asked, r.orphans_all(asked), strict=True):
        if isinstance(o, Exception):  # a table or column of the key is missing after the restore
            said = (str(o).strip().splitlines() or [type(o).__name__])[0]
            findings.append(Finding(
                "relations", r.backup.key, f"foreign key {fk.name} cannot be checked ({why})",
                f"{fk.table} and {fk.ref_table} exist after the restore", said,
                hint="see the restore errors attached to the restore test"))
            notes[at] = f"{label}: {why}; cannot be checked: {said}"
            continue
        notes[at] = f"{label}: {why}; checked with an anti-join: {o.count} orphan(s){_took(o)}"
        findings += _orphaned(r.backup.key, o, f"foreign key {fk.name} has orphaned rows ({why})",
                              f"every {fk.table}({', '.join(fk.columns)}) matches a row of {fk.ref_table}",
                              f"fix the data and VALIDATE CONSTRAINT {fk.name} at the source")
    return findings, [n for n in notes if n is not None]


def _took(o: Orphans) -> str:
    """What an anti-join cost, said where it took a second or more (a large table)."""
    return f" ({o.seconds:.1f} s)" if o.seconds >= 1 else ""


def _orphaned(key: str, o: Orphans, what: str, expected: str, hint: str = "") -> list[Finding]:
    """The finding for rows without their parent (none when there are none)."""
    if not o.count:
        return []
    return [Finding("relations", key, what, expected, f"{o.count:,} orphan row(s); sample keys: {', '.join(o.samples)}",
                    hint=hint)]


def relation_orphans(r: RestoredBackup, relations: tuple[Relation, ...]) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    notes: list[str] = []
    asked = [(rel.table, (rel.column,), rel.ref_table, (rel.ref_column,), str(rel)) for rel in relations]
    for rel, o in zip(relations, r.orphans_all(asked), strict=True):
        if isinstance(o, Exception):
            findings.append(Finding("relations", r.backup.key, f"configured relation {rel} cannot be checked",
                                    "both tables and columns exist after the restore",
                                    (str(o).strip().splitlines() or [type(o).__name__])[0],
                                    hint="correct the relation in the config file"))
            continue
        notes.append(f"{rel}: {o.count} orphan(s){_took(o)}")
        findings += _orphaned(r.backup.key, o, f"configured relation {rel} has orphaned rows",
                              f"every {rel.table}.{rel.column} matches a row of {rel.ref_table}")
    return findings, notes
