"""Parametrize the suites by backup and series, in one hook, from the one shared listing."""

from __future__ import annotations

import functools
import re

import pytest

from backupcheck.families import REGISTRY, family_of_module
from backupcheck.model import Backup, Listing, safe_id

from .options import SETTINGS, SUITES
from .run import RUN


def _restore_based(family: str) -> bool:
    """Read when asked: a team's family registers through pytest_backupcheck_extend, after this module loads."""
    return family in REGISTRY and REGISTRY[family].needs_restore
RESTORE_PLANNED = pytest.StashKey[frozenset[str]]()
# A test asking for any of these reads a restored database (users' own checks need no marker).
RESTORED_FIXTURES = frozenset({"restored", "restore_attempt", "restored_db", "restored_dsn"})


_PARAM = re.compile(r"\[([^\[\]]*)\](?:@[^\]]*)?$")


class Groups:
    """A test's group from its id: the backup (or series) parameter it carries, found among the listing's own
    keys, so that a second parametrize axis (``[shop-20261121T020000Z-orders]``) does not split a backup."""

    def __init__(self, listing: Listing) -> None:
        self.keys = {b.key for b in listing.backups()}
        self.series = {safe_id(s.name): f"series-{safe_id(s.name)}" for s in listing.series}

    def of(self, nodeid: str) -> str:
        m = _PARAM.search(nodeid)
        if not m:
            return "run"
        ident = m.group(1)
        if ident in self.keys:
            return ident
        if ident in self.series:  # a series-wide test: [shop]
            return self.series[ident]
        parts = ident.split("-")
        # the longest run of '-'-joined parts that is a backup key (ids of several parameters are '-'-joined)
        for size in range(len(parts) - 1, 0, -1):
            for start in range(len(parts) - size + 1):
                candidate = "-".join(parts[start:start + size])
                if candidate in self.keys:
                    return candidate
        return "run"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """Send all tests of one backup to one worker, so it is restored once.

    xdist's own loadgroup (``xdist_group`` marks) works by rewriting node ids, which pytest 9.2 no longer takes
    into account: the marks are then silently ignored (pytest-dev/pytest-xdist#1386). The controller has the
    listing, so it groups by the backup each test id carries instead.
    """
    state = config.stash.get(RUN, None)
    if state is None or config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups = Groups(state.listing)

    class BackupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return groups.of(nodeid)

    return BackupScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    for family in REGISTRY.values():  # installed, there is no pyproject of ours to declare them
        config.addinivalue_line("markers", f"{family.name}: {family.description}")
    config.addinivalue_line("markers", "when_configured(key): only for series whose settings give KEY a value")
    config.addinivalue_line("markers", "needs_restore: the test reads a restored database")
    config.addinivalue_line("markers", "rehearsal: a gate test that reads the migrations' rehearsal")


def _configured(value: object) -> bool:
    """A zero RTO is a setting; an empty list of tables is not."""
    return value is not None and value != ()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wants_backup = "backup" in metafunc.fixturenames
    wants_series = "series" in metafunc.fixturenames
    if not (wants_backup or wants_series):
        return
    state = metafunc.config.stash.get(RUN, None)
    if state is None:
        raise pytest.UsageError("backupcheck: the suites were collected without their run set-up")
    settings = metafunc.config.stash[SETTINGS]
    marker = metafunc.definition.get_closest_marker("when_configured")
    family = _family_of_path(str(metafunc.definition.path))
    physical = family in REGISTRY and REGISTRY[family].physical_only
    if wants_series:
        series = list(state.listing.series)
        if physical:
            series = [s for s in series if any(b.base_backup is not None for b in s.backups)]
        if marker:
            series = [s for s in series if _configured(getattr(settings.for_series(s.name), marker.args[0]))]
        metafunc.parametrize("series", series, ids=[safe_id(s.name) for s in series])
        return
    if family in REGISTRY and REGISTRY[family].newest_only:
        backups = gated(metafunc.config, state.listing) if family == "gate" else [s.newest for s in state.listing.series]
        if metafunc.definition.get_closest_marker("rehearsal") and not settings.gate.rehearses:
            backups = []
    elif metafunc.definition.get_closest_marker("needs_restore") or RESTORED_FIXTURES & set(metafunc.fixturenames) \
            or _restore_based(family):
        backups = settings.to_restore(state.listing)
    else:
        backups = state.listing.backups()
    if marker:
        backups = [b for b in backups if _configured(getattr(settings.for_series(b.series), marker.args[0]))]
    if physical:
        backups = [b for b in backups if b.base_backup is not None]
    if "invariant" in metafunc.fixturenames:  # one test per backup and invariant of its series
        pairs = [(b, inv) for b in backups for inv in settings.for_series(b.series).invariants]
        metafunc.parametrize(("backup", "invariant"), pairs, ids=[f"{b.key}-{safe_id(i.name)}" for b, i in pairs])
        return
    metafunc.parametrize("backup", backups, ids=[b.key for b in backups])


def gated(config: pytest.Config, listing: Listing) -> list[Backup]:
    """The newest backup of each gated series, when the gate is asked for: migrations to rehearse, or -m naming
    the gate. A nightly run without either has no gate tests."""
    gate = config.stash[SETTINGS].gate
    asked = gate.rehearses or "gate" in (config.getoption("markexpr", "") or "")
    if not asked:
        return []
    return [s.newest for s in listing.series if not gate.series or s.name in gate.series]


def family_of(item: pytest.Item) -> str:
    """``suites/test_row_counts.py`` -> ``row_counts`` (from the path: item.module walks the tree each time)."""
    path = getattr(item, "path", None)
    if path is None:
        return ""
    return _family_of_path(str(path))


@functools.lru_cache(maxsize=256)
def _family_of_path(path: str) -> str:
    return family_of_module(path.rsplit("/", 1)[-1].removesuffix(".py"))


def subject_of(item: pytest.Item) -> tuple[str, str]:
    """(group, series) of an item: its backup's key or its series' name."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    b = params.get("backup")
    if isinstance(b, Backup):
        return b.key, b.series
    s = params.get("series")
    if s is not None and hasattr(s, "backups"):
        return f"series-{safe_id(s.name)}", s.name
    return "run", ""


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):  # type: ignore[no-untyped-def]
    """The built-in suites installed in a virtual environment inside the project are named
    ``backupcheck/suites/test_restore.py::…``, not ``.venv/lib/python3.11/site-packages/backupcheck/suites/…``:
    node ids, the terminal's lines and every report stay readable wherever pip put the package."""
    if module_path.parent != SUITES or parent.config.stash.get(RUN, None) is None:
        return None
    try:
        inside = module_path.relative_to(parent.config.rootpath)
    except ValueError:
        return None  # outside the project: pytest names it from the suites folder already
    if "site-packages" not in inside.parts and "dist-packages" not in inside.parts:
        return None  # a checkout: suites/test_restore.py
    return pytest.Module.from_parent(parent, path=module_path, nodeid=f"backupcheck/suites/{module_path.name}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before -k and xdist look: markers, keywords, groups and order."""
    if config.stash.get(RUN, None) is None:
        return
    kept, dropped = [], []
    family_marks = {f: getattr(pytest.mark, f).mark for f in REGISTRY}
    shard = config.stash[SETTINGS].shard
    for item in items:
        skip = item.get_closest_marker("skip")
        params = getattr(getattr(item, "callspec", None), "params", {})
        if ("backup" in params or "series" in params) and skip and "empty parameter set" in str(skip.kwargs.get("reason", "")):
            dropped.append(item)  # no backup it applies to (nothing configured, nothing restorable): not a test
            continue
        if shard is not None and shard.index != 1 and family_of(item) and subject_of(item)[0] == "run":
            dropped.append(item)  # run-wide checks (the sources as listed) belong to the plan's first shard
            continue
        family = family_of(item)
        if family in REGISTRY:
            # Appending a prebuilt Mark costs a tenth of add_marker over tens of thousands of items.
            item.own_markers.append(family_marks[family])
            item.keywords[family] = family_marks[family]
        if _restore_based(family):
            item.extra_keyword_matches.add("restore")
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)

    order = {f: i for i, f in enumerate(REGISTRY)}  # registration order: the order tests of one backup run in

    def sort_key(item: pytest.Item) -> tuple[int, str, int]:
        group, _ = subject_of(item)
        # Run-wide checks first, then series, then backup by backup so each is restored once.
        rank = 0 if group == "run" else 1 if group.startswith("series-") else 2
        return rank, group, order.get(family_of(item), 99)

    kept.sort(key=sort_key)
    items[:] = kept


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """After -k and -m: which backups this run restores (their integrity read is the restore itself)."""
    session.config.stash[RESTORE_PLANNED] = frozenset(
        subject_of(i)[0] for i in session.items
        if i.get_closest_marker("needs_restore") or RESTORED_FIXTURES & set(getattr(i, "fixturenames", ()))
    )
