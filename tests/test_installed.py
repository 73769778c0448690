"""backupcheck installed as teams install a pytest plugin: a wheel in a fresh virtual environment, run from a
folder of their own, with their own checks beside the built-in ones; and silent in runs that are not about
backups."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from . import farm as farmlib
from .conftest import REPO

USER_CHECKS = '''
import psycopg
import pytest


def test_no_ghost_orders(restored_db):
    n = restored_db.execute("SELECT count(*) FROM orders WHERE status = 'ghost'").fetchone()[0]
    assert n == 0, f"{n} ghost order(s)"


def test_restored_db_is_read_only(restored_db, restored_dsn, backup):
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        restored_db.execute("CREATE TABLE scratch (a int)")
    assert "dbname=" in restored_dsn and backup.series == "shop"


def test_the_plugin_is_imported_as_python_imports_it(backup):
    import backupcheck.servers.cluster
    import backupcheck.plugins.run

    # from the bytecode pip wrote, not recompiled by pytest's assertion rewriting (this file still is)
    loaders = {type(m.__spec__.loader).__name__ for m in (backupcheck.servers.cluster, backupcheck.plugins.run)}
    assert loaders == {"SourceFileLoader"}
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel built from this checkout (its dependencies come from ours,
    through a path entry, so nothing is downloaded); returns its python."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # setuptools writes build/ beside the sources: a copy keeps the checkout clean
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    for name in ("backupcheck", "plugins", "fixtures", "suites"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((root / "dist").glob("backupcheck-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True)
    env_site = next((root / "env" / "lib").glob("python3*/site-packages"))
    (env_site / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "env" / "bin" / "python"), "install",
                    "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    return root / "env" / "bin" / "python"


def _pytest(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PG"))}
    return subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_wheel_holds_no_top_level_plugins_or_fixtures(installed):
    site_dir = next(installed.parent.parent.glob("lib/python3*/site-packages"))
    assert not (site_dir / "plugins").exists() and not (site_dir / "fixtures").exists()
    assert (site_dir / "backupcheck" / "plugins" / "entry.py").is_file()
    assert sorted(p.name for p in (site_dir / "backupcheck" / "suites").glob("test_*.py"))


def test_installed_it_runs_the_suites_and_the_teams_own_checks(installed, farm, tmp_path, now: datetime):
    when = farmlib.nights(farm.now)[-1]
    backups = tmp_path / "backups"
    farmlib.stamp(farm.dump(farm.states[-1], backups / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    project = tmp_path / "project"
    project.mkdir()
    moment = ["--now", now.isoformat(), "--pg-provider", "local"]
    run = _pytest(installed, project, "--backups", str(backups), *moment)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "backups verified" in run.stdout and (project / "reports" / "report.html").is_file()
    assert f"rootdir: {project}" in run.stdout, run.stdout[:3000]
    assert "test_restore.py ..." in run.stdout, run.stdout[:3000]  # the suites of the installed package ran
    assert "warnings" not in run.stdout.splitlines()[-1], run.stdout[-3000:]
    (project / "test_ours.py").write_text(USER_CHECKS)
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    run = _pytest(installed, project, "--backups", str(backups), "test_ours.py", "-v", *moment)
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"test_ours.py::test_no_ghost_orders[{key}] PASSED" in run.stdout
    # a planted violation: the check fails naming the backup
    ghost = farm.clone(farm.states[-1], "ghost_orders")
    farm.sql(ghost, "insert into orders values (990001, 1, 'ghost', null, now())")
    bad = tmp_path / "bad"
    farmlib.stamp(farm.dump(ghost, bad / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    run = _pytest(installed, project, "--backups", str(bad), "test_ours.py", "-v", *moment)
    assert run.returncode == 1, run.stdout[-3000:]
    assert f"test_ours.py::test_no_ghost_orders[{key}] FAILED" in run.stdout and "1 ghost order(s)" in run.stdout
    assert "assert 1 == 0" in run.stdout  # the team's own asserts are still rewritten by pytest
    assert f"test_the_plugin_is_imported_as_python_imports_it[{key}] PASSED" in run.stdout
    # the pre-migration gate as a team runs it from its own repository: migration files relative to it
    (project / "supabase" / "migrations").mkdir(parents=True)
    (project / "supabase" / "migrations" / "20261202090000_discount.sql").write_text(
        "alter table orders add column discount numeric;")
    run = _pytest(installed, project, "--backups", str(backups), "--migrations", "supabase/migrations", "-m", "gate",
                  *moment)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "8 passed" in run.stdout and "20261202090000_discount.sql: applied" in run.stdout


OTHER_TESTS = '''
import sys


def test_app():
    assert 1 + 1 == 2


def test_only_the_options_of_the_plugin_were_loaded():
    loaded = [m for m in sys.modules if m.startswith(("psycopg", "backupcheck.plugins.run", "backupcheck.fixtures",
                                                      "backupcheck.servers.cluster", "backupcheck.restore.database"))]
    assert loaded == []
'''


def test_in_a_project_of_other_tests_the_installed_plugin_changes_nothing(installed, tmp_path):
    project = tmp_path / "other"
    project.mkdir()
    (project / "test_app.py").write_text(OTHER_TESTS)
    run = _pytest(installed, project, "-v")
    assert run.returncode == 0, run.stdout[-2000:]
    assert "2 passed" in run.stdout
    lines = [ln for ln in run.stdout.splitlines()
             if "backupcheck" in ln and not ln.startswith(("plugins:", "metadata:"))]  # pytest's own lists
    assert lines == [], lines
    written = sorted(p.name for p in project.iterdir() if p.name != "__pycache__")
    assert written == ["test_app.py"], "it wrote files (reports?)"


def test_installed_in_the_projects_own_venv_it_prints_short_ids_and_reasons(installed, farm, tmp_path, now,
                                                                           monkeypatch):
    """A team's project whose virtual environment lives inside it: node ids and the FAILED lines name the suites
    as backupcheck/suites/…, never the site-packages path, and carry the finding as the reason."""
    project = installed.parent.parent.parent  # holds env/: the venv is inside the project
    (project / "pytest.ini").write_text("[pytest]\n")
    when = farmlib.nights(farm.now)[-1]
    backups = tmp_path / "backups"
    farmlib.stamp(farm.dump(farm.states[-1], backups / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    (tmp_path / "backupcheck.toml").write_text('[series.shop]\ncritical_tables = ["public.nope"]\n')
    monkeypatch.setenv("CI", "true")  # as in a CI log: the reason whole, whatever the terminal's width
    run = _pytest(installed, project, "--backups", str(backups), "--backup-config", str(tmp_path / "backupcheck.toml"),
                  "--now", now.isoformat(), "--pg-provider", "local", "-m", "row_counts",
                  "--reports-dir", str(tmp_path / "reports"))
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    expected = [
        "backupcheck/suites/test_row_counts.py Fs",
        f"FAILED backupcheck/suites/test_row_counts.py::test_critical_tables_meet_their_minimum_rows[{key}] - "
        f"[row_counts] {key}: critical table public.nope is not in the dump",
    ]
    lines = [line.rstrip() for line in run.stdout.splitlines()]
    assert run.returncode == 1
    for line in expected:
        assert any(got.startswith(line) for got in lines), (line, run.stdout[-3000:])
    assert "site-packages" not in run.stdout and "Traceback" not in run.stdout, run.stdout[-3000:]
