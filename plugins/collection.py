"""Parametrize the suites by backup and series, in one hook, from the one shared listing."""

from __future__ import annotations

import pytest

from backupcheck.model import Backup, Listing, safe_id
from backupcheck.settings import Settings

from .options import SETTINGS
from .run import RUN

FAMILIES = ("integrity", "size", "freshness", "restore", "row_counts", "relations")
RESTORE_BASED = frozenset({"restore", "row_counts", "relations"})
RESTORE_PLANNED = pytest.StashKey[frozenset[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "when_configured(key): only for series whose settings give KEY a value")
    config.addinivalue_line("markers", "needs_restore: the test reads a restored database")


def selected_for_restore(listing: Listing, settings: Settings) -> list[Backup]:
    """The newest backup of each series by default; all, or the newest N, when configured."""
    chosen = []
    for series in listing.series:
        if not any(b.restorable for b in series.backups):
            continue  # a series of config files or bundles has nothing to restore
        how = settings.restore_count(series.name)
        backups = list(series.backups)
        chosen += backups if how == "all" else backups[len(backups) - int(how):] if int(how) else []
    return chosen


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
    if wants_series:
        series = list(state.listing.series)
        if marker:
            series = [s for s in series if getattr(settings.for_series(s.name), marker.args[0])]
        metafunc.parametrize("series", series, ids=[safe_id(s.name) for s in series])
        return
    if metafunc.definition.get_closest_marker("needs_restore"):
        backups = selected_for_restore(state.listing, settings)
    else:
        backups = state.listing.backups()
    if marker:
        backups = [b for b in backups if getattr(settings.for_series(b.series), marker.args[0])]
    metafunc.parametrize("backup", backups, ids=[b.key for b in backups])


def family_of(item: pytest.Item) -> str:
    name = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    return name.removeprefix("test_")


def subject_of(item: pytest.Item) -> tuple[str, str]:
    """(group, series) of an item: its backup's key or its series' name."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "backup" in params:
        b = params["backup"]
        return b.key, b.series
    if "series" in params:
        return f"series-{safe_id(params['series'].name)}", params["series"].name
    return "run", ""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash.get(RUN, None) is None:
        return
    kept, dropped = [], []
    for item in items:
        skip = item.get_closest_marker("skip")
        if item.get_closest_marker("when_configured") and skip and "empty parameter set" in str(skip.kwargs.get("reason", "")):
            dropped.append(item)  # nothing configured for it anywhere: not a test to show
            continue
        family = family_of(item)
        group, _series = subject_of(item)
        if family in FAMILIES:
            item.add_marker(getattr(pytest.mark, family))
        if family in RESTORE_BASED:
            item.extra_keyword_matches.add("restore")
        item.add_marker(pytest.mark.xdist_group(name=group))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)

    order = {f: i for i, f in enumerate(FAMILIES)}

    def sort_key(item: pytest.Item) -> tuple[int, str, int]:
        group, _ = subject_of(item)
        # Run-wide checks first, then series, then backup by backup so each is restored once.
        rank = 0 if group == "run" else 1 if group.startswith("series-") else 2
        return rank, group, order.get(family_of(item), 99)

    kept.sort(key=sort_key)
    items[:] = kept
    config.stash[RESTORE_PLANNED] = frozenset(
        subject_of(i)[0] for i in kept if i.get_closest_marker("needs_restore")
    )
