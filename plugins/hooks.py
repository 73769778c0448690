"""The hooks a team implements (in its conftest.py or a plugin of its own) to extend backupcheck, as pytest-html
and pytest-xdist declare theirs."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_backupcheck_extend(extend: Any) -> None:
    """Called once, before the settings are read and backups are listed: add what this run knows.

    ``extend.source(kind)`` registers a source kind (``backupcheck.sources.RemoteKind``: a URL scheme, how its
    places are listed and its objects fetched); ``extend.writer(writer)`` a report format
    (``backupcheck.reports.Writer``, written into the reports folder beside results.json);
    ``extend.family(family)`` a check family (``backupcheck.families.Family``): its suite is the team's
    ``test_<name>.py``, which gets the family's marker, its place in each backup's order, its restore, and the
    series settings it declares (``Family(..., settings=(schema.Setting(...),))``, read with
    ``series_settings.option(key)``). Checks that need none of that are plain test files beside the suites.
    """
