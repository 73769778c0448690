"""Physical backups for real: a server archiving its WAL with archive_command, real pg_basebackup (plain and tar),
recovered by a real server of the same major version, faults planted in copies."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from backupcheck.discovery import discover
from backupcheck.evidence import EvidenceStore
from backupcheck.restore import recovery
from backupcheck.restore.database import RestoreCache
from backupcheck.restore.progress import Reporter
from backupcheck.restore.providers import LocalProvider
from backupcheck.restore.recovery import RecoveryTarget
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, server_user
from backupcheck.sources import basebackup


def needed(command: str, package: str, fix: str, beside_python: bool = False) -> str:
    """The command's path; missing, the test fails under CI (.ci/run installs it) and is skipped elsewhere."""
    found = shutil.which(command, path=str(Path(sys.executable).parent) if beside_python else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{package} is not installed (.ci/run installs it)")
        pytest.skip(f"{package} is not installed here ({fix})")
    return found


@dataclass
class Primary:
    """A server with data checksums that archives every WAL segment into ``archive``."""

    inst: pgbin.Installation
    home: Path
    process: subprocess.Popen[bytes] | None = None
    archive_command: str = ""  # default: cp into ``archive``

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def archive(self) -> Path:
        return self.home / "backups" / "wal-of-shop"  # any name: found by what it holds

    @property
    def base(self) -> Path:
        return self.home / "backups" / "shop"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = server_user()
        return subprocess.run(list(args), capture_output=True, text=True, check=check, cwd=str(self.home),
                              user=user[0] if user else None, group=user[1] if user else None,
                              extra_groups=[] if user else None)

    def start(self) -> None:
        user = server_user()
        self.base.mkdir(parents=True)
        self.archive.mkdir()
        if user:
            for p in (self.home, self.home / "backups", self.base, self.archive):
                os.chown(p, *user)
        self.run(self.inst.tool("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-k", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.home}'\nwal_level = replica\n"
                       "archive_mode = on\narchive_command = '"
                       + (self.archive_command or f"test ! -f {self.archive}/%f && cp %p {self.archive}/%f")
                       + "'\nfsync = off\n")
        with open(self.home / "server.log", "wb") as logf:
            self.process = subprocess.Popen(
                [self.inst.tool("postgres"), "-D", str(self.data)], stdout=logf, stderr=subprocess.STDOUT,
                user=user[0] if user else None, group=user[1] if user else None,
                extra_groups=[] if user else None, start_new_session=True)
        for _ in range(300):
            try:
                self.sql("select 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError((self.home / "server.log").read_text())

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        with psycopg.connect(host=str(self.home), user="postgres", dbname=db, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def switch(self) -> None:
        """Close the current segment and wait until the archive has it."""
        name = self.sql("select pg_walfile_name(pg_switch_wal())")[0][0]
        for _ in range(200):
            if (self.archive / name).exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} was not archived")

    def switch_pushed(self, pgbackrest: list[str]) -> None:
        """Close the current segment and wait until pgbackrest's archive has it (archive-push by archive_command)."""
        name = self.sql("select pg_walfile_name(pg_switch_wal())")[0][0]
        for _ in range(300):
            if self.run(*pgbackrest, "archive-get", name, str(self.home / "probe"), check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} was not archived by pgbackrest")

    def base_backup(self, name: str, *options: str) -> Path:
        target = self.base / name
        self.run(self.inst.tool("pg_basebackup"), "-h", str(self.home), "-U", "postgres", "-D", str(target),
                 "-c", "fast", *options)
        return target

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@dataclass
class Shop:
    primary: Primary
    backups: Path
    rows_at: dict[str, int]  # moment name -> rows of shop.orders then
    moment: datetime  # between batch two and three (PITR target)


@pytest.fixture(scope="module")
def shop(pg_run: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """Two base backups (plain with -X fetch, tar+gzip with -X stream), three batches of orders, the archive
    switched after each; a static table no WAL touches after the backups; an event trigger that fails any DDL."""
    inst = pgbin.pick(None)
    home = pg_run.rundir / "primary"
    home.mkdir()
    primary = Primary(inst, home)
    try:
        primary.start()
        primary.sql("create database shop")
        primary.sql("create table orders (id int primary key, created_at timestamptz default now()); "
                    "create table static (id int primary key, note text); "
                    "insert into static select g, repeat('x', 50) from generate_series(1, 200) g; "
                    "insert into orders(id) select generate_series(1, 1000)", "shop")
        primary.sql("create function refuse() returns event_trigger language plpgsql as "
                    "$$ begin raise exception 'an event trigger of the backup ran'; end $$; "
                    "create event trigger refuse on ddl_command_start execute function refuse()", "shop")
        primary.sql("checkpoint")
        primary.switch()
        primary.base_backup("nightly-a", "-X", "fetch")
        primary.sql("insert into orders(id) select generate_series(1001, 1500)", "shop")
        primary.switch()
        time.sleep(1.1)  # backups are told apart by their start time, to the second
        primary.base_backup("nightly-b", "-Ft", "-z", "-X", "stream")
        primary.sql("insert into orders(id) select generate_series(1501, 2000)", "shop")
        primary.switch()
        time.sleep(1.1)
        moment = primary.sql("select clock_timestamp()")[0][0].astimezone(UTC)
        time.sleep(1.1)
        primary.sql("select pg_create_restore_point('before-batch-4')")
        primary.sql("insert into orders(id) select generate_series(2001, 2300)", "shop")
        primary.switch()
        primary.stop()
        yield Shop(primary, home / "backups", {"end": 2300, "moment": 2000}, moment)
    finally:
        primary.stop()


def copy_of(shop: Shop, tmp_path: Path) -> Path:
    target = tmp_path / "backups"
    shutil.copytree(shop.backups, target, symlinks=True)
    return target


def recover(pg_run: ClusterFactory, folder: Path, key_part: str = "", reporter=None, **kwargs):  # type: ignore[no-untyped-def]
    listing = discover([folder])
    backups = [b for b in listing.backups() if b.base_backup is not None]
    backup = next(b for b in backups if key_part in b.base_backup.path.name) if key_part else backups[-1]
    rundir = pg_run.rundir / f"ev-{time.monotonic_ns()}"
    rundir.mkdir()
    store = EvidenceStore(rundir)
    cache = RestoreCache(LocalProvider(pg_run), store, 2, progress=reporter, physical=lambda b: kwargs)
    return cache, cache.get(backup)


def test_base_backups_and_their_archive_are_found_by_content(shop: Shop) -> None:
    listing = discover([shop.backups])
    assert [s.name for s in listing.series] == ["shop"]
    backups = listing.series[0].backups
    assert [b.base_backup.path.name for b in backups] == ["nightly-a", "nightly-b"]
    assert {b.format_summary() for b in backups} == {
        "basebackup", "basebackup in gzip"}
    assert all(b.base_backup.wal_archive == shop.primary.archive for b in backups)
    assert all(b.time_source == "header" for b in backups)  # backup_label's START TIME, not a name


@pytest.mark.parametrize("which", ["nightly-a", "nightly-b"])
def test_recovery_replays_the_archive_to_its_end(pg_run: ClusterFactory, shop: Shop, which: str) -> None:
    said: list[str] = []
    cache, db = recover(pg_run, shop.backups, which, reporter=Reporter(said.append, 0.05, 0.02))
    try:
        assert said and all(line.startswith(f"restoring {db.backup.key}: ") for line in said), said
        assert {line.split(": ", 1)[1].split(",")[0] for line in said} & {"unpack base backup", "WAL replay"}, said
        assert not db.result.errors and not db.result.aborted, db.result.report()
        assert db.main_db == "shop"
        assert db.row_counts()["public.orders"] == shop.rows_at["end"]
        assert db.replayed >= 2
        assert {"unpack base backup", "staging WAL (beside the replay)", "WAL replay and promotion"} <= set(db.phases)
        with db.target.admin() as conn:  # containment: none of the source's own settings
            assert conn.execute("show archive_mode").fetchone()[0] == "off"
            assert conn.execute("show listen_addresses").fetchone()[0] == ""
    finally:
        cache.close(last=True)


def test_wal_is_staged_beside_the_replay_never_far_ahead_of_it(shop: Shop, tmp_path: Path) -> None:
    """The stager keeps at most `lead` segments the server has not taken (a hard link from pg_wal takes one), so a
    recovery that stops early stops the copying; a name it will not bring is refused at once by the script."""
    archive = basebackup.read_archive(shop.primary.archive)
    first = archive.segments[0].name
    stager = recovery.Stager(archive, first, tmp_path / "wal", tmp_path / "data", None, lead=2)
    stager.prepare()
    assert (tmp_path / "wal" / ".expected").read_text().split() == [s.name for s in archive.segments if not s.partial]
    stager.start()
    try:
        pg_wal = tmp_path / "pg_wal"
        pg_wal.mkdir()
        names = (tmp_path / "wal" / ".expected").read_text().split()
        assert len(names) >= 4
        for _ in range(500):  # a loaded machine: up to 10 s
            if stager.staged == 2:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        assert stager.staged == 2  # two ahead, and no further while the server takes none
        ran = subprocess.run([str(stager.script), names[0], str(pg_wal / "RECOVERYXLOG")], timeout=10)
        assert ran.returncode == 0 and (pg_wal / "RECOVERYXLOG").stat().st_nlink == 2
        for _ in range(500):
            if stager.staged == 3:
                break
            time.sleep(0.02)
        assert stager.staged == 3
        ran = subprocess.run([str(stager.script), "00000002.history", str(pg_wal / "RECOVERYHISTORY")], timeout=10)
        assert ran.returncode == 1 and not (pg_wal / "RECOVERYHISTORY").exists()
    finally:
        stager.stop()
    assert (tmp_path / "wal" / ".end").exists()
    ran = subprocess.run([str(stager.script), names[-1], str(tmp_path / "late")], timeout=10)
    assert ran.returncode == 1  # stopped before it was staged: refused, not waited for


def test_segments_of_two_timelines_are_staged_in_the_order_the_server_asks(shop: Shop, tmp_path: Path) -> None:
    """After a promotion the archive holds timeline 1 beyond the switch and timeline 2 from it: staged by position
    in the WAL, each timeline's copy side by side, so a lead of two never waits on timeline 1's later segments
    while the server asks for timeline 2's."""
    archive = tmp_path / "archive"
    archive.mkdir()
    source = sorted(p for p in shop.primary.archive.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name))[0]
    for timeline, numbers in ((1, range(2, 7)), (2, range(4, 7))):
        for n in numbers:
            shutil.copyfile(source, archive / f"{timeline:08X}00000000{n:08X}")
    wal = basebackup.read_archive(archive)
    stager = recovery.Stager(wal, "000000010000000000000002", tmp_path / "wal", tmp_path / "data", None, lead=2)
    assert [s.name[7] + s.name[-1] for s in stager.segments] == ["12", "13", "14", "24", "15", "25", "16", "26"]


def test_a_segment_that_cannot_be_read_stops_the_recovery_with_its_name(pg_run: ClusterFactory, shop: Shop,
                                                                       tmp_path: Path) -> None:
    backups = copy_of(shop, tmp_path)
    archive = next(p for p in backups.iterdir() if p.name.startswith("wal-"))
    broken = sorted(p for p in archive.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name))[-1]
    broken.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 100)  # compressed, by its bytes, and unreadable
    cache, db = recover(pg_run, backups, "nightly-b")
    try:
        said = db.result.report()
        assert any("recovery stopped where the archive could not be read" in e.message and broken.name in e.message
                   for e in db.result.errors), said
    finally:
        cache.close(last=True)


def test_recovery_to_a_moment_keeps_what_came_before_it_only(pg_run: ClusterFactory, shop: Shop) -> None:
    cache, db = recover(pg_run, shop.backups, "nightly-b", target=RecoveryTarget(shop.moment))
    try:
        assert not db.result.errors, db.result.report()
        assert db.row_counts()["public.orders"] == shop.rows_at["moment"]
    finally:
        cache.close(last=True)


@pytest.mark.parametrize("how", ["cli-moment", "config-restore-point"])
def test_the_suites_recover_to_the_target_asked(run_suites, shop: Shop, tmp_path: Path, how: str) -> None:
    """--recover-to a moment, or a series' recover_to naming a restore point: the rows after it are not there."""
    counted = ('[[series.shop.invariants]]\nname = "orders"\nsql = "SELECT count(*) FROM public.orders"\n'
               f'expect = {shop.rows_at["moment"]}\n')
    args = ["--backups", str(copy_of(shop, tmp_path)), "-m", "restore or invariants", "--now", _suite_now(shop)]
    if how == "cli-moment":
        run = run_suites(*args, "--recover-to", f"{shop.moment:%Y-%m-%d %H:%M:%S}Z", config=counted)
    else:
        run = run_suites(*args, config='[series.shop]\nrecover_to = "name:before-batch-4"\n' + counted)
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    assert any(n.startswith("test_invariant_holds") and v == "passed" for n, v in run.outcomes.items())


def test_a_moment_the_archive_does_not_reach_fails_the_restore(pg_run: ClusterFactory, shop: Shop) -> None:
    later = datetime.now(UTC) + timedelta(days=2)
    cache, db = recover(pg_run, shop.backups, "nightly-b", target=RecoveryTarget(later))
    try:
        assert db.result.aborted
        assert any("recovery ended before configured recovery target was reached" in e.message
                   for e in db.result.errors), db.result.report()
    finally:
        cache.close(last=True)


def _suite_now(shop: Shop) -> str:
    return (datetime.now(UTC) + timedelta(minutes=10)).isoformat()


def test_every_family_passes_on_a_clean_physical_series(run_suites, shop: Shop, tmp_path: Path) -> None:
    folder = copy_of(shop, tmp_path)
    run = run_suites("--backups", str(folder), "--restore", "all", "--now", _suite_now(shop),
                     config='[series.shop]\ncritical_tables = { "public.orders" = 2300 }\nrecovery_window = "1m"\n'
                            'rpo = "26h"\n')
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    ids = set(run.outcomes)
    # the tar+gzip base backup after a plain one: no size of its kind before it (it was a false alarm)
    sizes = sorted(n for n in ids if n.startswith("test_backup_size_is_within"))
    assert [run.outcomes[n] for n in sizes] == ["skipped", "skipped"]
    assert "written as basebackup in gzip" in run.messages[sizes[1]], run.messages[sizes[1]]
    for name in ("test_wal_archive_has_no_gap[shop]", "test_newest_wal_is_within_rpo[shop]",
                 "test_recovery_window_is_kept[shop]"):
        assert run.outcomes[name] == "passed", name
    pages = [n for n in ids if n.startswith("test_recovered_pages_are_intact")]
    assert pages and all(run.outcomes[n] == "passed" for n in pages)
    assert all(run.outcomes[n] == "passed" for n in ids if n.startswith("test_critical_tables_meet"))
    assert all(run.outcomes[n] == "passed" for n in ids if n.startswith("test_restores_without_harmful_errors"))
    assert not any(n.startswith("test_wal") for n in ids if "[" in n and "-" in n.split("[", 1)[1])


def test_a_missing_segment_is_named_with_the_window_it_cost(run_suites, shop: Shop, tmp_path: Path) -> None:
    folder = copy_of(shop, tmp_path)
    archive = folder / shop.primary.archive.name
    wal = basebackup.read_archive(archive)
    newest_start = basebackup.read(folder / "shop" / "nightly-b").start_segment
    # a segment after the newest base backup's start: every base backup's chain to the present is broken
    candidates = [s for s in wal.segments if s.number > wal.number(newest_start) and s.number < wal.newest.number]
    missing = candidates[0]
    missing.path.unlink()
    old = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    for s in wal.segments:
        if s.number < missing.number and s.path.exists():
            os.utime(s.path, (old, old))
    # under -n 2: the workers read the listing the controller wrote, WAL archive included
    run = run_suites("--backups", str(folder), "--now", _suite_now(shop), "-n", "2",
                     config='[series.shop]\nrpo = "26h"\n')
    gap = run.messages["test_wal_archive_has_no_gap[shop]"]
    assert run.outcomes["test_wal_archive_has_no_gap[shop]"] == "failed"
    assert f"segment {missing.name} is missing" in gap and "Unrecoverable window" in gap
    restore = [n for n in run.outcomes if n.startswith("test_restores_without_harmful_errors")]
    assert restore and run.outcomes[restore[0]] == "failed"
    assert missing.name in run.messages[restore[0]]
    assert run.outcomes["test_newest_wal_is_within_rpo[shop]"] == "failed"


def test_an_archive_that_stopped_while_base_backups_go_on_fails_freshness(run_suites, shop: Shop,
                                                                          tmp_path: Path) -> None:
    folder = copy_of(shop, tmp_path)
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for f in (folder / shop.primary.archive.name).iterdir():
        os.utime(f, (old, old))
    run = run_suites("--backups", str(folder), "--now", _suite_now(shop), "-m", "physical or freshness",
                     config='[series.shop]\nrpo = "26h"\n')
    assert run.outcomes["test_newest_backup_is_within_rpo[shop]"] == "passed"  # the base backups are fresh
    assert run.outcomes["test_newest_wal_is_within_rpo[shop]"] == "failed"
    assert "the WAL archive stopped" in run.messages["test_newest_wal_is_within_rpo[shop]"]
    assert "3d" in run.messages["test_newest_wal_is_within_rpo[shop]"]


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_flipped_byte_in_a_table_page_is_caught_naming_it(run_suites, pg_run: ClusterFactory, shop: Shop,
                                                             tmp_path: Path) -> None:
    folder = copy_of(shop, tmp_path)
    backup = folder / "shop" / "nightly-a"
    shutil.rmtree(folder / "shop" / "nightly-b")
    # the static table's file, as the backup's own catalog names it (asked of a recovered copy)
    cache, db = recover(pg_run, folder)
    try:
        with db.connect_checks() as conn:
            relfile = conn.execute("select pg_relation_filepath('public.static')").fetchone()[0]
    finally:
        cache.close(last=True)
    _flip(backup / relfile, 8192 - 300)  # inside a tuple of the first page, far from its header
    run = run_suites("--backups", str(folder), "--now", _suite_now(shop), "-m", "integrity or physical or restore")
    name = next(n for n in run.outcomes if n.startswith("test_every_artifact_is_complete_and_readable"))
    assert run.outcomes[name] == "failed"
    assert relfile in run.messages[name] and "checksum" in run.messages[name]
    # Without the manifest, the recovered cluster's own checks see it, naming the table
    (backup / "backup_manifest").unlink()
    run = run_suites("--backups", str(folder), "--now", _suite_now(shop), "-m", "integrity or physical or restore")
    pages = next(n for n in run.outcomes if n.startswith("test_recovered_pages_are_intact"))
    assert run.outcomes[pages] == "failed", run.messages[pages]
    assert "static" in run.messages[pages]


def test_a_tar_base_backup_is_verified_in_the_recoverys_folder_and_unpacked_once(pg_run: ClusterFactory, shop: Shop,
                                                                                   tmp_path: Path, monkeypatch) -> None:
    """A tar base backup the run recovers is verified in the recovery's data directory, unpacked and untouched,
    and the integrity check takes that result: each tar is unpacked once (twice before: the check unpacked its
    own copy); what pg_verifybackup finds there is still the integrity check's finding."""
    from backupcheck.restore import recovery

    extracted: list[str] = []
    real = recovery._extract
    monkeypatch.setattr(recovery, "_extract", lambda tar, into: (extracted.append(tar.name), real(tar, into))[1])
    verify = EvidenceStore.verify_unpacked
    monkeypatch.setattr(EvidenceStore, "verify_unpacked", lambda *a: (time.sleep(1.0), verify(*a))[1])  # a slow one
    cache, db = recover(pg_run, shop.backups, "nightly-b")
    monkeypatch.setattr(EvidenceStore, "verify_unpacked", verify)
    try:
        assert not db.result.errors and db.phases["verify base backup"] >= 1.0, db.phases
        assert db.result.seconds < sum(db.phases.values()) - 0.9, "the time to recover leaves the verification out"
        ev = cache.store.inspect(db.backup.base_backup)
        assert not ev.problems and any("every file matches backup_manifest" in n for n in ev.checksum_ok), ev
        assert sorted(extracted) == ["base.tar.gz", "pg_wal.tar.gz"], extracted
        assert db.row_counts()["public.orders"] == shop.rows_at["end"]
    finally:
        cache.close(last=True)
    folder = copy_of(shop, tmp_path)
    manifest = folder / "shop" / "nightly-b" / "backup_manifest"
    text = manifest.read_text()
    assert '"Path": "PG_VERSION", "Size": 3,' in text
    manifest.write_text(text.replace('"Path": "PG_VERSION", "Size": 3,', '"Path": "PG_VERSION", "Size": 4,'))
    extracted.clear()
    cache, db = recover(pg_run, folder, "nightly-b")
    try:
        ev = cache.store.inspect(db.backup.base_backup)
        assert ev.problems and all("nightly-b: pg_verifybackup: " in p for p in ev.problems), ev.problems
        assert sorted(extracted) == ["base.tar.gz", "pg_wal.tar.gz"], extracted
    finally:
        cache.close(last=True)


def test_pg_amcheck_says_what_it_covered_and_what_its_budget_left(pg_run: ClusterFactory, shop: Shop) -> None:
    """Within its budget: every table and index, counted; a budget that runs out names the tables not reached,
    largest first (a passing check must not read as 'all checked' when it was not)."""
    cache, db = recover(pg_run, shop.backups)
    try:
        problems, covered = recovery.amcheck(db.target, db.result.databases, 300)
        assert problems == [] and re.fullmatch(r"every table and B-tree index \(\d+\) of 2 database\(s\)", covered), \
            covered
        assert int(covered.split("(")[1].split(")")[0]) > 100  # the catalogs too
        problems, covered = recovery.amcheck(db.target, db.result.databases, 0.001)
        assert "stopped after its time budget" in covered and "not reached: shop.public.orders, shop.public.static" \
            in covered, covered
    finally:
        cache.close(last=True)


def test_the_backups_own_settings_never_run(pg_run: ClusterFactory, shop: Shop, tmp_path: Path) -> None:
    folder = copy_of(shop, tmp_path)
    marker = tmp_path / "ran"
    backup = folder / "shop" / "nightly-a"
    shutil.rmtree(folder / "shop" / "nightly-b")
    (backup / "postgresql.auto.conf").write_text(
        f"archive_mode = on\narchive_command = 'touch {marker}'\nshared_preload_libraries = 'no_such_library'\n"
        "listen_addresses = '*'\n")
    cache, db = recover(pg_run, folder)
    try:
        assert not db.result.errors, db.result.report()
        with db.target.admin() as conn:
            conn.execute("select pg_switch_wal()")
            assert conn.execute("show archive_mode").fetchone()[0] == "off"
            assert conn.execute("show archive_command").fetchone()[0] in ("", "(disabled)")
            assert conn.execute("show shared_preload_libraries").fetchone()[0] == ""
        assert any("event trigger" in s for s in db.skipped)
        problems, _ = recovery.amcheck(db.target, db.result.databases, 300)  # CREATE EXTENSION: fires DDL triggers
        assert not problems, problems
    finally:
        cache.close(last=True)
    assert not marker.exists()


# --- pgBackRest: a stanza archived by archive-push, a full and an incremental backup -----------------------------


@dataclass
class Stanza:
    repo: Path
    rows: int


@pytest.fixture(scope="module")
def stanza(pg_run: ClusterFactory) -> Iterator[Stanza]:
    needed("pgbackrest", "pgbackrest", "apt-get install pgbackrest")
    inst = pgbin.pick(None)
    home = pg_run.rundir / "stanza"
    home.mkdir()
    primary = Primary(inst, home)
    repo = home / "backups" / "nightly-repo"  # any name: a repository is found by what it holds
    conf = home / "pgbackrest.conf"
    conf.write_text(f"[global]\nrepo1-path={repo}\nlog-path={home}\nlock-path={home}\nlog-level-console=warn\n"
                    f"log-level-file=off\nstart-fast=y\nrepo1-retention-full=9\n[shop]\npg1-path={primary.data}\n"
                    f"pg1-socket-path={home}\npg1-user=postgres\n")
    primary.archive_command = f"pgbackrest --config={conf} --stanza=shop archive-push %p"
    try:
        primary.start()
        repo.mkdir()
        user = server_user()
        if user:
            os.chown(repo, *user)
        rest = ["pgbackrest", f"--config={conf}", "--stanza=shop"]
        primary.run(*rest, "stanza-create")
        primary.sql("create table orders (id int primary key, created_at timestamptz default now()); "
                    "insert into orders(id) select generate_series(1, 1000)")
        primary.run(*rest, "--type=full", "backup")
        time.sleep(1.1)
        primary.sql("insert into orders(id) select generate_series(1001, 1500)")
        primary.run(*rest, "--type=incr", "backup")
        primary.sql("insert into orders(id) select generate_series(1501, 1800)")
        primary.switch_pushed(rest)
        primary.stop()
        yield Stanza(repo, 1800)
    finally:
        primary.stop()


def test_a_pgbackrest_stanza_is_a_series_of_its_backups(stanza: Stanza) -> None:
    listing = discover([stanza.repo.parent])
    assert not listing.problems
    assert [s.name for s in listing.series] == ["shop"]
    notes = [b.base_backup.note for b in listing.series[0].backups]
    assert len(notes) == 2 and "full backup" in notes[0] and "incr backup" in notes[1], notes


def test_the_newest_pgbackrest_backup_recovers_and_every_family_passes(run_suites, stanza: Stanza,
                                                                        tmp_path: Path) -> None:
    run = run_suites("--backups", str(stanza.repo.parent), "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
                     config=f'[series.shop]\ncritical_tables = {{ "public.orders" = {stanza.rows} }}\n')
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet", "test_recovered_pages_are_intact",
                   "test_every_artifact_is_complete_and_readable"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), prefix
    assert run.outcomes["test_wal_archive_has_no_gap[shop]"] == "passed"


def test_pgbackrest_verify_errors_are_findings(run_suites, stanza: Stanza, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(stanza.repo, repo, symlinks=True)
    full = sorted((repo / "backup" / "shop").glob("*F"))[0]
    target = max((p for p in (full / "pg_data" / "base").rglob("*.gz")), key=lambda p: p.stat().st_size)
    _flip(target, target.stat().st_size // 2)
    run = run_suites("--backups", str(repo), "-m", "integrity")
    failed = [n for n in run.failed() if n.startswith("test_every_artifact_is_complete_and_readable")]
    assert failed, run.stdout[-3000:]
    assert "invalid checksum" in run.messages[failed[0]] and target.name in run.messages[failed[0]]


def _majors() -> list[int]:
    return sorted({i.major for i in pgbin.installations()})


@pytest.mark.parametrize("major", _majors())
def test_each_major_here_recovers_its_own_base_backups(pg_run: ClusterFactory, major: int) -> None:
    """A tar base backup (gzip, -X stream) of each major version installed, with a tablespace in it: its WAL archive
    is recognised by the header of that version's segments, pg_verifybackup of that version passes, the server of
    that version recovers it, the tablespace's rows in a folder of the recovery's own."""
    inst = max((i for i in pgbin.installations() if i.major == major), key=lambda i: i.minor)
    primary, space = _primary_with_a_tablespace(pg_run, inst, f"major-{major}")
    try:
        primary.base_backup("b1", "-Ft", "-z", "-X", "stream")
        primary.sql("insert into t select generate_series(501, 700)")
        primary.switch()
        primary.stop()
        assert basebackup.read_archive(primary.archive).major == major
        cache, db = recover(pg_run, primary.base)
        try:
            ev = db.store.inspect(db.backup.base_backup)
            assert not ev.problems, ev.problems
            assert db.target.server_version.split(".")[0] == str(major)
            _assert_tablespace_recovered(db)
        finally:
            cache.close(last=True)
    finally:
        primary.stop()


def _primary_with_a_tablespace(pg_run: ClusterFactory, inst: pgbin.Installation, name: str) -> tuple[Primary, Path]:
    """A started primary with tablespace ``fast`` (in home/space) holding table t of 500 rows."""
    home = pg_run.rundir / name
    home.mkdir()
    primary = Primary(inst, home)
    try:
        primary.start()
        space = home / "space"
        space.mkdir()
        user = server_user()
        if user:
            os.chown(space, *user)
        primary.sql(f"create tablespace fast location '{space}'")
        primary.sql("create table t (id int primary key) tablespace fast; insert into t select generate_series(1, 500)")
    except BaseException:
        primary.stop()
        raise
    return primary, space


def _assert_tablespace_recovered(db) -> None:  # type: ignore[no-untyped-def]
    """The recovery replayed the rows added after the backup (700), and tablespace fast is in its own folder."""
    assert not db.result.errors and not db.result.aborted, db.result.report()
    assert db.row_counts()["public.t"] == 700
    with db.target.admin() as conn:
        location = conn.execute("select pg_tablespace_location(oid) from pg_tablespace "
                                "where spcname = 'fast'").fetchone()[0]
    assert location.startswith(str(db.target.cluster.home)), location


def test_a_plain_backup_carrying_its_tablespace_beside_its_data_recovers(pg_run: ClusterFactory) -> None:
    """pg_basebackup -Fp -T into the backup's own folder (Barman's postgres method does this), in a folder named
    for the night: the series is the folder above the nights; the tablespace is copied into the recovery's folder
    and its rows are there; the backup's files are never written."""
    inst = pgbin.pick(None)
    primary, space = _primary_with_a_tablespace(pg_run, inst, "plain-space")
    try:
        folder = primary.base / "20261206T020000"
        folder.mkdir()
        user = server_user()
        if user:
            os.chown(folder, *user)
        primary.run(inst.tool("pg_basebackup"), "-h", str(primary.home), "-U", "postgres", "-D", str(folder / "data"),
                    "-c", "fast", "-X", "fetch", "-T", f"{space}={folder / 'fast'}")
        primary.sql("insert into t select generate_series(501, 700)")
        primary.switch()
        primary.stop()
        before = sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))
        listing = discover([primary.base.parent])  # backups/shop/<night>/data, the archive in backups/wal-of-shop
        assert [(s.name, len(s.backups)) for s in listing.series] == [("shop", 1)], listing.series
        assert listing.series[0].backups[0].base_backup.wal_archive == primary.archive
        cache, db = recover(pg_run, primary.base)
        try:
            _assert_tablespace_recovered(db)
        finally:
            cache.close(last=True)
        assert sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) == before
    finally:
        primary.stop()


def test_a_recovery_target_that_does_not_parse_is_a_usage_error(run_suites, tmp_path: Path) -> None:
    run = run_suites("--backups", str(tmp_path), "--recover-to", "yesterday at noon")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "recover_to = 'yesterday at noon': expected a moment with its offset" in run.stdout


def test_hostile_cut_and_linked_base_backups_fail_with_a_sentence(run_suites, shop: Shop, tmp_path: Path) -> None:
    """A tar whose member climbs out of the data directory, a plain backup with a symbolic link to the host's files,
    and a real tar backup cut in half: each a failed check with a sentence, nothing written outside, no traceback,
    the sources unchanged."""
    import gzip
    import io
    import tarfile

    root = tmp_path / "backups"
    label = (b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIME: 2026-12-07 10:00:00 UTC\n"
             b"START TIMELINE: 1\n")
    escape = root / "escape" / "b1"
    escape.mkdir(parents=True)
    buf = io.BytesIO()
    outside = tmp_path / "escaped"
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("backup_label", label), ("PG_VERSION", b"15\n"),
                           ("../" * 12 + str(outside).lstrip("/"), b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (escape / "base.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    linked = root / "linked" / "b1"
    linked.mkdir(parents=True)
    (linked / "PG_VERSION").write_text("15\n")
    (linked / "backup_label").write_bytes(label)
    (linked / "pg_tblspc").mkdir()
    (linked / "pg_tblspc" / "16400").symlink_to("/etc")
    cut = root / "cut" / "b1"
    shutil.copytree(shop.backups / "shop" / "nightly-b", cut)
    whole = (cut / "base.tar.gz").read_bytes()
    (cut / "base.tar.gz").write_bytes(whole[: len(whole) // 2])
    before = {p: p.stat().st_mtime for p in root.rglob("*")}
    run = run_suites("--backups", str(root), "-m", "integrity or restore")
    assert "Traceback" not in run.stdout and "INTERNALERROR" not in run.stdout, run.stdout[-3000:]
    restores = {n.split("[", 1)[1].split("-", 1)[0]: n for n in run.outcomes
                if n.startswith("test_restores_without_harmful_errors")}
    assert set(restores) == {"escape", "linked", "cut"}, run.outcomes
    assert all(run.outcomes[n] == "failed" for n in restores.values()), {n: run.outcomes[n] for n in restores.values()}
    assert "outside the destination" in run.messages[restores["escape"]]
    assert "symbolic links" in run.messages[restores["linked"]]
    integrity = next(n for n in run.outcomes if n.startswith("test_every_artifact_is_complete_and_readable[cut"))
    assert run.outcomes[integrity] == "failed", run.messages[integrity]
    assert not outside.exists()
    assert {p: p.stat().st_mtime for p in root.rglob("*")} == before


def test_a_repository_without_the_pgbackrest_binary_is_a_finding(run_suites, stanza: Stanza, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python3",):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    run = run_suites("--backups", str(stanza.repo.parent), "-m", "integrity")
    assert run.outcomes["test_every_source_holds_readable_backups"] == "failed"
    assert "pgbackrest is not installed here" in run.messages["test_every_source_holds_readable_backups"]


def test_a_physical_backup_recovers_on_this_machine_whatever_the_provider(pg_run: ClusterFactory, shop: Shop) -> None:
    """With --pg-provider dsn (a given server restores dumps), a base backup is still recovered in a disposable
    data directory here, and the given server is left alone."""
    from backupcheck.restore.providers import DsnProvider

    with pg_run.cluster(pgbin.pick(None)) as given:
        info = given.conninfo()
        dsn = f"host={info['host']} port={info['port']} user={info['user']} dbname=postgres"
        with psycopg.connect(dsn) as conn:
            before = {r[0] for r in conn.execute("select datname from pg_database")}
        listing = discover([shop.backups])
        backup = listing.series[0].newest
        rundir = pg_run.rundir / f"ev-{time.monotonic_ns()}"
        rundir.mkdir()
        cache = RestoreCache(DsnProvider(dsn), EvidenceStore(rundir), 2, physical=lambda b: {"factory": pg_run})
        try:
            db = cache.get(backup)
            assert not db.result.errors, db.result.report()
            assert db.row_counts()["public.orders"] == shop.rows_at["end"]
            assert "recovered cluster" in db.target_label
        finally:
            cache.close(last=True)
        with psycopg.connect(dsn) as conn:
            assert {r[0] for r in conn.execute("select datname from pg_database")} == before


def test_a_major_with_no_local_binaries_recovers_in_its_container_image(run_suites, docker_images, shop: Shop,
                                                                        tmp_path: Path) -> None:
    """Only another major's binaries may serve (--pg-bin-only): the base backup's major is recovered, verified and
    checked by pg_amcheck from its container image (no network, the recovery's folder mounted), and no container
    outlives the run. Without an image of it: the finding names what to install or configure."""
    from backupcheck.servers.containers import LABEL, docker_client

    major = basebackup.read(shop.backups / "shop" / "nightly-a").major
    other = next((i for i in pgbin.installations() if i.major != major), None)
    if other is None:
        pytest.skip(f"only PostgreSQL {major} is installed here: no other major to restrict the run to")
    backups = copy_of(shop, tmp_path)
    args = ("--backups", str(backups), "--pg-bin", str(other.bindir), "--pg-bin-only",
            "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat())
    series = f'[series.shop]\ncritical_tables = {{ "public.orders" = {shop.rows_at["end"]} }}\n'
    run = run_suites(*args, config=f'[container]\nimage = "backupcheck/postgres:{{major}}"\n{series}')
    failed = run.failed() - {n for n in run.failed() if n.startswith("test_backup_size_is_within")}  # plain vs tar.gz
    assert not failed, {n: run.messages[n] for n in failed}
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet", "test_recovered_pages_are_intact",
                   "test_every_artifact_is_complete_and_readable"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), (prefix, run.outcomes)
    assert f"in container image backupcheck/postgres:{major}" in (run.reports / "results.json").read_text()
    client = docker_client()
    try:
        left = [c.name for c in client.containers.list(all=True, filters={"label": f"{LABEL}.run=tool"})]
    finally:
        client.close()
    assert left == []
    run = run_suites(*args, "-m", "restore", config=f'[container]\nimage = "backupcheck/none-such:{{major}}"\n{series}')
    message = run.messages[next(n for n in run.failed() if n.startswith("test_restores_without_harmful_errors"))]
    assert f"recovers only on a PostgreSQL {major} server" in message and "backupcheck/none-such" in message, message


# --- Barman: barman-cloud-backup and barman-cloud-wal-archive into S3 (moto's server over real HTTP) ------------


def test_a_barman_cloud_backup_in_s3_is_found_recovered_and_judged(run_suites, pg_run: ClusterFactory, bucket,
                                                                   s3_endpoint: str, tmp_path: Path) -> None:
    needed("barman-cloud-backup", "barman", "pip install barman", beside_python=True)
    name, writer = bucket
    tools = Path(sys.executable).parent
    inst = pgbin.pick(None)
    home = pg_run.rundir / f"barman-{time.monotonic_ns()}"
    home.mkdir()
    primary = Primary(inst, home)
    source = f"s3://{name}/pg"
    cloud = ["--cloud-provider", "aws-s3", "--endpoint-url", s3_endpoint]
    try:
        primary.start()
        primary.sql("create table orders (id int primary key); insert into orders select generate_series(1, 1000)")
        primary.switch()
        subprocess.run([str(tools / "barman-cloud-backup"), *cloud, "-h", str(home), "-U", "postgres", source, "shop"],
                       check=True, capture_output=True, text=True)
        primary.sql("insert into orders select generate_series(1001, 1400)")
        primary.switch()
        primary.stop()
        for wal in sorted(primary.archive.iterdir()):  # what archive_command = barman-cloud-wal-archive sends
            subprocess.run([str(tools / "barman-cloud-wal-archive"), *cloud, source, "shop", str(wal)],
                           check=True, capture_output=True, text=True)
    finally:
        primary.stop()
    config = (f'[s3]\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\n'
              '[series.shop]\ncritical_tables = { "public.orders" = 1400 }\n')
    run = run_suites("--backups", source, "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
                     config=config)
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet", "test_recovered_pages_are_intact",
                   "test_every_artifact_is_complete_and_readable", "test_wal_archive_has_no_gap"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), prefix
    assert "barman" in run.stdout
    # A WAL segment lost from the bucket after the backup: the gap is named, and recovery stops before it
    keys = sorted(o["Key"] for o in writer.list_objects_v2(Bucket=name, Prefix="pg/shop/wals/")["Contents"]
                  if re.search(r"/[0-9A-F]{24}$", o["Key"]))
    lost = keys[-2]
    writer.delete_object(Bucket=name, Key=lost)
    run = run_suites("--backups", source, "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
                     config=config)
    gap = run.messages.get("test_wal_archive_has_no_gap[shop]", "")
    assert run.outcomes["test_wal_archive_has_no_gap[shop]"] == "failed" and lost.rsplit("/", 1)[-1] in gap, gap


def test_plain_and_tar_base_backups_and_their_wal_under_an_s3_prefix(run_suites, shop: Shop, bucket,
                                                                      s3_endpoint: str) -> None:
    """pg_basebackup's plain and tar outputs and the WAL archive uploaded under a prefix, file by file as a cron
    job's `aws s3 cp --recursive` would (a plain backup's empty folders are lost on the way): found in the listing,
    downloaded once, verified, each recovered to the archive's end; a segment deleted from the bucket is the
    archive's gap."""
    name, writer = bucket
    for backup, series in (("nightly-a", "plain"), ("nightly-b", "base")):
        for f in sorted((shop.backups / "shop" / backup).rglob("*")):
            if f.is_file():
                writer.upload_file(str(f), name, f"pg/{series}/{backup}/{f.relative_to(shop.backups / 'shop' / backup)}")
    for f in sorted(shop.primary.archive.iterdir()):
        writer.upload_file(str(f), name, f"pg/wal/{f.name}")
    config = (f'[s3]\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\n'
              f'[defaults]\ncritical_tables = {{ "public.orders" = {shop.rows_at["end"]} }}\n')
    now = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    run = run_suites("--backups", f"s3://{name}/pg", "--now", now, config=config)
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    restored = {n.split("[")[1].split("-")[0] for n, v in run.outcomes.items()
                if n.startswith("test_critical_tables_meet") and v == "passed"}
    assert restored == {"plain", "base"}, run.outcomes
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet", "test_recovered_pages_are_intact",
                   "test_every_artifact_is_complete_and_readable", "test_wal_archive_has_no_gap"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), (prefix, run.outcomes)
    segments = sorted(o["Key"] for o in writer.list_objects_v2(Bucket=name, Prefix="pg/wal/")["Contents"]
                      if re.search(r"/[0-9A-F]{24}$", o["Key"]))
    writer.delete_object(Bucket=name, Key=segments[-2])
    run = run_suites("--backups", f"s3://{name}/pg", "--now", now, "-m", "physical", config=config)
    assert run.outcomes["test_wal_archive_has_no_gap[base]"] == "failed"
    assert segments[-2].rsplit("/", 1)[-1] in run.messages["test_wal_archive_has_no_gap[base]"]


def test_local_base_backups_with_their_wal_under_a_configured_s3_prefix(run_suites, shop: Shop, bucket,
                                                                        s3_endpoint: str, tmp_path: Path) -> None:
    """Base backups on disk, their archive_command writing to a bucket (wal_archive = "s3://…" for the series):
    the archive is listed there, each segment the replay asks for is downloaded, every family passes; a segment
    deleted from the bucket is the gap."""
    name, writer = bucket
    folder = copy_of(shop, tmp_path)
    shutil.rmtree(folder / shop.primary.archive.name)  # the WAL lives in the bucket only
    for f in sorted(shop.primary.archive.iterdir()):
        writer.upload_file(str(f), name, f"archive/shop/{f.name}")
    config = (f'[s3]\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\n'
              f'[series.shop]\nwal_archive = "s3://{name}/archive/shop/"\n'
              f'critical_tables = {{ "public.orders" = {shop.rows_at["end"]} }}\n')
    run = run_suites("--backups", str(folder), "--restore", "all", "--now", _suite_now(shop), config=config)
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    assert run.outcomes["test_wal_archive_has_no_gap[shop]"] == "passed"
    assert [v for n, v in run.outcomes.items() if n.startswith("test_critical_tables_meet")] == ["passed", "passed"]
    segments = sorted(o["Key"] for o in writer.list_objects_v2(Bucket=name, Prefix="archive/shop/")["Contents"]
                      if re.search(r"/[0-9A-F]{24}$", o["Key"]))
    writer.delete_object(Bucket=name, Key=segments[-2])
    run = run_suites("--backups", str(folder), "--now", _suite_now(shop), "-m", "physical", config=config)
    assert run.outcomes["test_wal_archive_has_no_gap[shop]"] == "failed"
    assert segments[-2].rsplit("/", 1)[-1] in run.messages["test_wal_archive_has_no_gap[shop]"]


@pytest.mark.parametrize("method", ["lz4", "zstd"])
def test_lz4_and_zstd_tar_base_backups_recover(pg_run: ClusterFactory, method: str) -> None:
    """pg_basebackup -Ft --compress=lz4 / zstd: told by its bytes, verified, recovered."""
    inst = pgbin.pick(None)
    home = pg_run.rundir / f"compressed-{method}"
    home.mkdir()
    primary = Primary(inst, home)
    try:
        primary.start()
        primary.sql("create table t (id int primary key); insert into t select generate_series(1, 300)")
        primary.base_backup("b1", "-Ft", f"--compress={method}", "-X", "stream")
        primary.sql("insert into t select generate_series(301, 400)")
        primary.switch()
        primary.stop()
        bb = basebackup.read(primary.base / "b1")
        assert bb is not None and bb.compression == (method,), bb
        cache, db = recover(pg_run, primary.base)
        try:
            assert not db.store.inspect(db.backup.base_backup).problems
            assert not db.result.errors, db.result.report()
            assert db.row_counts()["public.t"] == 400
        finally:
            cache.close(last=True)
    finally:
        primary.stop()


@pytest.fixture
def tls_s3(s3_endpoint: str, pg_run: ClusterFactory) -> Iterator[tuple[str, Path]]:
    """moto's server behind a TLS front (socat, a certificate for localhost made here): pgBackRest's S3 client
    speaks HTTPS only. (endpoint, the certificate to trust)."""
    needed("socat", "socat", "apt-get install socat")
    from tests.conftest import free_port

    folder = pg_run.rundir / f"tls-{time.monotonic_ns()}"  # where the server's account (archive-push) reads it
    folder.mkdir()
    os.chmod(folder, 0o755)
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    both = folder / "both.pem"
    both.write_bytes(key.read_bytes() + cert.read_bytes())
    port = free_port()
    backend = s3_endpoint.rsplit(":", 1)[1]
    front = subprocess.Popen(["socat", f"OPENSSL-LISTEN:{port},reuseaddr,fork,cert={both},verify=0",
                              f"TCP:127.0.0.1:{backend}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        for _ in range(100):
            if subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        yield f"https://localhost:{port}", cert
    finally:
        os.killpg(front.pid, 15)
        front.wait(timeout=10)


def test_a_pgbackrest_repository_in_s3(run_suites, pg_run: ClusterFactory, bucket, tls_s3,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """archive-push and backup into a bucket (repo1-type=s3): the repository found in the listing, read, verified
    and recovered through pgbackrest with the source's endpoint and boto3's credentials."""
    needed("pgbackrest", "pgbackrest", "apt-get install pgbackrest")
    name, _writer = bucket
    endpoint, cert = tls_s3
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    inst = pgbin.pick(None)
    home = pg_run.rundir / f"s3-stanza-{time.monotonic_ns()}"
    home.mkdir()
    primary = Primary(inst, home)
    conf = home / "pgbackrest.conf"
    port = endpoint.rsplit(":", 1)[1]
    conf.write_text(
        f"[global]\nrepo1-type=s3\nrepo1-path=/pgbr\nrepo1-s3-bucket={name}\nrepo1-s3-endpoint=localhost\n"
        f"repo1-storage-port={port}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n"
        f"repo1-storage-ca-file={cert}\nrepo1-s3-key={os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"repo1-s3-key-secret={os.environ['AWS_SECRET_ACCESS_KEY']}\nlog-path={home}\nlock-path={home}\n"
        f"log-level-console=warn\nlog-level-file=off\nstart-fast=y\nrepo1-retention-full=9\n[shop]\n"
        f"pg1-path={primary.data}\npg1-socket-path={home}\npg1-user=postgres\n")
    primary.archive_command = f"pgbackrest --config={conf} --stanza=shop archive-push %p"
    rest = ["pgbackrest", f"--config={conf}", "--stanza=shop"]
    try:
        primary.start()
        primary.run(*rest, "stanza-create")
        primary.sql("create table orders (id int primary key); insert into orders select generate_series(1, 1000)")
        primary.run(*rest, "--type=full", "--process-max=4", "backup")
        primary.sql("insert into orders select generate_series(1001, 1200)")
        primary.switch_pushed(rest)
        primary.stop()
    finally:
        primary.stop()
    config = (f'[s3]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
              '[series.shop]\ncritical_tables = { "public.orders" = 1200 }\n')
    run = run_suites("--backups", f"s3://{name}/pgbr", "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
                     "-m", "integrity or restore or row_counts or physical", config=config)
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet",
                   "test_every_artifact_is_complete_and_readable", "test_wal_archive_has_no_gap"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), (prefix, run.outcomes)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in run.stdout


def test_a_remote_plain_base_backup_is_one_backup_and_its_keys_stay_inside_it() -> None:
    """A plain data directory under a prefix is one base backup (its pg_wal is no WAL archive of its own), the
    archive beside its folder is found; a key that would climb out of the folder is refused, not written."""
    from backupcheck.sources.s3 import RemoteObject

    when = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    keys = ["pg/plain/n1/backup_label", "pg/plain/n1/PG_VERSION", "pg/plain/n1/base/1/1259",
            "pg/plain/n1/pg_wal/000000010000000000000002", "pg/wal/000000010000000000000002",
            "pg/wal/000000010000000000000003"]
    objects = [RemoteObject("b", k, 8192, when, "e") for k in keys]
    found, consumed = basebackup.remote_layout(objects)
    assert [(r.folder, r.plain, r.wal_folder, len(r.others)) for r in found] == [("pg/plain/n1/", True, "pg/wal/", 3)]
    assert consumed == set(keys)
    folder = "s3://b/pg/plain/n1/"
    assert basebackup.member_path(folder, folder + "base/1/1259") == Path("base/1/1259")
    for hostile in ("../../etc/passwd", "base//x", "./PG_VERSION", ""):
        assert basebackup.member_path(folder, folder + hostile) is None, hostile
    assert basebackup.member_path(folder, "s3://b/pg/other/x") is None


# --- Barman: a server's own folder, written by `barman backup` (postgres method) and `barman archive-wal` -------


@dataclass
class BarmanServer:
    home: Path  # barman_home: the server's folder is home/shop
    rows: int


@pytest.fixture(scope="module")
def barman_server(pg_run: ClusterFactory) -> Iterator[BarmanServer]:
    """Two `barman backup` runs of a server archiving into Barman's incoming folder, WAL compressed by Barman
    (gzip, under the segments' own names), rows added after each backup."""
    tool = needed("barman", "barman", "pip install barman", beside_python=True)
    inst = pgbin.pick(None)
    home = pg_run.rundir / "barman-server"
    home.mkdir()
    barman_home = home / "backups" / "barman"
    incoming = barman_home / "shop" / "incoming"
    # Into the incoming folder whole or not at all (a name Barman does not take, then renamed), as rsync does:
    # Barman's archiver took a segment cp was still writing once and archived 196,608 of its 16 MiB.
    primary = Primary(inst, home, archive_command=f"test ! -f {incoming}/%f && cp %p {incoming}/.%f.part "
                                                  f"&& mv {incoming}/.%f.part {incoming}/%f")
    conf = home / "barman.conf"
    conf.write_text(f"[barman]\nbarman_home = {barman_home}\nbarman_user = {getpass.getuser()}\n"
                    f"log_file = {home}/barman.log\ncompression = gzip\n"
                    f"cloud_staging_directory = {home}/staging\n"  # its default is a folder in /tmp it leaves
                    f"[shop]\nconninfo = host={home} user=postgres dbname=postgres\n"
                    f"streaming_conninfo = host={home} user=postgres\nbackup_method = postgres\narchiver = on\n"
                    f"path_prefix = {Path(inst.tool('pg_basebackup')).parent}\n")

    def barman(*args: str) -> None:
        subprocess.run([tool, "-c", str(conf), *args], check=True, capture_output=True, text=True, timeout=300)

    try:
        primary.start()
        incoming.mkdir(parents=True)
        user = server_user()
        if user:
            for p in (barman_home, barman_home / "shop", incoming):
                os.chown(p, *user)
        primary.sql("create table orders (id int primary key, created_at timestamptz default now()); "
                    "insert into orders(id) select generate_series(1, 1000)")
        barman("switch-wal", "--force", "--archive", "shop")
        barman("backup", "--wait", "shop")
        time.sleep(1.1)  # backup ids are times to the second
        primary.sql("insert into orders(id) select generate_series(1001, 1500)")
        barman("backup", "--wait", "shop")
        primary.sql("insert into orders(id) select generate_series(1501, 1700)")
        barman("switch-wal", "--force", "--archive", "shop")
        primary.stop()
        yield BarmanServer(barman_home, 1700)
    finally:
        primary.stop()


def test_a_barman_servers_folder_is_a_series_recovered_and_judged(run_suites, barman_server: BarmanServer) -> None:
    """The server is the series, each backup one backup of it (its data folder read as a base backup, its WAL
    from wals/, gzip under the segments' own names): the newest recovers to the archive's end and every family
    passes; nothing in the folder changes."""
    listing = discover([barman_server.home])
    assert [s.name for s in listing.series] == ["shop"] and len(listing.series[0].backups) == 2, listing
    assert all("Barman backup" in b.base_backup.note for b in listing.series[0].backups)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in barman_server.home.rglob("*"))
    now = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    run = run_suites("--backups", str(barman_server.home), "--now", now,
                     config=f'[series.shop]\ncritical_tables = {{ "public.orders" = {barman_server.rows} }}\n')
    assert not run.failed(), {n: run.messages[n] for n in run.failed()}
    for prefix in ("test_restores_without_harmful_errors", "test_critical_tables_meet", "test_recovered_pages_are_intact",
                   "test_every_artifact_is_complete_and_readable", "test_wal_archive_has_no_gap"):
        assert any(n.startswith(prefix) and v == "passed" for n, v in run.outcomes.items()), (prefix, run.outcomes)
    assert sorted((str(p), p.stat().st_mtime_ns) for p in barman_server.home.rglob("*")) == before


def test_a_barman_backup_it_records_as_failed_and_a_missing_segment_are_findings(
        run_suites, barman_server: BarmanServer, tmp_path: Path) -> None:
    home = tmp_path / "barman"
    shutil.copytree(barman_server.home, home, symlinks=True)
    server = home / "shop"
    older = sorted(p.name for p in (server / "base").iterdir())[0]
    info = server / "meta" / f"{older}-backup.info"
    info = info if info.exists() else server / "base" / older / "backup.info"
    info.write_text(re.sub(r"(?m)^status=.*$", "status=FAILED", info.read_text())
                    + "error=failure copying files (rsync exited with 23)\n")
    segments = sorted(p for p in (server / "wals").rglob("*") if re.fullmatch(r"[0-9A-F]{24}", p.name))
    lost = segments[-2]
    lost.unlink()
    run = run_suites("--backups", str(home), "-m", "integrity or physical",
                     "--now", (datetime.now(UTC) + timedelta(minutes=10)).isoformat())
    failed = {n: run.messages[n] for n in run.failed()}
    integrity = [m for n, m in failed.items() if n.startswith("test_every_artifact_is_complete_and_readable")]
    assert len(integrity) == 1 and f"Barman records Barman backup {older} of server shop as FAILED" in integrity[0] \
        and "rsync exited with 23" in integrity[0], failed
    assert lost.name in failed.get("test_wal_archive_has_no_gap[shop]", ""), failed
