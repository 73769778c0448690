"""History across runs: both stores (SQLite and a real PostgreSQL), a writer killed mid-transaction, trends on a
farm of 20+ nights, streaks, retention, metrics, the webhook, the charts in a real browser, evidence."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupcheck import audit, history
from backupcheck.checks import trends
from backupcheck.history.store import HistoryError
from backupcheck.servers.cluster import ClusterFactory

from . import farm as farmlib
from .conftest import REPO

# --- documents as a run writes them ------------------------------------------------------------------

def document(run_id: str, started: datetime, backups: list[dict], checks: list[dict] | None = None,
             exit_status: int = 0) -> dict:
    """A results document (schema 2) of one run, for seeding a history the way the plugin writes it."""
    at = started.isoformat()
    return {
        "schema": "backupcheck-results", "version": 2,
        "run": {"id": run_id, "started": at, "finished": (started + timedelta(minutes=3)).isoformat(), "now": at,
                "demo": False, "provider": {"kind": "local", "reason": "seeded"}, "containment": "",
                "sources": [], "versions": {"backupcheck": "test"}, "exit_status": exit_status},
        "backups": backups, "checks": checks or [], "streaks": [],
    }


def backup(series: str, taken: datetime, tables: dict[str, int] | None, seconds: float | None,
           verdict: str = "passed", size: int = 1000) -> dict:
    key = f"{series}-{taken:%Y%m%dT%H%M%SZ}"
    restore = None if seconds is None else {
        "seconds": seconds, "server": "seeded", "tool": "", "profile": "vanilla", "profile_reason": "",
        "harmful_errors": 0, "errors": 0, "aborted": "", "skipped": []}
    return {"key": key, "series": series, "taken_at": taken.isoformat(), "format": "custom", "size": size,
            "artifacts": [f"{key}.dump"], "verdict": verdict, "restore": restore, "tables": tables}


def check(series: str, name: str, key: str, outcome: str, family: str = "freshness") -> dict:
    return {"nodeid": f"suites/test_{family}.py::{name}[{key}]", "name": name, "family": family, "series": series,
            "backup": key, "outcome": outcome, "seconds": 0.01, "message": "", "findings": []}


# --- the two stores ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_history(pg_run: ClusterFactory) -> Iterator[str]:
    """A real PostgreSQL server for the shared history (a DSN on its socket)."""
    from backupcheck.servers import pgbin

    with pg_run.cluster(pgbin.pick(None)) as cluster:
        info = cluster.conninfo()
        yield f"postgresql:///postgres?host={info['host']}&port={info['port']}&user={info['user']}"


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "history.sqlite")
        return
    dsn = request.getfixturevalue("pg_history")
    yield dsn
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:  # each test starts from an empty history
        for table in ("bc_checks", "bc_table_rows", "bc_dump_rows", "bc_verified", "bc_backups", "bc_runs", "bc_meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")


T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def test_both_stores_record_a_run_in_one_piece_and_answer_the_same(spec):
    store = history.open_store(spec)
    assert store is not None
    try:
        for i in range(3):
            night = T0 + timedelta(days=i)
            b = backup("shop", night, {"public.orders": 100 + i, "public.users": 10}, 1.0 + i)
            c = check("shop", "test_newest_backup_is_within_rpo", b["key"], "failed" if i else "passed")
            store.record(document(f"run-{i}", night + timedelta(hours=1), [b, backup("shop", night - timedelta(days=9),
                                                                                  None, None, "not run")], [c]),
                         "host-a")
        assert store.counts() == {"bc_runs": 3, "bc_backups": 3, "bc_verified": 3, "bc_table_rows": 6, "bc_checks": 3, "bc_dump_rows": 0}
        assert store.tables_of("shop-20261102T020000Z") == {"public.orders": 101, "public.users": 10}
        rows = store.series_rows("shop", (T0 + timedelta(days=2)).isoformat(), 10)
        assert [k for k, _, _ in rows] == ["shop-20261101T020000Z", "shop-20261102T020000Z"]
        assert [s for _, s in store.restore_times("shop", "9999-12-31T00:00:00+00:00", 10)] == [1.0, 2.0, 3.0]
        runs = store.check_runs("shop", "test_newest_backup_is_within_rpo", "9999-12-31T00:00:00+00:00", 5)
        assert [failed for _, failed in runs] == [True, True, False]
        assert store.last_passed("shop") == (T0 + timedelta(days=2, hours=1, minutes=3)).isoformat()
        between = store.runs_between(T0.isoformat(), (T0 + timedelta(days=10)).isoformat())
        assert [r["id"] for r in between] == ["run-0", "run-1", "run-2"]
        assert between[1]["failed"] == [("shop", "test_newest_backup_is_within_rpo")]
        import sqlite3

        import psycopg

        # a run id is recorded once: a second write of it is refused and changes nothing
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
            store.record(document("run-0", T0, []), "host-a")
        assert store.counts()["bc_runs"] == 3
    finally:
        store.close()
    again = history.open_store(spec)  # opening an existing history migrates nothing and keeps everything
    assert again is not None and again.counts()["bc_runs"] == 3 and again.version() == history.SCHEMA_VERSION
    again.close()


def test_a_history_of_a_newer_schema_is_refused_with_the_reason(spec):
    store = history.open_store(spec)
    assert store is not None
    cur = store.conn.cursor()
    cur.execute("UPDATE bc_meta SET value = '99' WHERE key = 'schema_version'")
    store.conn.commit()
    store.close()
    with pytest.raises(HistoryError, match=r"newer backupcheck \(schema 99"):
        history.open_store(spec)


def test_a_file_that_is_no_history_is_named(tmp_path):
    bogus = tmp_path / "history.sqlite"
    bogus.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(HistoryError, match="is not a backupcheck history"):
        history.open_store(str(bogus))


def test_the_dsn_password_is_never_shown():
    shown = history.describe("postgresql://auditor:s3cret-pw@db.example:5433/ops")
    assert "s3cret-pw" not in shown and "db.example:5433/ops" in shown


_WRITER = """
import sys, json
from backupcheck import history
store = history.open_store(sys.argv[1])
doc = json.loads(open(sys.argv[2]).read())
print("writing", flush=True)
store.record(doc, "killed-host")
print("done", flush=True)
"""


def test_a_writer_killed_with_sigkill_leaves_the_history_as_it_was(spec, tmp_path):
    """A run killed while it writes leaves the history consistent: the earlier run whole, the killed one absent
    (not half there), and the next run records normally."""
    store = history.open_store(spec)
    assert store is not None
    store.record(document("before", T0, [backup("shop", T0, {"public.t": 1}, 1.0)]), "h")
    store.close()
    many = {f"public.t{i:06d}": i for i in range(150_000)}  # a write that takes a while
    doc = tmp_path / "big.json"
    doc.write_text(json.dumps(document("killed", T0 + timedelta(days=1),
                                       [backup("shop", T0 + timedelta(days=1), many, 2.0)])))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, spec, str(doc)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it was killed: make the write larger"
    store = history.open_store(spec)
    assert store is not None
    try:
        counts = store.counts()
        assert counts["bc_runs"] == 1 and counts["bc_table_rows"] == 1, counts
        store.record(document("after", T0 + timedelta(days=2), [backup("shop", T0 + timedelta(days=2), {"public.t": 3},
                                                                       3.0)]), "h")
        assert store.counts()["bc_runs"] == 2
    finally:
        store.close()


# --- trends, end to end on a farm of 20+ nights ------------------------------------------------------

NIGHTS = 20


def seed_trends(store, now: datetime, newest: datetime) -> None:  # type: ignore[no-untyped-def]
    """20 nights before the newest backup: in 'trendy' one table leaks 5% a night, one grew and then stalled,
    restores grow 2.5 s a night; in 'calm' everything grows a little and restores take a second."""
    for i in range(NIGHTS):
        night = newest - timedelta(days=NIGHTS - i)
        leaky = round(100_000 * 0.95**i)
        stalled = 1000 + 100 * min(i, 16)
        trendy = backup("trendy", night, {"public.leaky": leaky, "public.stalled": stalled,
                                          "public.steady": 5000 + 50 * i}, 10 + 2.5 * i)
        calm = backup("calm", night, {"public.leaky": 1000 + 5 * i, "public.stalled": 2000 + 7 * i,
                                      "public.steady": 5000 + 50 * i}, 1.0 + (i % 3) * 0.05)
        store.record(document(f"seed-{i}", night + timedelta(hours=1), [trendy, calm]), "seed")


def make_trend_dumps(farm: farmlib.Farm, root: Path, newest: datetime) -> None:
    """The newest backup of each series, dumped by real pg_dump: trendy continues the leak and the stall."""
    for series, leaky, stalled, steady in (("trendy", round(100_000 * 0.95**NIGHTS), 2600, 5000 + 50 * NIGHTS),
                                           ("calm", 1000 + 5 * NIGHTS, 2000 + 7 * NIGHTS, 5000 + 50 * NIGHTS)):
        db = f"trend_{series}"
        farm.sql("postgres", f"drop database if exists {db}")
        farm.sql("postgres", f"create database {db}")
        farm.sql(db, f"create table leaky (id int primary key); insert into leaky select generate_series(1, {leaky});"
                     f"create table stalled (id int primary key); insert into stalled select generate_series(1, {stalled});"
                     f"create table steady (id int primary key); insert into steady select generate_series(1, {steady});")
        path = farm.dump(db, root / f"{series}_{newest:%Y%m%d_%H%M%S}.dump")
        farmlib.stamp(path, newest)


@pytest.fixture
def trend_farm(farm: farmlib.Farm, tmp_path: Path, now: datetime) -> tuple[Path, Path]:
    newest = now.replace(hour=2)
    root = tmp_path / "trend-backups"
    root.mkdir()
    make_trend_dumps(farm, root, newest)
    store_path = tmp_path / "history.sqlite"
    store = history.open_store(str(store_path))
    assert store is not None
    seed_trends(store, now, newest)
    store.close()
    return root, store_path


TREND_CONFIG = """
[series.trendy]
rto = "90s"
[series.calm]
rto = "90s"
"""


def test_trends_fail_the_leak_the_stall_and_the_growing_restore_and_pass_a_calm_series(run_suites, trend_farm):
    root, store_path = trend_farm
    run = run_suites("--backups", str(root), "--history", str(store_path), "-m", "trends", config=TREND_CONFIG)
    rows = "test_no_table_drops_leaks_or_stalls_against_its_history"
    rto = "test_restore_time_will_not_cross_the_rto_soon"
    newest = next(p.name for p in root.iterdir() if p.name.startswith("trendy")).split("_", 1)[1]
    trendy = f"trendy-{newest[:8]}T{newest[9:15]}Z"
    assert run.outcomes.get(f"{rows}[{trendy}]") == "failed", run.stdout
    message = run.messages.get(f"{rows}[{trendy}]", "")
    assert re.search(r"public.leaky is leaking rows: \d+% below its peak", message), message
    assert re.search(r"public.stalled has not grown for \d+ nights, since \d{4}-\d\d-\d\d", message), message
    assert "public.steady" not in message
    assert run.outcomes.get(f"{rto}[{trendy}]") == "failed"
    assert "the RTO of 1.5 min is crossed around" in run.messages.get(f"{rto}[{trendy}]", "") or \
        "the RTO of 1.5 min has already been crossed" in run.messages.get(f"{rto}[{trendy}]", "")
    assert run.outcomes.get(f"{rows}[{trendy.replace('trendy', 'calm')}]") == "passed", run.stdout
    assert run.outcomes.get(f"{rto}[{trendy.replace('trendy', 'calm')}]") == "passed", run.stdout
    results = json.loads((run.reports / "results.json").read_text())
    recorded = {b["series"]: b["tables"] for b in results["backups"]}
    assert recorded["trendy"] == {"public.leaky": round(100_000 * 0.95**NIGHTS), "public.stalled": 2600,
                                  "public.steady": 6000}
    store = history.open_store(str(store_path))
    assert store is not None and store.counts()["bc_runs"] == NIGHTS + 1  # this run recorded, once
    store.close()


def test_without_enough_history_the_trends_wait_and_say_so(run_suites, trend_farm, tmp_path):
    root, _ = trend_farm
    run = run_suites("--backups", str(root), "--history", str(tmp_path / "empty.sqlite"), "-m", "trends",
                     config=TREND_CONFIG)
    assert run.ret == 0, run.stdout
    said = run.messages.get(f"test_no_table_drops_leaks_or_stalls_against_its_history[{run.results()['backups'][0]['key']}]")
    assert said and "earlier backup(s) with row counts in the history" in said and "judged from 5" in said, said


def test_row_trend_rules_on_plain_numbers():
    cfg = trends.TrendSettings()
    at = datetime(2026, 11, 20, 2, tzinfo=UTC)
    hist = [(f"k{i}", (at - timedelta(days=10 - i)).isoformat(), {"t": 1000 + 10 * i}) for i in range(10)]
    drop = trends.row_trends("now", "s", hist, {"t": 700}, 0.2, cfg, at)
    assert drop and "below where its rows were heading" in drop[0].what, drop
    assert not trends.row_trends("now", "s", hist, {"t": 1095}, 0.2, cfg, at)
    assert trends.leak([100, 95, 90, 86, 81, 77, 73], 0.2) is not None
    assert trends.leak([100, 95, 100, 95, 100, 95, 99], 0.2) is None
    flat = hist + [(f"f{i}", (at + timedelta(days=i)).isoformat(), {"t": 1090}) for i in range(4)]
    stalled = trends.row_trends("now", "s", flat, {"t": 1090}, 0.2, cfg, at + timedelta(days=4))
    assert [f.what for f in stalled] == ["table t has not grown for 5 nights, since 2026-11-19"], stalled
    assert not trends.row_trends("now", "s", flat, {"t": 1090}, 0.2, cfg, at + timedelta(days=4), {"t": "static"})
    lookup = [(f"k{i}", (at - timedelta(days=10 - i)).isoformat(), {"t": 5}) for i in range(10)]
    assert not trends.row_trends("now", "s", lookup, {"t": 5}, 0.2, cfg, at), "a table that never grew is no stall"


# --- streaks ---------------------------------------------------------------------------------------

def test_a_check_failing_on_the_third_run_in_a_row_is_escalated_and_named(run_suites, farm, tmp_path, now):
    """Two earlier runs failed the RPO check of a series; the third failing run names the streak in the summary,
    in results.json, and raises the check's Allure severity to blocker."""
    root = tmp_path / "stale"
    root.mkdir()
    taken = now - timedelta(days=3)
    path = farm.dump(farm.states[-1], root / f"app_{taken:%Y%m%d_%H%M%S}.dump")
    farmlib.stamp(path, taken)
    store_path = tmp_path / "history.sqlite"
    store = history.open_store(str(store_path))
    assert store is not None
    name = "test_newest_backup_is_within_rpo"
    for i, days in enumerate((2, 1)):
        started = now - timedelta(days=days)
        b = backup("app", taken, None, None, "failed")
        store.record(document(f"earlier-{i}", started, [b], [check("app", name, "series-app", "failed")], 1), "h")
    store.close()
    run = run_suites("--backups", str(root), "--history", str(store_path), "-m", "freshness",
                     config='[series.app]\nrpo = "26h"\n')
    assert run.ret == 1, run.stdout
    assert f"{name} on app: failed on 3 runs in a row, since {(now - timedelta(days=2)):%Y-%m-%d}" in run.stdout, run.stdout
    results = json.loads((run.reports / "results.json").read_text())
    assert results["streaks"] == [{"series": "app", "check": name, "runs": 3,
                                   "since": (now - timedelta(days=2)).isoformat(timespec="seconds")}]
    severities = [label["value"] for f in (run.reports / "allure-results").glob("*-result.json")
                  for r in [json.loads(f.read_text())] if r["name"].startswith(name)
                  for label in r["labels"] if label["name"] == "severity"]
    assert severities and set(severities) == {"blocker"}, severities


# --- retention -------------------------------------------------------------------------------------

def test_retention_slots_and_max_age_on_plain_dates():
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    daily = [now.replace(hour=2) - timedelta(days=i) for i in range(10)]
    ok, notes = trends.retention("db", daily, {"daily": 7}, None, now)
    assert not ok and notes == ["daily: 7 of 7 slot(s) since the first backup, 0 empty"]
    holes = [t for t in daily if t.day not in (29, 30)]  # 2026-11-29 and -30 pruned by mistake
    found, _ = trends.retention("db", holes, {"daily": 7}, None, now)
    assert found and found[0].found == "none in 2026-11-30, 2026-11-29"
    young, _ = trends.retention("db", daily[:3], {"daily": 7, "monthly": 12}, None, now)
    assert not young  # a series three days old promises only three days
    weekly = [now - timedelta(weeks=w) for w in range(6) if w != 2]
    found, _ = trends.retention("db", weekly, {"weekly": 4}, None, now)
    assert found and found[0].found == "none in 2026-W47"
    old, _ = trends.retention("db", daily, {}, timedelta(days=7), now, [f"db-{i}" for i in range(10)])
    assert old and old[0].what == "3 backup(s) are older than the series keeps them"


def test_retention_runs_from_the_listing_when_configured(run_suites, clean_dir):
    cfg = '[defaults]\nmax_age = "1d"\nretention = { daily = 3 }\n'
    run = run_suites("--backups", str(clean_dir), "-m", "retention", config=cfg)
    assert run.ret == 1, run.stdout
    assert "older than the series keeps them" in run.stdout and "none older than 24 h (max_age)" in run.stdout
    assert not {t for t in run.failed() if "retention" not in t}, run.failed()


# --- metrics and the webhook ---------------------------------------------------------------------------

class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[Hook]]]:
    Hook.received, Hook.delay = [], 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret-token", Hook
    server.shutdown()


def test_metrics_and_the_webhook_tell_the_run_without_a_secret(run_suites, clean_dir, tmp_path, webhook,
                                                               monkeypatch):
    url, hook = webhook
    monkeypatch.setenv("BC_TEST_WEBHOOK", url)
    metrics = tmp_path / "textfile" / "backupcheck.prom"
    cfg = f'metrics_file = "{metrics}"\nnotify = {{ url_env = "BC_TEST_WEBHOOK", on = "always" }}\n'
    run = run_suites("--backups", str(clean_dir), "--history", str(tmp_path / "h.sqlite"), config=cfg)
    assert run.ret == 0, run.stdout
    text = metrics.read_text()
    for name in ("backupcheck_backup_age_seconds{series=", "backupcheck_backup_size_bytes{series=",
                 "backupcheck_restore_seconds{series=", 'backupcheck_check_passed{family="freshness",series=',
                 "backupcheck_last_verified_timestamp_seconds{series="):
        assert name in text, text
    assert not list(metrics.parent.glob("*.tmp*")), "the textfile is written through a temp file and renamed"
    assert len(hook.received) == 1
    payload = hook.received[0]
    assert payload["text"].startswith("backupcheck: passed") and payload["blocks"][0]["type"] == "section"
    assert payload["backupcheck"]["run"]["exit_status"] == 0
    assert "secret-token" not in run.stdout and "secret-token" not in json.dumps(payload)
    assert "secret-token" not in (run.reports / "results.json").read_text()
    assert "notify: sent the summary to the webhook in $BC_TEST_WEBHOOK (HTTP 200)" in run.stdout


def test_a_webhook_that_does_not_answer_is_a_warning_not_a_crash(run_suites, clean_dir, tmp_path, webhook,
                                                                 monkeypatch):
    url, hook = webhook
    hook.delay = 5
    monkeypatch.setenv("BC_TEST_WEBHOOK", url)
    cfg = 'notify = { url_env = "BC_TEST_WEBHOOK", on = "always", timeout = "1s" }\n'
    run = run_suites("--backups", str(clean_dir), "-m", "freshness", config=cfg)
    assert run.ret == 0, run.stdout
    assert "did not take the summary" in run.stdout and "the run's result stands" in run.stdout
    assert "secret-token" not in run.stdout


# --- the charts, in a real browser ---------------------------------------------------------------------

def test_the_report_draws_the_trends_as_static_svg_in_a_real_browser(run_suites, trend_farm, tmp_path):
    root, store_path = trend_farm
    run = run_suites("--backups", str(root), "--history", str(store_path), "-m", "trends or size",
                     config=TREND_CONFIG)
    page = (run.reports / "report.html").read_text()
    section = page[page.index("<h2>Trends</h2>"):]
    assert section.count("<svg") == 2 * (2 + 3), "per series: size, restore seconds, and one chart per table"
    assert "trendy: restore seconds" in section and "public.leaky — FAILING" in section
    svgs = [s for s in section.split("<svg")[1:]]
    assert not any("<script" in s.split("</svg>")[0] for s in svgs), "readable without JavaScript"
    assert "kozea.github.io" not in section and "//cdn" not in section, "no network"
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}", "--window-size=1300,4000",
                    (run.reports / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000, "a page with charts is not a blank screenshot"
    keep = os.environ.get("BACKUPCHECK_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


# --- evidence for auditors -----------------------------------------------------------------------------

def test_evidence_renders_the_nights_from_the_history(tmp_path):
    store_path = tmp_path / "history.sqlite"
    store = history.open_store(str(store_path))
    assert store is not None
    until = datetime(2026, 12, 1, 6, tzinfo=UTC)
    for i in range(30):
        night = until - timedelta(days=29 - i, hours=4)
        if i == 12:
            continue  # no run that night
        verdict = "failed" if i in (20, 21) else "passed"
        b = backup("shop", night - timedelta(hours=1), {"public.t": i}, 60.0 + i * 10, verdict)
        checks = [check("shop", "test_every_table_in_the_dump_exists_after_restore", b["key"],
                        "failed" if verdict == "failed" else "passed", "restore")]
        store.record(document(f"n{i}", night, [b], checks, 1 if verdict == "failed" else 0), "h")
    store.close()
    cfg = tmp_path / "backupcheck.toml"
    cfg.write_text('[series.shop]\nrto = "15m"\nrpo = "26h"\n')
    out = tmp_path / "evidence.html"
    proc = subprocess.run([sys.executable, "-m", "backupcheck", "evidence", "--since", "30d", "--until",
                           until.isoformat(), "--history", str(store_path), "--backup-config", str(cfg), "-o",
                           str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "shop: 27 of 30 nights verified; worst restore 5.8 min against 15.0 min RTO" in proc.stdout
    page = out.read_text()
    assert "not verified from 2026-11-14 for 1 night(s), green again on 2026-11-15" in page
    assert "not verified from 2026-11-22 for 2 night(s), green again on 2026-11-24" in page
    assert "test_every_table_in_the_dump_exists_after_restore" in page
    md = subprocess.run([sys.executable, "-m", "backupcheck", "evidence", "--since", "30d", "--until",
                         until.isoformat(), "--history", str(store_path), "-o", "-"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert md.returncode == 0 and "| 2026-11-14 | no run |" in md.stdout
    assert "| 2026-11-22 | NO: failed test_every_table_in_the_dump_exists_after_restore |" in md.stdout, md.stdout
    longer = subprocess.run([sys.executable, "-m", "backupcheck", "evidence", "--since", "60d", "--until",
                             until.isoformat(), "--history", str(store_path), "-o", "-"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert "shop: 27 of 30 nights verified" in longer.stdout, "nights before the first recorded run are not missed"
    assert "| 2026-10-" not in longer.stdout


def test_evidence_from_an_empty_history_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backupcheck", "evidence", "--history",
                           str(tmp_path / "none.sqlite")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "holds no run" in proc.stderr


def test_evidence_collects_outages_on_plain_data():
    runs = [{"started": f"2026-11-0{d}T03:00:00+00:00", "failed": [],
             "backups": [{"key": f"s-{d}", "series": "s", "taken_at": f"2026-11-0{d}T02:00:00+00:00", "size": 1,
                          "verdict": "failed" if d == 3 else "passed", "restore_seconds": 5.0}]} for d in range(1, 6)]
    found = audit.collect(runs, datetime(2026, 11, 1).date(), datetime(2026, 11, 5).date(), {"s": 10.0}, {"s": None})
    assert found[0].verified == 4 and found[0].outages() == [(datetime(2026, 11, 3).date(),
                                                               datetime(2026, 11, 4).date(), 1)]


def test_earlier_row_counts_come_from_the_history_when_a_run_restored_that_backup(run_suites, farm, tmp_path, now):
    """The previous backup's rows are read from the history, not from its dump, once a run has counted them."""
    root = tmp_path / "two"
    root.mkdir()
    keys = []
    for days, state in ((2, farm.states[-2]), (1, farm.states[-1])):
        taken = now.replace(hour=2) - timedelta(days=days - 1)
        path = farm.dump(state, root / f"app_{taken:%Y%m%d_%H%M%S}.dump")
        farmlib.stamp(path, taken)
        keys.append((f"app-{taken:%Y%m%dT%H%M%SZ}", taken))
    store_path = tmp_path / "history.sqlite"
    store = history.open_store(str(store_path))
    assert store is not None
    (older, taken) = keys[0]
    seeded = backup("app", taken, {"public.orders": 10_000_000}, 1.0)  # what "an earlier run" counted
    store.record(document("earlier", taken + timedelta(hours=1), [seeded]), "h")
    store.close()
    test = "test_no_table_lost_more_rows_than_allowed_since_previous_backup"
    run = run_suites("--backups", str(root), "--history", str(store_path), "-k", test)
    message = run.messages.get(f"{test}[{keys[1][0]}]", "")
    assert run.outcomes.get(f"{test}[{keys[1][0]}]") == "failed", run.stdout
    assert f"before: 10,000,000 rows in {older}" in message, message
    again = run_suites("--backups", str(root), "-k", test)  # history off: counted from the dump, as before
    assert again.outcomes.get(f"{test}[{keys[1][0]}]") == "passed", again.stdout


def test_a_history_made_by_another_process_while_this_one_waited_is_not_made_again(spec):
    """Two processes (xdist workers) open a new history at once: the second saw no schema, then waited for the
    first's lock; once it has the lock it must find the schema there and leave it, not create it again."""
    made = history.open_store(spec)
    assert made is not None
    seen = []

    class Late(type(made)):  # type: ignore[misc]
        def version(self) -> int:
            seen.append(1)
            return 0 if len(seen) == 1 else super().version()  # before the lock: nothing yet

    late = Late(made.conn)
    late.where = "the same history"
    late.migrate()  # creating the tables again would fail: they exist
    assert made.version() == history.SCHEMA_VERSION and made.counts()["bc_runs"] == 0
    made.close()


def test_a_report_of_many_series_draws_the_failing_ones_first_and_at_most_twenty(run_suites, farm, tmp_path):
    from backupcheck.plugins.history import CHART_SERIES

    root = tmp_path / "many"
    one = farm.dump(farm.states[-1], tmp_path / "one.dump")
    nights = farmlib.nights(farm.now, 2)
    for i in range(CHART_SERIES + 3):
        for n, when in enumerate(nights):
            path = root / f"app{i:02d}_{when:%Y%m%d_%H%M%S}.dump"
            path.parent.mkdir(exist_ok=True)
            # the last series' newest backup is a tenth of its size: it fails the size check
            data = one.read_bytes()
            path.write_bytes(data[: len(data) // 10] if (i == CHART_SERIES + 2 and n == 1) else data)
            farmlib.stamp(path, when)
    run = run_suites("--backups", str(root), "-m", "size", "--history", str(tmp_path / "h.sqlite"))
    page = (run.reports / "report.html").read_text()
    section = page[page.index("<h2>Trends</h2>"):]
    assert section.count("<h3>") == CHART_SERIES
    assert f"app{CHART_SERIES + 2:02d}: backup size" in section  # failing: drawn though it sorts last
    assert "app00: backup size" in section and f"app{CHART_SERIES:02d}: backup size" not in section
    assert "3 more series without charts here" in section
