"""Benchmark: what a large history costs a run. A SQLite history of 365 nights x 20 series x 50 tables, and 20
real series (one newest backup each, 50 tables) verified by pytest with the history off and on, in one run.

Prints the added seconds of a run (target: under 0.5 s) and the time to draw the report's charts from that
history (target: under 2 s). Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupcheck import charts, history, sampledb
from backupcheck.checks.trends import crossing  # noqa: E402
from backupcheck.servers import pgbin  # noqa: E402
from backupcheck.servers.cluster import ClusterFactory, RunDir, fast_base  # noqa: E402
from bench.run import PYTEST, ROOT, run_child  # noqa: E402

SERIES, TABLES, NIGHTS = 20, 50, 365
TARGET_ADDED, TARGET_CHARTS = 0.5, 2.0


def rows_of(series: int, table: int, night: int) -> int:
    return 100 + 10 * table + series + night  # every table grows a little each night: no trend finding


def seed(store: history.Store, newest: datetime) -> float:
    t0 = time.monotonic()
    for night in range(NIGHTS):
        when = newest - timedelta(days=NIGHTS - night)
        backups, checks = [], []
        for s in range(SERIES):
            key = f"db{s:02d}-{when:%Y%m%dT%H%M%SZ}"
            backups.append({
                "key": key, "series": f"db{s:02d}", "taken_at": when.isoformat(), "format": "custom",
                "size": 200_000 + night * 100, "artifacts": [key], "verdict": "passed",
                "restore": {"seconds": 1.0 + night / 1000, "server": "seeded"},
                "tables": {f"public.t{t:02d}": rows_of(s, t, night) for t in range(TABLES)}})
            checks += [{"nodeid": f"suites/test_x.py::test_{c}[{key}]", "name": f"test_{c}", "family": "restore",
                        "series": f"db{s:02d}", "backup": key, "outcome": "passed", "seconds": 0.01, "findings": []}
                       for c in range(15)]
        store.record({"run": {"id": f"seed-{night}", "started": (when + timedelta(hours=1)).isoformat(),
                              "finished": (when + timedelta(hours=1, minutes=5)).isoformat(),
                              "now": (when + timedelta(hours=1)).isoformat(), "provider": {"kind": "local"},
                              "versions": {}, "exit_status": 0},
                      "backups": backups, "checks": checks}, "bench")
    return time.monotonic() - t0


def make_dumps(folder: Path, newest: datetime) -> None:
    """20 small databases of 50 tables each, dumped by real pg_dump, named for the newest night."""
    inst = pgbin.pick(None)
    with RunDir() as rundir, RunDir(fast_base()) as fast:
        factory = ClusterFactory(rundir, fast)
        with factory.cluster(inst) as cluster:
            for s in range(SERIES):
                db = f"db{s:02d}"
                with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
                    conn.execute(f"create database {db}")
                with psycopg.connect(**cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
                    for t in range(TABLES):
                        conn.execute(f"create table t{t:02d} (id int primary key, created_at timestamptz)")
                        conn.execute(f"insert into t{t:02d} select g, %s from generate_series(1, {rows_of(s, t, NIGHTS)}) g",
                                     (newest,))
                sampledb.pg_dump(cluster, db, folder / f"{db}_{newest:%Y%m%d_%H%M%S}.dump", "custom")
        factory.wait()


def suite(folder: Path, spec: str, scratch: Path, now: datetime) -> tuple[float, float, str]:
    cfg = scratch / "empty.toml"
    cfg.touch()
    cmd = [*PYTEST, "suites", "--backups", str(folder), "--backup-config", str(cfg), "--reports-dir",
           str(scratch / "reports"), "--history", spec, "--now", now.isoformat(), "-n", "2", "-q"]
    t0 = time.monotonic()
    code, out = run_child(cmd, ROOT)
    seconds = time.monotonic() - t0
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    drawn = re.search(r"charts: \d+ series drawn in ([\d.]+) s", out)
    return seconds, float(drawn.group(1)) if drawn else 0.0, f"exit {code}: {tail}"


def draw(store: history.Store) -> float:
    """What the report does per series: read sizes, restore times and rows, and draw the charts."""
    end = "9999-12-31T00:00:00+00:00"
    t0 = time.monotonic()
    for s in range(SERIES):
        name = f"db{s:02d}"
        sizes = [(datetime.fromisoformat(t), n) for _, t, n in store.sizes(name, 90)]
        charts.size_chart(name, sizes, 0.5)
        restores = [(datetime.fromisoformat(t), x) for t, x in store.restore_times(name, end, 60)]
        charts.restore_chart(name, restores, 900.0, None if crossing(restores, 900.0) is None else
                             (crossing(restores, 900.0), 900.0))  # type: ignore[arg-type]
        tables: dict[str, list[tuple[datetime, int]]] = {}
        for _, taken, counts in store.series_rows(name, end, 45):
            for table, n in counts.items():
                tables.setdefault(table, []).append((datetime.fromisoformat(taken), n))
        charts.rows_charts(name, tables, set())
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="Time each pytest run N times (median).")
    args = parser.parse_args(argv)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    newest = now - timedelta(hours=1)
    with tempfile.TemporaryDirectory(prefix="bc-bench-history-") as tmp:
        scratch = Path(tmp)
        store_path = scratch / "history.sqlite"
        store = history.open_store(str(store_path))
        assert store is not None
        seeded = seed(store, newest)
        counts = store.counts()
        print(f"history: {NIGHTS} nights x {SERIES} series x {TABLES} tables seeded in {seeded:.1f} s: "
              + json.dumps(counts) + f", {store_path.stat().st_size / 1024**2:.0f} MiB")
        charts_s = [draw(store) for _ in range(args.repeat)]
        store.close()
        folder = scratch / "backups"
        folder.mkdir()
        make_dumps(folder, newest)
        off, on, in_run = [], [], []
        for i in range(args.repeat):
            # A copy per round: each run records itself, and the rounds must judge the same history.
            round_store = scratch / f"history-{i}.sqlite"
            round_store.write_bytes(store_path.read_bytes())
            s_off, _, said_off = suite(folder, "off", scratch, now)
            s_on, drawn_in_run, said_on = suite(folder, str(round_store), scratch, now)
            off.append(s_off)
            on.append(s_on)
            in_run.append(drawn_in_run)
            print(f"round {i + 1}: history off {s_off:.2f} s ({said_off}); on {s_on:.2f} s, of which charts "
                  f"{drawn_in_run:.2f} s ({said_on})")
    # Rounds alternate, so each round's difference is the fairer figure on a noisy 2-core machine.
    whole = statistics.median(b - a for a, b in zip(off, on, strict=True))
    drawn_run = statistics.median(in_run)
    added = statistics.median(b - a - c for a, b, c in zip(off, on, in_run, strict=True))
    drawn = statistics.median(charts_s)
    print(f"\nrun with the history, minus without (median of the {args.repeat} rounds' differences): {whole:+.2f} s, "
          f"of which the report's "
          f"charts {drawn_run:.2f} s")
    print(f"  added to the checks (queries, recording): {added:+.2f} s (target < {TARGET_ADDED} s: "
          f"{'MET' if added < TARGET_ADDED else 'NOT MET'})")
    print(f"  report generation: charts of {SERIES} series in the run {drawn_run:.2f} s, alone from the history "
          f"{drawn:.2f} s (target < {TARGET_CHARTS} s: {'MET' if max(drawn, drawn_run) < TARGET_CHARTS else 'NOT MET'})")


if __name__ == "__main__":
    main()
