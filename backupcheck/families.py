"""The check families: one registry entry each. A family is this entry, one engine module under ``checks/`` and
one suite module ``suites/test_<name>.py``; collection, markers, ordering, restore planning and reports read
the registry, so adding a family touches nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str  # also the marker (-m NAME) and the suite module's name
    description: str  # the marker's help text
    needs_restore: bool  # every test of the family reads a restored database
    module: str = ""  # its engine module (default backupcheck.checks.NAME): its SETTINGS are the keys it owns
    newest_only: bool = False  # its tests look at the newest backup of each series only
    settings: tuple[Any, ...] = ()  # a team's family may declare its schema.Setting entries here instead
    physical_only: bool = False  # its tests look at physical series and base backups only

    def schema(self) -> tuple[Any, ...]:
        """The series settings this family owns (``schema.Setting``), declared next to its checks."""
        if self.settings:
            return self.settings
        module = import_module(self.module or f"backupcheck.checks.{self.name}")
        return tuple(s for s in getattr(module, "SETTINGS", ()) if s.family == self.name)


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in REGISTRY:
        raise ValueError(f"check family {family.name} is registered twice")
    REGISTRY[family.name] = family
    return family


for _family in (
    Family("integrity", "every byte of the backup reads and decompresses", False),
    Family("size", "backups are of a normal size", False),
    Family("freshness", "backups are recent and regular", False),
    Family("restore", "the backup restores into a disposable server", True, "backupcheck.checks.restoring"),
    Family("row_counts", "tables hold the rows they should", True, "backupcheck.checks.restoring"),
    Family("relations", "no orphaned rows", True, "backupcheck.checks.restoring"),
    Family("content_freshness", "the newest rows are about as new as the backup", True, "backupcheck.checks.content"),
    Family("trends", "tables and restore times hold against the series' history", True),
    Family("retention", "the backups kept match the retention policy", False, "backupcheck.checks.trends"),
    Family("invariants", "the series' own SQL invariants hold", True),
    Family("manifest", "the backup is the database its manifest describes, in bytes and once restored", False),
    Family("physical", "base backups recover, the WAL archive is whole and fresh, recovered pages are intact",
           False, physical_only=True),
    Family("gate", "before a migration: a backup to roll back to, and the migration rehearsed on its copy", True,
           newest_only=True),
):
    register(_family)


def family_of_module(stem: str) -> str:
    """``test_row_counts`` -> ``row_counts`` when that is a registered family, else ""."""
    name = stem.removeprefix("test_") if stem.startswith("test_") else ""
    return name if name in REGISTRY else ""
