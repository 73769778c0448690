"""Command-line options and the config file, resolved once into a frozen Settings object."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _pytest.config.findpaths import determine_setup

from backupcheck import families, reports, sources
from backupcheck.history import is_dsn
from backupcheck.settings import ConfigError, Settings, build, load_file

from . import hooks

SETTINGS = pytest.StashKey[Settings]()
CONFIG_NAME = "backupcheck.toml"
# The built-in suites: suites/ of a checkout, backupcheck/suites/ of an installed package.
SUITES = Path(__file__).resolve().parent.parent / "suites"

HELP_BACKUPS = "Folder or file of backups to verify (repeatable; config: sources). Without any, a demo runs."
HELP_CONFIG = f"TOML file with sources and per-series expectations (default: {CONFIG_NAME} in the root folder)."
HELP_RESTORE = "Which backups of each series to restore: 'newest' (default), 'all' or a number N (config: restore)."
HELP_JOBS = ("Parallel jobs for pg_restore of archives (default 2; config: restore_jobs), shared with the other "
             "backups the run holds restored on this machine's cores.")
HELP_PG_BIN = "A PostgreSQL bin folder to consider first (repeatable; config: pg_bin)."
HELP_WORK_DIR = ("Where disposable servers and decompressed copies live (default: /dev/shm when the restored database "
                 "fits there with 2 GiB to spare, else the system temp folder; config: work_dir).")
HELP_CACHE = ("Folder for downloads from S3, kept between runs (default: $XDG_CACHE_HOME/backupcheck/downloads, else "
              "~/.cache/backupcheck/downloads; config: cache_dir).")
HELP_PROVIDER = ("Where backups are restored: auto (containers when a Docker engine answers, else local), container, "
                 "local or dsn (config: pg_provider).")
HELP_DSN = ("An existing server for --pg-provider dsn, as 'host=... user=... dbname=postgres'; each backup gets a fresh "
            "database, dropped afterwards. Give the password through PGPASSWORD or ~/.pgpass (config: dsn).")
HELP_IMAGE = "Container image, {major} replaced by the dump's PostgreSQL major (default postgres:{major}; config: container.image)."
HELP_RYUK = "Ryuk, testcontainers' cleanup helper: on (default) or off where its image cannot be had (config: container.ryuk)."
HELP_PG_BIN_ONLY = "Use only the --pg-bin folders, not the PostgreSQL installations found elsewhere (config: pg_bin_only)."
HELP_RECOVER_TO = ("Recover physical base backups to this moment ('2026-12-06 14:05Z') or restore point "
                   "('name:before-migration') instead of the end of their WAL archive (config: recover_to; a "
                   "series' own recover_to wins).")
HELP_NOW = ("The moment ages and freshness are measured from, in ISO 8601 with an offset (default: when the run "
            "starts; config: now), to reproduce a verdict of another day.")
HELP_HISTORY = ("Where runs are remembered, for trends, streaks and evidence: a SQLite file (default: "
                "$XDG_DATA_HOME/backupcheck/history.sqlite, else ~/.local/share/backupcheck/history.sqlite), a "
                "postgresql:// DSN (password from PGPASSWORD or ~/.pgpass), or off (config: history).")
HELP_METRICS = "Write a Prometheus node_exporter textfile here after each run (config: metrics_file)."
HELP_PLAN_OUT = ("List the sources once and write the plan (backups, server versions, expected cost) to FILE, then "
                 "stop; shards verify it with --plan (config: plan_out).")
HELP_PLAN = "Verify the backups a plan lists, without listing the sources (config: plan)."
HELP_SHARD = ("With --plan: verify shard K of N, whole series balanced by expected cost (default: from CI_NODE_INDEX/"
              "CI_NODE_TOTAL, or JOB_COMPLETION_INDEX with BACKUPCHECK_SHARD_TOTAL; config: shard).")
HELP_MIGRATIONS = ("The pre-migration gate (-m gate): rehearse the migration files in this folder (Supabase, Flyway, "
                   "golang-migrate, Prisma or plain .sql) on a copy of each series' newest backup (config: "
                   "gate.migrations).")
HELP_MIGRATE_COMMAND = ("The pre-migration gate (-m gate): run this command (like 'alembic upgrade head') with "
                        "DATABASE_URL and PG* pointing at a copy of each series' newest backup (config: "
                        "gate.migrate_command).")
HELP_GATE_MAX_AGE = "The gate: the newest backup must be younger than this, like 24h or 1h (default 24h; config: gate.max_age)."
HELP_GATE_MAX_LOCK = ("The gate: the longest ACCESS EXCLUSIVE lock a migration may hold on the backup's data, like 5s "
                      "(default 5s; config: gate.max_lock).")
HELP_GATE_LINT = "The gate: lint findings are notes (warn, the default), fail the gate (fail), or off (config: gate.lint)."
HELP_ALLOW_ROW_LOSS = "The gate: a table the migrations may delete rows of (repeatable; config: gate.allow_row_loss)."
HELP_SERIES = ("Verify only this series (repeatable; a partial run: the history and the full run's reports keep "
               "their record).")
HELP_REPORTS = "Folder for report.html, junit.xml and allure-results (default: reports; config: reports_dir)."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backupcheck", "backupcheck: verify database backups")
    group.addoption("--backups", action="append", dest="bc_backups", default=None, metavar="PATH", help=HELP_BACKUPS)
    group.addoption("--backup-config", dest="bc_config", default=None, metavar="FILE", help=HELP_CONFIG)
    group.addoption("--restore", dest="bc_restore", default=None, metavar="WHICH", help=HELP_RESTORE)
    group.addoption("--restore-jobs", dest="bc_jobs", default=None, metavar="N", help=HELP_JOBS)
    group.addoption("--pg-bin", action="append", dest="bc_pg_bin", default=None, metavar="DIR", help=HELP_PG_BIN)
    group.addoption("--pg-bin-only", action="store_const", const=True, dest="bc_pg_bin_only", default=None,
                    help=HELP_PG_BIN_ONLY)
    group.addoption("--pg-provider", dest="bc_provider", default=None, metavar="KIND", help=HELP_PROVIDER)
    group.addoption("--pg-dsn", dest="bc_dsn", default=None, metavar="DSN", help=HELP_DSN)
    group.addoption("--container-image", dest="bc_image", default=None, metavar="IMAGE", help=HELP_IMAGE)
    group.addoption("--container-ryuk", dest="bc_ryuk", default=None, metavar="on|off", help=HELP_RYUK)
    group.addoption("--work-dir", dest="bc_work_dir", default=None, metavar="DIR", help=HELP_WORK_DIR)
    group.addoption("--reports-dir", dest="bc_reports_dir", default=None, metavar="DIR", help=HELP_REPORTS)
    group.addoption("--series", action="append", dest="bc_series", default=None, metavar="NAME", help=HELP_SERIES)
    group.addoption("--now", dest="bc_now", default=None, metavar="MOMENT", help=HELP_NOW)
    group.addoption("--recover-to", dest="bc_recover_to", default=None, metavar="TARGET", help=HELP_RECOVER_TO)
    group.addoption("--cache-dir", dest="bc_cache_dir", default=None, metavar="DIR", help=HELP_CACHE)
    group.addoption("--history", dest="bc_history", default=None, metavar="PATH|DSN|off", help=HELP_HISTORY)
    group.addoption("--metrics-file", dest="bc_metrics_file", default=None, metavar="FILE", help=HELP_METRICS)
    group.addoption("--plan-out", dest="bc_plan_out", default=None, metavar="FILE", help=HELP_PLAN_OUT)
    group.addoption("--plan", dest="bc_plan", default=None, metavar="FILE", help=HELP_PLAN)
    group.addoption("--shard", dest="bc_shard", default=None, metavar="K/N", help=HELP_SHARD)
    group.addoption("--migrations", dest="bc_migrations", default=None, metavar="PATH", help=HELP_MIGRATIONS)
    group.addoption("--migrate-command", dest="bc_migrate_command", default=None, metavar="COMMAND",
                    help=HELP_MIGRATE_COMMAND)
    group.addoption("--gate-max-age", dest="bc_gate_max_age", default=None, metavar="DURATION", help=HELP_GATE_MAX_AGE)
    group.addoption("--gate-max-lock", dest="bc_gate_max_lock", default=None, metavar="DURATION",
                    help=HELP_GATE_MAX_LOCK)
    group.addoption("--gate-lint", dest="bc_gate_lint", default=None, metavar="warn|fail|off", help=HELP_GATE_LINT)
    group.addoption("--allow-row-loss", action="append", dest="bc_allow_row_loss", default=None, metavar="TABLE",
                    help=HELP_ALLOW_ROW_LOSS)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Make ``pytest --backups /srv/backups`` find this project, as ``pytest --backups=/srv/backups`` does.

    pytest picks its rootdir and config file before plugins add their options, so
    the value of ``--backups`` is first taken for a test path and the rootdir lands
    in the backup folder. Once the options are known (now), a run with no path
    arguments and no config file found is set up again from the invocation folder,
    as pytest itself would have done.

    pytest has no public way to redo that choice once plugins are loaded (only
    ``--rootdir``, which users would have to type), so ``_recover_rootdir`` sets
    private ``Config`` attributes; it was checked against pytest 9.2.0 and any
    failure there leaves pytest's own choice in place.
    """
    try:
        _recover_rootdir(early_config, args)
    except Exception:  # private pytest internals moved: keep pytest's own choice
        pass
    if asked_for(early_config) and not early_config.known_args_namespace.file_or_dir:
        args.append(str(SUITES))  # backups to verify and no test paths: the built-in suites are the job


def asked_for(config: pytest.Config) -> bool:
    """The plugin acts only when backups are named: --backups or --plan(-out), or a config file with sources or a
    plan. In any other pytest run of an environment it is installed in, it adds its options and nothing else."""
    ns = config.known_args_namespace
    if getattr(ns, "bc_backups", None) or getattr(ns, "bc_plan", None) or getattr(ns, "bc_plan_out", None):
        return True
    path = Path(ns.bc_config) if getattr(ns, "bc_config", None) else Path(config.rootpath) / CONFIG_NAME
    try:
        data = load_file(path) if path.is_file() else {}
        return any(data.get(key) for key in ("sources", "plan", "plan_out"))
    except (ConfigError, OSError):
        return path.is_file()  # a broken file that was meant for us: let the run say what is wrong with it


def names_the_suites(paths: list[str]) -> bool:
    """Whether one of these test paths is the built-in suites, lies inside them or holds them."""
    for arg in paths:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == SUITES or SUITES in path.parents or path in SUITES.parents:
            return True
    return False


def _recover_rootdir(config: pytest.Config, args: list[str]) -> None:
    ns = config.known_args_namespace
    if ns.file_or_dir or ns.inifilename or ns.rootdir or config.inipath is not None:
        return
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=None, override_ini=ns.override_ini, args=[], rootdir_cmd_arg=None,
        invocation_dir=config.invocation_params.dir,
    )
    if rootpath == config.rootpath:
        return
    config._rootpath = rootpath  # type: ignore[attr-defined]
    config._inipath = inipath  # type: ignore[attr-defined]
    config._inicfg = inicfg  # type: ignore[attr-defined]
    config._ignored_config_files = ignored  # type: ignore[attr-defined]
    config._inicache.clear()  # type: ignore[attr-defined]
    config._parser.extra_info["rootdir"] = str(rootpath)  # type: ignore[attr-defined]
    config._parser.extra_info["inifile"] = str(inipath)  # type: ignore[attr-defined]
    ns.confcutdir = str(inipath.parent)
    args[:] = list(config.getini("addopts")) + args


def _config_file(config: pytest.Config) -> Path | None:
    explicit = config.getoption("bc_config")
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise pytest.UsageError(f"--backup-config {explicit}: no such file")
        return path
    default = Path(config.rootpath) / CONFIG_NAME
    return default if default.is_file() else None


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


class Extend:
    """What a ``pytest_backupcheck_extend`` implementation registers through."""

    def source(self, kind: Any) -> None:
        sources.register(kind)

    def writer(self, writer: Any) -> None:
        reports.register(writer)

    def family(self, family: Any) -> None:
        families.register(family)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    resolve(config)


def resolve(config: pytest.Config) -> Settings:
    """Build the settings once; later calls (from other plugins' configure hooks) get the same object."""
    if SETTINGS in config.stash:
        return config.stash[SETTINGS]
    if asked_for(config) or names_the_suites(config.args):  # a team's source kinds and writers, before the sources
        config.hook.pytest_backupcheck_extend(extend=Extend())
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
        "cache_dir": absolute("bc_cache_dir"),
        "pg_bin_only": config.getoption("bc_pg_bin_only"),
        "pg_provider": config.getoption("bc_provider"),
        "dsn": config.getoption("bc_dsn"),
        "container_image": config.getoption("bc_image"),
        "ryuk": config.getoption("bc_ryuk"),
        "now": config.getoption("bc_now"),
        "recover_to": config.getoption("bc_recover_to"),
        "history": _history_option(config.getoption("bc_history"), cwd),
        "metrics_file": absolute("bc_metrics_file"),
        "plan_out": absolute("bc_plan_out"),
        "plan": absolute("bc_plan"),
        "shard": config.getoption("bc_shard"),
        "migrations": absolute("bc_migrations"),
        "migrate_command": config.getoption("bc_migrate_command"),
        "gate": {k: v for k, v in (("max_age", config.getoption("bc_gate_max_age")),
                                   ("max_lock", config.getoption("bc_gate_max_lock")),
                                   ("lint", config.getoption("bc_gate_lint")),
                                   ("allow_row_loss", config.getoption("bc_allow_row_loss"))) if v is not None},
    }
    try:
        path = _config_file(config)
        file_data = load_file(path) if path else {}
        settings = build(cli, file_data, path, path.parent if path else cwd)
    except ConfigError as exc:
        raise pytest.UsageError(f"backupcheck: {exc}") from None
    if not settings.reports_dir.is_absolute():
        # Beside the project's pytest configuration; in a folder without one, where pytest was started.
        base = Path(config.rootpath) if config.inipath is not None else Path(config.invocation_params.dir)
        settings = replace(settings, reports_dir=base / settings.reports_dir)
    if config.getoption("bc_series"):
        settings = replace(settings, only_series=tuple(config.getoption("bc_series")))
    partial = selection(config)
    if partial:
        settings = replace(settings, partial=partial)
        if cli["reports_dir"] is None:  # the last full run's reports stay; a partial run's go beside them
            settings = replace(settings, reports_dir=settings.reports_dir / "partial")
    config.stash[SETTINGS] = settings
    return settings


def selection(config: pytest.Config) -> str:
    """What a run that checks part of the backups selected, in the words of its command line; "" for a full
    run. Such a run is no trend point, no "last verified", and keeps the full run's reports and metrics."""
    said = []
    if config.getoption("collectonly", False):
        said.append("--collect-only")
    if config.getoption("keyword", ""):
        said.append(f"-k {config.getoption('keyword')}")
    if config.getoption("markexpr", ""):
        said.append(f"-m {config.getoption('markexpr')}")
    if config.getoption("lf", False):
        said.append("--lf")
    if config.getoption("deselect", None):
        said.append("--deselect")
    if config.getoption("bc_series", None):
        said.append(" ".join(f"--series {n}" for n in config.getoption("bc_series")))
    args = [str(a) for a in config.args]
    named = [a for a in args if "::" in a or _inside_suites(a)]
    if named:
        said.append("only " + " ".join(Path(a.split("::")[0]).name + ("::" + a.split("::", 1)[1] if "::" in a else "")
                                       for a in named))
    elif args and not names_the_suites(args) and asked_for(config):
        said.append("only the team's own tests")
    return ", ".join(said)


def _inside_suites(arg: str) -> bool:
    path = Path(arg.split("::")[0]).resolve()
    return SUITES in path.parents


def _history_option(value: str | None, cwd: Path) -> str | None:
    """--history as given: off and DSNs as they are, a file relative to where pytest was started."""

    if value is None or value.strip().lower() in ("off", "none", "false") or is_dsn(value):
        return value
    return str(cwd / value)
