"""Every option works in its command-line and its config-file spelling, and bad values are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backupcheck.servers.pgbin import installations

RESTORE_TEST = "test_restores_without_harmful_errors"


def restored_keys(run) -> set[str]:  # type: ignore[no-untyped-def]
    return {k.split("[", 1)[1].rstrip("]") for k in run.outcomes if k.startswith(RESTORE_TEST + "[")}


def restore_tools(reports: Path) -> set[str]:
    path = reports / "restore-log.jsonl"
    return {json.loads(line)["tool"] for line in path.read_text().splitlines()} if path.exists() else set()


@pytest.fixture
def shop(clean_dir: Path) -> Path:
    return clean_dir / "custom"


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_sources(run_suites, shop, spelling):
    run = (run_suites("--backups", str(shop)) if spelling == "cli"
           else run_suites(config=f'sources = ["{shop}"]\n'))
    assert len([k for k in run.outcomes if k.startswith("test_backup_meets_minimum_size[")]) == 4
    assert "DEMO" not in run.stdout


def test_config_paths_are_relative_to_the_config_file(run_suites, shop, tmp_path):
    link = tmp_path / "backups-here"
    link.symlink_to(shop)
    run = run_suites(config='sources = ["backups-here"]\n')
    assert len([k for k in run.outcomes if k.startswith("test_backup_meets_minimum_size[")]) == 4


@pytest.mark.parametrize("spelling", ["cli", "config"])
@pytest.mark.parametrize("value, count", [("all", 4), ("2", 2), ("newest", 1)])
def test_restore_selection(run_suites, shop, spelling, value, count):
    args = ["--backups", str(shop), "-k", RESTORE_TEST]
    run = (run_suites(*args, "--restore", value) if spelling == "cli"
           else run_suites(*args, config=f'restore = "{value}"\n'))
    assert len(restored_keys(run)) == count
    assert run.failed() == set()


def test_restore_selection_per_series_beats_the_default(run_suites, shop):
    run = run_suites("--backups", str(shop), "-k", RESTORE_TEST, config='restore = "all"\n[series.shop]\nrestore = 1\n')
    assert len(restored_keys(run)) == 1


def test_the_command_line_beats_the_config_file(run_suites, shop):
    run = run_suites("--backups", str(shop), "--restore", "all", "-k", RESTORE_TEST, config='restore = "newest"\n')
    assert len(restored_keys(run)) == 4


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_restore_jobs(run_suites, shop, spelling):
    run = (run_suites("--backups", str(shop), "--restore-jobs", "1", "-k", RESTORE_TEST) if spelling == "cli"
           else run_suites("--backups", str(shop), "-k", RESTORE_TEST, config="restore_jobs = 1\n"))
    assert run.failed() == set() and restored_keys(run)
    tools = restore_tools(run.reports)
    assert tools and all("(-j 1 where the archive allows)" in t for t in tools), tools


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_pg_bin_is_preferred_when_it_can_restore(run_suites, shop, farm_major, spelling):
    newest = max(installations(), key=lambda i: (i.major, i.minor))
    assert newest.major > farm_major, "the embedded wheel brings a newer installation than the dump's"
    args = ["--backups", str(shop), "-k", RESTORE_TEST]
    run = (run_suites(*args, "--pg-bin", str(newest.bindir)) if spelling == "cli"
           else run_suites(*args, config=f'pg_bin = ["{newest.bindir}"]\n'))
    assert run.failed() == set()
    assert all(f"PostgreSQL {newest.version}" in tool for tool in restore_tools(run.reports)), restore_tools(run.reports)


def test_without_pg_bin_the_closest_version_restores(run_suites, shop, farm_major):
    run = run_suites("--backups", str(shop), "-k", RESTORE_TEST)
    tools = restore_tools(run.reports)
    assert tools and all(f"PostgreSQL {farm_major}." in tool for tool in tools), tools


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_work_dir(run_suites, shop, work_dir, spelling):
    # A run killed earlier left this behind; the run that uses this folder sweeps it.
    stale = work_dir / "backupcheck-run-stale"
    stale.mkdir()
    (stale / "owner.json").write_text('{"pid": 999999999, "start": "1"}')
    run = (run_suites("--backups", str(shop), "-k", RESTORE_TEST, work=work_dir) if spelling == "cli"
           else run_suites("--backups", str(shop), "-k", RESTORE_TEST, config=f'work_dir = "{work_dir}"\n'))
    assert run.failed() == set()
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_reports_dir(pytester, shop, tmp_path, spelling):
    from .conftest import SUITES

    target = tmp_path / f"out-{spelling}"
    cfg = tmp_path / "backupcheck.toml"
    cfg.write_text("" if spelling == "cli" else f'reports_dir = "{target}"\n')
    args = [str(SUITES), "--backup-config", str(cfg), "--backups", str(shop), "-k", "size"]
    if spelling == "cli":
        args += ["--reports-dir", str(target)]
    pytester.runpytest_subprocess(*args)
    if spelling == "config":  # -k makes a partial run: its reports go beside the full run's, unless --reports-dir
        target = target / "partial"
    assert (target / "report.html").exists() and (target / "junit.xml").exists()
    assert list((target / "allure-results").glob("*-result.json"))


@pytest.mark.parametrize("args, config, needle", [
    (["--restore", "sometimes"], "", "restore = 'sometimes'"),
    ([], 'restore = "sometimes"\n', "restore = 'sometimes'"),
    (["--restore-jobs", "0"], "", "restore_jobs = '0'"),
    ([], "restore_jobs = 0\n", "restore_jobs = 0"),
    ([], "[series.shop]\nrpo = \"soon\"\n", "series.shop.rpo = 'soon'"),
    ([], "[series.shop]\nrelations = [\"orders.user_id\"]\n", "orders.user_id -> users.id"),
    ([], "[series.shop]\nsize_tolerance = \"lots\"\n", "series.shop.size_tolerance"),
    ([], "[series.shop]\ncolour = \"red\"\n", "unknown key(s) colour"),
    ([], "restor = 1\n", "unknown key(s) restor"),
    ([], "this is not toml", "is not valid TOML"),
    (["--shard", "4/3", "--plan", "plan.json"], "", "K must be between 1 and N"),
    ([], 'shard = "2/3"\n', "needs a plan"),
    ([], 'streak_runs = 0\n', "streak_runs = 0: expected a whole number of at least 1"),
    ([], 'notify = { url_env = "https://hooks.example/secret" }\n', "expected the NAME of an environment variable"),
    ([], "[series.shop]\nretention = { hourly = 3 }\n", "series.shop.retention"),
])
def test_bad_values_are_usage_errors_naming_the_option(run_suites, shop, args, config, needle):
    run = run_suites("--backups", str(shop), *args, config=config)
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in run.stdout
    assert "Traceback" not in run.stdout


def test_a_missing_config_file_is_a_usage_error(pytester, shop, tmp_path):
    from .conftest import SUITES

    result = pytester.runpytest_subprocess(str(SUITES), "--backup-config", str(tmp_path / "nope.toml"),
                                           "--backups", str(shop))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no such file" in result.stderr.str()


@pytest.mark.parametrize("setting, value, test, failing", [
    ("rpo", '"1h"', "test_newest_backup_is_within_rpo[shop]", True),
    ("rpo", '"30d"', "test_newest_backup_is_within_rpo[shop]", False),
    ("min_size", '"10MB"', "test_backup_meets_minimum_size", True),
    ("size_tolerance", "0.01", "test_backup_size_is_within_tolerance_of_usual", True),
    ("schedule", '"2h"', "test_no_gap_between_backups_exceeds_schedule[shop]", True),
    ("rto", '"0s"', "test_restore_time_is_within_rto", True),
    ("rto", '"1h"', "test_restore_time_is_within_rto", False),
    ("critical_tables", '{ "public.users" = 100000000 }', "test_critical_tables_meet_their_minimum_rows", True),
    ("critical_tables", '{ "public.users" = 1 }', "test_critical_tables_meet_their_minimum_rows", False),
    ("relations", '["audit_log.user_id -> users.id"]', "test_every_configured_relation_has_no_orphans", False),
    ("relations", '["audit_log.id -> users.id"]', "test_every_configured_relation_has_no_orphans", True),
    ("max_row_drop", "-0", "test_no_table_lost_more_rows_than_allowed_since_previous_backup", False),
])
def test_series_expectations_from_the_config_decide_verdicts(run_suites, shop, setting, value, test, failing):
    run = run_suites("--backups", str(shop), config=f"[series.shop]\n{setting} = {value}\n")
    matching = {k: v for k, v in run.outcomes.items() if k.startswith(test)}
    assert matching, f"{test} did not run"
    assert any(v == "failed" for v in matching.values()) == failing, matching
    if failing:
        message = next(run.messages[k] for k, v in matching.items() if v == "failed")
        assert "expected:" in message and "found:" in message and "shop" in message


def test_a_source_of_an_unknown_scheme_is_a_config_error_naming_the_known_kinds(tmp_path):
    from backupcheck import sources
    from backupcheck.settings import ConfigError, build

    with pytest.raises(ConfigError, match=r"no source kind for gs:// \(known: s3://; anything else is a local"):
        build({"sources": ["gs://bucket/db/"]}, {}, None, tmp_path)
    assert [k.scheme for k in sources.known()] == ["s3"]
    assert sources.local_paths(["/srv/backups", "s3://b/p/", "dumps"]) == [Path("/srv/backups"), Path("dumps")]


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_history_and_metrics_file(run_suites, shop, tmp_path, spelling):
    """--history / history and --metrics-file / metrics_file: the run is recorded there, the gauges written."""
    store, metrics = tmp_path / f"h-{spelling}.sqlite", tmp_path / f"m-{spelling}.prom"
    if spelling == "cli":
        run = run_suites("--backups", str(shop), "-m", "size", "--history", str(store), "--metrics-file", str(metrics))
    else:
        run = run_suites("--backups", str(shop), "-m", "size", config=f'history = "{store}"\nmetrics_file = "{metrics}"\n')
    assert run.ret == 0, run.stdout
    assert f"history: this run recorded in {store}" in run.stdout
    assert "backupcheck_backup_size_bytes" in metrics.read_text()


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_plan_out_plan_and_shard(run_suites, shop, tmp_path, spelling):
    plan = tmp_path / f"plan-{spelling}.json"
    if spelling == "cli":
        made = run_suites("--backups", str(shop), "--plan-out", str(plan))
        run = run_suites("--plan", str(plan), "--shard", "1/1", "-m", "size")
    else:
        made = run_suites("--backups", str(shop), config=f'plan_out = "{plan}"\n')
        run = run_suites(config=f'plan = "{plan}"\nshard = "1/1"\n')
    assert made.ret == 0 and plan.exists(), made.stdout
    assert run.ret == 0 and run.results()["run"]["shard"]["total"] == 1, run.stdout
