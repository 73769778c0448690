"""Reports: results.json (the run as data), and rendered from it the table of backups on the terminal, in the
self-contained HTML report and in the CI job summary; Allure and JUnit by default; attachments."""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupcheck import __version__ as ours
from backupcheck import results
from backupcheck.model import Listing
from backupcheck.reports import added, writer
from backupcheck.reports.allure_stream import AllureStream
from backupcheck.reports.render import (
    gate_comment,
    gate_lines,
    gate_markdown,
    gate_outputs,
    html_summary,
    slot_name,
    table_markdown,
)
from backupcheck.reports.rows import COLUMNS, backup_rows
from backupcheck.restore.targets import CONTAINMENT
from backupcheck.results import VERSION as RESULTS_VERSION

from . import history
from .collection import family_of, subject_of
from .history import escalate, notes
from .options import SETTINGS, resolve
from .run import RUN, runs_suites
from .verdict import findings_of

ATTACHMENTS = pytest.StashKey[list[tuple[str, str]]]()
_OUTCOMES = pytest.StashKey[dict[str, dict[str, object]]]()
_CHECKS = pytest.StashKey[dict[str, dict[str, object]]]()
_GATE = pytest.StashKey[dict[str, dict[str, object]]]()  # backup key -> its rehearsal, on the controller
_STARTED = pytest.StashKey[datetime]()
RESULTS = pytest.StashKey[dict]()  # the run's results document, once the session has finished
_AFTER = pytest.StashKey[list[str]]()  # what recording, metrics and notification said
_CHARTS = pytest.StashKey[str]()  # the trends section of the HTML report
_JUNIT = pytest.StashKey[Path]()  # where junit.xml is rendered from the results (unless --junitxml is given)
_STREAM = pytest.StashKey[AllureStream]()  # the Allure results being written while the run goes on
_ALLURE = pytest.StashKey[Path]()  # where allure-results are rendered from the results (unless --alluredir is given)
_ATTACHED = pytest.StashKey[dict[str, list[tuple[str, str]]]]()  # node id -> text attachments, on the controller
_RANK = {"failed": 3, "error": 3, "passed": 1, "skipped": 0}


_LOGGED = pytest.StashKey[set[str]]()


def record_restore(node: pytest.Item, restored: object) -> None:
    """Note what a restore did on the test (for results.json) and once in reports/restore-log.jsonl (RTO evidence)."""
    result = getattr(restored, "result", None)
    if result is None:
        return
    profile = getattr(restored, "profile", None)
    summary = {
        "seconds": round(result.seconds, 3), "server": getattr(restored, "target_label", ""), "tool": result.tool,
        "profile": getattr(profile, "name", ""), "profile_reason": getattr(restored, "profile_reason", ""),
        "harmful_errors": len(result.harmful), "errors": len(result.errors), "aborted": result.aborted,
        "skipped": [str(x) for x in getattr(restored, "skipped", [])],
        "phases": restored.phase_times() if hasattr(restored, "phase_times") else {},
    }
    logged = node.config.stash.setdefault(_LOGGED, set())
    if result.backup in logged:
        return
    logged.add(result.backup)
    # For results.json, on the controller, which keeps the first it is told: on one report only (the setup's of
    # the backup's first test here, see pytest_runtest_makereport), not on the three reports of each test that
    # uses the restore (a fleet of 100 backups sent 2,600 copies, each serialized by the worker and read again by
    # the controller).
    node.user_properties.append(("restore", summary))
    backup = restored.backup  # type: ignore[attr-defined]

    state = node.config.stash.get(RUN, None)
    line = json.dumps({
        "run": state.shared.name if state is not None else "",
        "backup": result.backup, "series": backup.series, "taken_at": backup.taken_at.isoformat(),
        "restored_at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(),
        "compatibility": list(getattr(getattr(restored, "compat", None), "mismatches", [])), **summary,
    })
    path = node.config.stash[SETTINGS].reports_dir / "restore-log.jsonl"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())  # one write per line: xdist workers append safely
        finally:
            os.close(fd)
    except OSError as exc:  # a report that cannot be written must not fail the check
        warnings.warn(f"backupcheck: cannot write {path}: {exc}", stacklevel=1)


def record_gate(node: pytest.Item, rehearsal: object) -> None:
    """Note a rehearsal of the migrations on the test (for results.json: the per-migration table)."""
    from backupcheck.checks.gate import lint_notes

    r = rehearsal
    node.user_properties.append(("gate", {
        "backup": r.backup, "mode": r.mode, "seconds": round(r.seconds, 3),  # type: ignore[attr-defined]
        "total_seconds": round(r.total_seconds, 3), "applied_from": r.applied_from,  # type: ignore[attr-defined]
        "error": r.error, "migrations": r.table_rows(), "lint": lint_notes(r),  # type: ignore[attr-defined]
        "output": r.output[-2000:], "phases": dict(r.phases),  # type: ignore[attr-defined]
    }))


def _runs_suites(config: pytest.Config) -> bool:
    return runs_suites(config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OUTCOMES] = {}
    config.stash[_CHECKS] = {}
    config.stash[_STARTED] = datetime.now(UTC)
    if not _runs_suites(config):
        return
    # Every file this run writes (decompressed, decrypted and unpacked copies, downloads, reports with sample
    # rows) is for the checking user alone. This hook runs first of backupcheck's.
    os.umask(0o077)
    if hasattr(config, "workerinput") or config.getoption("collectonly", False):
        return  # --collect-only runs nothing: it writes no report, no results, no history, no metrics
    config.pluginmanager.register(Summary(config), "backupcheck-summary")
    reports = resolve(config).reports_dir
    opt = config.option
    if getattr(opt, "htmlpath", None) is None:
        opt.htmlpath = str(reports / "report.html")
        opt.self_contained_html = True
    if getattr(opt, "allure_report_dir", None) is None:
        # Rendered from results.json at the end (allure-pytest stays off: 4 ms a test here); --alluredir
        # gives allure-pytest's own.
        config.stash[_ALLURE] = Path(reports) / "allure-results"
    if getattr(opt, "xmlpath", None) is None:  # rendered from results.json at the end, like every report
        config.stash[_JUNIT] = Path(reports) / "junit.xml"
    Path(reports).mkdir(parents=True, exist_ok=True)
    # restore-log.jsonl is appended to, run after run (each line names its run); results.json holds this run's.


# --- what each test shows -------------------------------------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash.get(SETTINGS, None)
    if settings is None or config.stash.get(RUN, None) is None:
        return  # not a backupcheck run: other projects' tests get no labels
    marks: dict[tuple[str, str], pytest.Mark] = {}

    def label(value: str, kind: str) -> pytest.Mark:
        # One Mark per label, shared by every item that carries it (tens of thousands on large buckets).
        key = (value, kind)
        if key not in marks:
            marks[key] = pytest.mark.allure_label(value, label_type=kind).mark
        return marks[key]

    for item in items:
        family = family_of(item)
        if not family:
            continue
        _group, series = subject_of(item)
        item.own_markers.append(label(family, "feature"))
        if series:
            item.own_markers.append(label(series, "story"))
            item.own_markers.append(label(settings.for_series(series).severity, "severity"))
        item.own_markers.append(label("backupcheck", "epic"))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    # Allure's history id hashes the parameters: a dated backup would start a new history every night.
    # Exclude it and add stable ones (series, and which backup of the series it is counted from the newest).

    if item.config.stash.get(RUN, None) is None:
        yield
        return
    group, series = subject_of(item)
    item.user_properties += [("backup_group", group), ("family", family_of(item)), ("series", series)]
    params = getattr(getattr(item, "callspec", None), "params", {})
    backup = params.get("backup")
    if backup is not None and getattr(item.config.option, "allure_report_dir", None):
        try:
            import allure


            position = item.config.stash[RUN].listing.newest_first_position(backup)
            allure.dynamic.parameter("backup", backup.key, excluded=True)
            allure.dynamic.parameter("series", backup.series)
            allure.dynamic.parameter("slot", slot_name(position))
        except Exception:  # allure not active, or the listing is not there: nothing to label
            pass
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "setup" and any(k == "restore" for k, _ in item.user_properties):
        # record_restore's summary goes with this report alone (a report takes a copy of the list)
        item.user_properties[:] = [p for p in item.user_properties if p[0] != "restore"]
    if report.when == "call":

        found = findings_of(item)
        if found:
            report.user_properties.append(("findings", found))
        if report.failed:

            escalate(item, report)
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    attachments = item.stash.get(ATTACHMENTS, [])
    if not attachments:
        return
    report.user_properties.append(("attachments", [list(a) for a in attachments]))  # for allure-results
    try:
        import pytest_html

        extras = getattr(report, "extras", [])
        for name, text in attachments:
            extras.append(pytest_html.extras.text(text, name=name))
        report.extras = extras
    except ImportError:
        pass
    if getattr(item.config.option, "allure_report_dir", None):  # allure-pytest's own results (--alluredir)
        try:
            import allure

            for name, text in attachments:
                allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)
        except Exception:
            pass


# --- the table of backups (controller side) --------------------------------------------------------


def build_results(config: pytest.Config, exitstatus: int) -> dict:
    """The run as data (``backupcheck.results.SCHEMA``), from the listing and what each test reported."""


    state = config.stash[RUN]
    settings = config.stash[SETTINGS]
    outcomes = config.stash[_OUTCOMES]
    started = config.stash[_STARTED]

    backups = []
    for b in state.listing.backups():
        o = outcomes.get(b.key, {})
        backups.append({
            "key": b.key, "series": b.series, "taken_at": b.taken_at.isoformat(), "format": b.format_summary(),
            "size": int(b.size), "artifacts": [a.name for a in b.artifacts],
            "verdict": str(o.get("verdict", "not run")), "restore": o.get("restore"), "tables": o.get("tables"),
        })
    return {
        "schema": "backupcheck-results", "version": RESULTS_VERSION,
        "run": {
            "id": state.shared.name, "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "now": (settings.now or started).isoformat(timespec="seconds"), "demo": bool(settings.demo),
            "provider": {"kind": state.decision.kind, "reason": state.decision.reason},
            "containment": _containment(state.decision.kind, state.listing),
            "sources": [str(x) for x in settings.sources],
            "versions": {"backupcheck": ours, "pytest": pytest.__version__, "python": platform.python_version()},
            "exit_status": int(exitstatus),
            "partial": _partial(settings.partial, config.stash[_CHECKS]),
            "shard": state.plan,
        },
        "backups": backups,
        "checks": sorted(config.stash[_CHECKS].values(), key=lambda c: str(c["nodeid"])),
        "streaks": [],
        "gate": [gate_row(g, outcomes) for _, g in sorted(config.stash.get(_GATE, {}).items())],
    }


def _partial(selected: str, checks: dict) -> str:
    """``-k restore: 12 checks run`` for a run that selected part of the checks, "" for a full run."""
    if not selected:
        return ""
    ran = sum(1 for c in checks.values() if c["outcome"] != "skipped")
    return f"{selected}: {ran} check(s) run, {len(checks)} selected"


def gate_row(rehearsal: dict, outcomes: dict) -> dict:
    """A rehearsal as results.json keeps it, with the gate's verdict and the restore's seconds beside it."""
    restore = (outcomes.get(rehearsal["backup"]) or {}).get("restore") or {}
    return {**rehearsal, "restore_seconds": restore.get("seconds")}


def _containment(kind: str, listing: Listing) -> str:
    """How the run kept the backups' code from the host: the provider's way for dumps, recovery's for base
    backups (a recovered cluster has no other role than its own to ask with)."""
    dumps = CONTAINMENT.get(kind, "")
    if not any(b.base_backup is not None for b in listing.backups()):
        return dumps
    physical = ("base backups: recovered with their own settings replaced (no archive_command, no preload "
                "library, a private socket only), event triggers disabled, server as its own OS account (in a "
                "container with no network where this machine has no binaries of the backup's major version)")
    if all(b.base_backup is not None for b in listing.backups()):
        return physical
    return f"dumps: {dumps}; {physical}"


def profile_lines(document: dict) -> list[str]:
    """Which profile each series was restored under, and why (configured, or auto-detected from what)."""
    seen: dict[str, str] = {}
    for b in document["backups"]:  # oldest first: the newest restore's word stands
        if b["restore"] and b["restore"]["profile"]:
            seen[b["series"]] = f"{b['restore']['profile']} ({b['restore']['profile_reason']})"
    return [f"{series}: {text}" for series, text in sorted(seen.items())]


_KINDS = {"local": "local clusters", "container": "containers", "dsn": "an existing server"}


def provider_line(config: pytest.Config) -> str:
    state = config.stash.get(RUN, None)
    if state is None:
        return ""
    return f"{_KINDS[state.decision.kind]} ({state.decision.reason})"


def containment_line(config: pytest.Config) -> str:
    """What keeps a hostile dump from the host, for the provider this run uses."""


    state = config.stash.get(RUN, None)
    return CONTAINMENT.get(state.decision.kind, "") if state is not None else ""


def _banner(demo: bool) -> str:
    if demo:
        return ("DEMO: no backups were configured, so this run verified a generated sample: a week of nightly "
                "backups of a small shop database, one of them broken on purpose. Point --backups at your "
                "backups (or set sources in backupcheck.toml) to verify real ones.")
    return ""


def _short(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:2000]
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    return text[-4000:]


class Summary:
    """Controller-side hooks: what every test reported, gathered into the results document, and the reports
    rendered from it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        group = props.get("backup_group")
        if group is None:
            return
        row = self.config.stash[_OUTCOMES].setdefault(str(group), {"verdict": "skipped", "restore": None})
        status = "error" if report.when != "call" and report.failed else report.outcome
        if report.when == "call" or report.failed or report.skipped:
            if _RANK.get(status, 0) > _RANK.get(str(row["verdict"]), 0):
                row["verdict"] = "failed" if status == "error" else status
        if props.get("restore") and row["restore"] is None:
            row["restore"] = props["restore"]
        if props.get("tables") and not row.get("tables"):
            row["tables"] = props["tables"]
        if props.get("gate"):
            self.config.stash.setdefault(_GATE, {}).setdefault(str(group), props["gate"])
        if props.get("attachments"):
            self.config.stash.setdefault(_ATTACHED, {}).setdefault(report.nodeid, []).extend(
                (str(n), str(t)) for n, t in props["attachments"])
        checks = self.config.stash[_CHECKS]
        if report.when == "call" or (report.when == "setup" and not report.passed) or \
                (report.when == "teardown" and report.failed):
            entry = checks.get(report.nodeid)
            if entry is None or report.when != "teardown":
                name = report.nodeid.split("::")[-1]
                entry = checks[report.nodeid] = {
                    "nodeid": report.nodeid, "name": name.split("[")[0], "family": str(props.get("family", "")),
                    "series": str(props.get("series", "")), "backup": str(group),
                    "outcome": status if status in ("passed", "failed", "error", "skipped") else "error",
                    "seconds": round(float(report.duration), 3), "message": _short(report),
                    "findings": list(props.get("findings", [])),
                    "severity": self.config.stash[SETTINGS].for_series(str(props.get("series", ""))).severity
                    if props.get("series") else "normal",
                }
            else:  # a teardown that failed after the test: the check errs
                entry["outcome"], entry["message"] = "error", _short(report)
        if report.when == "teardown":  # the check's last report: its Allure result can be written now
            self._stream_allure(report.nodeid)

    def _stream_allure(self, nodeid: str) -> None:
        """Hand a check that ended to the Allure results written while the run goes on (``AllureStream``)."""
        folder = self.config.stash.get(_ALLURE, None)
        entry = self.config.stash[_CHECKS].get(nodeid)
        if folder is None or entry is None:
            return
        stream = self.config.stash.get(_STREAM, None)
        if stream is None:
            listing = self.config.stash[RUN].listing
            slots = {b.key: slot_name(listing.newest_first_position(b)) for b in listing.backups()}
            started = self.config.stash[_STARTED].isoformat(timespec="seconds")
            stream = self.config.stash[_STREAM] = AllureStream(folder, started, slots)
        stream.add(entry, self.config.stash.get(_ATTACHED, {}).get(nodeid, []))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Before pytest-html writes its report: the results document, on disk and for the renderers."""


        if self.config.stash.get(RUN, None) is None:
            return

        document = build_results(self.config, exitstatus)
        self.config.stash[RESULTS] = document
        self.config.stash[_AFTER] = history.finish(self.config, document)  # streaks, history, metrics, webhook
        self.config.stash[_CHARTS] = history.charts(self.config, document)
        path = self.config.stash[SETTINGS].reports_dir / "results.json"
        try:
            results.write(document, path)
        except OSError as exc:
            warnings.warn(f"backupcheck: cannot write {path}: {exc}", stacklevel=1)

        # The same writers as a merge of shards (backupcheck.reports); pytest-html draws this run's report.html.
        reports_dir = self.config.stash[SETTINGS].reports_dir
        for name, target in (("allure", self.config.stash.get(_ALLURE, None)),
                             ("junit", self.config.stash.get(_JUNIT, None)),
                             *((w.name, reports_dir / w.target) for w in added())):
            if target is None:
                continue
            try:
                stream = self.config.stash.get(_STREAM, None) if name == "allure" else None
                if stream is not None:  # written while the run went on: the rest, and what changed since
                    stream.finish(document, self.config.stash.get(_ATTACHED, {}))
                    continue
                writer(name).write(document, target, attachments=self.config.stash.get(_ATTACHED, {}))
            except OSError as exc:
                warnings.warn(f"backupcheck: cannot write {target}: {exc}", stacklevel=1)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report) -> None:  # type: ignore[no-untyped-def]
        demo = self.config.stash[SETTINGS].demo
        report.title = "backupcheck — DEMO run on generated sample backups" if demo else "backupcheck — backup verification"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        document = self.config.stash.get(RESULTS, None)
        if document is None:
            return

        provider = document["run"]["provider"]
        prefix.append(html_summary(
            document, provider=f"{_KINDS[provider['kind']]} ({provider['reason']})",
            containment=document["run"]["containment"], profiles=profile_lines(document),
            streaks=[streak_line(x) for x in document.get("streaks", [])], charts=self.config.stash.get(_CHARTS, ""),
            banner=_banner(document["run"]["demo"])))

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:  # type: ignore[no-untyped-def]
        document = self.config.stash.get(RESULTS, None)
        if document is None:
            return
        rows = backup_rows(document)
        if not rows:
            return
        tr = terminalreporter
        tr.section("backups verified")
        banner = _banner(document["run"]["demo"])
        if banner:
            tr.write_line(banner, yellow=True, bold=True)
        provider = document["run"]["provider"]
        tr.write_line(f"restored in: {_KINDS[provider['kind']]} ({provider['reason']})")
        if document["run"]["containment"]:
            tr.write_line(f"containment: {document['run']['containment']}")
        for line in profile_lines(document):
            tr.write_line(f"profile of {line}")
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
        tr.write_line("  ".join(c.ljust(widths[c]) for c in COLUMNS))
        for r in rows:
            tr.write_line("  ".join(r[c].ljust(widths[c]) for c in COLUMNS),
                          red=r["verdict"].startswith("failed"), green=r["verdict"] == "passed")
        for streak in document.get("streaks", []):
            tr.write_line(streak_line(streak), red=True, bold=True)

        for line in [*self.config.stash.get(_AFTER, []), *notes(self.config)]:
            tr.write_line(line)

        for line in gate_lines(document):
            tr.write_line(line)
        _github_summary(banner, document)
        _gate_files(document, self.config.stash[SETTINGS].reports_dir)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(RUN, None)
    if state is None or hasattr(config, "workerinput"):
        return []
    lines = [f"backupcheck: {len(state.listing.backups())} backup(s) in {len(state.listing.series)} series",
             f"backupcheck: restores in: {provider_line(config)}",
             f"backupcheck: containment: {containment_line(config)}"]
    banner = _banner(config.stash[SETTINGS].demo)
    if banner:
        lines.insert(0, banner)
    return lines


def streak_line(streak: dict) -> str:
    return (f"{streak['check']} on {streak['series']}: failed on {streak['runs']} runs in a row, since "
            f"{streak['since'][:10]}")


def _gate_files(document: dict, reports: Path) -> None:
    """With a gate in the run: reports/gate.md (the pull request comment) and, in GitHub Actions, the job's
    outputs (verdict, findings, rehearsal_seconds)."""
    if not any(c["family"] == "gate" for c in document["checks"]):
        return

    try:
        (reports / "gate.md").write_text(gate_comment(document))
        target = os.environ.get("GITHUB_OUTPUT")
        if target:
            with open(target, "a") as f:
                f.write("".join(f"{k}={v}\n" for k, v in gate_outputs(document).items()))
    except OSError as exc:
        warnings.warn(f"backupcheck: cannot write the gate's outputs: {exc}", stacklevel=1)


def _github_summary(banner: str, document: dict) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    lines = ["## backupcheck", ""]
    if banner:
        lines += [f"> {banner}", ""]

    lines += table_markdown(document)
    lines += gate_markdown(document)
    with open(target, "a") as f:
        f.write("\n".join(lines) + "\n")
