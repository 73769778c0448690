"""The run's configuration: one frozen object built from the command line, a TOML file and defaults."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from . import sources as source_kinds
from .families import REGISTRY
from .history import default_path, is_dsn
from .metrics import Notify
from .plan import PlanError, parse_shard, shard_from_environment
from .restore.profiles import BUILTIN, Profile, builtin
from .schema import (
    ConfigError,
    Invariant,
    Relation,
    Setting,
    markdown_rows,
    parse_choice,
    parse_count,
    parse_duration,
    parse_patterns,
)
from .servers.pgbin import Tools


def parse_restore(value: Any, key: str) -> str | int:
    """``newest`` (the default), ``all``, or the newest N of each series."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower()
    if text in ("newest", "latest"):
        return 1
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise ConfigError(f"{key} = {value!r}: expected 'newest', 'all' or a whole number N (the newest N)")


LINT_MODES = ("warn", "fail", "off")


@dataclass(frozen=True)
class GateSettings:
    """[gate]: what the pre-migration gate rehearses, and what it tolerates."""

    migrations: Path | None = None
    migrate_command: str = ""
    max_age: timedelta = timedelta(hours=24)  # the newest backup is younger than this, or take one first
    allow_row_loss: tuple[str, ...] = ()  # schema.table the migrations may delete rows of
    lint: str = "warn"
    max_lock: timedelta = timedelta(seconds=5)  # longest ACCESS EXCLUSIVE lock a migration may hold
    large_rows: int = 100_000  # from this many rows an index build or a table scan hurts production
    series: tuple[str, ...] = ()  # gated series (all when empty)
    command_timeout: timedelta = timedelta(hours=1)

    @property
    def rehearses(self) -> bool:
        return self.migrations is not None or bool(self.migrate_command)

    def loses_rows_allowed(self, table: str) -> bool:
        return table in self.allow_row_loss or table.removeprefix("public.") in self.allow_row_loss


_GATE_KEYS = {"migrations", "migrate_command", "max_age", "allow_row_loss", "lint", "max_lock", "large_rows",
              "series", "command_timeout"}


def _gate(raw: Any, cli: dict[str, Any], rel: Any) -> GateSettings:
    """[gate], with the command line's --gate-* values over the file's."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("[gate]: expected a table like { migrations = \"supabase/migrations\", max_age = \"24h\" }")
    raw = {**raw, **(cli.get("gate") or {})}
    unknown = set(raw) - _GATE_KEYS
    if unknown:
        raise ConfigError(f"[gate]: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_GATE_KEYS))}")
    g = GateSettings()
    for key in ("max_age", "max_lock", "command_timeout"):
        if key in raw:
            g = replace(g, **{key: parse_duration(raw[key], f"gate.{key}")})
    if "lint" in raw:
        if raw["lint"] not in LINT_MODES:
            raise ConfigError(f"gate.lint = {raw['lint']!r}: expected one of {', '.join(LINT_MODES)}")
        g = replace(g, lint=raw["lint"])
    if "large_rows" in raw:
        g = replace(g, large_rows=parse_count(raw["large_rows"], "gate.large_rows", 0))
    for key in ("allow_row_loss", "series"):
        if key in raw:
            if not isinstance(raw[key], list) or not all(isinstance(x, str) for x in raw[key]):
                raise ConfigError(f"gate.{key} = {raw[key]!r}: expected a list of names")
            g = replace(g, **{key: tuple(raw[key])})
    migrations = cli.get("migrations") if cli.get("migrations") is not None else (
        rel(str(raw["migrations"])) if raw.get("migrations") is not None else None)
    command = cli.get("migrate_command") if cli.get("migrate_command") is not None else raw.get("migrate_command", "")
    if migrations and not Path(migrations).exists():
        raise ConfigError(f"gate.migrations = {migrations!r}: no such folder or file (--migrations PATH: the folder "
                          "holding the migration files, like supabase/migrations)")
    if migrations:
        from .migrations import MigrationsError, find

        try:
            if not find(Path(migrations)):
                raise ConfigError(f"gate.migrations = {migrations!r}: no migration file in it (*.sql, or Prisma's "
                                  "<timestamp>_name/migration.sql)")
        except (MigrationsError, OSError) as exc:
            raise ConfigError(f"gate.migrations = {migrations!r}: {exc}") from None
    if migrations and command:
        raise ConfigError("gate: migrations and migrate_command exclude each other: the gate applies the files "
                          "itself, or runs your tool (which applies them)")
    return replace(g, migrations=Path(migrations) if migrations else None, migrate_command=str(command or ""))


SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")


@dataclass(frozen=True)
class SeriesSettings:
    """Expectations for one series; None means 'learn it from the series itself'."""

    rpo: timedelta | None = None
    schedule: timedelta | None = None
    size_tolerance: float = 0.5
    min_size: int = 1
    rto: timedelta | None = None
    critical_tables: tuple[tuple[str, int], ...] = ()
    max_row_drop: float = 0.2
    relations: tuple[Relation, ...] = ()
    restore: str | int | None = None
    severity: str = "normal"
    tolerated_errors: tuple[str, ...] = ()
    encryption: str | None = None  # gpg, sse, AES256 or aws:kms: required of every artifact
    kms_key_id: str = ""
    profile: str | None = None  # None: detected from the dump (supabase when unmistakable, else vanilla)
    locale_fallback: str = ""  # a locale to create databases with where the dump's is not on the server
    name_timezone: str = "UTC"  # the zone of times written in backup names without an offset
    content_columns: tuple[str, ...] = ()  # [schema.]table.column whose newest value tells when data was written
    content_max_age: timedelta | None = None  # None: the series' RPO
    retention: tuple[tuple[str, int], ...] = ()  # GFS slots promised: (daily, 7), (weekly, 4), ...
    max_age: timedelta | None = None  # no backup older than this remains
    trend_window: int = 14  # earlier backups a table's rows are judged against
    trend_min_history: int = 5  # earlier backups needed before trends judge
    stall_nights: int = 3  # backups without growth, after steady growth, that make a stall
    rto_horizon: timedelta = timedelta(days=30)  # a forecast crossing of the RTO within this fails
    invariants: tuple[Invariant, ...] = ()  # queries that must give an expected number
    schema_only: bool = False  # the series' backups hold the schema alone, on purpose
    static_tables: tuple[str, ...] = ()  # tables done growing: a stall or leak of theirs is no finding
    acknowledged: tuple[tuple[str, date], ...] = ()  # (table, until): its stall or leak is known until that day
    restore_timeout: timedelta | None = None  # a restore still running after this is stopped, with a finding
    one_pass_from: int = 64 << 20  # a plain dump this large (as stored) is read once, by its restore
    require_manifest: bool = False  # every backup must have a manifest (backupcheck dump)
    manifest_tolerance: float = 0.01  # rows against a manifest taken after the dump, not in its snapshot
    wal_archive: str = ""  # a physical series' WAL archive folder, where it is not beside the base backups
    recovery_window: timedelta | None = None  # how far back point-in-time recovery is promised
    recover_to: str = ""  # a moment or "name:POINT" to recover base backups to (else the archive's end)
    amcheck_budget: timedelta = timedelta(minutes=10)  # the time pg_amcheck may take on one recovered backup
    extra: tuple[tuple[str, Any], ...] = ()  # settings of a team's own families, by key

    def option(self, key: str, default: Any = None) -> Any:
        """A team family's own setting (``extra``), or ``default`` where the series gives none."""
        return dict(self.extra).get(key, default)

    def quiet_tables(self, today: date) -> dict[str, str]:
        """Tables whose stalls and leaks are not findings today, with why."""
        out = {t: "static" for t in self.static_tables}
        out.update({t: f"acknowledged until {d:%Y-%m-%d}" for t, d in self.acknowledged if today <= d})
        return out

    @property
    def retention_rules(self) -> tuple[Any, ...] | None:
        """The retention policy and max_age, when either is configured (the retention check runs then)."""
        return (self.retention, self.max_age) if self.retention or self.max_age is not None else None


SERIES_WIDE = (
    Setting("restore", "series", parse_restore, "which of the series' backups to restore: \"newest\", \"all\" or "
            "the newest N", "the run's restore"),
    Setting("severity", "series", parse_choice(*SEVERITIES, lower=True), "the Allure severity of the series' checks: "
            + ", ".join(SEVERITIES), "normal"),
)


def series_schema() -> dict[str, Setting]:
    """Every key of ``[defaults]`` and ``[series.NAME]``: the series-wide ones, then each family's own, as its module
    under ``checks/`` declares them (registration order)."""
    out = {s.key: s for s in SERIES_WIDE}
    for family in REGISTRY.values():
        for setting in family.schema():
            if setting.key in out:
                raise ValueError(f"series setting {setting.key} is declared by {out[setting.key].family} and "
                                 f"{family.name}")
            out[setting.key] = setting
    return out


_FIELDS = {f.name for f in fields(SeriesSettings)}


def _series_settings(raw: dict[str, Any], base: SeriesSettings, where: str) -> SeriesSettings:
    if not raw:  # nothing to read: the families' modules stay unloaded (an installed plugin in another project)
        return base
    schema = series_schema()
    unknown = set(raw) - set(schema)
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(schema))}")
    s = base
    for key, setting in schema.items():  # in declaration order: encryption before kms_key_id
        if key in raw:
            changes = setting.fields(s, setting.parse(raw[key], f"{where}.{key}"))
            extra = {k: v for k, v in changes.items() if k not in _FIELDS}  # a team family's own keys
            s = replace(s, **{k: v for k, v in changes.items() if k in _FIELDS},
                        extra=tuple({**dict(s.extra), **extra}.items()) if extra else s.extra)
    return s


def table_markdown() -> str:
    """The README's tables of settings, generated from the declarations (a test keeps the README equal): the keys of
    ``[defaults]`` / ``[series.NAME]``, then those of each source kind's table."""

    head = ["| key | read by | default | what it sets |", "|---|---|---|---|"]
    out = ["Keys of `[defaults]` and `[series.NAME]`:", "", *head, *markdown_rows(series_schema().values())]
    for kind in source_kinds.known():
        if kind.settings():
            out += ["", f"Keys of `[{kind.scheme}]` and of a `sources = [{{ url = \"{kind.example}\", … }}]` table:", "",
                    *head, *markdown_rows(kind.settings())]
    return "\n".join(out) + "\n"


def _recover_to(value: Any) -> str:
    if value is None:
        return ""
    from .checks.physical import parse_target

    return parse_target(value, "recover_to")


def parse_now(value: Any, key: str) -> datetime:
    """An ISO 8601 moment with its offset (``2026-11-21T03:00:00Z``): the moment ages are measured from."""
    text = str(value).strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ConfigError(f"{key} = {value!r}: expected an ISO 8601 moment with an offset, like "
                          "'2026-11-21T03:00:00Z'") from None
    if when.tzinfo is None:
        raise ConfigError(f"{key} = {value!r}: give the offset too, like '2026-11-21T03:00:00Z' or '+01:00'")
    return when.astimezone(UTC)


PROVIDERS = ("auto", "container", "local", "dsn")
_PROFILE_KEYS = {"base", "bootstrap_sql", "bootstrap_files", "tolerated_errors", "skip_extensions"}


def _profiles(raw: Any, base_dir: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("[profiles]: expected tables like [profiles.supabase]")
    out = {}
    for name, spec in raw.items():
        where = f"profiles.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"[{where}]: expected a table with keys {', '.join(sorted(_PROFILE_KEYS))}")
        unknown = set(spec) - _PROFILE_KEYS
        if unknown:
            raise ConfigError(f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_PROFILE_KEYS))}")
        base = str(spec.get("base", name if name in BUILTIN else "vanilla"))
        if base not in BUILTIN:
            raise ConfigError(f"{where}.base = {base!r}: expected one of {', '.join(BUILTIN)}")
        sql = str(spec.get("bootstrap_sql", ""))
        files = spec.get("bootstrap_files", [])
        if isinstance(files, str):
            files = [files]
        for f in files:
            path = Path(f) if Path(f).is_absolute() else base_dir / f
            try:
                sql += "\n" + path.read_text()
            except OSError as exc:
                raise ConfigError(f"{where}.bootstrap_files: cannot read {path}: {exc.strerror or exc}") from None
        skip = spec.get("skip_extensions", [])
        if not isinstance(skip, list):
            raise ConfigError(f"{where}.skip_extensions: expected a list of extension names")
        out[name] = Profile(name=name, base=base, bootstrap_sql=sql,
                            tolerated_errors=parse_patterns(spec.get("tolerated_errors", []), f"{where}.tolerated_errors"),
                            skip_extensions=tuple(str(x) for x in skip))
    for name in BUILTIN:
        out.setdefault(name, builtin(name))
    return out


def _options(kind: Any, raw: dict[str, Any], base: Any, where: str) -> Any:
    try:
        return kind.parse_options(raw, base, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once."""

    sources: tuple[str, ...] = ()
    restore: str | int = 1
    restore_jobs: int = 2
    pg_bin: tuple[str, ...] = ()
    work_dir: Path | None = None
    reports_dir: Path = Path("reports")
    defaults: SeriesSettings = SeriesSettings()
    series: dict[str, SeriesSettings] = field(default_factory=dict)
    config_file: Path | None = None
    demo: bool = False
    partial: str = ""  # what a run that checks part of the backups selected (-k, -m, node ids, --lf), or ""
    only_series: tuple[str, ...] = ()  # --series: the series this run verifies (all when empty)
    cache_dir: Path | None = None  # downloads from S3, kept between runs
    gpg_passphrase_env: str = "BACKUPCHECK_GPG_PASSPHRASE"  # the variable holding the passphrase (never the value)
    # remote source options by URL prefix: "<scheme>://" holds a kind's defaults (the [s3] table), a source URL
    # its own table's
    remote_options: dict[str, Any] = field(default_factory=dict)
    pg_bin_only: bool = False
    pg_provider: str = "auto"  # auto, container, local or dsn
    container_image: str = "postgres:{major}"
    ryuk: bool = True
    dsn: str = ""  # for the dsn provider; may hold a password, so it is never shown as is
    profiles: dict[str, Any] = field(default_factory=dict)  # name -> Profile
    now: datetime | None = None  # the moment ages are measured from (default: when the run starts)
    recover_to: str = ""  # --recover-to: where physical backups are recovered to, for series that set none
    history: str = "off"  # off, a SQLite file, or a postgresql:// DSN (built runs default to the user's data folder)
    metrics_file: Path | None = None  # a node_exporter textfile
    notify: Any = None  # backupcheck.metrics.Notify
    streak_runs: int = 3  # a check failing this many runs in a row is escalated
    plan_out: Path | None = None  # write the plan here and check nothing
    plan: Path | None = None  # verify what this plan lists, without listing the sources
    shard: Any = None  # backupcheck.plan.Shard: this job's share of the plan
    gate: GateSettings = GateSettings()

    def profile(self, series: str) -> Any:
        """The series' configured Profile, or None when it is to be detected from the dump."""

        name = self.for_series(series).profile
        if name is None:
            return None
        return self.profiles.get(name) or builtin(name)

    @property
    def tools(self) -> Any:
        """pg_bin, pg_bin_only and the container image as one value (``backupcheck.pgbin.Tools``)."""

        return Tools(tuple(self.pg_bin), self.pg_bin_only, self.container_image)

    def for_series(self, name: str) -> SeriesSettings:
        return self.series.get(name, self.defaults)

    def to_restore(self, listing: Any) -> list[Any]:
        """The backups of a listing this run restores: the newest of each series by default; all, or the newest
        N, when configured. A series of config files or bundles has nothing to restore."""
        chosen = []
        for series in listing.series:
            if not any(b.restorable for b in series.backups):
                continue
            how = self.restore_count(series.name)
            backups = list(series.backups)
            chosen += backups if how == "all" else backups[len(backups) - int(how):] if int(how) else []
        return chosen

    def restore_count(self, series: str) -> str | int:
        own = self.for_series(series).restore
        return own if own is not None else self.restore


_TOP_KEYS = {"sources", "recover_to", "restore", "restore_jobs", "pg_bin", "work_dir", "reports_dir", "defaults", "series",
             "cache_dir", "gpg_passphrase_env", "pg_provider", "container", "dsn", "profiles",
             "pg_bin_only", "now", "history", "metrics_file", "notify", "streak_runs", "plan_out", "plan", "shard", "gate"}
_NOTIFY_KEYS = {"url_env", "on", "timeout"}
_CONTAINER_KEYS = {"image", "ryuk"}


def load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    section = data.get("backupcheck", {})
    top = {k: v for k, v in data.items() if k != "backupcheck"}
    merged = {**top, **section}

    known = _TOP_KEYS | source_kinds.top_keys()  # and a table per remote source kind ([s3])
    unknown = set(merged) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return merged


def build(cli: dict[str, Any], file_data: dict[str, Any], config_file: Path | None, base_dir: Path) -> Settings:
    """Resolve explicit command line > config file > default, with ``is not None``."""

    def pick(key: str, default: Any) -> Any:
        if cli.get(key) is not None:
            return cli[key]
        if file_data.get(key) is not None:
            return file_data[key]
        return default

    def rel(p: str) -> str:
        # Paths in the config file are relative to the file; on the command line, to the current folder.
        return p if "://" in p or Path(p).is_absolute() else str(base_dir / p)


    remote: dict[str, Any] = {}
    for kind in source_kinds.known():  # each remote kind's defaults: the table named like its scheme ([s3])
        section = file_data.get(kind.scheme, {}) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"[{kind.scheme}]: expected a table of settings for {kind.example} sources")
        if section:  # none: the kind's own defaults, and its module stays unloaded in a run that does not use it
            remote[f"{kind.scheme}://"] = _options(kind, section, None, kind.scheme)
    raw = file_data.get("sources", [])
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError("sources: expected a list of folders or URLs")
    names = []
    for item in raw:
        if isinstance(item, dict):
            url = item.get("url")
            kind = source_kinds.kind_of(url) if isinstance(url, str) else None
            if kind is None:
                examples = " or ".join(f'url = "{k.example}"' for k in source_kinds.known())
                raise ConfigError(f"sources: {item!r}: a table needs {examples}")
            # Registered even when --backups replaces the list: the same URL there keeps its endpoint.
            remote[url] = _options(kind, item, remote.get(f"{kind.scheme}://"), f"sources[{url}]")
            names.append(url)
        else:
            names.append(rel(str(item)))
    sources_cli = cli.get("sources")
    sources = tuple(sources_cli) if sources_cli is not None else tuple(names)
    for url in sources:
        if source_kinds.is_remote(url):
            kind = source_kinds.kind_of(url)
            if kind is None:
                raise ConfigError(f"sources: {source_kinds.unknown_kind(url)}")
            try:
                kind.check_url(url)
            except ValueError as exc:
                raise ConfigError(f"sources: {exc}") from None

    restore = parse_restore(pick("restore", "newest"), "restore")
    jobs_raw = pick("restore_jobs", 2)
    try:
        jobs = int(jobs_raw)
        if jobs < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"restore_jobs = {jobs_raw!r}: expected a whole number of at least 1") from None
    pg_bin_raw = cli.get("pg_bin") if cli.get("pg_bin") is not None else file_data.get("pg_bin", [])
    if isinstance(pg_bin_raw, str):
        pg_bin_raw = [pg_bin_raw]
    pg_bin = tuple(rel(str(p)) if cli.get("pg_bin") is None else str(p) for p in pg_bin_raw)
    def path_setting(key: str, default: str | None) -> str | None:
        if cli.get(key) is not None:
            return str(cli[key])
        if file_data.get(key) is not None:
            return rel(str(file_data[key]))
        return default

    work_dir = path_setting("work_dir", None)
    reports_dir = path_setting("reports_dir", "reports")
    cache_dir = path_setting("cache_dir", None)

    defaults = _series_settings(file_data.get("defaults", {}) or {}, SeriesSettings(), "defaults")
    series_raw = file_data.get("series", {}) or {}
    if not isinstance(series_raw, dict):
        raise ConfigError("[series]: expected tables like [series.orders]")
    series = {name: _series_settings(raw or {}, defaults, f"series.{name}") for name, raw in series_raw.items()}
    profiles = _profiles(file_data.get("profiles", {}) or {}, base_dir)
    for where, cfg in [("defaults", defaults), *((f"series.{n}", c) for n, c in series.items())]:
        if cfg.profile is not None and cfg.profile not in profiles:
            raise ConfigError(f"{where}.profile = {cfg.profile!r}: expected one of {', '.join(sorted(profiles))} "
                              "(or define it under [profiles.NAME])")

    provider = str(pick("pg_provider", "auto"))
    if provider not in PROVIDERS:
        raise ConfigError(f"pg_provider = {provider!r}: expected one of {', '.join(PROVIDERS)}")
    container = file_data.get("container", {}) or {}
    if not isinstance(container, dict) or set(container) - _CONTAINER_KEYS:
        raise ConfigError(f"[container]: expected a table with keys {', '.join(sorted(_CONTAINER_KEYS))}")
    image = str(cli["container_image"]) if cli.get("container_image") is not None else str(container.get("image", "postgres:{major}"))
    if "{major}" not in image and ":" not in image.rsplit("/", 1)[-1]:
        raise ConfigError(f"container.image = {image!r}: expected a template like 'postgres:{{major}}' or a full image name with a tag")
    ryuk_raw = cli.get("ryuk") if cli.get("ryuk") is not None else container.get("ryuk", True)
    if isinstance(ryuk_raw, str) and ryuk_raw.lower() in ("on", "off", "true", "false"):
        ryuk_raw = ryuk_raw.lower() in ("on", "true")
    if not isinstance(ryuk_raw, bool):
        raise ConfigError(f"container.ryuk = {ryuk_raw!r}: expected true or false (--container-ryuk on|off)")
    now_raw = pick("now", None)
    now = parse_now(now_raw, "now") if now_raw is not None else None
    dsn = str(pick("dsn", ""))
    if provider == "dsn" and not dsn:
        raise ConfigError("pg_provider = 'dsn' needs a server: --pg-dsn 'host=... user=... dbname=postgres' (config: dsn); "
                          "give the password through PGPASSWORD or ~/.pgpass")
    history_raw = pick("history", None)
    if history_raw is None:

        history = str(default_path())
    else:
        history = str(history_raw).strip()

        if history.lower() not in ("off", "none", "false") and not is_dsn(history):
            history = rel(history) if cli.get("history") is None else history
    metrics_file = path_setting("metrics_file", None)
    notify = _notify(file_data.get("notify"))
    streak_runs = parse_count(pick("streak_runs", 3), "streak_runs")
    plan_out, plan_in = path_setting("plan_out", None), path_setting("plan", None)
    shard_raw = pick("shard", None)
    # A CI system's index (GitLab sets CI_NODE_INDEX in every parallel job) counts only for a plan's shards.
    shard = _shard(shard_raw) if shard_raw is not None or plan_in is not None else None
    if shard is not None and plan_in is None:
        raise ConfigError("shard = K/N needs a plan (--plan FILE, made once with --plan-out): shards never list "
                          "the sources themselves")
    if plan_out is not None and plan_in is not None:
        raise ConfigError("plan_out and plan exclude each other: plan once (--plan-out), then verify (--plan)")
    gate = _gate(file_data.get("gate"), cli, rel)
    return Settings(
        gate=gate, history=history, metrics_file=Path(metrics_file) if metrics_file else None, notify=notify,
        streak_runs=streak_runs, plan_out=Path(plan_out) if plan_out else None, plan=Path(plan_in) if plan_in else None,
        shard=shard,
        sources=sources, restore=restore, restore_jobs=jobs, pg_bin=pg_bin,
        work_dir=Path(work_dir) if work_dir else None, reports_dir=Path(reports_dir or "reports"),
        defaults=defaults, series=series, config_file=config_file,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else None, remote_options=remote,
        gpg_passphrase_env=str(file_data.get("gpg_passphrase_env", "BACKUPCHECK_GPG_PASSPHRASE")),
        pg_bin_only=bool(pick("pg_bin_only", False)), pg_provider=provider, container_image=image, ryuk=ryuk_raw, dsn=dsn, profiles=profiles,
        now=now,
        recover_to=_recover_to(pick("recover_to", None)),
    )


def _notify(raw: Any) -> Any:
    """[notify]: url_env names the variable holding the webhook URL (a secret, so never the URL itself)."""
    if raw is None:
        return None

    if not isinstance(raw, dict) or set(raw) - _NOTIFY_KEYS or "url_env" not in raw:
        raise ConfigError("[notify]: expected a table like { url_env = \"SLACK_WEBHOOK_URL\", on = \"failure\" } "
                          f"(keys: {', '.join(sorted(_NOTIFY_KEYS))})")
    env = str(raw["url_env"])
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env) or "://" in env:
        raise ConfigError(f"notify.url_env = {env!r}: expected the NAME of an environment variable holding the "
                          "webhook URL (the URL is a secret: keep it out of the file)")
    on = str(raw.get("on", "failure"))
    if on not in ("failure", "always"):
        raise ConfigError(f"notify.on = {on!r}: expected 'failure' or 'always'")
    timeout = parse_duration(raw.get("timeout", "10s"), "notify.timeout").total_seconds()
    return Notify(url_env=env, on=on, timeout=timeout)


def _shard(raw: Any) -> Any:
    """K/N from the setting, else from the CI system's environment (GitLab, a Kubernetes Indexed Job)."""


    try:
        return parse_shard(str(raw), "shard") if raw is not None else shard_from_environment(dict(os.environ))
    except PlanError as exc:
        raise ConfigError(str(exc)) from None
