"""Freshness: a series' newest backup is recent, and none of its nights were skipped."""

from __future__ import annotations

from datetime import datetime, timedelta
from statistics import median

from ..model import Finding, Series
from ..schema import Setting, parse_duration, parse_zone
from ..settings import SeriesSettings

SETTINGS = (
    Setting("rpo", "freshness", parse_duration, "the oldest the newest backup may be: \"26h\" (durations: \"90s\", "
            "\"15m\", \"26h\", \"7d\", \"1w\")", "the usual spacing + 2 h (26 h for one nightly backup)"),
    Setting("schedule", "freshness", parse_duration, "how often backups are taken: a gap over 1.5 × this fails",
            "the usual spacing"),
    Setting("name_timezone", "freshness", parse_zone, "the zone of times in backup names that carry no offset, "
            "e.g. \"Europe/Paris\"", "UTC"),
)


# Clocks of the backup host and the checking host differ a little; beyond this, a date in the future is wrong.
FUTURE_SLACK = timedelta(minutes=5)


def usual_spacing(series: Series) -> timedelta | None:
    times = [b.taken_at for b in series.backups]
    gaps = [(b - a) for a, b in zip(times, times[1:], strict=False) if b > a]
    if not gaps:
        return None
    return timedelta(seconds=median(g.total_seconds() for g in gaps))


def duration_text(td: timedelta) -> str:
    """A duration as people say it: 2d 3h, 5h 07m, 12m 30s."""
    secs = int(td.total_seconds())
    days, rem = divmod(secs, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs % 60:02d}s"


def rpo_for(series: Series, cfg: SeriesSettings) -> tuple[timedelta, str]:
    if cfg.rpo is not None:
        return cfg.rpo, "configured"
    spacing = usual_spacing(series)
    if spacing is None:
        return timedelta(hours=26), "default for a single backup (nightly + 2h)"
    return spacing + timedelta(hours=2), f"usual spacing {duration_text(spacing)} + 2h"


def newest_within_rpo(series: Series, cfg: SeriesSettings, now: datetime) -> list[Finding]:
    rpo, why = rpo_for(series, cfg)
    newest = series.newest
    age = now - newest.taken_at
    if age < -FUTURE_SLACK:
        return [Finding(
            "freshness", series.name, "the newest backup is dated in the future",
            f"a backup taken before now ({now:%Y-%m-%d %H:%M} UTC)",
            f"newest is {newest.key}, dated {newest.taken_at:%Y-%m-%d %H:%M} UTC, {duration_text(-age)} from now "
            f"(time from its {newest.time_source})",
            hint=f"if names carry local time, set series.{series.name}.name_timezone (e.g. \"Europe/Paris\"); "
                 "otherwise check the backup host's clock",
        )]
    if age <= rpo:
        return []
    return [Finding(
        "freshness", series.name, "the newest backup is older than the RPO allows",
        f"a backup younger than {duration_text(rpo)} ({why})",
        f"newest is {newest.key}, taken {newest.taken_at:%Y-%m-%d %H:%M} UTC, {duration_text(age)} ago",
        hint=f"check the backup job of '{series.name}'; if the schedule changed, set series.{series.name}.rpo",
    )]


def gaps_within_schedule(series: Series, cfg: SeriesSettings) -> tuple[list[Finding], str]:
    """Findings for gaps longer than the schedule allows; the second value explains a non-applicable check."""
    if cfg.schedule is not None:
        allowed, why = cfg.schedule * 1.5, f"1.5 x configured schedule {duration_text(cfg.schedule)}"
    else:
        spacing = usual_spacing(series)
        if spacing is None or len(series.backups) < 3:
            return [], (f"series '{series.name}' has {len(series.backups)} backup(s): too few to learn its schedule; "
                        f"set series.{series.name}.schedule to check gaps")
        allowed, why = spacing * 1.5, f"1.5 x usual spacing {duration_text(spacing)}"
    findings = []
    for a, b in zip(series.backups, series.backups[1:], strict=False):
        gap = b.taken_at - a.taken_at
        if gap > allowed:
            findings.append(Finding(
                "freshness", series.name, "a gap between consecutive backups is longer than the schedule allows",
                f"at most {duration_text(allowed)} ({why})", f"{duration_text(gap)} between {a.key} and {b.key}",
                hint=f"backups were missed; if that was planned, set series.{series.name}.schedule",
            ))
    return findings, ""
