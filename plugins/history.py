"""The history across runs in a pytest run: opened once per process when a check reads it, written once per run
on the controller from the results document; streaks of failing checks; the metrics file and the webhook."""

from __future__ import annotations

import html
import os
import socket
import time
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest

from backupcheck import charts as draw
from backupcheck import metrics
from backupcheck.checks.trends import crossing
from backupcheck.history import HistoryError, describe, open_store
from backupcheck.results import newest_by_series

from .options import SETTINGS
from .run import RUN, runs_suites

HISTORY = pytest.StashKey["History"]()
_NOTES = pytest.StashKey[list[str]]()


class History:
    """The run's history store, opened on first use; a store that cannot be opened fails the checks that need
    it (with the reason), not the run."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._store: Any = None
        self._error = ""

    @property
    def enabled(self) -> bool:
        return self.spec.strip().lower() not in ("off", "none", "false", "")

    @property
    def where(self) -> str:
        return describe(self.spec) if self.enabled else "no history (history = off)"

    def store(self) -> Any:
        """The store, or None when it is off or cannot be opened (``error`` says why)."""

        if self._store is None and not self._error and self.enabled:
            try:
                self._store = open_store(self.spec)
            except HistoryError as exc:
                self._error = str(exc)
        return self._store

    @property
    def error(self) -> str:
        return self._error

    def require(self) -> Any:
        """For a check that needs the history: the store, or the check fails saying why."""
        __tracebackhide__ = True
        if not self.enabled:
            pytest.skip("the history is off (history = off): trends need earlier runs")
        store = self.store()
        if store is None:
            pytest.fail(f"the history cannot be used: {self._error}", pytrace=False)
        return store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def pytest_configure(config: pytest.Config) -> None:
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return

    if runs_suites(config):
        history = config.stash[HISTORY] = History(settings.history)
        config.stash[_NOTES] = []
        if not hasattr(config, "workerinput") and not settings.demo and settings.plan_out is None \
                and not config.getoption("collectonly", False):
            history.store()  # the schema made once, here, before workers read it (an error waits for its checks)


def pytest_unconfigure(config: pytest.Config) -> None:
    history = config.stash.get(HISTORY, None)
    if history is not None:
        history.close()


def streak_of(history: History, series: str, name: str, before: str, runs: int) -> tuple[int, str]:
    """(how many runs in a row before ``before`` failed check ``name`` on the series, up to ``runs`` looked at;
    when the first of them started)."""
    store = history.store()
    if store is None or runs <= 0:
        return 0, ""
    count, since = 0, ""
    for started, failed in store.check_runs(series, name, before, runs):
        if not failed:
            break
        count, since = count + 1, started
    return count, since


def streaks(config: pytest.Config, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks failing now that also failed on the runs before, at least ``streak_runs`` in a row with this
    one: named in the summary as failing on K runs in a row since …"""
    history = config.stash.get(HISTORY, None)
    settings = config.stash[SETTINGS]
    if history is None or history.store() is None:
        return []
    out, seen = [], set()
    for c in document["checks"]:
        key = (c["series"], c["name"])
        if c["outcome"] not in ("failed", "error") or not c["series"] or key in seen:
            continue
        seen.add(key)
        count, since = streak_of(history, c["series"], c["name"], document["run"]["started"], 60)
        if count + 1 >= settings.streak_runs:
            out.append({"series": c["series"], "check": c["name"], "runs": count + 1, "since": since})
    return out


def escalate(item: pytest.Item, report: pytest.TestReport) -> None:
    """With allure-pytest writing the results (--alluredir), on the worker as a check fails: when it also failed
    on the last streak_runs - 1 runs, raise its Allure severity to blocker. Otherwise the streaks are found once,
    on the controller, and the rendered results carry them."""
    history = item.config.stash.get(HISTORY, None)
    props = dict(report.user_properties)
    series = str(props.get("series", ""))
    if history is None or not series or not history.enabled or not getattr(item.config.option, "allure_report_dir", None):
        return
    runs = item.config.stash[SETTINGS].streak_runs
    name = item.nodeid.split("::")[-1].split("[")[0]
    count, since = streak_of(history, series, name, datetime.now(UTC).isoformat(), runs - 1)
    if runs <= 1 or count < runs - 1:
        return
    report.sections.append(("backupcheck streak", f"failing for {count + 1} runs in a row, since {since[:16]}"))
    _allure_blocker(item, f"failed {count + 1} runs in a row")


def _allure_blocker(item: pytest.Item, tag: str) -> None:
    """Make the failing test's Allure severity blocker: allure-pytest reads the severity from the item's markers
    at teardown, so the one set at collection is replaced there (allure.dynamic.severity would add a second)."""
    item.own_markers[:] = [m for m in item.own_markers
                           if not (m.name == "allure_label" and m.kwargs.get("label_type") == "severity")]
    item.own_markers.append(pytest.mark.allure_label("blocker", label_type="severity").mark)
    item.own_markers.append(pytest.mark.allure_label(tag, label_type="tag").mark)


def finish(config: pytest.Config, document: dict[str, Any]) -> list[str]:
    """On the controller, once the results document exists: record the run, write the metrics file, notify.
    Returns the lines the terminal summary shows."""

    settings = config.stash[SETTINGS]
    history = config.stash.get(HISTORY, None)
    lines: list[str] = []
    problems: list[str] = []
    found = streaks(config, document)
    document["streaks"] = found
    if history is not None and history.enabled:
        store = history.store()
        if store is None:
            problems.append(f"history: not recorded: {history.error}")
        elif settings.demo:
            lines.append(f"history: the demo run is kept out of {history.where}")
        else:
            try:
                t0 = time.monotonic()
                store.record(document, socket.gethostname())
                lines.append(f"history: this run recorded in {history.where} ({time.monotonic() - t0:.2f} s)")
            except Exception as exc:  # a history that cannot be written must not hide the run's results
                problems.append(f"history: not recorded in {history.where}: {type(exc).__name__}: {exc}")
    partial = document["run"].get("partial", "")
    if partial:
        lines.append(f"partial run ({partial}): recorded as such; no trend point, no 'last verified'; the "
                     "metrics keep the last full run's values for the families that did not run")
    if settings.metrics_file is not None:
        try:
            metrics.write_metrics(document, settings.metrics_file, last_passed(history, document), keep=bool(partial))
            lines.append(f"metrics: written to {settings.metrics_file}")
        except Exception as exc:
            problems.append(f"metrics: cannot write {settings.metrics_file}: {exc}")
    if settings.notify is not None:
        said, ok = metrics.send(document, settings.notify, found, report=report_link(settings))
        if said:
            (lines if ok else problems).append(said)
    for line in problems:
        warnings.warn(f"backupcheck {line}", stacklevel=1)
    return lines + problems


def report_link(settings: Any) -> str:
    """Where a person reads this run's report: the CI job's page when the run is a GitHub Actions or GitLab CI job
    (the report is among its artifacts), else the report file."""

    env = os.environ
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        return f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    return str(settings.reports_dir / "report.html")


def last_passed(history: History | None, document: dict[str, Any]) -> dict[str, str]:
    """Per series: when its newest backup last passed every check: this run when it did, else the history's."""
    out: dict[str, str] = {}
    store = history.store() if history is not None else None

    for series, b in newest_by_series(document["backups"]).items():
        if b["verdict"] == "passed" and not document["run"].get("partial"):
            out[series] = document["run"]["finished"]
        elif store is not None:
            when = store.last_passed(series)
            if when:
                out[series] = when
    return out


CHART_SERIES = 20  # series with charts in one report


def charts(config: pytest.Config, document: dict[str, Any]) -> str:
    """The HTML report's trends section: per series, size over time (from the listing), restore seconds and
    rows per table (from the history, this run included)."""


    state = config.stash.get(RUN, None)
    if state is None:
        return ""
    settings = config.stash[SETTINGS]
    history = config.stash.get(HISTORY, None)
    store = history.store() if history is not None and not settings.demo else None
    failing: dict[str, set[str]] = {}
    for c in document["checks"]:
        for f in c["findings"]:
            if c["family"] in ("trends", "row_counts") and f["where"]:
                failing.setdefault(c["series"], set()).add(f["where"])
    end = "9999-12-31T00:00:00+00:00"
    parts = []
    started = time.monotonic()
    # A report is read, not searched: the failing series first, then the others, CHART_SERIES at most (a hundred
    # series drew 500 charts, 6 MB of report and a second of the run).
    bad = {c["series"] for c in document["checks"] if c["outcome"] in ("failed", "error") and c["series"]}
    ordered = sorted(state.listing.series, key=lambda s: (s.name not in bad, s.name))
    shown, left = ordered[:CHART_SERIES], len(ordered) - CHART_SERIES
    try:
        for series in shown:
            cfg = settings.for_series(series.name)
            known = {k: (datetime.fromisoformat(t), n) for k, t, n in store.sizes(series.name, 90)} if store else {}
            known.update({b.key: (b.taken_at, b.size) for b in series.backups})  # the listing's own, for this run
            sizes = sorted(known.values())[-90:]  # three months: a chart, not a table
            blocks = [draw.size_chart(series.name, sizes, cfg.size_tolerance, cfg.trend_min_history,
                                      cfg.trend_window)] if len(sizes) > 1 else []
            if store is not None:
                restores = [(datetime.fromisoformat(t), s) for t, s in store.restore_times(series.name, end, 60)]
                if len(restores) > 1:  # a line needs two points
                    rto = cfg.rto.total_seconds() if cfg.rto is not None else None
                    cross = crossing(restores, rto) if rto is not None else None
                    horizon = restores[-1][0] + 4 * (restores[-1][0] - restores[0][0])
                    forecast = (cross, rto) if cross is not None and rto is not None and cross <= horizon else None
                    blocks.append(draw.restore_chart(series.name, restores, rto, forecast))
                tables: dict[str, list[tuple[datetime, int]]] = {}
                for _, taken, counts in store.series_rows(series.name, end, 45):
                    for table, n in counts.items():
                        tables.setdefault(table, []).append((datetime.fromisoformat(taken), n))
                small = draw.rows_charts(series.name, {t: p for t, p in tables.items() if len(p) > 1},
                                         failing.get(series.name, set()))
                if small:
                    blocks.append("<div style='display:flex;flex-wrap:wrap;gap:4px'>" + "".join(small) + "</div>")
            if blocks:
                parts.append(f"<h3>{_esc(series.name)}</h3>" + "".join(f"<div>{b}</div>" for b in blocks))
    except Exception as exc:  # a chart that cannot be drawn must not cost the report
        return f"<h2>Trends</h2><p>The charts could not be drawn: {_esc(type(exc).__name__)}: {_esc(str(exc))}</p>"
    if not parts:
        return ""
    drawn = f"{len(parts)} series drawn in {time.monotonic() - started:.2f} s"
    if left > 0:
        drawn += f"; {left} more series without charts here (at most {CHART_SERIES}, failing ones first)"
    config.stash.setdefault(_NOTES, []).append(f"charts: {drawn}")
    return f"<h2>Trends</h2><p style='color:#777'>{drawn}, from {_esc(history.where if history else '')}</p>" \
        + "".join(parts)


def _esc(text: str) -> str:
    return html.escape(text)


def notes(config: pytest.Config) -> list[str]:
    """Lines for the terminal summary gathered while the reports were made (how long the charts took)."""
    return list(config.stash.get(_NOTES, []))
