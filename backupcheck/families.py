"""The check families: one registry entry each. A family is this entry, one engine module under ``checks/`` and
one suite module ``suites/test_<name>.py``; collection, markers, ordering, restore planning and reports read
the registry, so adding a family touches nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # also the marker (-m NAME) and the suite module's name
    description: str  # the marker's help text
    needs_restore: bool  # every test of the family reads a restored database
    settings: tuple[str, ...] = ()  # series settings it reads (documentation, and the README's table)
    newest_only: bool = False  # its tests look at the newest backup of each series only


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in REGISTRY:
        raise ValueError(f"check family {family.name} is registered twice")
    REGISTRY[family.name] = family
    return family


for _family in (
    Family("integrity", "every byte of the backup reads and decompresses", False,
           ("encryption", "kms_key_id", "schema_only")),
    Family("size", "backups are of a normal size", False, ("min_size", "size_tolerance")),
    Family("freshness", "backups are recent and regular", False, ("rpo", "schedule", "name_timezone")),
    Family("restore", "the backup restores into a disposable server", True,
           ("rto", "profile", "tolerated_errors", "locale_fallback")),
    Family("row_counts", "tables hold the rows they should", True, ("critical_tables", "max_row_drop")),
    Family("relations", "no orphaned rows", True, ("relations",)),
    Family("content_freshness", "the newest rows are about as new as the backup", True,
           ("content_columns", "content_max_age", "rpo")),
    Family("trends", "tables and restore times hold against the series' history", True,
           ("trend_window", "trend_min_history", "stall_nights", "max_row_drop", "rto", "rto_horizon", "tables")),
    Family("retention", "the backups kept match the retention policy", False, ("retention", "max_age")),
    Family("invariants", "the series' own SQL invariants hold", True, ("invariants",)),
    Family("gate", "before a migration: a backup to roll back to, and the migration rehearsed on its copy", True,
           ("invariants",), newest_only=True),
):
    register(_family)


def family_of_module(stem: str) -> str:
    """``test_row_counts`` -> ``row_counts`` when that is a registered family, else ""."""
    name = stem.removeprefix("test_") if stem.startswith("test_") else ""
    return name if name in REGISTRY else ""
