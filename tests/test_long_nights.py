"""Long nights: a restore that hangs is stopped by restore_timeout, with a finding, and the run goes on."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from backupcheck import dump

from . import farm as farmlib
from .conftest import SUITES

SLOW = """
create function public.slow(i int) returns boolean language sql as
  $$ select case when current_setting('bc.fast', true) = 'on' then true else pg_sleep(0.5) is not null end $$;
create table public.slowly (id int primary key check (public.slow(id)));
"""


def test_a_hung_restore_is_stopped_by_restore_timeout_and_the_run_goes_on(farm, run_suites, tmp_path):
    """An archive whose every row takes half a second to check, and a plain dump that sleeps: both stopped."""
    db = farm.clone(farm.states[-1], "long_night")
    farm.sql(db, SLOW)
    farm.sql(db, "set bc.fast = 'on'; insert into public.slowly select generate_series(1, 200)")
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "slow"
    archive = farm.dump(db, folder / f"archive_{when:%Y%m%d_%H%M%S}.dump")
    plain = farm.dump(farm.states[-1], folder / f"plain_{when:%Y%m%d_%H%M%S}.sql", "plain")
    text = plain.read_text()
    at = text.index("CREATE TABLE")
    plain.write_text(text[:at] + "SELECT pg_catalog.pg_sleep(600);\n\n" + text[at:])
    quick = farm.dump(farm.states[-1], folder / f"quick_{when:%Y%m%d_%H%M%S}.dump")
    for path in (archive, plain, quick):
        farmlib.stamp(path, when)
    run = run_suites("--backups", str(folder), "-m", "restore or row_counts",
                     config='[defaults]\nrestore_timeout = "3s"\n')
    stamp = f"{when:%Y%m%dT%H%M%SZ}"
    for series in ("archive", "plain"):
        test = f"test_restores_without_harmful_errors[{series}-{stamp}]"
        assert run.outcomes[test] == "failed", run.stdout[-3000:]
        assert "the restore took longer than restore_timeout (3 s) and was stopped" in run.messages[test]
        assert "raise restore_timeout for the series" in run.messages[test]
        assert "no connection to the server" not in run.messages[test], "what the stop caused is no second finding"
        rows = f"test_no_table_lost_more_rows_than_allowed_since_previous_backup[{series}-{stamp}]"
        assert run.outcomes.get(rows, "skipped") == "skipped", "rows the restore never reached are not judged"
    assert run.outcomes[f"test_restores_without_harmful_errors[quick-{stamp}]"] == "passed"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 150 MB filesystem of its own (tmpfs), where this machine lets the tests mount one; the server's account
    can reach it."""
    where = Path(tempfile.mkdtemp(prefix="bc-small-"))
    os.chmod(where, 0o711)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m,mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a small filesystem here (mount: {proc.stderr.strip() or proc.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def test_too_little_disk_is_found_before_the_restore_and_running_out_is_a_finding(farm, run_suites, tmp_path,
                                                                                 small_disk):
    db = farm.clone(farm.states[0], "big_night")
    farm.sql(db, "create table public.blobs (id int, pad text); insert into public.blobs select g, "
                 "md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) from generate_series(1, 1200000) g")
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "big"
    folder.mkdir()
    known = folder / f"known_{when:%Y%m%d_%H%M%S}.dump"  # with a manifest: its size is known before
    dump.dump(make_conninfo(**{k: str(v) for k, v in farm.cluster.conninfo(db).items()}), known)
    guessed = farm.dump(db, folder / f"guessed_{when:%Y%m%d_%H%M%S}.dump")  # without: only at least its own size
    for path in (known, guessed):
        farmlib.stamp(path, when)
    run = run_suites("--backups", str(folder), "-m", "restore", work=small_disk)
    stamp = f"{when:%Y%m%dT%H%M%SZ}"
    fits = run.messages[f"test_restoring_server_fits_the_dump[known-{stamp}]"]
    assert run.outcomes[f"test_restoring_server_fits_the_dump[known-{stamp}]"] == "failed", run.stdout[-3000:]
    assert "too little disk: the restore needs about" in fits and "(its manifest)" in fits
    assert f"free in {small_disk}" in fits and "--work-dir (config: work_dir)" in fits
    assert "not restored: too little disk." in run.messages[f"test_restores_without_harmful_errors[known-{stamp}]"]
    ran_out = run.messages[f"test_restores_without_harmful_errors[guessed-{stamp}]"]
    assert run.outcomes[f"test_restores_without_harmful_errors[guessed-{stamp}]"] == "failed", run.stdout[-3000:]
    assert "the server ran out of disk during the restore" in ran_out and "--work-dir" in ran_out
    assert list(small_disk.iterdir()) == [], "the server and its files are gone"


@pytest.fixture
def slow_folder(farm, tmp_path: Path) -> Path:
    """One backup whose restore takes about ten seconds: each of its rows takes half a second to check."""
    db = farm.clone(farm.states[0], f"slow_night_{uuid.uuid4().hex[:8]}")
    farm.sql(db, SLOW)
    farm.sql(db, "set bc.fast = 'on'; insert into public.slowly select generate_series(1, 20)")
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "slow"
    farmlib.stamp(farm.dump(db, folder / f"slow_{when:%Y%m%d_%H%M%S}.dump"), when)
    return folder


def test_a_long_restore_says_what_it_is_doing_in_ci_and_under_xdist(slow_folder, run_suites, monkeypatch):
    monkeypatch.setenv("BACKUPCHECK_PROGRESS_SECONDS", "1")
    run = run_suites("--backups", str(slow_folder), "-m", "restore")
    assert run.ret == 0, run.stdout[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("restoring slow-")]
    assert len(lines) >= 3, run.stdout[-3000:]
    assert any(": restore data, " in line for line in lines), lines
    assert "\x1b[K" not in run.stdout, "no terminal control sequence where there is no terminal"
    quiet = run_suites("--backups", str(slow_folder), "-m", "restore", "-q")
    assert "restoring slow-" not in quiet.stdout
    spread = run_suites("--backups", str(slow_folder), "-m", "restore", "-n", "2")
    assert spread.ret == 0, spread.stdout[-3000:]
    assert re.search(r"^\[gw[01]\] restoring slow-\S+: restore data, ", spread.stdout, re.M), spread.stdout[-3000:]


def test_on_a_terminal_the_restore_is_one_live_line(slow_folder, farm, tmp_path, monkeypatch):
    master, slave = pty.openpty()
    config = tmp_path / "empty.toml"
    config.write_text("")
    env = {**os.environ, "BACKUPCHECK_PROGRESS_SECONDS": "1"}
    cmd = [sys.executable, "-m", "pytest", str(SUITES), "--backups", str(slow_folder), "--backup-config", str(config),
           "--reports-dir", str(tmp_path / "reports"), "--now", farm.now.isoformat(), "--pg-provider", "local",
           "--history", "off", "-m", "restore", "-p", "no:cacheprovider"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the run is over
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=600) == 0, out.decode(errors="replace")[-3000:]
    text = out.decode(errors="replace")
    assert re.search(r"\r\x1b\[Krestoring slow-\S+: restore data, ", text), text[-3000:]
    assert text.count("\r\x1b[K") >= 3, "the line is rewritten in place, not repeated"


def test_the_readmes_progress_line_is_what_a_restore_prints():
    from backupcheck.restore.progress import Sample, line

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Large databases and long nights"):]
    shown = re.search(r"^\[gw0\] (restoring .*)$", section, re.M)
    assert shown, "the README lost its example line"
    printed = line("shop-20261207T020000Z", Sample("restore data", int(3.41 * 1024**3), int(9.80 * 1024**3)), 252)
    assert shown.group(1) == printed


def test_counting_a_large_table_says_what_it_cost(farm, restore, tmp_path, monkeypatch):
    """Exact counts stay exact; a table over the size threshold (here every table) says what its count took."""
    from backupcheck.discovery import discover
    from backupcheck.restore import database

    monkeypatch.setattr(database, "COSTLY_TABLE", 0)
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "b"
    farmlib.stamp(farm.dump(farm.states[-1], folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    [backup] = discover([folder]).backups()
    db = restore(backup, tmp_path / "run")
    counts = db.row_counts()
    assert counts["public.orders"] and all(v is not None for v in counts.values())
    assert any(c.startswith("public.orders (") and "counted exactly" in c and " s" in c for c in db.costs), db.costs
    assert len(db.costs) == len(counts)


def test_the_report_shows_where_a_restores_time_went_and_the_next_night_knows_how_long_it_takes(
        slow_folder, run_suites, tmp_path, monkeypatch):
    """Phase times per backup in results.json and the HTML report; a second run of the series says the time
    left from the first one's restore (the dump has no manifest, so only the history knows)."""
    import json

    monkeypatch.setenv("BACKUPCHECK_PROGRESS_SECONDS", "1")
    history = tmp_path / "history.sqlite"
    first = run_suites("--backups", str(slow_folder), "-m", "restore", "--history", str(history))
    assert first.ret == 0, first.stdout[-3000:]
    assert "left (from earlier restores)" not in first.stdout, "no earlier restore to go by"
    [backup] = json.loads((first.reports / "results.json").read_text())["backups"]
    phases = backup["restore"]["phases"]
    assert list(phases)[0] == "server and database", phases
    assert phases.get("restore data", 0) >= 3, phases  # 20 rows of half a second each
    assert abs(sum(phases.values()) - phases["server and database"] - backup["restore"]["seconds"]) < 1.5, phases
    html = (first.reports / "report.html").read_text()
    assert re.search(r'<small class="steps">server and database [\d.]+ s · [^<]*restore data [\d.]+ s[^<]*'
                     r'· checks [\d.]+ s</small>', html), "the report shows the phases"
    second = run_suites("--backups", str(slow_folder), "-m", "restore", "--history", str(history))
    assert second.ret == 0, second.stdout[-3000:]
    said = [ln for ln in second.stdout.splitlines() if ln.startswith("restoring slow-")]
    assert any(re.search(r", about \d+s left \(from earlier restores\)$", ln) for ln in said), said


def test_the_time_left_from_earlier_restores():
    from backupcheck.restore.progress import Sample, expected_seconds, line

    assert expected_seconds([], 10) is None
    assert expected_seconds([(100, 10.0), (200, 20.0), (0, 5.0)], 300) == pytest.approx(30.0)
    s = Sample("restore data", 5 * 1024**2, None)
    assert line("k", s, 10, expected=70).endswith(", 10s, about 1m00s left (from earlier restores)")
    assert line("k", s, 80, expected=70).endswith(", 1m20s, longer than earlier restores (about 1m10s)")
    with_total = Sample("restore data", 5 * 1024**2, 10 * 1024**2)
    assert line("k", with_total, 10, expected=70).endswith("about 10s left"), "the manifest's size comes first"


def _restored_counting_connections(farm, restore, tmp_path, db: str, stem: str):  # type: ignore[no-untyped-def]
    """``db`` of the farm dumped, restored, and every connection its checks open named in the list returned."""
    from backupcheck.discovery import discover

    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "b"
    farmlib.stamp(farm.dump(db, folder / f"{stem}_{when:%Y%m%d_%H%M%S}.dump"), when)
    [backup] = discover([folder]).backups()
    restored = restore(backup, tmp_path / "run")
    opened: list[str] = []
    connect = restored._connect
    restored._connect = lambda name: (opened.append(name), connect(name))[1]
    return restored, opened


def test_anti_joins_run_side_by_side_and_each_names_its_key(farm, restore, tmp_path, monkeypatch):
    """Three keys the restore could not validate (NOT VALID, with orphans), on tables large enough to share out
    (here: any): three anti-joins on connections of their own, each finding naming its key and what it found; a
    key whose table is gone is said, not raised."""
    from backupcheck.checks.restoring import foreign_key_orphans
    from backupcheck.restore import database

    monkeypatch.setattr(database, "SPREAD_FROM", 0)

    db = farm.clone(farm.states[-1], f"three_keys_{uuid.uuid4().hex[:8]}")
    farm.sql(db, """
        create table public.notes (id int primary key, user_id int, order_id int, product_id int);
        insert into public.notes values (1, -1, -2, -3), (2, -4, -5, -6);
        alter table public.notes add constraint notes_user_fk foreign key (user_id) references public.users(id) not valid;
        alter table public.notes add constraint notes_order_fk foreign key (order_id) references public.orders(id) not valid;
        alter table public.notes add constraint notes_product_fk foreign key (product_id) references public.products(id)
            not valid;
    """)
    restored, opened = _restored_counting_connections(farm, restore, tmp_path, db, "keys")
    findings, notes = foreign_key_orphans(restored)
    named = sorted(f.what for f in findings)
    assert named == [f"foreign key notes_{k}_fk has orphaned rows (declared NOT VALID)" for k in
                     ("order", "product", "user")], named
    assert all("2 orphan row(s)" in f.found for f in findings), [f.found for f in findings]
    assert len(opened) >= 2, "the anti-joins ran on connections of their own, side by side"
    assert sum("checked with an anti-join: 2 orphan(s)" in n for n in notes) == 3, notes


def test_a_small_databases_checks_share_one_connection(farm, restore, tmp_path):
    """Counting, the newest rows, the tables' presence and the anti-joins of a small database all run on the
    checks' one connection: a new connection costs the server about what counting a small table does."""
    from backupcheck.checks.restoring import foreign_key_orphans

    db = farm.clone(farm.states[-1], f"small_keys_{uuid.uuid4().hex[:8]}")
    farm.sql(db, """
        create table public.notes (id int primary key, user_id int, order_id int);
        insert into public.notes values (1, -1, -2);
        alter table public.notes add constraint notes_user_fk foreign key (user_id) references public.users(id) not valid;
        alter table public.notes add constraint notes_order_fk foreign key (order_id) references public.orders(id) not valid;
    """)
    restored, opened = _restored_counting_connections(farm, restore, tmp_path, db, "small")
    assert restored.missing_tables() == []
    counts = restored.row_counts()
    assert counts["public.notes"] == 1 and counts["public.orders"]
    assert restored.newest()
    findings, _notes = foreign_key_orphans(restored)
    assert sorted(f.what for f in findings) == [f"foreign key notes_{k}_fk has orphaned rows (declared NOT VALID)"
                                                for k in ("order", "user")]
    assert opened == [restored.main_db], opened


def test_a_restore_shares_the_cores_with_the_other_backups_the_run_holds_restored(farm, restore, tmp_path):
    """pg_restore's jobs are restore_jobs, or the cores shared evenly among the backups the run's processes hold
    restored at that moment (a fleet on -n 2 with two cores: -j 1 each); a process that is gone holds nothing."""
    from backupcheck.discovery import discover
    from backupcheck.restore.cores import CoreShare, cores

    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "b"
    farmlib.stamp(farm.dump(farm.states[-1], folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    [backup] = discover([folder]).backups()
    share = CoreShare(tmp_path / "run" / "evidence")  # where the run's processes see each other
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    share.folder.mkdir(parents=True)
    (share.folder / f"{gone.stdout.strip()}-1").touch()  # a worker that crashed holding a backup
    assert share.jobs(4) == (min(4, cores()), 1)
    with share.holding():  # another worker's backup
        restored = restore(backup, tmp_path / "run", jobs=4)
        expected = max(1, min(4, cores() // 2))
        assert restored.jobs_now == expected
        assert f"(-j {expected}" in restored.result.tool, restored.result.tool
        if expected < 4:
            assert "restore_jobs 4 shared with the 1 other backup(s) this run holds restored" in restored.result.tool
        assert restored.row_counts()["public.orders"], "restored whole with fewer jobs"
        assert share.held() == 2
    restored.__exit__(None, None, None)
    assert share.held() == 1, "let go of on exit"


def test_a_workers_reports_tell_the_controller_of_each_restore_once(farm, run_suites, pytester, tmp_path):
    """The restore's summary (phases, tool, profile) reaches the controller on one report per backup, not on the
    three reports of each test that used the restore: a fleet of 100 backups sent it 2,600 times, serialized on
    the worker and read again on the controller. results.json still has it."""
    import json

    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "b"
    for name in ("shop", "shop2"):
        farmlib.stamp(farm.dump(farm.states[-1], folder / f"{name}_{when:%Y%m%d_%H%M%S}.dump"), when)
    told = tmp_path / "told.json"
    # (the controller is the process without workerinput: PYTEST_XDIST_WORKER is inherited from a test run
    # that is itself on -n 2)
    pytester.makepyfile(tell_counter=f"""
        import json

        told = []
        controller = []

        def pytest_configure(config):
            controller.append(not hasattr(config, "workerinput"))

        def pytest_runtest_logreport(report):
            if controller[0]:
                told.extend(report.nodeid for k, _ in report.user_properties if k == "restore")

        def pytest_unconfigure(config):
            if controller[0]:
                open({str(told)!r}, "w").write(json.dumps(told))
    """)
    run = run_suites("--backups", str(folder), "-n", "2", "-p", "tell_counter")
    assert run.ret == 0, run.stdout[-3000:]
    said = json.loads(told.read_text())
    backups = json.loads((run.reports / "results.json").read_text())["backups"]
    assert sorted(b["key"].split("-")[0] for b in backups) == ["shop", "shop2"]
    assert all(b["restore"] and b["restore"]["seconds"] > 0 for b in backups), backups
    assert len(said) == 2 and len({n.split("[")[1] for n in said}) == 2, said  # one report per backup
