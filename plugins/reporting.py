"""Reports: HTML (self-contained), Allure and JUnit by default, a table of backups, and attachments."""

from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .options import SETTINGS, resolve

ATTACHMENTS = pytest.StashKey[list[tuple[str, str]]]()
_OUTCOMES = pytest.StashKey[dict[str, dict[str, object]]]()
_RANK = {"failed": 3, "error": 3, "passed": 1, "skipped": 0}


_LOGGED = pytest.StashKey[set[str]]()


def record_restore(node: pytest.Item, restored: object) -> None:
    """Note a restore's time on the test (for the summary) and once in reports/restore-log.jsonl (RTO evidence)."""
    result = getattr(restored, "result", None)
    if result is None:
        return
    node.user_properties.append(("restore_seconds", round(result.seconds, 2)))
    profile = getattr(restored, "profile", None)
    if profile is not None:
        node.user_properties.append(("profile", f"{profile.name} ({getattr(restored, 'profile_reason', '')})"))
    logged = node.config.stash.setdefault(_LOGGED, set())
    if result.backup in logged:
        return
    logged.add(result.backup)
    backup = restored.backup  # type: ignore[attr-defined]
    line = json.dumps({
        "backup": result.backup, "series": backup.series, "taken_at": backup.taken_at.isoformat(),
        "restored_at": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(result.seconds, 3),
        "tool": result.tool, "harmful_errors": len(result.harmful), "errors": len(result.errors),
        "aborted": result.aborted, "pid": os.getpid(),
        "server": getattr(restored, "target_label", ""),
        "compatibility": list(getattr(getattr(restored, "compat", None), "mismatches", [])),
        "skipped": list(getattr(restored, "skipped", [])),
        "profile": getattr(getattr(restored, "profile", None), "name", ""),
        "profile_reason": getattr(restored, "profile_reason", ""),
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


def _runs_suites(config: pytest.Config) -> bool:
    from .run import runs_suites

    return runs_suites(config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OUTCOMES] = {}
    if not _runs_suites(config):
        return
    # Every file this run writes (decompressed, decrypted and unpacked copies, downloads, reports with sample
    # rows) is for the checking user alone. This hook runs first of backupcheck's.
    os.umask(0o077)
    if hasattr(config, "workerinput"):
        return
    config.pluginmanager.register(Summary(config), "backupcheck-summary")
    reports = resolve(config).reports_dir
    opt = config.option
    if getattr(opt, "htmlpath", None) is None:
        opt.htmlpath = str(reports / "report.html")
        opt.self_contained_html = True
    if getattr(opt, "allure_report_dir", None) is None:
        opt.allure_report_dir = str(reports / "allure-results")
        opt.clean_alluredir = True
    if getattr(opt, "xmlpath", None) is None:
        opt.xmlpath = str(reports / "junit.xml")
    Path(reports).mkdir(parents=True, exist_ok=True)
    (Path(reports) / "restore-log.jsonl").unlink(missing_ok=True)  # this run's restores only


# --- what each test shows -------------------------------------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from .collection import family_of, subject_of
    from .run import RUN

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
    from .collection import subject_of
    from .run import RUN

    if item.config.stash.get(RUN, None) is None:
        yield
        return
    item.user_properties.append(("backup_group", subject_of(item)[0]))
    params = getattr(getattr(item, "callspec", None), "params", {})
    backup = params.get("backup")
    if backup is not None:
        try:
            import allure

            from .run import RUN

            position = item.config.stash[RUN].listing.newest_first_position(backup)
            allure.dynamic.parameter("backup", backup.key, excluded=True)
            allure.dynamic.parameter("series", backup.series)
            allure.dynamic.parameter("slot", "newest" if position == 0 else f"newest-{position}")
        except Exception:  # allure not active, or the listing is not there: nothing to label
            pass
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    attachments = item.stash.get(ATTACHMENTS, [])
    if not attachments:
        return
    try:
        import pytest_html

        extras = getattr(report, "extras", [])
        for name, text in attachments:
            extras.append(pytest_html.extras.text(text, name=name))
        report.extras = extras
    except ImportError:
        pass
    try:
        import allure

        for name, text in attachments:
            allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)
    except Exception:
        pass


# --- the table of backups (controller side) --------------------------------------------------------


def _age(now: datetime, then: datetime) -> str:
    secs = int((now - then).total_seconds())
    days, rem = divmod(secs, 86400)
    return f"{days}d {rem // 3600}h" if days else f"{rem // 3600}h {rem % 3600 // 60}m"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def backup_rows(config: pytest.Config) -> list[dict[str, str]]:
    from .run import RUN

    state = config.stash.get(RUN, None)
    if state is None:
        return []
    outcomes = config.stash[_OUTCOMES]
    now = config.stash[SETTINGS].now or datetime.now(UTC)
    rows = []
    for b in state.listing.backups():
        o = outcomes.get(b.key, {})
        secs = o.get("restore_seconds")
        rows.append({
            "series": b.series, "time": b.taken_at.strftime("%Y-%m-%d %H:%M UTC"), "format": b.format_summary(),
            "size": _size(b.size), "age": _age(now, b.taken_at),
            "restore": f"{secs:.1f} s" if isinstance(secs, (int, float)) else "-",
            "verdict": str(o.get("verdict", "not run")),
        })
    return rows


def profile_lines(config: pytest.Config) -> list[str]:
    """Which profile each series was restored under, and why (configured, or auto-detected from what)."""
    from .run import RUN

    state = config.stash.get(RUN, None)
    if state is None:
        return []
    outcomes = config.stash[_OUTCOMES]
    seen: dict[str, str] = {}
    for b in state.listing.backups():  # oldest first: the newest restore's word stands
        text = outcomes.get(b.key, {}).get("profile")
        if text:
            seen[b.series] = str(text)
    return [f"{series}: {text}" for series, text in sorted(seen.items())]


_COLUMNS = ("series", "time", "format", "size", "age", "restore", "verdict")


def provider_line(config: pytest.Config) -> str:
    from .run import RUN

    state = config.stash.get(RUN, None)
    if state is None:
        return ""
    kind = {"local": "local clusters", "container": "containers", "dsn": "an existing server"}[state.decision.kind]
    return f"{kind} ({state.decision.reason})"


def containment_line(config: pytest.Config) -> str:
    """What keeps a hostile dump from the host, for the provider this run uses."""
    from backupcheck.targets import CONTAINMENT

    from .run import RUN

    state = config.stash.get(RUN, None)
    return CONTAINMENT.get(state.decision.kind, "") if state is not None else ""


def _banner(config: pytest.Config) -> str:
    settings = config.stash[SETTINGS]
    if settings.demo:
        return ("DEMO: no backups were configured, so this run verified a generated sample: a week of nightly "
                "backups of a small shop database, one of them broken on purpose. Point --backups at your "
                "backups (or set sources in backupcheck.toml) to verify real ones.")
    return ""


class Summary:
    """Controller-side hooks that need the run's config: outcomes per backup, and the tables."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        group = props.get("backup_group")
        if group is None:
            return
        row = self.config.stash[_OUTCOMES].setdefault(str(group), {"verdict": "skipped", "restore_seconds": None})
        status = "error" if report.when != "call" and report.failed else report.outcome
        if report.when == "call" or report.failed or report.skipped:
            if _RANK.get(status, 0) > _RANK.get(str(row["verdict"]), 0):
                row["verdict"] = "failed" if status == "error" else status
        if "restore_seconds" in props:
            row["restore_seconds"] = props["restore_seconds"]
        if "profile" in props:
            row["profile"] = props["profile"]

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report) -> None:  # type: ignore[no-untyped-def]
        demo = self.config.stash[SETTINGS].demo
        report.title = "backupcheck — DEMO run on generated sample backups" if demo else "backupcheck — backup verification"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        banner = _banner(self.config)
        cells = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        colour = {"failed": "color:#c00;font-weight:bold", "passed": "color:#070"}
        body = "".join(
            "<tr>" + "".join(
                f"<td style='{colour.get(r[c], '') if c == 'verdict' else ''}'>{html.escape(r[c])}</td>"
                for c in _COLUMNS
            ) + "</tr>"
            for r in backup_rows(self.config)
        )
        profiles = "".join(f"<li>{html.escape(line)}</li>" for line in profile_lines(self.config))
        contained = containment_line(self.config)
        block = (f"<p><b>Restored in:</b> {html.escape(provider_line(self.config))}</p>"
                 + (f"<p><b>Containment:</b> {html.escape(contained)}</p>" if contained else "")
                 + (f"<p><b>Profiles:</b></p><ul>{profiles}</ul>" if profiles else "") +
                 f"<h2>Backups verified</h2><table class='backups' border='1' cellpadding='4'><tr>{cells}</tr>{body}</table>")
        if banner:
            block = f"<p style='font-weight:bold;color:#b35900'>{html.escape(banner)}</p>" + block
        prefix.append(block)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:  # type: ignore[no-untyped-def]
        rows = backup_rows(self.config)
        if not rows:
            return
        tr = terminalreporter
        tr.section("backups verified")
        banner = _banner(self.config)
        if banner:
            tr.write_line(banner, yellow=True, bold=True)
        tr.write_line(f"restored in: {provider_line(self.config)}")
        contained = containment_line(self.config)
        if contained:
            tr.write_line(f"containment: {contained}")
        for line in profile_lines(self.config):
            tr.write_line(f"profile of {line}")
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS}
        tr.write_line("  ".join(c.ljust(widths[c]) for c in _COLUMNS))
        for r in rows:
            tr.write_line("  ".join(r[c].ljust(widths[c]) for c in _COLUMNS),
                          red=r["verdict"] == "failed", green=r["verdict"] == "passed")
        _github_summary(rows, banner)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from .run import RUN

    state = config.stash.get(RUN, None)
    if state is None or hasattr(config, "workerinput"):
        return []
    lines = [f"backupcheck: {len(state.listing.backups())} backup(s) in {len(state.listing.series)} series",
             f"backupcheck: restores in: {provider_line(config)}",
             f"backupcheck: containment: {containment_line(config)}"]
    banner = _banner(config)
    if banner:
        lines.insert(0, banner)
    return lines


def _github_summary(rows: list[dict[str, str]], banner: str) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    lines = ["## backupcheck", ""]
    if banner:
        lines += [f"> {banner}", ""]
    lines.append("| " + " | ".join(_COLUMNS) + " |")
    lines.append("|" + "---|" * len(_COLUMNS))
    lines += ["| " + " | ".join(r[c] for c in _COLUMNS) + " |" for r in rows]
    with open(target, "a") as f:
        f.write("\n".join(lines) + "\n")
