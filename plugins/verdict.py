"""A check's verdict kept as data: its findings are stored on the test before it fails with them, so that
results.json (and every report rendered from it) has what / expected / found / fix, not only a message."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Generator, Sequence

import pytest
from _pytest._code.code import ReprEntry, ReprExceptionInfo, ReprFileLocation, ReprTraceback

from backupcheck.model import Finding, render
from backupcheck.restore.database import QueryFailed

FINDINGS = pytest.StashKey[list[Finding]]()
_CURRENT: contextvars.ContextVar[pytest.Item | None] = contextvars.ContextVar("backupcheck_item", default=None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    token = _CURRENT.set(item)
    try:
        return (yield)
    except QueryFailed as exc:  # a query of the check itself failed (a timeout): a sentence, not a traceback
        pytest.fail(str(exc), pytrace=False)
    finally:
        _CURRENT.reset(token)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                           pytest.TestReport]:
    """A check that failed with findings is reported as them: their lines (no traceback, no fixture values), and
    the first of them as the reason on the short summary's FAILED line. Built from pytest's own report parts, so
    xdist carries it to the controller as it is."""
    report = yield
    findings = item.stash.get(FINDINGS, None)
    if report.when == "call" and report.failed and findings:

        lines = render(list(findings)).splitlines()
        path, lineno, _ = item.location
        entry = ReprEntry([f"E   {line}" for line in lines], None, None, None, "short")
        report.longrepr = ReprExceptionInfo(reprtraceback=ReprTraceback([entry], None, "short"),
                                            reprcrash=ReprFileLocation(path, (lineno or 0) + 1, lines[0]))
    return report


def judge(findings: Sequence[Finding]) -> None:
    """Keep ``findings`` on the running test, then fail it with them when there are any."""
    __tracebackhide__ = True  # the failure is the check's, shown at the check's line
    item = _CURRENT.get()
    if item is not None:
        item.stash[FINDINGS] = list(findings)
    if findings:
        # The findings are the failure: their sentences, not a traceback of the check (--tb=long shows none
        # either; a team's own failing assert keeps pytest's full report).
        pytest.fail(render(list(findings)), pytrace=False)


def findings_of(item: pytest.Item) -> list[dict[str, str]]:
    """The findings a test judged, as plain data (they travel from xdist workers in user_properties)."""
    return [dataclasses.asdict(f) for f in item.stash.get(FINDINGS, [])]
