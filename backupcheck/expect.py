"""Where a series is heading: the value expected tonight from the recent nights' growth, with its weekly rhythm.

A series of sizes or row counts grows by a share a day (a database that triples in a month grows about 4% a
night). The expectation for the newest backup is the one before it, grown by the usual share: the median of
the recent steps (a step is the change of the logarithm, per day), or, where the steps show a weekly rhythm
(quiet weekends, jobs that skip Sundays), the median of the steps of the same weekday. A backup is judged by how
far its own step is from that: beyond ``k`` robust deviations of the steps and beyond a floor share. So a
series that grows faster from one week to the next never fails, while a 40% collapse or a one-night doubling
does. The median of every earlier backup, which a growing series leaves behind, is not used.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

MAD_SCALE = 1.4826  # a normal distribution's standard deviation, from its median absolute deviation


@dataclass(frozen=True)
class Expected:
    """The value expected at a moment, and the band around it that the value must fall in."""

    value: float
    low: float
    high: float
    step: float  # expected growth a day, as a share (0.04: 4% a day)
    points: int  # the backups it was learnt from
    weekly: bool  # the weekday's own steps were used

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self, unit: str = "") -> str:
        rhythm = ", by weekday" if self.weekly else ""
        return (f"{self.low:,.0f} to {self.high:,.0f}{unit} (expected {self.value:,.0f}{unit}: growing "
                f"{self.step:+.1%} a day over the last {self.points} backups{rhythm})")


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: the median of the pairwise slopes, which a few wild points
    (up to about 29%) do not move."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    return slope, intercept


def _steps(points: Sequence[tuple[datetime, float]]) -> list[tuple[datetime, float, float]]:
    """(moment, log growth a day, days) between consecutive points; values are shifted by one so 0 is allowed."""
    out = []
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        days = (t1 - t0).total_seconds() / 86400
        if days <= 0:
            continue
        out.append((t1, (math.log1p(max(v1, 0)) - math.log1p(max(v0, 0))) / days, days))
    return out


def expect(points: Sequence[tuple[datetime, float]], at: datetime, floor: float, k: float = 4.0,
           window: int = 14, absolute: float = 0.0) -> Expected | None:
    """The value expected at ``at`` after ``points`` (moment, value; oldest first), from the last ``window``
    steps; None with fewer than three points. The band is ``k`` robust deviations of the steps wide on each
    side, and never narrower than ``floor`` (a share) or ``absolute`` (in the values' unit)."""
    pts = sorted(points)[-(window + 1):]
    steps = _steps(pts)
    if len(steps) < 2:
        return None
    rates = [s for _, s, _ in steps]
    typical = statistics.median(rates)
    weekly = False
    by_day: dict[int, list[float]] = {}
    for t, s, days in steps:
        if days <= 1.5:  # a step of one night belongs to that weekday; a longer one (a skipped day) to none
            by_day.setdefault(t.weekday(), []).append(s)
    if len(steps) >= 10 and len(by_day.get(at.weekday(), [])) >= 2:
        medians = {d: statistics.median(v) for d, v in by_day.items() if len(v) >= 2}
        within = [s - medians[t.weekday()] for t, s, days in steps if days <= 1.5 and t.weekday() in medians]
        spread_within = statistics.median(abs(r) for r in within) * MAD_SCALE if within else 0.0
        if max(medians.values()) - min(medians.values()) > max(3 * spread_within, 0.01):
            typical, weekly = medians[at.weekday()], True
            rates = within
    centre = statistics.median(rates) if not weekly else 0.0
    spread = statistics.median(abs(r - centre) for r in rates) * MAD_SCALE
    days = max((at - pts[-1][0]).total_seconds() / 86400, 0.0)
    base = math.log1p(max(pts[-1][1], 0))
    # The band widens with the days since the last point: a night's deviation, not a week's, per night.
    half = max(k * spread * max(days, 1.0) ** 0.5, math.log1p(floor))
    centre_log = base + typical * days
    value = math.expm1(centre_log)
    low, high = math.expm1(centre_log - half), math.expm1(centre_log + half)
    low, high = min(low, value - absolute), max(high, value + absolute)
    return Expected(value, max(low, 0.0), high, math.expm1(typical), len(pts), weekly)


def last_change(points: Sequence[tuple[datetime, float]]) -> int:
    """The index of the last point whose value differs from the one before it (0 when none does)."""
    for i in range(len(points) - 1, 0, -1):
        if points[i][1] != points[i - 1][1]:
            return i
    return 0


def grew_mostly(values: Sequence[float], share: float = 0.5) -> bool:
    """Whether ``values`` went up on at least ``share`` of their steps (a table that receives rows)."""
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return bool(steps) and sum(1 for s in steps if s > 0) >= share * len(steps)
