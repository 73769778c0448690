"""Content freshness: a backup taken last night whose newest rows are two weeks old is a backup of a stale or
wrong database (a replica that stopped replaying, a job dumping an old copy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from ..model import Finding
from ..restore.database import DATED, QueryFailed, RestoredBackup
from ..schema import Setting, parse_columns, parse_duration
from .freshness import duration_text

SETTINGS = (
    Setting("content_columns", "content_freshness", parse_columns, "columns whose newest value tells when data was "
            "written: [\"orders.created_at\"]", "created_at, updated_at, inserted_at"),
    Setting("content_max_age", "content_freshness", parse_duration, "how much older than the backup its newest row "
            "may be", "the series' rpo"),
)



@dataclass(frozen=True)
class Newest:
    column: str  # [db/]schema.table.column
    value: datetime | None  # None: the table is empty


def _as_utc(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return None


def newest_rows(r: RestoredBackup, named: tuple[str, ...]) -> list[Newest]:
    """max() of every timestamp column called created_at / updated_at / inserted_at, or of the columns named
    (``table.column`` or ``schema.table.column``), in each restored database. The default columns' maxima come
    from the scan that counted the rows, where it reached them."""
    import psycopg
    from psycopg import sql

    wanted_names = {n.rsplit(".", 1)[-1] for n in named} or set(DATED)
    try:
        counted = {} if named else r.newest()
    except QueryFailed:
        counted = {}  # the counting checks report it; each column is read on its own here
    found: list[Newest] = []
    for db in r.result.databases:
        prefix = "" if db == r.main_db else f"{db}/"
        try:
            columns = r.dated_columns(db, wanted_names)
        except psycopg.OperationalError:
            continue  # a database the restore did not create: the restore checks say so
        for schema, table, column in columns:
            key = f"{schema}.{table}.{column}"
            if named and not any(key == n or key.endswith("." + n) or f"{prefix}{key}" == n for n in named):
                continue
            if prefix + key in counted:
                value = counted[prefix + key]
            else:
                q = sql.SQL("select max({}) from {}.{}").format(sql.Identifier(column), sql.Identifier(schema),
                                                              sql.Identifier(table))
                with r.session(db) as conn:
                    value = conn.execute(q).fetchone()[0]  # type: ignore[index]
            found.append(Newest(prefix + key, _as_utc(value)))
    return found


def content_fresh(r: RestoredBackup, named: tuple[str, ...], max_age: timedelta, why: str
                  ) -> tuple[list[Finding], list[str], str]:
    """(findings, notes, not-applicable reason). Without named columns the database's newest row counts (a
    rarely written table does not make a backup stale); each named column is judged on its own."""
    taken = r.backup.taken_at
    newest = newest_rows(r, named)
    notes = [f"{n.column}: newest {n.value:%Y-%m-%d %H:%M UTC}" if n.value else f"{n.column}: no rows"
             for n in newest]
    dated = [n for n in newest if n.value is not None]
    if not dated:
        what = ", ".join(named) if named else "/".join(DATED)
        return [], notes, (f"{r.backup.key}: no {what} timestamp column with rows; name the columns that tell "
                           "when data was written with content_columns")
    hint = (f"the backup may be of a stale or wrong database (a replica that stopped, an old copy dumped); if "
            f"the data is written rarely, set series.{r.backup.series}.content_max_age")
    judged = dated if named else [max(dated, key=lambda n: n.value)]  # type: ignore[arg-type, return-value]
    findings = []
    for n in judged:
        assert n.value is not None
        lag = taken - n.value
        if lag > max_age:
            findings.append(Finding(
                "content_freshness", r.backup.key,
                f"the newest row{' of ' + n.column if named else ''} is {duration_text(lag)} older than the backup",
                f"a row written within {duration_text(max_age)} ({why}) before the backup's time {taken:%Y-%m-%d %H:%M UTC}",
                f"newest: {n.column} at {n.value:%Y-%m-%d %H:%M UTC}", hint=hint))
    return findings, notes, ""
