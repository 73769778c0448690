"""The run's life: a private work folder, the demo when nothing is configured, and one shared listing."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from backupcheck import demo, listing_io, sources
from backupcheck import plan as planning
from backupcheck.discovery import discover
from backupcheck.history import HistoryError, open_store
from backupcheck.model import Backup, Listing
from backupcheck.pgarchive import ArchiveError, read_archive
from backupcheck.plan import drift
from backupcheck.restore import providers
from backupcheck.restore.progress import Reporter, download_line
from backupcheck.restore.providers import Decision, Provider, ProviderError
from backupcheck.servers import containers
from backupcheck.servers.cluster import ClusterFactory, RunDir, ServerStartError, fast_base
from backupcheck.servers.pgbin import NoSuitableBinaries
from backupcheck.servers.templates import TemplateCache, user_cache
from backupcheck.settings import ConfigError, Settings, build, load_file
from backupcheck.sniff import open_sql

from .options import SETTINGS, _config_file, asked_for, names_the_suites, resolve


@dataclass
class RunState:
    rundir: Path
    shared: Path  # the controller's folder: listing and evidence cache, shared by workers
    listing: Listing
    demo_dir: Path | None
    _cms: list[RunDir]
    factory: ClusterFactory
    decision: Decision
    provider: Provider
    plan: dict | None = None  # {"id", "shard": K, "shards": N} when verifying a plan
    drift: dict[str, list[str]] | None = None  # backup key -> what changed since the plan listed it

    def close(self) -> None:
        try:
            self.provider.close()
        finally:
            self.factory.wait()
            for cm in reversed(self._cms):
                cm.__exit__(None, None, None)


RUN = pytest.StashKey[RunState]()


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C can leave a frame without a line number in the interrupt's traceback (Python 3.11, an interrupt
    landing between two instructions); pytest's own report of the interrupt then fails, and the run ends as an
    internal error (exit 1) instead of interrupted (exit 2). Those entries are left out of the report."""
    try:
        excinfo.traceback = excinfo.traceback.filter(lambda entry: entry._rawentry.tb_lineno is not None)
    except Exception:  # noqa: BLE001 (pytest's report as it would have been)
        pass


def _only(listing: Listing, names: tuple[str, ...]) -> Listing:
    """The series ``--series`` names; one that is not there is a problem of the listing (a failed check)."""
    found = {s.name for s in listing.series}
    problems = [*listing.problems, *(f"--series {n}: no series of that name (found: {', '.join(sorted(found)) or 'none'})"
                                     for n in names if n not in found)]
    return Listing([s for s in listing.series if s.name in names], problems)


def runs_suites(config: pytest.Config) -> bool:
    """True when this invocation verifies backups: backups are named (a team's own checks on them count), or it
    collects the built-in suites (in a checkout, with none named: the demo)."""
    return asked_for(config) or names_the_suites(config.args)


def _demo_settings(config: pytest.Config, demo_dir: Path) -> None:
    settings = config.stash[SETTINGS]
    try:
        data = load_file(demo_dir / "backupcheck.toml")
        demo = build({}, data, demo_dir / "backupcheck.toml", demo_dir)
    except ConfigError as exc:  # our own file: a bug, but say it plainly
        raise pytest.UsageError(f"backupcheck demo: {exc}") from None
    config.stash[SETTINGS] = replace(
        settings, sources=(str(demo_dir / "demo-backups"),), series=demo.series, demo=True
    )


PROGRESS = pytest.StashKey[Reporter | None]()
EVIDENCE = pytest.StashKey[Any]()  # the process's EvidenceStore, once the first test made it
_AHEAD = pytest.StashKey[dict[str, Backup | None]]()  # backup key -> the backup this process checks next
_AHEAD_DONE = pytest.StashKey[set[str]]()
_PROGRESS_FD = pytest.StashKey[int]()


def progress_reporter(config: pytest.Config) -> Reporter | None:
    """Restore progress on the terminal the run was started from (pytest captures what tests print): a live line
    on a terminal, a plain line every 30 s elsewhere (CI), each worker's prefixed with its id; none with -q.
    BACKUPCHECK_PROGRESS_SECONDS sets the interval."""
    if config.option.verbose < 0 or config.option.collectonly:
        return None
    try:
        fd = os.dup(2)
    except OSError:
        return None
    config.stash[_PROGRESS_FD] = fd
    worker = getattr(config, "workerinput", {}).get("workerid")
    live = os.isatty(fd) and worker is None
    chosen = os.environ.get("BACKUPCHECK_PROGRESS_SECONDS")
    every = float(chosen) if chosen else 1.0 if live else 30.0
    first = float(chosen) if chosen else 3.0 if live else 30.0
    prefix = f"[{worker}] " if worker else ""

    def say(line: str) -> None:
        os.write(fd, (f"\r\x1b[K{prefix}{line}" if live else f"{prefix}{line}\n").encode())

    def done() -> None:
        if live:
            os.write(fd, b"\r\x1b[K")

    return Reporter(say, every, first, done)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not runs_suites(config):
        return
    config.stash[PROGRESS] = progress_reporter(config)
    settings = config.stash[SETTINGS]
    cms = [RunDir(settings.work_dir)]
    rundir = cms[0].__enter__()
    fastdir = None
    if settings.work_dir is None and fast_base() is not None:
        # No folder chosen: keep data directories in RAM when they fit (see ClusterFactory).
        cms.append(RunDir(fast_base()))
        fastdir = cms[1].__enter__()
    workerinput = getattr(config, "workerinput", None)
    factory = ClusterFactory(rundir, fastdir, TemplateCache(user_cache() / "templates"))
    try:
        if workerinput is not None and "backupcheck_listing" in workerinput:
            shared = Path(workerinput["backupcheck_shared"])
            demo_dir = Path(workerinput["backupcheck_demo"]) if workerinput.get("backupcheck_demo") else None
            if demo_dir:
                _demo_settings(config, demo_dir)
            listing = listing_io.load(Path(workerinput["backupcheck_listing"]))
        elif settings.plan is not None:  # a plan's share: the sources are not listed again
            shared, demo_dir = rundir, None
            listing = _planned(config, settings)
            listing_io.dump(listing, rundir / "listing.json")
        else:
            shared = rundir
            demo_dir = None
            if not settings.sources:

                demo_dir = rundir / "demo"
                try:
                    demo.build(demo_dir, factory, settings.tools, now=settings.now)
                except (NoSuitableBinaries, ServerStartError, RuntimeError, OSError) as exc:
                    raise pytest.UsageError(
                        f"backupcheck: no backups are configured, and the built-in demo could not be made: {exc}"
                    ) from None
                _demo_settings(config, demo_dir)
            final = config.stash[SETTINGS]
            own = tuple(p for p in (final.reports_dir, final.work_dir) if p is not None)
            local = sources.local_paths(final.sources)
            remote, problems = list_remote(final)
            listing = discover(local, exclude=own, remote=remote,
                               name_zone=lambda name: final.for_series(name).name_timezone,
                               access=remote_access(final) if remote else None)
            listing.problems[:0] = problems
            if final.only_series:
                listing = _only(listing, final.only_series)
            listing_io.dump(listing, rundir / "listing.json")
        final = config.stash[SETTINGS]
        distributing = workerinput is None and config.getoption("numprocesses", None)
        told = Decision(workerinput["backupcheck_provider"], workerinput["backupcheck_provider_reason"]) \
            if workerinput is not None and "backupcheck_provider" in workerinput else None
        # Read once: the controller's auto needs them to check images, a process that restores to prewarm initdb.
        deciding = told is None and final.pg_provider == "auto"
        restoring_here = not distributing and (told.kind == "local" if told else final.pg_provider in ("auto", "local"))
        needs = _needed_majors(listing, final) if deciding or restoring_here else {}
        if restoring_here:
            # Before deciding (asking Docker takes a while): a local restore, likely under auto, finds its server
            # ready; if containers win, the template is made for nothing and the started server is stopped.
            _prewarm(factory, needs, listing, final)
        decision = told or _decide(final, set(needs.values()))
        provider = _provider(decision, final, factory, rundir)
    except BaseException:
        factory.wait()
        for cm in reversed(cms):
            cm.__exit__(None, None, None)
        raise
    if decision.kind != "local":
        factory.wait()  # nothing started ahead stays running beside the containers
    config.stash[RUN] = RunState(rundir, shared, listing, demo_dir, cms, factory, decision, provider,
                                 config.stash.get(_PLAN, None), _drift(config, listing))


_PLAN = pytest.StashKey[dict]()


def _planned(config: pytest.Config, settings: Settings) -> Listing:
    """The listing a plan holds (this shard's series only, with --shard)."""

    assert settings.plan is not None
    try:
        document = planning.load(settings.plan)
    except planning.PlanError as exc:
        raise pytest.UsageError(f"backupcheck: {exc}") from None
    shard = settings.shard
    config.stash[_PLAN] = {"id": document["id"], "index": shard.index if shard else 1,
                           "total": shard.total if shard else 1}
    return planning.shard_listing(document, shard) if shard else planning.listing_of(document)


def _drift(config: pytest.Config, listing: Listing) -> dict[str, list[str]] | None:
    """With a plan (on the controller and on every worker): what changed in the planned files since."""
    if config.stash[SETTINGS].plan is None:
        return None

    return drift(listing)


def _decide(settings: Settings, majors: set[int]) -> Decision:
    """On the controller, once: which provider restores, and why (workers are told, not asked)."""

    try:
        decision = providers.decide(settings.pg_provider, settings.container_image, settings.dsn,
                                    majors)
    except ProviderError as exc:
        raise pytest.UsageError(f"backupcheck: {exc}") from None
    if decision.kind == "container":
        swept = containers.sweep_stale()
        if swept:
            decision = Decision(decision.kind, decision.reason + f"; removed {len(swept)} container(s) left by a "
                                "crashed run")
    return decision


def _provider(decision: Decision, settings: Settings, factory: ClusterFactory, rundir: Path) -> Provider:
    if decision.kind == "container":
        return providers.ContainerProvider(settings.container_image, rundir.name, settings.ryuk)
    if decision.kind == "dsn":
        try:
            return providers.DsnProvider(settings.dsn, settings.tools)
        except ProviderError as exc:
            raise pytest.UsageError(f"backupcheck: {exc}") from None
    return providers.LocalProvider(factory, settings.tools)


def _needed_majors(listing: Listing, settings: Settings) -> dict[str, int]:
    """The server version each planned restore needs (by backup key), from archive headers and plain dumps'
    first lines; backups whose dumps do not say are left out."""


    needs: dict[str, int] = {}
    for backup in settings.to_restore(listing):
        for a in backup.dumps:
            try:
                if a.format in ("custom", "directory", "tar") and not a.compression:
                    info = read_archive(a.path, a.format, header_only=True)
                    need = max(info.min_restore_major, info.dump_major or 0)
                elif a.format in ("plain", "dumpall"):
                    with open_sql(a.path, a.compression) as (f, _):
                        m = re.search(rb"Dumped by pg_dump(?:all)? version (\d+)", f.read(4096))
                    if not m:
                        continue
                    need = int(m.group(1))
                else:
                    continue
            except (ArchiveError, OSError, ValueError):
                continue
            needs[backup.key] = max(needs.get(backup.key, 0), need)
    return needs


def _prewarm(factory: ClusterFactory, needs: dict[str, int], listing: Listing, settings: Settings) -> None:
    """Start initdb for the installations the first restores will need, if their dumps say which, and the
    first restore's server."""
    first = next((b for b in settings.to_restore(listing) if b.key in needs), None)
    for need in sorted(set(needs.values()))[:2]:
        try:
            inst = settings.tools.pick(need)
        except NoSuitableBinaries:
            continue  # the restore test says so, with every place looked
        start = first is not None and needs[first.key] == need
        factory.prewarm(inst, start_for=first.room_needed if first is not None and start else None)


def cache_dir(settings: Settings) -> Path:
    """Where S3 downloads are kept between runs (so a second run fetches nothing)."""
    if settings.cache_dir is not None:
        return settings.cache_dir
    return user_cache() / "downloads"


def remote_access(settings: Settings, config: pytest.Config | None = None):  # type: ignore[no-untyped-def]
    """Access to the run's remote sources and the series' remote WAL archives (None when all are local): listing,
    heads, downloads into the cache."""
    return sources.remote_access(settings, cache_dir(settings), _progress(config) if config else None)


def _progress(config: pytest.Config):  # type: ignore[no-untyped-def]
    """Downloads said like restores (the same reporter, lines and interval): a download that takes longer than
    the reporter's first interval gets a line; none with -q."""
    reporter = config.stash.get(PROGRESS, None)
    if reporter is None:
        return None
    started: dict[str, float] = {}
    due: dict[str, float] = {}  # url -> seconds into its download when the next line is due, once one was said

    def report(url: str, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed = now - started.setdefault(url, now)
        if done >= total:
            started.pop(url, None)
            if due.pop(url, None) is not None:
                reporter.done()
        elif elapsed >= due.get(url, reporter.first):
            reporter.say(download_line(url, done, total, elapsed))
            due[url] = elapsed + reporter.every

    return report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    yield
    download_ahead(item)


def download_ahead(item: pytest.Item) -> None:
    """Once a backup's bytes are fetched, download the next backup's remote objects in the background, so the
    download overlaps this backup's restore and checks. One process checking every backup in order only: an xdist worker
    does not know which backup it is sent next."""
    config = item.config
    store = config.stash.get(EVIDENCE, None)
    if store is None or store.remote is None or hasattr(config, "workerinput") or \
            config.getoption("numprocesses", None):
        return
    backup = getattr(getattr(item, "callspec", None), "params", {}).get("backup")
    done = config.stash.setdefault(_AHEAD_DONE, set())
    if not isinstance(backup, Backup) or backup.key in done or not store.localized(backup.key):
        return  # only once this backup's own bytes were needed: checks that need none download nothing ahead
    done.add(backup.key)
    if _AHEAD not in config.stash:
        order: list[Backup] = []
        for it in item.session.items:
            b = getattr(getattr(it, "callspec", None), "params", {}).get("backup")
            if isinstance(b, Backup) and (not order or order[-1].key != b.key):
                order.append(b)
        config.stash[_AHEAD] = {b.key: (order[i + 1] if i + 1 < len(order) else None) for i, b in enumerate(order)}
    following = config.stash[_AHEAD].get(backup.key)
    if following is not None and following.key not in done:
        store.prefetch(following)


def list_remote(settings: Settings):  # type: ignore[no-untyped-def]
    """List every remote source once (paginated); a source that cannot be listed is a problem, not a crash."""
    access = remote_access(settings)
    if access is None:
        return [], []
    return sources.list_remote(settings, access)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PROGRESS_FD in config.stash:
        os.close(config.stash[_PROGRESS_FD])
        del config.stash[_PROGRESS_FD]
    state = config.stash.get(RUN, None)
    if state is not None:
        state.close()
        del config.stash[RUN]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]
    """xdist, on the controller: hand every worker the one listing made here."""
    state = node.config.stash.get(RUN, None)
    if state is None:
        return
    node.workerinput["backupcheck_listing"] = str(state.rundir / "listing.json")
    node.workerinput["backupcheck_shared"] = str(state.rundir)
    node.workerinput["backupcheck_demo"] = str(state.demo_dir) if state.demo_dir else ""
    node.workerinput["backupcheck_provider"] = state.decision.kind
    node.workerinput["backupcheck_provider_reason"] = state.decision.reason


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """--plan-out: list the sources once, write the plan, and stop before any server or test."""
    if not getattr(config.option, "bc_plan_out", None) and not _plan_out_in_config(config):
        return None


    settings = resolve(config)
    if settings.plan_out is None:
        return None
    own = tuple(p for p in (settings.reports_dir, settings.work_dir) if p is not None)
    remote, problems = list_remote(settings)
    listing = discover(sources.local_paths(settings.sources), exclude=own, remote=remote,
                       name_zone=lambda name: settings.for_series(name).name_timezone,
                       access=remote_access(settings) if remote else None)
    listing.problems[:0] = problems
    needs = _needed_majors(listing, settings)
    store = None
    if settings.history.strip().lower() not in ("off", "none", "false"):

        try:
            store = open_store(settings.history)
        except HistoryError:
            store = None  # costs from sizes alone
    try:
        document = planning.make(listing, [str(s) for s in settings.sources], settings.to_restore(listing),
                                 lambda b: needs.get(b.key),
                                 (lambda series: store.restore_costs(series, 10)) if store else (lambda series: []))
    finally:
        if store is not None:
            store.close()
    planning.write(document, settings.plan_out)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    line = (f"backupcheck: plan {document['id']} written to {settings.plan_out}: {len(listing.backups())} backup(s) "
            f"in {len(listing.series)} series, {len(document['restore'])} to restore"
            + (f"; {len(listing.problems)} source problem(s)" if listing.problems else ""))
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)
    return 0


def _plan_out_in_config(config: pytest.Config) -> bool:
    try:
        path = _config_file(config)
        return bool(path and load_file(path).get("plan_out"))
    except (ConfigError, OSError):
        return False
