"""Command-line options and the config file, resolved once into a frozen Settings object."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from backupcheck.settings import ConfigError, Settings, build, load_file

SETTINGS = pytest.StashKey[Settings]()
CONFIG_NAME = "backupcheck.toml"

HELP_BACKUPS = "Folder or file of backups to verify (repeatable; config: sources). Without any, a demo runs."
HELP_CONFIG = f"TOML file with sources and per-series expectations (default: {CONFIG_NAME} in the root folder)."
HELP_RESTORE = "Which backups of each series to restore: 'newest' (default), 'all' or a number N (config: restore)."
HELP_JOBS = "Parallel jobs for pg_restore of archives (default 2; config: restore_jobs)."
HELP_PG_BIN = "A PostgreSQL bin folder to consider first (repeatable; config: pg_bin)."
HELP_WORK_DIR = "Where disposable servers and decompressed copies live (default: the system temp folder; config: work_dir)."
HELP_REPORTS = "Folder for report.html, junit.xml and allure-results (default: reports; config: reports_dir)."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backupcheck", "backupcheck: verify database backups")
    group.addoption("--backups", action="append", dest="bc_backups", default=None, metavar="PATH", help=HELP_BACKUPS)
    group.addoption("--backup-config", dest="bc_config", default=None, metavar="FILE", help=HELP_CONFIG)
    group.addoption("--restore", dest="bc_restore", default=None, metavar="WHICH", help=HELP_RESTORE)
    group.addoption("--restore-jobs", dest="bc_jobs", default=None, metavar="N", help=HELP_JOBS)
    group.addoption("--pg-bin", action="append", dest="bc_pg_bin", default=None, metavar="DIR", help=HELP_PG_BIN)
    group.addoption("--work-dir", dest="bc_work_dir", default=None, metavar="DIR", help=HELP_WORK_DIR)
    group.addoption("--reports-dir", dest="bc_reports_dir", default=None, metavar="DIR", help=HELP_REPORTS)


def _config_file(config: pytest.Config) -> Path | None:
    explicit = config.getoption("bc_config")
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise pytest.UsageError(f"--backup-config {explicit}: no such file")
        return path
    default = Path(config.rootpath) / CONFIG_NAME
    return default if default.is_file() else None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    resolve(config)


def resolve(config: pytest.Config) -> Settings:
    """Build the settings once; later calls (from other plugins' configure hooks) get the same object."""
    if SETTINGS in config.stash:
        return config.stash[SETTINGS]
    cwd = Path.cwd()

    def absolute(option: str) -> str | None:
        value = config.getoption(option)
        return None if value is None else str(cwd / value)

    cli = {
        "sources": [str((cwd / p) if "://" not in p else p) for p in config.getoption("bc_backups")]
        if config.getoption("bc_backups") is not None else None,
        "restore": config.getoption("bc_restore"),
        "restore_jobs": config.getoption("bc_jobs"),
        "pg_bin": config.getoption("bc_pg_bin"),
        "work_dir": absolute("bc_work_dir"),
        "reports_dir": absolute("bc_reports_dir"),
    }
    try:
        path = _config_file(config)
        file_data = load_file(path) if path else {}
        settings = build(cli, file_data, path, path.parent if path else cwd)
    except ConfigError as exc:
        raise pytest.UsageError(f"backupcheck: {exc}") from None
    if not settings.reports_dir.is_absolute():
        settings = replace(settings, reports_dir=Path(config.rootpath) / settings.reports_dir)
    config.stash[SETTINGS] = settings
    return settings
