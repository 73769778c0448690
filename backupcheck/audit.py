"""Evidence for auditors, from the history: for each series and each night of a period, whether its newest
backup was restored and verified, the restore time against the RTO, the backup's age against the RPO, and how
long failures lasted; as HTML (self-contained) or Markdown."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .results import newest_by_series


@dataclass
class Night:
    day: date
    verified: bool = False  # a backup of the series restored and passed every check that night
    ran: bool = False  # a run looked at the series that night
    restore_seconds: float | None = None
    age_hours: float | None = None  # the newest backup's age when it was checked
    failed: list[str] = field(default_factory=list)
    backup: str = ""
    reason: str = ""  # why a night that ran is not verified

    @property
    def word(self) -> str:
        """yes; NO, with its reason; or "no run" for a night after the first recorded one that no run saw."""
        if self.verified:
            return "yes"
        if not self.ran:
            return "no run"
        return f"NO: {self.reason}" if self.reason else "NO"


@dataclass
class SeriesEvidence:
    series: str
    nights: list[Night]
    rto: float | None
    rpo: float | None

    @property
    def verified(self) -> int:
        return sum(1 for n in self.nights if n.verified)

    @property
    def worst_restore(self) -> float | None:
        times = [n.restore_seconds for n in self.nights if n.restore_seconds is not None]
        return max(times) if times else None

    def outages(self) -> list[tuple[date, date | None, int]]:
        """(first night not verified, the night it was green again or None, nights it lasted)."""
        out: list[tuple[date, date | None, int]] = []
        start: date | None = None
        for n in self.nights:
            if not n.verified and start is None:
                start = n.day
            elif n.verified and start is not None:
                out.append((start, n.day, (n.day - start).days))
                start = None
        if start is not None:
            out.append((start, None, (self.nights[-1].day - start).days + 1))
        return out


def collect(runs: list[dict[str, Any]], since: date, until: date, rto: dict[str, float | None],
            rpo: dict[str, float | None], only: str = "") -> list[SeriesEvidence]:
    """Nights from ``since`` to ``until`` (inclusive, UTC) for each series the runs saw."""
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    per: dict[str, dict[date, Night]] = {}
    for run in runs:
        day = datetime.fromisoformat(run["started"]).astimezone(UTC).date()
        for series, b in newest_by_series(run["backups"]).items():
            if only and series != only:
                continue
            nights = per.setdefault(series, {})
            night = nights.setdefault(day, Night(day))
            night.ran = True
            ok = b["verdict"] == "passed" and b["restore_seconds"] is not None
            if ok or not night.verified:
                night.verified = night.verified or ok
                night.backup = b["key"]
                night.restore_seconds = b["restore_seconds"]
                age = datetime.fromisoformat(run["started"]) - datetime.fromisoformat(b["taken_at"])
                night.age_hours = age.total_seconds() / 3600
                night.failed = sorted({name for s, name in run["failed"] if s == series})
                night.reason = "" if ok else (
                    f"failed {', '.join(night.failed)}" if night.failed else
                    "the newest backup was not restored" if b["restore_seconds"] is None else f"verdict {b['verdict']}")
    # A series is accounted for from the first night a run recorded it: nights before are no missed runs.
    return [SeriesEvidence(s, [per[s].get(d, Night(d)) for d in days if d >= min(per[s])], rto.get(s), rpo.get(s))
            for s in sorted(per)]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def totals(evidence: list[SeriesEvidence]) -> list[str]:
    lines = []
    for e in evidence:
        line = f"{e.series}: {e.verified} of {len(e.nights)} nights verified"
        if e.worst_restore is not None:
            line += f"; worst restore {_dur(e.worst_restore)}"
            if e.rto:
                line += f" against {_dur(e.rto)} RTO"
        lines.append(line)
    return lines


def markdown(evidence: list[SeriesEvidence], since: date, until: date) -> str:
    out = [f"# Backup restore evidence, {since} to {until}", ""]
    out += [f"- {t}" for t in totals(evidence)] + [""]
    for e in evidence:
        out += [f"## {e.series}", "", "| night | verified | backup | restore | RTO | age | RPO | failed checks |",
                "|---|---|---|---|---|---|---|---|"]
        for n in e.nights:
            out.append(f"| {n.day} | {n.word} | {n.backup or '-'} | "
                       f"{_dur(n.restore_seconds)} | {_dur(e.rto)} | "
                       f"{'-' if n.age_hours is None else f'{n.age_hours:.1f} h'} | "
                       f"{'-' if e.rpo is None else f'{e.rpo / 3600:g} h'} | {', '.join(n.failed) or '-'} |")
        for start, end, nights in e.outages():
            out.append("")
            out.append(f"- not verified from {start} for {nights} night(s)" + (f", green again on {end}" if end else
                                                                               ", still not green"))
        out.append("")
    return "\n".join(out)


def render_html(evidence: list[SeriesEvidence], since: date, until: date, generated: datetime) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Backup restore evidence {since} to {until}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
        ".no{background:#fbe3e3}.yes{background:#e6f4e6}.none{background:#f3f3f3;color:#777}"
        ".over{color:#c00;font-weight:bold}</style></head><body>",
        f"<h1>Backup restore evidence, {since} to {until}</h1>",
        f"<p>Generated {generated:%Y-%m-%d %H:%M} UTC from the backupcheck history. A night counts as verified when "
        "a run that night restored the series' newest backup into a disposable server and every check passed.</p>",
        "<ul>" + "".join(f"<li><b>{esc(t)}</b></li>" for t in totals(evidence)) + "</ul>",
    ]
    for e in evidence:
        parts.append(f"<h2>{esc(e.series)}</h2>")
        outages = e.outages()
        if outages:
            parts.append("<ul>" + "".join(
                f"<li>not verified from {s} for {n} night(s)" + (f", green again on {end}" if end else ", still not green")
                + "</li>" for s, end, n in outages) + "</ul>")
        parts.append("<table><tr><th>night (UTC)</th><th>verified</th><th>backup</th><th>restore</th><th>RTO</th>"
                     "<th>backup age</th><th>RPO</th><th>failed checks</th></tr>")
        for n in e.nights:
            cls, word = ("yes" if n.verified else "none" if not n.ran else "no"), n.word
            over_rto = e.rto is not None and n.restore_seconds is not None and n.restore_seconds > e.rto
            over_rpo = e.rpo is not None and n.age_hours is not None and n.age_hours * 3600 > e.rpo
            age = "-" if n.age_hours is None else f"{n.age_hours:.1f} h"
            parts.append(
                f"<tr class='{cls}'><td>{n.day}</td><td>{word}</td><td>{esc(n.backup or '-')}</td>"
                f"<td class='{'over' if over_rto else ''}'>{_dur(n.restore_seconds)}</td><td>{_dur(e.rto)}</td>"
                f"<td class='{'over' if over_rpo else ''}'>{age}</td>"
                f"<td>{'-' if e.rpo is None else f'{e.rpo / 3600:g} h'}</td><td>{esc(', '.join(n.failed) or '-')}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
