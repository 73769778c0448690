"""Charts for the HTML reports, drawn by pygal as static SVG (inline, no script, no network): backup size with
its tolerance band and anomalies, restore seconds with the RTO and the forecast, rows per table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from statistics import median

from .expect import expect

BLUE, GREY, RED, ORANGE = "#1f5fa8", "#9a9a9a", "#c00000", "#e08000"


def _chart(kind: str, title: str, colors: tuple[str, ...], height: int = 260, width: int = 760,
           **extra: object):  # type: ignore[no-untyped-def]
    import pygal
    from pygal.style import Style

    style = Style(background="white", plot_background="white", font_family="sans-serif", title_font_size=15,
                  label_font_size=11, major_label_font_size=11, legend_font_size=11, colors=colors,
                  guide_stroke_color="#e4e4e4", major_guide_stroke_color="#d0d0d0")
    options = dict(title=title, width=width, height=height, style=style, js=[], show_dots=False, explicit_size=True,
                   x_label_rotation=0, truncate_label=-1, legend_at_bottom=True, legend_box_size=10,
                   x_value_formatter=lambda d: d.strftime("%m-%d"), show_minor_x_labels=False, x_labels_major_count=8,
                   show_minor_y_labels=False, y_labels_major_count=6)
    options.update(extra)
    return getattr(pygal, kind)(**options)


def _svg(chart) -> str:  # type: ignore[no-untyped-def]
    text = chart.render(is_unicode=True)
    text = text[text.index("<svg"):] if "<svg" in text else text  # inline: no XML declaration
    # pygal always adds its tooltip configuration as a script; the chart is drawn without it.
    return re.sub(r"<script\b.*?</script>", "", text, flags=re.S)


def size_chart(series: str, points: Sequence[tuple[datetime, int]], tolerance: float, min_history: int = 5,
               window: int = 14) -> str:
    """Size of each backup, the band the size check allows (where the sizes were heading, ± at least tolerance;
    the median of the earlier ones ± tolerance before ``min_history`` backups), and the backups outside it."""

    top = max((s for _, s in points), default=0)
    mib, unit = next((1024**p, u) for p, u in ((3, "GiB"), (2, "MiB"), (1, "KiB"), (0, "bytes"))
                     if top >= 1024**p or p == 0)
    values, low, high, odd = [], [], [], []
    for i, (when, size) in enumerate(points):
        values.append((when, size / mib))
        earlier = [(t, float(s)) for t, s in points[:i]]
        if not earlier:
            continue
        expected = expect(earlier, when, tolerance, window=window) if len(earlier) >= min_history else None
        if expected is not None:
            lo, hi = expected.low, expected.high
        else:
            usual = median(s for _, s in earlier)
            lo, hi = usual * (1 - tolerance), usual * (1 + tolerance)
        low.append((when, lo / mib))
        high.append((when, hi / mib))
        if not lo <= size <= hi:
            odd.append((when, size / mib))
    chart = _chart("DateTimeLine", f"{series}: backup size ({unit})", (BLUE, GREY, GREY, RED))
    chart.add("size", values)
    chart.add(f"expected band (±{tolerance:.0%} at least)", low, stroke_style={"dasharray": "4,4"})
    chart.add(None, high, stroke_style={"dasharray": "4,4"})
    chart.add("outside the band", odd or [None], stroke=False, show_dots=True, dots_size=5)
    return _svg(chart)


def restore_chart(series: str, points: Sequence[tuple[datetime, float]], rto: float | None,
                  forecast: tuple[datetime, float] | None) -> str:
    """Restore seconds per backup, the RTO line, and the straight-line forecast to where it crosses the RTO. The
    axis follows the restores: an RTO far above them (15 min against 4 s) is named in the title, not drawn as a
    line that flattens the restores at the bottom."""
    slowest = max((s for _, s in points), default=0.0)
    far = rto is not None and forecast is None and slowest > 0 and rto > 3 * slowest
    title = f"{series}: restore seconds" + (f" (RTO {rto:g} s, {rto / slowest:.0f}× the slowest)" if far else "")
    chart = _chart("DateTimeLine", title, (BLUE, RED, ORANGE))
    chart.add("restore", [(t, s) for t, s in points], show_dots=len(points) < 40, dots_size=2)
    if rto is not None and points and not far:
        end = forecast[0] if forecast else points[-1][0]
        chart.add(f"RTO {rto:g} s", [(points[0][0], rto), (end, rto)], stroke_style={"dasharray": "6,3"})
    if forecast and points:
        chart.add("forecast", [(points[-1][0], points[-1][1]), forecast], stroke_style={"dasharray": "2,4"})
    return _svg(chart)


def rows_charts(series: str, tables: dict[str, Sequence[tuple[datetime, int]]], failing: set[str],
                others: int = 4, most: int = 12) -> list[str]:
    """Small multiples of rows per table over time: every failing table first, then the ``others`` largest
    (a chart costs about 8 ms: twenty series of fifty tables each would take seconds)."""
    bad = sorted(t for t in tables if t in failing)
    rest = sorted((t for t in tables if t not in failing), key=lambda t: (-(tables[t][-1][1] if tables[t] else 0), t))
    order = [*bad, *rest[:others]][:most]
    out = []
    for table in order:
        mark = " — FAILING" if table in failing else ""
        chart = _chart("DateTimeLine", f"{table}{mark}", (RED if table in failing else BLUE,), height=170, width=370,
                       show_legend=False, y_labels_major_count=4,
                       x_labels_major_count=4, title_font_size=12)
        chart.add(table, [(t, n) for t, n in tables[table]], show_dots=len(tables[table]) < 40, dots_size=2)
        out.append(_svg(chart))
    return out
