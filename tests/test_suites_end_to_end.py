"""The product's suites, run end to end as a user runs them, on folders of real backups."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from backupcheck import demo
from backupcheck.pgbin import installations

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


def restore_log(reports: Path) -> list[dict]:
    path = reports / "restore-log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_clean_backups_of_every_shape_pass_every_check(run_suites, clean_dir):
    run = run_suites("--backups", str(clean_dir))
    assert run.failed() == set(), run.stdout[-4000:]
    assert run.ret == 0
    for family, test in FAMILY_TESTS.items():
        assert any(k.startswith(test + "[") and v == "passed" for k, v in run.outcomes.items()), family
    restored = restore_log(run.reports)
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
    log = restore_log(parallel.reports)
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
    assert restore_log(run.reports) == []


def test_the_demo_runs_without_configuration_and_says_it_is_a_demo(run_suites, now):
    run = run_suites()
    broken = demo.nightly_times(now)[3].strftime("%Y%m%dT%H%M%SZ")
    assert run.failed() == {f"test_every_artifact_is_complete_and_readable[shop-{broken}]"}, run.stdout[-3000:]
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
    assert len(restore_log(run.reports)) == 1, "the archive was read by the restore, not a second time"


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
