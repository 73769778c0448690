"""One problem reads as one problem, in the words a person reads at 7 a.m.: a broken dump fails where it is broken
and the checks of its rows are not judged; a configured series or critical table that is not there fails naming
the configuration; the table of backups shows a series' own failures; the terminal prints findings, not
tracebacks; and the small things a user tries first (--version, --help, --series, a duration without a unit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from . import farm as farmlib


@pytest.fixture
def nights(farm: farmlib.Farm, tmp_path: Path) -> tuple[Path, list[str]]:
    """Four nights of the shop in custom format; returns the folder and the backups' keys, oldest first."""
    folder = tmp_path / "shop"
    keys = []
    for i, when in enumerate(farmlib.nights(farm.now)):
        farmlib.stamp(farm.dump(farm.states[i], folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
        keys.append(f"shop-{when:%Y%m%dT%H%M%SZ}")
    return folder, keys


def test_a_truncated_dump_fails_where_it_is_broken_and_its_rows_are_not_judged(nights, run_suites):
    folder, keys = nights
    newest = sorted(folder.iterdir())[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    run = run_suites("--backups", str(folder), "-m", "not freshness and not size and not content_freshness")
    key = keys[-1]
    assert run.outcomes[f"test_every_artifact_is_complete_and_readable[{key}]"] == "failed"
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "failed"
    for name in ("test_no_table_lost_more_rows_than_allowed_since_previous_backup",
                 "test_every_foreign_key_has_no_orphans"):
        assert run.outcomes[f"{name}[{key}]"] == "skipped", (name, run.messages[f"{name}[{key}]"])
        assert "not judged" in run.messages[f"{name}[{key}]"]
    assert "max_row_drop" not in run.stdout and "VALIDATE CONSTRAINT" not in run.stdout


def test_a_configured_series_without_backups_fails_naming_it(nights, run_suites):
    folder, _ = nights
    run = run_suites("--backups", str(folder), "-m", "integrity", config='[series.shop]\nrpo = "26h"\n'
                                                                         '[series.shpo]\nrpo = "26h"\n')
    message = run.messages["test_every_source_holds_readable_backups"]
    assert run.outcomes["test_every_source_holds_readable_backups"] == "failed"
    assert "series shpo is configured but has no backup" in message and "the series found: shop" in message
    assert "series shop is" not in message


def test_a_critical_table_the_dump_does_not_hold_fails_naming_the_setting(nights, run_suites):
    folder, keys = nights
    run = run_suites("--backups", str(folder), "-m", "row_counts",
                     config='[series.shop]\ncritical_tables = { "public.orders" = 1, "public.order" = 1 }\n')
    message = run.messages[f"test_critical_tables_meet_their_minimum_rows[{keys[-1]}]"]
    assert "critical table public.order is not in the dump" in message and "series.shop.critical_tables" in message
    assert "public.orders is" not in message


def test_the_table_of_backups_shows_a_series_failure_on_its_newest_backup(nights, run_suites, now):
    folder, keys = nights
    late = (now.replace(hour=12) + __import__("datetime").timedelta(days=5)).isoformat()
    run = run_suites("--backups", str(folder), "-m", "freshness", "--now", late)
    assert run.outcomes["test_newest_backup_is_within_rpo[shop]"] == "failed"
    row = next(line for line in run.stdout.splitlines() if keys[-1][5:13] in line.replace("-", "")
               and line.startswith("shop "))
    assert "failed: the newest backup" in row, row


def test_a_failing_check_prints_its_findings_and_no_traceback(nights, run_suites, monkeypatch):
    folder, keys = nights
    monkeypatch.setenv("CI", "true")  # as in a CI log: pytest prints the reason whole, whatever the width
    run = run_suites("--backups", str(folder), "-m", "row_counts",
                     config='[series.shop]\ncritical_tables = { "public.order" = 1 }\n')
    summary = [line for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    assert summary and "critical table public.order is not in the dump" in summary[0], summary
    assert "Traceback" not in run.stdout and "def test_critical_tables" not in run.stdout
    assert "AssertionError" not in run.stdout


def test_series_picks_the_series_and_a_wrong_name_fails(nights, run_suites, farm, tmp_path):
    folder, _ = nights
    other = tmp_path / "crm"
    when = farmlib.nights(farm.now)[-1]
    farmlib.stamp(farm.dump(farm.states[-1], other / f"crm_{when:%Y%m%d_%H%M%S}.dump"), when)
    run = run_suites("--backups", str(folder), "--backups", str(other), "--series", "crm", "-m", "integrity")
    assert {k.split("[")[1].split("-")[0] for k in run.outcomes if "[" in k} == {"crm"}, run.outcomes
    assert "--series crm" in run.results()["run"]["partial"]
    wrong = run_suites("--backups", str(folder), "--series", "nope", "-m", "integrity")
    assert wrong.outcomes["test_every_source_holds_readable_backups"] == "failed"
    assert "--series nope: no series of that name (found: shop)" in wrong.messages[
        "test_every_source_holds_readable_backups"]


def test_a_duration_without_its_unit_is_refused_with_the_fix(nights, run_suites):
    folder, _ = nights
    run = run_suites("--backups", str(folder), config="[series.shop]\nrpo = 26\n")
    assert run.ret == 4 and "rpo = 26: a duration needs its unit: write '26h'" in run.stdout


def test_the_command_says_its_version_and_every_command():
    version = subprocess.run([sys.executable, "-m", "backupcheck", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("backupcheck ")
    helped = subprocess.run([sys.executable, "-m", "backupcheck", "--help"], capture_output=True, text=True).stdout
    assert all(word in helped for word in ("run", "evidence", "merge"))
