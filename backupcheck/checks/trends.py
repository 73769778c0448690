"""Trend checks: a table's rows against its own history (sudden drop, slow leak, stall), the restore time's
growth towards the RTO, and retention (every slot a GFS policy promises is filled; nothing older than allowed)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ..expect import expect, grew_mostly, last_change
from ..model import Finding
from ..schema import Setting, parse_count, parse_duration, parse_retention, parse_tables

SETTINGS = (
    Setting("trend_window", "trends", parse_count, "earlier backups a table's rows are judged against", "14"),
    Setting("trend_min_history", "trends", parse_count, "earlier backups needed before trends judge", "5"),
    Setting("stall_nights", "trends", parse_count, "backups without growth, after steady growth, that make a stall",
            "3"),
    Setting("rto_horizon", "trends", parse_duration, "the restore-time forecast fails when it crosses the rto within "
            "this", "30d"),
    Setting("tables", "trends", parse_tables, "[series.NAME.tables]: static = [tables done growing], acknowledge = "
            "{ table = \"YYYY-MM-DD\" } (a known stall or leak, until that day)", "none",
            apply=lambda s, v: {"static_tables": v[0], "acknowledged": v[1]}),
    Setting("retention", "retention", parse_retention, "the GFS slots the backups must fill: { daily = 7, weekly = 4, "
            "monthly = 12, yearly = 0 }"),
    Setting("max_age", "retention", parse_duration, "no backup older than this may remain (erasure promises depend "
            "on it)"),
)


MEMORY = 120  # earlier backups a stall is remembered over: "flat for 16 nights since ..." outlives the window
BACKFILL = 30  # earlier backups no run restored whose rows are counted from their dumps: a month of nightlies


@dataclass(frozen=True)
class TrendSettings:
    window: int = 14  # how many earlier backups a table is judged against
    min_history: int = 5  # fewer earlier backups than this: not judged yet
    leak_window: int = 7  # backups (current included) over which a slow leak is summed
    stall_nights: int = 3  # backups without growth after steady growth that make a stall
    drop_share: float = 0.10  # a sudden drop is at least this share below where the rows were heading
    leak_share: float = 0.05  # a leak: this share below the peak, lower on most backups since
    restore_window: int = 30  # restore times fitted for the forecast
    rto_horizon: timedelta = timedelta(days=30)  # a forecast crossing within this fails


def settings_of(cfg: Any) -> TrendSettings:
    """The trend settings of a series (``backupcheck.settings.SeriesSettings``)."""
    return TrendSettings(window=cfg.trend_window, min_history=cfg.trend_min_history, stall_nights=cfg.stall_nights,
                         rto_horizon=cfg.rto_horizon)


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


def _since_peak(points: Sequence[tuple[datetime, int]], share: float) -> tuple[int, datetime, float, int, int] | None:
    """(peak rows, when, share lost since, backups since, of which lower than the one before) when the newest
    point is ``share`` or more below the highest of ``points`` and fell on most backups since it."""
    peak_at = max(range(len(points)), key=lambda i: (points[i][1], i))
    peak = points[peak_at][1]
    after = [v for _, v in points[peak_at:]]
    steps = list(zip(after, after[1:], strict=False))
    lower = sum(1 for a, b in steps if b < a)
    if peak <= 0 or len(steps) < 3 or lower < 0.7 * len(steps):
        return None
    lost = (peak - points[-1][1]) / peak
    return (peak, points[peak_at][0], lost, len(steps), lower) if lost >= share else None


def _nights(a: datetime, b: datetime) -> int:
    return max(round((b - a).total_seconds() / 86400), 1)


def row_trends(key: str, series: str, history: Sequence[tuple[str, str, dict[str, int]]],
               now_counts: dict[str, int | None], max_row_drop: float, cfg: TrendSettings,
               at: datetime | None = None, quiet: dict[str, str] | None = None) -> list[Finding]:
    """Each table of the current backup (taken ``at``) against the same table in the earlier backups of
    ``history`` ((backup, taken_at, rows per table), oldest first; as long as the history has, so that a stall
    is remembered): below where it was heading (a sudden drop), leaking since its peak, or flat since the last
    night it grew. ``quiet`` names tables whose stalls and leaks are not findings, with why."""

    quiet = quiet or {}
    findings: list[Finding] = []
    when = at or (datetime.fromisoformat(history[-1][1]) if history else datetime.now())
    for table in sorted(now_counts):
        now = now_counts[table]
        if now is None:
            continue  # a vanished table is the row_counts family's finding
        earlier = [(datetime.fromisoformat(t), c[table]) for _, t, c in history if table in c]
        if len(earlier[-cfg.window:]) < cfg.min_history:
            continue
        recent = earlier[-cfg.window:]
        expected = expect(recent, when, cfg.drop_share, window=cfg.window, absolute=10)
        if expected is not None and now < expected.low:
            before = expect(recent[:-1], when, cfg.drop_share, window=cfg.window, absolute=10)
            if before is None or now < before.low:  # not back where it was before a low night
                share = (expected.value - now) / expected.value if expected.value else 1.0
                findings.append(Finding(
                    "trends", key, f"table {table} is {share:.0%} below where its rows were heading",
                    expected.describe(" rows"), f"{now:,} rows", where=table,
                    hint="if the rows were deleted on purpose, the next backups make this the new normal"))
                continue
        if table in quiet:
            continue
        points = [*recent, (when, now)]
        down = _since_peak(points, cfg.leak_share)
        if down is not None:
            peak, peak_at, lost, since, lower = down
            findings.append(Finding(
                "trends", key, f"table {table} is leaking rows: {lost:.0%} below its peak",
                f"rows that keep up with the series' own growth (at least back at its peak of {peak:,} rows on "
                f"{peak_at:%Y-%m-%d})",
                f"{now:,} rows, lower on {lower} of the {since} backups since the peak ("
                + ", ".join(f"{v:,}" for _, v in points[-since - 1:]) + ")", where=table,
                hint=f"find what deletes rows from {table} every night; if it is meant, acknowledge it until a date: "
                     f'[series.{series}.tables] acknowledge = {{ "{table}" = "YYYY-MM-DD" }}'))
            continue
        whole = [*earlier, (when, now)]
        changed = last_change(whole)
        flat = len(whole) - 1 - changed
        grown = [v for _, v in whole[max(0, changed - cfg.window):changed + 1]]
        if changed > 0 and flat >= cfg.stall_nights and len(grown) >= 4 and grew_mostly(grown) \
                and whole[changed][1] >= whole[changed - 1][1]:
            since = whole[changed][0]
            findings.append(Finding(
                "trends", key, f"table {table} has not grown for {_nights(since, when)} nights, since {since:%Y-%m-%d}",
                f"growth, as on most of the {len(grown) - 1} backups before {since:%Y-%m-%d}",
                f"flat at {now:,} rows on the {flat} backups since", where=table,
                hint="check that the application still writes to this database (a stalled table often means the "
                     "backup is of a replica or a database no longer in use); if the table is done growing: "
                     f'[series.{series}.tables] static = ["{table}"]'))
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
