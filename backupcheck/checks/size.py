"""Size: a backup is not empty, and about as large as the series' earlier backups."""

from __future__ import annotations

from statistics import median

from ..expect import expect
from ..model import Finding, Series
from ..schema import Setting, parse_share, parse_size
from ..settings import SeriesSettings

SETTINGS = (
    Setting("min_size", "size", parse_size, "the smallest a backup may be: 1024, \"500KB\", \"10MB\", \"2GiB\"", "1 byte"),
    Setting("size_tolerance", "size", parse_share, "how far a backup may differ from where the series' sizes were "
            "heading: 0.3 or \"30%\"", "0.5"),
)



def minimum_size(series: Series, key: str, size: int, cfg: SeriesSettings) -> list[Finding]:
    if size >= cfg.min_size:
        return []
    return [Finding("size", key, "the backup is smaller than the minimum", f"at least {cfg.min_size:,} bytes",
                    f"{size:,} bytes", hint=f"set series.{series.name}.min_size if this size is right")]


def within_tolerance(series: Series, key: str, cfg: SeriesSettings) -> tuple[list[Finding], str]:
    """The backup's size against where the series' sizes were heading (``expect``: the recent nights' growth,
    by weekday where the sizes show a weekly rhythm), ``size_tolerance`` at the least either side; with fewer
    than ``trend_min_history`` earlier backups, against their median."""
    backup = next(b for b in series.backups if b.key == key)
    previous = series.previous(backup)
    if not previous:
        return [], f"{key} is the first backup of series '{series.name}': no earlier size to compare with"
    if backup.form is not None:  # a series that moved from plain to gzip, or from plain to tar base backups
        alike = tuple(b for b in previous if b.form in (None, backup.form))
        if not alike:
            return [], (f"{key} is the first backup of series '{series.name}' written as "
                        f"{backup.format_summary()} (the earlier ones are {previous[-1].format_summary()}): "
                        "no earlier size of the same kind to compare with")
        previous = alike
    hint = (f"a dump this different usually lost or gained data; if expected, set "
            f"series.{series.name}.size_tolerance")
    points = [(b.taken_at, float(b.size)) for b in previous]
    if len(previous) >= cfg.trend_min_history:
        expected = expect(points, backup.taken_at, cfg.size_tolerance, window=cfg.trend_window)
        if expected is not None:
            if expected.holds(backup.size):
                return [], ""
            before = expect(points[:-1], backup.taken_at, cfg.size_tolerance, window=cfg.trend_window)
            if before is not None and before.holds(backup.size):
                return [], ""  # back where the series was heading before one odd night (judged that night)
            change = (backup.size - expected.value) / expected.value * 100 if expected.value else float("inf")
            return [Finding("size", key, "the size is far from where the series' sizes were heading",
                            expected.describe(" bytes") + f", ±{cfg.size_tolerance:.0%} at the least",
                            f"{backup.size:,} bytes ({change:+.0f}%)", hint=hint)], ""
    usual = median(b.size for b in previous)
    low, high = usual * (1 - cfg.size_tolerance), usual * (1 + cfg.size_tolerance)
    if low <= backup.size <= high:
        return [], ""
    change = (backup.size - usual) / usual * 100 if usual else float("inf")
    return [Finding(
        "size", key, "the size is far from the series' usual size",
        f"{low:,.0f} to {high:,.0f} bytes (median of {len(previous)} earlier backup(s) {usual:,.0f} bytes, "
        f"±{cfg.size_tolerance:.0%}; from {cfg.trend_min_history} earlier backups, where the sizes are heading)",
        f"{backup.size:,} bytes ({change:+.0f}%)", hint=hint,
    )], ""
