"""Trend checks: a table's rows against its own history (sudden drop, slow leak, stall), the restore time's
growth towards the RTO, and retention (every slot a GFS policy promises is filled; nothing older than allowed)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ..model import Finding


@dataclass(frozen=True)
class TrendSettings:
    window: int = 14  # how many earlier backups a table is judged against
    min_history: int = 5  # fewer earlier backups than this: not judged yet
    leak_window: int = 7  # backups (current included) over which a slow leak is summed
    stall_nights: int = 3  # backups without growth after steady growth that make a stall
    drop_share: float = 0.10  # a sudden drop must also be at least this share of the median
    restore_window: int = 30  # restore times fitted for the forecast
    rto_horizon: timedelta = timedelta(days=30)  # a forecast crossing within this fails


def settings_of(cfg: Any) -> TrendSettings:
    """The trend settings of a series (``backupcheck.settings.SeriesSettings``)."""
    return TrendSettings(window=cfg.trend_window, min_history=cfg.trend_min_history, stall_nights=cfg.stall_nights,
                         rto_horizon=cfg.rto_horizon)


def robust_drop(history: Sequence[int], now: int, min_share: float) -> tuple[float, float] | None:
    """(median, drop share) when ``now`` is far below the history: beyond 4 robust deviations (MAD x 1.4826,
    at least 1% of the median) and at least ``min_share`` of the median; else None."""
    med = statistics.median(history)
    if med <= 0:
        return None
    mad = statistics.median(abs(x - med) for x in history) * 1.4826
    spread = max(mad, 0.01 * med)
    share = (med - now) / med
    if now < med - 4 * spread and share >= min_share:
        return med, share
    return None


def leak(values: Sequence[int], max_drop: float) -> tuple[float, float] | None:
    """(cumulative loss, largest single-step loss) over ``values`` (oldest first, current last) when rows went
    down on most steps and the whole window lost more than ``max_drop`` while no single step did."""
    if len(values) < 3 or values[0] <= 0:
        return None
    steps = [(a - b) / a for a, b in zip(values, values[1:], strict=False) if a > 0]
    down = sum(1 for s in steps if s > 0)
    total = (values[0] - values[-1]) / values[0]
    worst = max(steps, default=0.0)
    if total > max_drop and worst <= max_drop and down >= 0.7 * len(steps):
        return total, worst
    return None


def stall(values: Sequence[int], nights: int) -> int | None:
    """The rows a table has been stuck at, when it grew on most steps before and not on the last ``nights``."""
    if len(values) < nights + 4:
        return None
    before, recent = values[: len(values) - nights], values[len(values) - nights - 1:]
    grew = [b > a for a, b in zip(before, before[1:], strict=False)]
    if sum(grew) < 0.7 * len(grew):
        return None
    if all(b <= a for a, b in zip(recent, recent[1:], strict=False)) and recent[-1] <= recent[0]:
        return recent[-1]
    return None


def row_trends(key: str, series: str, history: Sequence[tuple[str, str, dict[str, int]]],
               now_counts: dict[str, int | None], max_row_drop: float, cfg: TrendSettings) -> list[Finding]:
    """Each table of the current backup against the same table in the earlier backups of ``history``
    ((backup, taken_at, rows per table), oldest first)."""
    findings: list[Finding] = []
    past = list(history)[-cfg.window:]
    for table in sorted(now_counts):
        now = now_counts[table]
        if now is None:
            continue  # a vanished table is the row_counts family's finding
        series_values = [(k, c[table]) for k, _, c in past if table in c]
        if len(series_values) < cfg.min_history:
            continue
        values = [v for _, v in series_values]
        first_key = series_values[0][0]
        dropped = robust_drop(values, now, cfg.drop_share)
        if dropped:
            med, share = dropped
            findings.append(Finding(
                "trends", key, f"table {table} dropped {share:.0%} below its usual row count",
                f"about {med:,.0f} rows (median of the last {len(values)} backups, since {first_key})",
                f"{now:,} rows", where=table,
                hint="if the rows were deleted on purpose, the next backups make this the new normal"))
            continue
        window = [*values[-(cfg.leak_window - 1):], now]
        leaked = leak(window, max_row_drop)
        if leaked:
            total, worst = leaked
            findings.append(Finding(
                "trends", key, f"table {table} is leaking rows: {total:.0%} gone over the last {len(window)} backups",
                f"no more than {max_row_drop:.0%} lost over a window (max_row_drop), even when no single night "
                "crosses it",
                f"{window[0]:,} -> {now:,} rows, at most {worst:.0%} in one night ("
                + ", ".join(f"{v:,}" for v in window) + ")", where=table,
                hint=f"find what deletes rows from {table} every night; if intended, raise "
                     f"series.{series}.max_row_drop"))
            continue
        stuck = stall([*values, now], cfg.stall_nights)
        if stuck is not None:
            findings.append(Finding(
                "trends", key, f"table {table} stopped growing: no new rows in the last {cfg.stall_nights} backups",
                f"growth, as on most of the {len(values)} backups before",
                f"{stuck:,} rows, unchanged", where=table,
                hint="check that the application still writes to this database (a stalled table often means "
                     f"the backup is of a replica or a database no longer in use); series.{series}.stall_nights "
                     "sets how many backups count"))
    return findings


def restore_forecast(key: str, series: str, points: Sequence[tuple[datetime, float]], rto: timedelta,
                     now: datetime, cfg: TrendSettings) -> tuple[list[Finding], str]:
    """Fit restore seconds against time (least squares over ``points``, oldest first, current last); when
    they grow, the date the RTO is crossed. Fails when that date is within the horizon. Returns the
    findings and a sentence for the report."""
    pts = list(points)[-cfg.restore_window:]
    if len(pts) < 5:
        return [], f"{len(pts)} restore time(s) known; a forecast needs 5"
    fit = _fit(pts)
    if fit is None:
        return [], "all restore times are of one moment: no trend"
    t0, slope, intercept = fit
    ys = [s for _, s in pts]
    limit = rto.total_seconds()
    x_now = (now - t0).total_seconds() / 86400
    fitted_now = intercept + slope * x_now
    text = (f"restore time grows {slope:+.2f} s a day over the last {len(pts)} backups "
            f"(fitted now: {fitted_now:.1f} s; RTO {_human(limit)})")
    if slope <= 0:
        return [], text + "; not growing"
    crossing = t0 + timedelta(days=(limit - intercept) / slope)
    text += f"; at this growth the RTO is crossed around {crossing:%Y-%m-%d}"
    if crossing <= now + cfg.rto_horizon:
        when = "has already been crossed" if crossing <= now else f"is crossed around {crossing:%Y-%m-%d}"
        return [Finding(
            "trends", key,
            f"at the growth of the last {len(pts)} backups, the RTO of {_human(limit)} {when}",
            f"the RTO not crossed within {cfg.rto_horizon.days} days (rto_horizon)",
            f"restore times growing {slope:+.2f} s a day: " + ", ".join(f"{y:.1f}" for y in ys[-8:]) + " s (latest "
            "last)", hint=f"plan for it: restore with more jobs (restore_jobs), prune data, or raise series.{series}.rto "
                          "if the business accepts it")], text
    return [], text


def crossing(points: Sequence[tuple[datetime, float]], rto_seconds: float, window: int = 30) -> datetime | None:
    """When the straight line fitted to the last ``window`` restore times reaches the RTO (None: not growing)."""
    pts = list(points)[-window:]
    fit = _fit(pts) if len(pts) >= 5 else None
    if fit is None or fit[1] <= 0:
        return None
    t0, slope, intercept = fit
    return t0 + timedelta(days=(rto_seconds - intercept) / slope)


def _fit(pts: Sequence[tuple[datetime, float]]) -> tuple[datetime, float, float] | None:
    """(first moment, seconds a day, seconds at the first moment) of the least-squares line; None when all
    points are of one moment."""
    t0 = pts[0][0]
    xs = [(t - t0).total_seconds() / 86400 for t, _ in pts]
    if len(set(xs)) < 2:
        return None
    slope, intercept = statistics.linear_regression(xs, [s for _, s in pts])
    return t0, slope, intercept


def rows_table(history: Sequence[tuple[str, str, dict[str, int]]], now: dict[str, int | None]) -> str:
    """The row counts the trend check judged: one line per table, earlier backups oldest first, then now."""
    lines = [f"backups: {', '.join(k for k, _, _ in history) or '(none in the history)'}, then this one"]
    for table in sorted(now):
        earlier = " ".join(f"{c[table]:,}" if table in c else "-" for _, _, c in history)
        current = "missing" if now[table] is None else f"{now[table]:,}"
        lines.append(f"{table}: {earlier} -> {current}")
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


# --- retention ----------------------------------------------------------------------------------------

PERIODS = ("daily", "weekly", "monthly", "yearly")


def _slot(d: date, period: str) -> tuple[int, ...]:
    if period == "daily":
        return (d.year, d.month, d.day)
    if period == "weekly":
        iso = d.isocalendar()
        return (iso.year, iso.week)
    if period == "monthly":
        return (d.year, d.month)
    return (d.year,)


def _previous(slot: tuple[int, ...], period: str) -> tuple[int, ...]:
    if period == "daily":
        d = date(*slot) - timedelta(days=1)
        return (d.year, d.month, d.day)
    if period == "weekly":
        d = date.fromisocalendar(slot[0], slot[1], 1) - timedelta(days=7)
        iso = d.isocalendar()
        return (iso.year, iso.week)
    if period == "monthly":
        y, m = slot
        return (y, m - 1) if m > 1 else (y - 1, 12)
    return (slot[0] - 1,)


def _label(slot: tuple[int, ...], period: str) -> str:
    if period == "daily":
        return f"{slot[0]:04d}-{slot[1]:02d}-{slot[2]:02d}"
    if period == "weekly":
        return f"{slot[0]:04d}-W{slot[1]:02d}"
    if period == "monthly":
        return f"{slot[0]:04d}-{slot[1]:02d}"
    return f"{slot[0]:04d}"


def retention(series: str, taken: Sequence[datetime], policy: dict[str, int], max_age: timedelta | None,
              now: datetime, keys: Sequence[str] = ()) -> tuple[list[Finding], list[str]]:
    """Every slot of a GFS ``policy`` ({daily: 7, weekly: 4, monthly: 12, yearly: 0}) holds a backup, counted back
    from the newest backup's slot and never before the series' first backup; and no backup is older than
    ``max_age``. Returns the findings and, per period, the slots looked at."""
    findings: list[Finding] = []
    notes: list[str] = []
    if not taken:
        return findings, notes
    days = sorted(t.date() for t in taken)
    first, newest = days[0], days[-1]
    for period in PERIODS:
        count = policy.get(period, 0)
        if not count:
            continue
        filled = {_slot(d, period) for d in days}
        slot, missing, looked = _slot(newest, period), [], 0
        start = _slot(first, period)
        for _ in range(count):
            if slot < start:
                break
            looked += 1
            if slot not in filled:
                missing.append(_label(slot, period))
            slot = _previous(slot, period)
        notes.append(f"{period}: {looked} of {count} slot(s) since the first backup, {len(missing)} empty")
        if missing:
            findings.append(Finding(
                "retention", series, f"{len(missing)} {period} slot(s) the retention policy promises hold no backup",
                f"a backup in each of the last {count} {period} slots (retention.{period} = {count})",
                "none in " + ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else ""),
                hint="the pruning deletes more than the policy says, or backups failed on those dates; fix the "
                     f"cleanup script or set series.{series}.retention to what is really kept"))
    if max_age is not None:
        too_old = [(k or t.isoformat(), t) for k, t in zip(keys or [""] * len(taken), taken, strict=True) if now - t > max_age]
        notes.append(f"max_age {max_age}: {len(too_old)} backup(s) older")
        if too_old:
            oldest = min(t for _, t in too_old)
            findings.append(Finding(
                "retention", series, f"{len(too_old)} backup(s) are older than the series keeps them",
                f"none older than {_days(max_age)} (max_age)",
                f"{len(too_old)} older, the oldest taken {oldest:%Y-%m-%d %H:%M} UTC ({_days(now - oldest)} old): "
                + ", ".join(k for k, _ in too_old[:5]) + (" ..." if len(too_old) > 5 else ""),
                hint="the cleanup (often `find -mtime +N -delete`) is not running or not reaching this place; erasure "
                     "promises (GDPR) depend on it"))
    return findings, notes


def _days(d: timedelta) -> str:
    return f"{d.total_seconds() / 86400:.0f} days" if d >= timedelta(days=2) else f"{d.total_seconds() / 3600:.0f} h"
