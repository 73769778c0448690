"""Thirty nights of a growing shop: verdicts that follow the series, remember a stall, catch a leak, and leave
the record alone when a run checks only part of it.

The nights are spaced by an injected moment (``--now``), never by the wall clock. The engine's rules are run
night by night on plain numbers (fast, every night); the suites run on real dumps made by real pg_dump, with a
real history, on the nights that matter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from backupcheck import sampledb
from backupcheck.checks import size, trends
from backupcheck.expect import expect
from backupcheck.model import Artifact, Backup, Series
from backupcheck.settings import SeriesSettings

from . import farm as farmlib

START = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # a Monday
NIGHTS = 30


def growth(night: int) -> float:
    """A shop's nightly growth: 6% on weekdays, 1% on quiet weekends, and faster (9%) from night 13 on."""
    weekend = (START + timedelta(days=night)).weekday() >= 5
    return 0.01 if weekend else (0.09 if night >= 13 else 0.06)


def shop_rows(stall_from: int | None = None, leak_from: int | None = None) -> list[dict[str, int]]:
    """Rows per table, night by night: orders grow, audit_log stalls from ``stall_from``, orders leak 4% a
    night for eight nights from ``leak_from``, countries never change."""
    out, orders, audit = [], 1000.0, 500.0
    for night in range(NIGHTS):
        if night:
            orders *= 1 - 0.04 if leak_from is not None and leak_from <= night < leak_from + 8 else 1 + growth(night)
            if stall_from is None or night < stall_from:
                audit *= 1 + growth(night)
        out.append({"public.orders": round(orders), "public.audit_log": round(audit), "public.countries": 250})
    return out


def _history(rows: list[dict[str, int]], upto: int) -> list[tuple[str, str, dict[str, int]]]:
    return [(f"shop-{i}", (START + timedelta(days=i)).isoformat(), rows[i]) for i in range(upto)]


def _judge(rows: list[dict[str, int]], night: int) -> list:  # type: ignore[type-arg]
    return trends.row_trends(f"shop-{night}", "shop", _history(rows, night), dict(rows[night]), 0.2,
                             trends.TrendSettings(), START + timedelta(days=night))


def test_a_month_of_healthy_growth_with_quiet_weekends_raises_nothing():
    rows = shop_rows()
    assert rows[20]["public.orders"] / rows[0]["public.orders"] > 2.7
    for night in range(6, NIGHTS):
        assert _judge(rows, night) == [], night


def test_sizes_that_triple_in_a_month_pass_and_a_collapse_or_a_doubling_fails():
    sizes, value = [], 10_000_000.0
    for night in range(NIGHTS):
        value *= 1 + growth(night) if night else 1
        sizes.append(value)
    assert sizes[-1] / sizes[0] > 3
    cfg = SeriesSettings()

    def judged(values: list[float]) -> list:  # type: ignore[type-arg]
        backups = tuple(Backup("db", START + timedelta(days=i),
                               (Artifact(Path(f"/x/db_{i}.dump"), int(v), START + timedelta(days=i), "custom"),))
                        for i, v in enumerate(values))
        return size.within_tolerance(Series("db", backups), backups[-1].key, cfg)[0]

    for night in range(2, NIGHTS):
        assert judged(sizes[: night + 1]) == [], night
    collapse = judged([*sizes[:20], sizes[19] * 0.6])
    assert collapse and "far from where the series' sizes were heading" in collapse[0].what
    assert judged([*sizes[:20], sizes[19] * 2.0])
    assert judged([*sizes[:20], sizes[19] * 0.6, sizes[19] * 1.06]) == [], "back on track after one low night"


def test_a_series_that_starts_compressing_its_dumps_is_compared_with_its_own_kind():
    """Plain dumps for ten nights, then gzipped ones a fifth their size: the first gzipped night has nothing of
    its kind to compare with (no false alarm), the next ones are compared with the gzipped ones only; a file
    nothing recognises is still compared with all of them."""
    cfg = SeriesSettings()

    def night(i: int, size: int, fmt: str = "plain", compression: tuple[str, ...] = ()) -> Backup:
        when = START + timedelta(days=i)
        return Backup("db", when, (Artifact(Path(f"/x/db_{i}.sql"), size, when, fmt, compression),))

    plain = [night(i, 50_000_000 + i * 100_000) for i in range(10)]
    gzipped = [night(10 + i, 10_000_000 + i * 20_000, compression=("gzip",)) for i in range(3)]

    def judged(backups: list[Backup]) -> tuple[list, str]:  # type: ignore[type-arg]
        return size.within_tolerance(Series("db", tuple(backups)), backups[-1].key, cfg)

    findings, skipped = judged([*plain, gzipped[0]])
    assert findings == [] and "first backup of series 'db' written as plain in gzip" in skipped, skipped
    assert "the earlier ones are plain" in skipped
    assert judged([*plain, *gzipped]) == ([], "")
    shrunk = judged([*plain, *gzipped[:2], night(12, 4_000_000, compression=("gzip",))])[0]
    assert shrunk and "10,0" in shrunk[0].expected, "compared with the gzipped nights, not the plain ones"
    garbage = judged([*plain, *gzipped, night(13, 3_000, "unknown")])[0]
    assert garbage and garbage[0].found.startswith("3,000 bytes")


def test_a_stall_is_reported_every_night_until_the_table_grows_again():
    rows = shop_rows(stall_from=14)
    said = {night: [f.what for f in _judge(rows, night)] for night in range(6, NIGHTS)}
    first = min(n for n, w in said.items() if w)
    assert first <= 17, said
    for night in range(first, NIGHTS):
        [what] = said[night]
        nights = (START + timedelta(days=night) - (START + timedelta(days=13))).days
        assert what == f"table public.audit_log has not grown for {nights} nights, since 2026-11-15", (night, what)
    assert not any("countries" in w for ws in said.values() for w in ws), "a table that never grew is no stall"
    grows_again = [*rows[:25], {**rows[24], "public.audit_log": rows[24]["public.audit_log"] + 40}]
    assert _judge(grows_again, 25) == []


def test_a_leak_of_four_percent_a_night_is_caught_and_not_called_a_stall():
    rows = shop_rows(leak_from=20)
    caught = [night for night in range(20, 28) if any("orders is leaking rows" in f.what for f in _judge(rows, night))]
    assert caught and caught[0] <= 23, caught
    assert all("has not grown" not in f.what for night in range(20, 28) for f in _judge(rows, night))


def test_the_expectation_learns_the_weekly_rhythm():
    """A job that writes nothing on Sundays: a flat Sunday is what is expected, and so is Monday's growth."""
    points, value = [], 1000.0
    for night in range(21):
        when = START + timedelta(days=night)
        value *= 1 + (0.0 if when.weekday() == 6 else 0.06)
        points.append((when, value))
    sunday = START + timedelta(days=20)
    assert sunday.weekday() == 6
    before = [p for p in points if p[0] < sunday]
    on_sunday = expect(before, sunday, 0.02, k=2)
    assert on_sunday is not None and on_sunday.weekly
    assert abs(on_sunday.value - before[-1][1]) / before[-1][1] < 0.005 and on_sunday.holds(points[-1][1])
    on_monday = expect(points, sunday + timedelta(days=1), 0.02, k=2)
    assert on_monday is not None and on_monday.weekly and not on_monday.holds(points[-1][1]), "a flat Monday is not"


# --- the same nights on real dumps, through the suites ---------------------------------------------------

@pytest.fixture(scope="module")
def month(farm: farmlib.Farm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three series of real dumps, one a night for thirty nights: healthy, stalled from night 14, leaking 4% a
    night from night 20."""
    root = tmp_path_factory.mktemp("month")
    shapes = {"healthy": shop_rows(), "stalled": shop_rows(stall_from=14), "leaking": shop_rows(leak_from=20)}
    cluster = farm.cluster
    for name, rows in shapes.items():
        db = f"month_{name}"
        with psycopg.connect(**cluster.conninfo("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f"DROP DATABASE IF EXISTS {db}")
            conn.execute(f"CREATE DATABASE {db}")
        with psycopg.connect(**cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
            for table in ("orders", "audit_log", "countries"):
                conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
            for night, counts in enumerate(rows):
                for key, n in counts.items():
                    table = key.split(".")[1]
                    conn.execute(f"DELETE FROM {table} WHERE id > {n}")
                    conn.execute(f"INSERT INTO {table} SELECT g FROM generate_series(1, {n}) g ON CONFLICT DO NOTHING")
                when = START + timedelta(days=night)
                path = sampledb.pg_dump(cluster, db, root / name / f"{name}_{when:%Y%m%d_%H%M%S}.dump")
                farmlib.stamp(path, when)
    return root


def _night(run_suites, folder: Path, night: int, history: Path, *args: str,  # type: ignore[no-untyped-def]
           config: str | None = None):
    """A nightly run that sees the nights up to ``night`` (a copy of the folder), judged at 07:00 that day."""
    seen = folder.parent / f"{folder.name}-upto{night}"
    if not seen.exists():
        seen.mkdir()
        for p in sorted(folder.iterdir())[: night + 1]:
            (seen / p.name).symlink_to(p)
    moment = (START + timedelta(days=night)).replace(hour=7)
    return run_suites("--backups", str(seen), "--history", str(history), "--now", moment.isoformat(), *args,
                      config=config)


def test_the_first_run_over_a_month_of_dumps_finds_the_leak_and_the_stall(month, run_suites, tmp_path):
    history = tmp_path / "history.sqlite"
    rows = "test_no_table_drops_leaks_or_stalls_against_its_history"
    stalled = _night(run_suites, month / "stalled", 27, history, "-m", "trends")
    [key] = [k for k in stalled.outcomes if k.startswith(rows)]
    assert stalled.outcomes[key] == "failed", stalled.stdout[-2000:]
    assert "audit_log has not grown for 14 nights, since 2026-11-15" in stalled.messages[key]
    leaking = _night(run_suites, month / "leaking", 25, history, "-m", "trends")
    [key] = [k for k in leaking.outcomes if k.startswith(rows)]
    assert leaking.outcomes[key] == "failed" and "orders is leaking rows" in leaking.messages[key]
    healthy = _night(run_suites, month / "healthy", 29, history, "-m", "trends or size")
    assert healthy.failed() == set(), {k: healthy.messages[k][:400] for k in healthy.failed()}
    report = (healthy.reports / "results.json").read_text()
    assert json.loads(report)["backups"], report[:200]


def test_partial_runs_between_nights_leave_the_record_alone(month, run_suites, tmp_path):
    history, metrics = tmp_path / "history.sqlite", tmp_path / "backupcheck.prom"
    reports = tmp_path / "reports"
    config = f'reports_dir = "{reports}"\nmetrics_file = "{metrics}"\n'
    full = _night(run_suites, month / "healthy", 20, history, config=config)
    assert full.ret == 0 and full.results()["run"]["partial"] == ""
    report = (reports / "report.html").read_bytes()
    before_history, before_metrics = history.read_bytes(), metrics.read_text()

    listed = _night(run_suites, month / "healthy", 20, history, "--co", config=config)
    assert listed.ret == 0
    assert history.read_bytes() == before_history and metrics.read_text() == before_metrics, "--co writes nothing"
    assert not (reports / "partial").exists() and (reports / "report.html").read_bytes() == report

    restore = _night(run_suites, month / "healthy", 20, history, "-k", "restore", config=config)
    assert restore.ret == 0 and restore.reports == reports / "partial"
    assert restore.results()["run"]["partial"].startswith("-k restore: ")
    assert (reports / "report.html").read_bytes() == report, "the full run's report stays"
    after = metrics.read_text()
    kept = [line for line in before_metrics.splitlines()
            if line.startswith("backupcheck_check_passed") and ("integrity" in line or "size" in line)]
    assert kept and all(line in after.splitlines() for line in kept)
    from backupcheck import history as store_of

    store = store_of.open_store(str(history))
    assert store is not None
    try:
        key = full.results()["backups"][-1]["key"]
        assert store.counted_by_a_run(key) and store.last_passed("healthy") == full.results()["run"]["finished"]
        partial = store._rows("SELECT partial FROM bc_runs ORDER BY started")
        assert [p for (p,) in partial][0] == "" and [p for (p,) in partial][-1].startswith("-k restore")
    finally:
        store.close()
