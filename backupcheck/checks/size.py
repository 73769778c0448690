"""Size: a backup is not empty, and about as large as the series' earlier backups."""

from __future__ import annotations

from statistics import median

from ..model import Finding, Series
from ..settings import SeriesSettings


def minimum_size(series: Series, key: str, size: int, cfg: SeriesSettings) -> list[Finding]:
    if size >= cfg.min_size:
        return []
    return [Finding("size", key, "the backup is smaller than the minimum", f"at least {cfg.min_size:,} bytes",
                    f"{size:,} bytes", hint=f"set series.{series.name}.min_size if this size is right")]


def within_tolerance(series: Series, key: str, cfg: SeriesSettings) -> tuple[list[Finding], str]:
    backup = next(b for b in series.backups if b.key == key)
    previous = series.previous(backup)
    if not previous:
        return [], f"{key} is the first backup of series '{series.name}': no earlier size to compare with"
    usual = median(b.size for b in previous)
    low, high = usual * (1 - cfg.size_tolerance), usual * (1 + cfg.size_tolerance)
    if low <= backup.size <= high:
        return [], ""
    change = (backup.size - usual) / usual * 100 if usual else float("inf")
    return [Finding(
        "size", key, "the size is far from the series' usual size",
        f"{low:,.0f} to {high:,.0f} bytes (median of {len(previous)} earlier backup(s) {usual:,.0f} bytes, "
        f"±{cfg.size_tolerance:.0%})",
        f"{backup.size:,} bytes ({change:+.0f}%)",
        hint=f"a dump this different usually lost or gained data; if expected, set series.{series.name}.size_tolerance",
    )], ""
