"""The product's suites, run end to end as a user runs them, on folders of real backups."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from backupcheck import demo
from backupcheck.servers.pgbin import installations

from . import farm as farmlib

FAMILY_TESTS = {
    "integrity": "test_every_artifact_is_complete_and_readable",
    "freshness": "test_newest_backup_is_within_rpo",
    "size": "test_backup_size_is_within_tolerance_of_usual",
    "restore": "test_restores_without_harmful_errors",
    "row_counts": "test_no_table_lost_more_rows_than_allowed_since_previous_backup",
    "relations": "test_every_foreign_key_has_no_orphans",
}
RESTORABLE_SERIES = {"shop", "scenescout_backup", "plain-backup", "pairs", "vercel", "analytics", "reports",
                     "ledger", "archive", "db_cluster", "folders-backup"}




def test_clean_backups_of_every_shape_pass_every_check(run_suites, clean_dir):
    run = run_suites("--backups", str(clean_dir))
    assert run.failed() == set(), run.stdout[-4000:]
    assert run.ret == 0
    for family, test in FAMILY_TESTS.items():
        assert any(k.startswith(test + "[") and v == "passed" for k, v in run.outcomes.items()), family
    restored = run.restores()
    assert {r["series"] for r in restored} == RESTORABLE_SERIES
    assert len(restored) == len({r["backup"] for r in restored}), "each backup is restored once"
    assert all(r["harmful_errors"] == 0 and r["seconds"] > 0 for r in restored)


def test_each_planted_fault_fails_exactly_its_check(run_suites, faulty):
    root, expected = faulty
    run = run_suites("--backups", str(root))
    want = {f"{test}[{ident}]" for test, idents in expected.items() for ident in idents}
    assert run.failed() == want, run.stdout[-4000:]
    assert run.ret == 1
    for name in want:
        ident = name.split("[", 1)[1].rstrip("]")
        message = run.messages[name]
        assert ident in message and "expected:" in message and "found:" in message, message
    assert "sample keys: 990001, 990002" in run.messages[f"test_every_foreign_key_has_no_orphans[{next(iter(expected['test_every_foreign_key_has_no_orphans']))}]"]


def test_a_parallel_run_gives_the_same_verdicts_and_restores_each_backup_once(run_suites, faulty):
    root, _ = faulty
    serial = run_suites("--backups", str(root))
    parallel = run_suites("--backups", str(root), "-n", "2")
    assert parallel.outcomes == serial.outcomes
    log = parallel.restores()
    assert sorted(r["backup"] for r in log) == sorted({r["backup"] for r in log})
    assert len({r["pid"] for r in log}) == 2, "both workers restored something"


def test_a_hostile_plain_dump_runs_nothing_and_fails_with_a_security_finding(run_suites, farm, tmp_path, marker_dir):
    marker = marker_dir / "pwned"
    root = tmp_path / "hostile"
    dumps = farmlib.build_hostile(farm, root, marker)
    # The planted dumps really are hostile: psql would run the shell command.
    psql = farm.cluster.installation.tool("psql")
    farm.sql("postgres", "create database psql_victim")
    subprocess.run([psql, "-X", "-q", "-d", "psql_victim", "-f", str(dumps["shell"])], env=farm.cluster.env(),
                   capture_output=True, timeout=120)
    assert marker.exists(), "psql ran the planted \\! line"
    marker.unlink()

    run = run_suites("--backups", str(root))
    assert not marker.exists(), "a command planted in a dump ran on the checking host"
    for kind, path in dumps.items():
        key = f"{kind}-{path.name.split('_', 1)[1].split('.')[0].replace('_', 'T')}Z"
        assert run.outcomes[f"test_dump_carries_no_commands_for_the_host[{key}]"] == "failed"
        assert "SECURITY" in run.messages[f"test_dump_carries_no_commands_for_the_host[{key}]"]
        restore = run.messages[f"test_restores_without_harmful_errors[{key}]"]
        assert "not restored" in restore, restore
    assert run.restores() == []


def test_the_demo_runs_without_configuration_and_says_it_is_a_demo(run_suites, now):
    run = run_suites()
    broken = demo.nightly_times(now)[3].strftime("%Y%m%dT%H%M%SZ")
    # The broken night, seen twice: cut off (integrity), and not the file its manifest describes (manifest).
    assert run.failed() == {f"test_every_artifact_is_complete_and_readable[shop-{broken}]",
                            f"test_artifact_matches_its_manifest[shop-{broken}]"}, run.stdout[-3000:]
    newest = demo.nightly_times(now)[-1].strftime("%Y%m%dT%H%M%SZ")
    assert run.outcomes[f"test_restore_matches_its_manifest[shop-{newest}]"] == "passed"
    assert "DEMO" in run.stdout
    report = (run.reports / "report.html").read_text()
    assert "DEMO" in report and "Backups verified" in report


def test_reports_are_written_by_default_and_self_contained(run_suites, clean_dir):
    run = run_suites("--backups", str(clean_dir / "custom"))
    html = (run.reports / "report.html").read_text()
    assert "<h2>Backups verified</h2>" in html and "shop" in html
    assert 'rel="stylesheet" href=' not in html, "the HTML report must not depend on other files"
    assert (run.reports / "junit.xml").exists()
    results = [json.loads(p.read_text()) for p in (run.reports / "allure-results").glob("*-result.json")]
    assert results
    restore = next(r for r in results if r["name"].startswith("test_restores_without_harmful_errors"))
    labels = {(label["name"], label["value"]) for label in restore["labels"]}
    assert {("feature", "restore"), ("story", "shop"), ("severity", "normal")} <= labels
    params = {p["name"]: p for p in restore["parameters"]}
    assert params["backup"].get("excluded") is True, "a dated parameter would break Allure's history"
    assert params["slot"]["value"] == "'newest'"
    assert any(a["name"] == "restore errors" for a in restore.get("attachments", []))


def test_a_truncated_archive_that_is_restored_fails_integrity_from_the_restores_own_read(run_suites, clean_dir, tmp_path):
    src = sorted((clean_dir / "custom").glob("*.dump"))[-1]
    target = tmp_path / "cut" / src.name
    target.parent.mkdir()
    data = src.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    run = run_suites("--backups", str(target.parent))
    key = f"shop-{src.name.split('_', 1)[1].split('.')[0].replace('_', 'T')}Z"
    assert run.outcomes[f"test_every_artifact_is_complete_and_readable[{key}]"] == "failed"
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "failed"
    assert len(run.restores()) == 1, "the archive was read by the restore, not a second time"


def test_a_restore_error_that_loses_a_table_fails_and_names_it_while_benign_errors_pass(run_suites, farm, tmp_path):
    """A dump needing an extension the server lacks loses its table; a GRANT to a missing role loses nothing."""
    folder = tmp_path / "errors"
    clean = farm.dump(farm.states[-1], tmp_path / "clean.sql", "plain").read_text()
    cut = clean.index("CREATE TABLE")
    lossy = (clean[:cut] + "CREATE EXTENSION IF NOT EXISTS postgis;\n"
             "CREATE TABLE public.places (id integer, area public.geometry);\n"
             "COPY public.places (id, area) FROM stdin;\n1\tPOINT(0 0)\n\\.\n\n" + clean[cut:])
    granted = clean.replace("\n--\n-- PostgreSQL database dump complete",
                            "\nGRANT SELECT ON TABLE public.users TO app_readonly;\n\n--\n-- PostgreSQL database dump complete")
    folder.mkdir()
    (folder / "maps_20250101_020000.sql").write_text(lossy)
    (folder / "grants_20250101_020000.sql").write_text(granted)
    run = run_suites("--backups", str(folder), "-k", "restore")
    maps = run.messages["test_restores_without_harmful_errors[maps-20250101T020000Z]"]
    assert run.outcomes["test_restores_without_harmful_errors[maps-20250101T020000Z]"] == "failed"
    assert "table public.places" in maps and "rows of table public.places" in maps
    assert run.outcomes["test_every_table_in_the_dump_exists_after_restore[maps-20250101T020000Z]"] == "failed"
    assert "public.places" in run.messages["test_every_table_in_the_dump_exists_after_restore[maps-20250101T020000Z]"]
    assert run.outcomes["test_restores_without_harmful_errors[grants-20250101T020000Z]"] == "passed"
    assert run.outcomes["test_every_table_in_the_dump_exists_after_restore[grants-20250101T020000Z]"] == "passed"


def test_an_archive_written_through_a_pipe_restores(run_suites, farm, tmp_path):
    proc = subprocess.run([farm.cluster.installation.tool("pg_dump"), "-Fc", farm.states[-1]],
                          stdout=subprocess.PIPE, env=farm.cluster.env(), check=True)
    folder = tmp_path / "piped"
    folder.mkdir()
    (folder / "stream_20250101_020000.dump").write_bytes(proc.stdout)
    run = run_suites("--backups", str(folder), "-k", "restore")
    assert run.outcomes["test_restores_without_harmful_errors[stream-20250101T020000Z]"] == "passed"


def test_a_dump_newer_than_every_installed_server_is_an_error_naming_where_it_looked(run_suites, clean_dir, tmp_path,
                                                                                    farm_major):
    newest = max(i.major for i in installations())
    src = sorted((clean_dir / "custom").glob("*.dump"))[-1]
    blob = src.read_bytes()
    # Claim server and pg_dump 99 in the header (same lengths): nothing here can restore it.
    old = f"{farm_major}.".encode()
    assert old in blob[:200]
    blob = blob[:200].replace(old, b"99.") + blob[200:]
    folder = tmp_path / "future"
    folder.mkdir()
    (folder / src.name).write_bytes(blob)
    run = run_suites("--backups", str(folder), "-k", "test_restores_without_harmful_errors")
    outcome = next(iter(run.outcomes.values()))
    message = next(iter(run.messages.values()))
    assert outcome == "error"
    assert ">= 99" in message and "Places looked" in message and f"PostgreSQL {newest}" in message


def test_the_issue_command_line_finds_the_project_and_leaves_the_backups_untouched(clean_dir, tmp_path):
    """`pytest --backups DIR` from the checkout, the value separated by a space, as users type it."""
    import hashlib
    import os
    import sys

    from .conftest import REPO

    folder = tmp_path / "mine"
    folder.mkdir()
    src = sorted((clean_dir / "custom").glob("*.dump"))[-1]
    (folder / src.name).write_bytes(src.read_bytes())
    (folder / "reports").mkdir()  # a reports folder nested in a source is not a backup
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
    env = {**os.environ, "PYTEST_ADDOPTS": ""}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--backups", str(folder), "--reports-dir",
                           str(folder / "reports"), "-k", "restore"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert f"rootdir: {REPO}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "tests/" not in proc.stdout.split("backups verified")[0], "only the suites are collected"
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    assert after == before, "source artifacts are never modified"
    assert (folder / "reports" / "report.html").exists()


def test_a_newer_pg_dump_of_a_15_20_server_is_caught_unrestorable(run_suites, farm, tmp_path):
    """Debian's 15.20 keeps a pg_attver option on every column; pg_dump 16 dumps it, and 16 rejects it."""
    probe = farm.cluster.installation
    db = farm.clone(farm.states[-1], "attver")  # the shared nights stay as other tests dump them
    farm.sql(db, "create table attver_probe (id int)")
    with __import__("psycopg").connect(**farm.cluster.conninfo(db)) as conn:
        options = conn.execute("select attoptions from pg_attribute where attrelid = 'attver_probe'::regclass "
                               "and attnum > 0").fetchone()[0]
    if not options or not any(o.startswith("pg_attver=") for o in options):
        pytest.skip(f"PostgreSQL {probe.version} keeps no pg_attver column option")
    folder = tmp_path / "attver"
    farm.dump(db, folder / "ledger_20250101_020000.dump", major=16)
    run = run_suites("--backups", str(folder), "-k", "restore")
    message = run.messages["test_restores_without_harmful_errors[ledger-20250101T020000Z]"]
    assert run.outcomes["test_restores_without_harmful_errors[ledger-20250101T020000Z]"] == "failed"
    assert 'unrecognized parameter "pg_attver"' in message and "lost table public.users" in message


def test_a_source_with_nothing_to_restore_runs_without_restore_tests(run_suites, clean_dir):
    """Config files and bundles only: the restore-based checks have no backup to apply to, and say nothing."""
    run = run_suites("--backups", str(clean_dir / "configs"))
    assert run.ret == 0, run.stdout[-2000:]
    assert "INTERNALERROR" not in run.stdout
    assert not any("restore" in k or "row" in k or "foreign_key" in k for k in run.outcomes)
    assert any(k.startswith("test_every_artifact_is_complete_and_readable[") for k in run.outcomes)


def test_an_archive_refused_for_security_is_still_read_in_full_for_integrity(run_suites, farm, tmp_path):
    """No restore means no restore-read: the data blocks are read without a server, and a cut archive still fails."""
    db = farm.clone(farm.states[-1], "hostile_archive")
    farm.sql(db, "create function public.sneaky() returns void language plpgsql as "
                 "$$ begin execute 'COPY public.users TO PROGRAM ''id'''; end $$")
    folder = tmp_path / "refused"
    intact = farm.dump(db, folder / "vault_20250101_020000.dump")
    cut = folder / "vault_20250102_020000.dump"
    data = intact.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    run = run_suites("--backups", str(folder))
    for day in ("20250101", "20250102"):
        key = f"vault-{day}T020000Z"
        assert run.outcomes[f"test_dump_carries_no_commands_for_the_host[{key}]"] == "failed"
    assert "not restored" in run.messages["test_restores_without_harmful_errors[vault-20250102T020000Z]"]
    assert run.outcomes["test_every_artifact_is_complete_and_readable[vault-20250101T020000Z]"] == "passed"
    assert run.outcomes["test_every_artifact_is_complete_and_readable[vault-20250102T020000Z]"] == "failed"
    assert "data block" in run.messages["test_every_artifact_is_complete_and_readable[vault-20250102T020000Z]"]


def test_a_second_parametrize_axis_keeps_each_backup_on_one_worker(run_suites, clean_dir, tmp_path):
    """A team's check parametrized by table as well as by backup: still one restore per backup on two workers."""
    ours = tmp_path / "checks" / "test_ours.py"
    ours.parent.mkdir()
    ours.write_text(
        "import pytest\n\n\n"
        "@pytest.mark.parametrize('table', ['users', 'orders', 'order_items'])\n"
        "def test_table_is_not_empty(restored_db, table):\n"
        "    assert restored_db.execute(f'SELECT count(*) FROM {table}').fetchone()[0] > 0\n")
    run = run_suites("--backups", str(clean_dir / "custom"), "--backups", str(clean_dir / "plain"), "-n", "2",
                     config='restore = "all"\n', suites=ours)
    assert run.ret == 0, run.stdout[-3000:]
    assert len(run.with_outcome("passed")) == 3 * 8 and any(k.endswith("-orders]") for k in run.outcomes)
    log = run.restores()
    assert len(log) == 8 and len({r["backup"] for r in log}) == 8, "a backup was restored twice"


def test_a_backup_of_a_stale_database_fails_content_freshness(run_suites, farm, tmp_path):
    """Taken last night, but its newest created_at is a month old: a stale or wrong database. Naming a column
    that is still written (content_columns) judges that column instead."""
    when = farmlib.nights(farm.now)[-1]
    stale = farm.clone(farm.states[-1], "stale_content")
    farm.sql(stale, "update users set created_at = created_at - interval '30 days'")
    farm.sql(stale, "update orders set created_at = created_at - interval '30 days'")
    for series in ("stale", "audited"):
        farmlib.stamp(farm.dump(stale, tmp_path / "b" / f"{series}_{when:%Y%m%d_%H%M%S}.dump"), when)
    run = run_suites("--backups", str(tmp_path / "b"), "-m", "content_freshness",
                     config='[series.audited]\ncontent_columns = ["public.audit_log.at"]\n')
    key = f"stale-{when:%Y%m%dT%H%M%SZ}"
    name = f"test_newest_rows_are_about_as_new_as_the_backup[{key}]"
    assert run.outcomes[name] == "failed", run.stdout[-2000:]
    message = run.messages[name]
    assert re.search(rf"\[content_freshness\] {key}: the newest row is (29|30)d \d+h older than the backup", message)
    assert "the series' RPO" in message and "newest: public." in message and "content_max_age" in message
    assert run.outcomes[f"test_newest_rows_are_about_as_new_as_the_backup[audited-{when:%Y%m%dT%H%M%SZ}]"] == "passed"
