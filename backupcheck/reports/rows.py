"""The table of backups, one row per backup, as every report shows it: the terminal, the pytest-html summary,
the CI job summary, the merged HTML and Markdown reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..results import shown_verdicts

COLUMNS = ("series", "time", "format", "size", "age", "restore", "verdict")


def age(now: datetime, then: datetime) -> str:
    secs = int((now - then).total_seconds())
    days, rem = divmod(secs, 86400)
    return f"{days}d {rem // 3600}h" if days else f"{rem // 3600}h {rem % 3600 // 60}m"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 60 else f"{int(x) // 60}m{int(x) % 60:02d}s"


def steps(phases: dict[str, float], checks: float | None) -> str:
    """Where a backup's time went: ``download 3.2 s · server and database 0.4 s · restore data 8.1 s · … ·
    checks 1.2 s`` (the restore's phases as sampled while it ran; steps under 0.05 s left out)."""
    parts = [f"{name} {seconds(x)}" for name, x in phases.items() if x >= 0.05]
    if checks:
        parts.append(f"checks {seconds(checks)}")
    return " · ".join(parts)


def backup_rows(document: dict[str, Any], now: datetime | None = None) -> list[dict[str, str]]:
    """The rows of the backups table, rendered from the results document: the verdict is the worst outcome of
    the backup's checks and, for a series' newest backup, of the series' own (RPO, gaps, retention), with why;
    ages are counted at the run's moment (``now``: the document's own by default)."""
    verdicts = shown_verdicts(document)
    moment = now or datetime.fromisoformat(document["run"]["now"])
    checking: dict[str, float] = {}
    for c in document["checks"]:
        checking[c["backup"]] = checking.get(c["backup"], 0.0) + float(c.get("seconds") or 0)
    rows = []
    for b in document["backups"]:
        restore = b["restore"]
        taken = datetime.fromisoformat(b["taken_at"])
        rows.append({
            "key": b["key"], "series": b["series"], "time": taken.strftime("%Y-%m-%d %H:%M UTC"),
            "format": b["format"], "size": size(b["size"]), "age": age(moment, taken),
            "restore": f"{restore['seconds']:.1f} s" if restore else "-", "verdict": verdicts[b["key"]],
            "steps": steps((restore or {}).get("phases") or {}, checking.get(b["key"])) if restore else "",
        })
    return rows
