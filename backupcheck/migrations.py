"""Migration files: which tool's layout a folder has, the order that tool applies them in, and which of them the
restored backup has applied already (its version table says so)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class MigrationsError(ValueError):
    """The migrations path cannot be used: one sentence naming it."""


@dataclass(frozen=True)
class Migration:
    name: str  # the file's name (or, for Prisma, its folder's)
    path: Path
    version: str  # what the tool's version table records for it ("" when the tool keeps none)
    tool: str  # supabase, flyway, golang-migrate, prisma or lexical

    def read(self) -> bytes:
        return self.path.read_bytes()


_SUPABASE = re.compile(r"^(\d{14})_.*\.sql$")
_FLYWAY = re.compile(r"^([VR])([\d._]*)__.+\.sql$")
_GOLANG = re.compile(r"^(\d+)_.+\.up\.sql$")
_PRISMA_DIR = re.compile(r"^\d{14}_.+$")

TOOLS = ("supabase", "flyway", "golang-migrate", "prisma", "lexical")


def _flyway_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.split(r"[._]", version) if p.isdigit())


def find(path: Path) -> list[Migration]:
    """The migrations under ``path`` (a folder or one .sql file), in the order their tool applies them.

    The layout is told by the names: Flyway ``V<version>__name.sql`` (then its repeatable ``R__`` files),
    golang-migrate ``<n>_name.up.sql``, Prisma ``<timestamp>_name/migration.sql``, Supabase
    ``<timestamp>_name.sql``; anything else is applied in lexical order of the names.
    """
    if path.is_file():
        return [Migration(path.name, path, "", "lexical")]
    if not path.is_dir():
        raise MigrationsError(f"migrations = {str(path)!r}: no such folder or file (give the folder holding the "
                              "migration files, like supabase/migrations)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".sql")
    prisma = sorted(d for d in path.iterdir() if d.is_dir() and _PRISMA_DIR.match(d.name)
                    and (d / "migration.sql").is_file())
    names = [p.name for p in files]
    if prisma and not files:
        return [Migration(d.name, d / "migration.sql", d.name, "prisma") for d in prisma]
    if names and all(_FLYWAY.match(n) or n.startswith(("U", "B")) and "__" in n for n in names) \
            and any(_FLYWAY.match(n) for n in names):
        versioned, repeatable = [], []
        for p in files:
            m = _FLYWAY.match(p.name)
            if not m:
                continue  # undo and baseline scripts are not applied by migrate
            if m.group(1) == "V":
                versioned.append(Migration(p.name, p, ".".join(str(x) for x in _flyway_key(m.group(2))), "flyway"))
            else:
                repeatable.append(Migration(p.name, p, "", "flyway"))
        versioned.sort(key=lambda mg: _flyway_key(mg.version))
        return versioned + sorted(repeatable, key=lambda mg: mg.name)
    if names and any(n.endswith(".up.sql") for n in names):
        ups = [(int(m.group(1)), p) for p in files if (m := _GOLANG.match(p.name))]
        return [Migration(p.name, p, str(n), "golang-migrate") for n, p in sorted(ups)]
    if names and all(_SUPABASE.match(n) for n in names):
        return [Migration(p.name, p, _SUPABASE.match(p.name).group(1), "supabase") for p in files]  # type: ignore[union-attr]
    return [Migration(p.name, p, "", "lexical") for p in files]


# The version tables each tool keeps in the database it migrates; read as the restoring role.
_APPLIED_SQL = {
    "supabase": ("supabase_migrations", "schema_migrations", "select version::text from {t}"),
    "flyway": (None, "flyway_schema_history", "select version from {t} where success and version is not null"),
    "golang-migrate": (None, "schema_migrations", "select version::text from {t} where not dirty"),
    "prisma": (None, "_prisma_migrations",
               "select migration_name from {t} where finished_at is not null and rolled_back_at is null"),
}


def applied(conn: Any, migrations: list[Migration]) -> tuple[set[str], str]:
    """The versions among ``migrations`` the database records as applied, and where it read that (or "")."""
    from psycopg import sql

    if not migrations or migrations[0].tool not in _APPLIED_SQL:
        return set(), ""
    tool = migrations[0].tool
    schema, table, query = _APPLIED_SQL[tool]
    row = conn.execute(
        "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relname = %s "
        "and c.relkind in ('r', 'p') and (%s::text is null or n.nspname = %s) order by n.nspname = 'public' desc "
        "limit 1", (table, schema, schema)).fetchone()
    if row is None:
        return set(), ""
    where = f"{row[0]}.{table}"
    ident = sql.Identifier(row[0], table)
    try:
        found = {str(r[0]) for r in conn.execute(sql.SQL(query).format(t=ident)).fetchall()}
    except Exception as exc:  # a table of that name kept by something else
        return set(), f"{where} (unreadable: {str(exc).strip().splitlines()[0]})"
    if tool == "flyway":
        found = {".".join(str(x) for x in _flyway_key(v)) for v in found}
    if tool == "golang-migrate":  # it records only the newest version: everything up to it is applied
        newest = max((int(v) for v in found if v.lstrip("-").isdigit()), default=None)
        return ({m.version for m in migrations if newest is not None and int(m.version) <= newest}, where)
    return {m.version for m in migrations if m.version in found}, where
