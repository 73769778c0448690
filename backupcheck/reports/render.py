"""Renderers of a results document (results.json): JUnit XML, Allure results, the job summary in Markdown, the
standalone HTML report, and the gate's comment and outputs. A single run and a merge of shards use the same ones
(see the registry in ``backupcheck.reports``)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model import Finding, render
from .rows import COLUMNS, backup_rows

BAD = ("failed", "error")


def _findings_text(check: dict[str, Any]) -> str:
    """The check's findings as the failing test showed them (``model.render``), else its message."""
    return render([Finding(**f) for f in check["findings"]]) or check["message"]


def classname(module: str) -> str:
    """``../../.venv/lib/python3.11/site-packages/backupcheck/suites/test_restore.py`` -> ``suites.test_restore``:
    the built-in suites by their own name wherever they are installed; a team's own file as pytest names it."""
    path = module.replace("\\", "/")
    if "/suites/" in f"/{path}":
        path = "suites/" + path.rsplit("suites/", 1)[1]
    return path.lstrip("./").replace("/", ".").removesuffix(".py")


def junit(document: dict[str, Any], path: Path) -> None:
    checks = document["checks"]
    suite = ET.Element("testsuite", name="backupcheck", tests=str(len(checks)),
                       failures=str(sum(c["outcome"] == "failed" for c in checks)),
                       errors=str(sum(c["outcome"] == "error" for c in checks)),
                       skipped=str(sum(c["outcome"] == "skipped" for c in checks)),
                       time=f"{sum(c['seconds'] for c in checks):.3f}", timestamp=document["run"]["started"])
    for c in checks:
        module, _, name = c["nodeid"].rpartition("::")
        case = ET.SubElement(suite, "testcase", classname=classname(module), name=name, time=f"{c['seconds']:.3f}")
        if c["outcome"] in BAD:
            tag = "failure" if c["outcome"] == "failed" else "error"
            first = (_findings_text(c).splitlines() or [""])[0]
            # Every finding whole, then the end of the failure as pytest showed it (its traceback, cut to 4,000
            # characters in results.json).
            text = _findings_text(c) + ("\n\n" + c["message"] if c["findings"] and c["message"] else "")
            ET.SubElement(case, tag, message=first[:500]).text = text
        elif c["outcome"] == "skipped":
            ET.SubElement(case, "skipped", message=c["message"][:500])
    root = ET.Element("testsuites")
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def slot_name(position: int) -> str:
    """A backup's place in its series, counted from the newest: ``newest``, ``newest-1``, … (Allure's history
    follows it night after night, so it never changes form)."""
    return "newest" if position == 0 else f"newest-{position}"


def slots(document: dict[str, Any]) -> dict[str, str]:
    """Backup key -> which backup of its series it is, counted from the newest (stable night after night)."""
    by_series: dict[str, list[dict[str, Any]]] = {}
    for b in document["backups"]:
        by_series.setdefault(b["series"], []).append(b)
    out = {}
    for backups in by_series.values():
        for i, b in enumerate(sorted(backups, key=lambda b: b["taken_at"], reverse=True)):
            out[b["key"]] = slot_name(i)
    return out


def allure(document: dict[str, Any], folder: Path, attachments: dict[str, list[tuple[str, str]]] | None = None,
           clean: bool = False) -> None:
    """One ``*-result.json`` per check, as allure-pytest writes them: feature = family, story = series, the
    series' severity (blocker for a streak), the dated backup an excluded parameter and ``slot`` a stable one,
    so Allure's history follows a series from night to night; text attachments beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = AllureFiles(folder, clean)
    blockers = {(s["series"], s["check"]) for s in document.get("streaks", [])}
    slot = slots(document)
    t0 = allure_start(document["run"]["started"])
    try:
        for c in document["checks"]:
            allure_result(files, c, slot.get(c["backup"], ""), (c["series"], c["name"]) in blockers, t0,
                          (attachments or {}).get(c["nodeid"], []))
    finally:
        files.close()


_KEEP = ("history", "environment.properties", "executor.json", "categories.json")  # what a CI step put there


class AllureFiles:
    """The files of an allure-results folder. ``clean``: the last run's results go (not what a CI step put there
    for Allure's trends), their files set aside under names Allure does not read and given the new results'
    names and contents: on some filesystems making a file costs ten times rewriting one (a fleet's 2,300 results
    here: 1.5 s of CPU made anew, 0.2 s rewritten). ``close`` removes the spares left; a run that dies first
    leaves them to the next one."""

    SPARE = ".spare-"

    def __init__(self, folder: Path, clean: bool) -> None:
        self.folder = folder
        self.spare: list[Path] = []
        if not clean:
            return
        for old in folder.iterdir():
            if old.name in _KEEP:
                continue
            st = old.lstat()
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(old)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                old.unlink()  # rewritten, a link would write where it points: only our own plain files are reused
                continue
            aside = old if old.name.startswith(self.SPARE) else folder / f"{self.SPARE}{uuid.uuid4().hex}"
            try:
                old.rename(aside)
                self.spare.append(aside)
            except OSError:
                old.unlink()

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        while self.spare:
            try:
                self.spare.pop().rename(path)
                break
            except OSError:
                continue  # gone meanwhile: the next one, or a new file
        path.write_text(text)  # truncates a spare it renamed
        return path

    def give_back(self, path: Path) -> None:
        """A file written earlier and no longer wanted: a spare for a later write."""
        aside = self.folder / f"{self.SPARE}{uuid.uuid4().hex}"
        try:
            path.rename(aside)
            self.spare.append(aside)
        except OSError:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        for path in self.spare:
            path.unlink(missing_ok=True)
        self.spare = []


def allure_start(started: str) -> int:
    """The run's start (results.json's, to the second) in Allure's milliseconds."""
    return int(datetime.fromisoformat(started).timestamp() * 1000) if started else 0


def allure_result(folder: AllureFiles, c: dict[str, Any], slot: str, blocker: bool, t0: int,
                  attachments: list[tuple[str, str]]) -> list[Path]:
    """One check's result file and its attachments in ``folder``; the files written."""
    status = {"passed": "passed", "failed": "failed", "error": "broken", "skipped": "skipped"}
    history_id = hashlib.md5(f"{c['nodeid'].split('[')[0]}|{c['series']}|{slot}".encode()).hexdigest()  # noqa: S324
    severity = "blocker" if blocker else c.get("severity", "normal")
    labels = [{"name": "feature", "value": c["family"] or "checks"}, {"name": "epic", "value": "backupcheck"},
              {"name": "severity", "value": severity}, {"name": "framework", "value": "pytest"}]
    if c["series"]:
        labels.append({"name": "story", "value": c["series"]})
    params = [{"name": "backup", "value": repr(c["backup"]), "excluded": True}]
    if c["series"] and slot:
        params += [{"name": "series", "value": repr(c["series"])}, {"name": "slot", "value": repr(slot)}]
    uid = str(uuid.uuid4())
    files, written = [], []
    for i, (name, text) in enumerate(attachments):
        source = f"{uid}-{i}-attachment.txt"
        written.append(folder.write(source, text))
        files.append({"name": name, "source": source, "type": "text/plain"})
    result = {
        "uuid": uid, "historyId": history_id, "testCaseId": history_id, "fullName": c["nodeid"],
        "name": c["nodeid"].rpartition("::")[2], "status": status.get(c["outcome"], "unknown"),
        "statusDetails": {"message": _findings_text(c)[:4000]} if c["outcome"] != "passed" else {},
        "start": t0, "stop": t0 + int(c["seconds"] * 1000), "labels": labels, "parameters": params,
        "attachments": files,
    }
    written.append(folder.write(f"{uid}-result.json", json.dumps(result)))
    return written


def markdown(document: dict[str, Any]) -> str:
    run = document["run"]
    bad = [c for c in document["checks"] if c["outcome"] in BAD]
    shard = run.get("shard") or {}
    lines = ["## backupcheck" + (f" — {shard.get('total')} shards merged" if shard.get("index") == 0 else ""), "",
             f"**{'FAILED' if run['exit_status'] else 'passed'}**: {len(document['backups'])} backup(s), "
             f"{len(document['checks'])} check(s), {len(bad)} failed", ""]
    lines += table_markdown(document)
    if bad:
        lines += ["", "### Failed", ""] + [f"- `{c['nodeid']}`: {(_findings_text(c).splitlines() or [''])[0]}"
                                            for c in bad]
    lines += gate_markdown(document)
    return "\n".join(lines) + "\n"


def table_markdown(document: dict[str, Any]) -> list[str]:
    """The table of backups as Markdown (the job summary of a run or of a merge)."""
    rows = backup_rows(document)
    return (["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
            + ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows])


def gate_lines(document: dict[str, Any]) -> list[str]:
    """The migration gate on the terminal: per migration, seconds, locks, rows touched and lint."""
    out = []
    for g in document.get("gate", []):
        out.append(f"migration gate on {g['backup']}: {len(g['migrations'])} migration(s) rehearsed in "
                   f"{g['seconds']:.2f} s (whole gate {g['total_seconds']:.2f} s)" + (f"; {g['error']}" if g["error"] else ""))
        for m in g["migrations"]:
            out.append(f"  {m['migration']}: {m['status']}, {m['seconds']:.2f} s, longest exclusive lock "
                       f"{m['longest_exclusive_lock']:.2f} s, {m['rows_touched']:,} rows touched, "
                       f"{m['rows_rewritten']:,} rewritten{', lint: ' + ', '.join(m['lint']) if m['lint'] else ''}"
                       + (f"; {m['error']}" if m["error"] else ""))
    return out


def gate_markdown(document: dict[str, Any]) -> list[str]:
    """The per-migration table of the job summary (and of the pull request comment)."""
    lines: list[str] = []
    for g in document.get("gate", []):
        lines += ["", f"### Migration gate on `{g['backup']}`", "",
                  f"Rehearsed on a copy of the backup in {g['seconds']:.2f} s (the whole gate {g['total_seconds']:.2f} s"
                  + (f", the restore {g['restore_seconds']:.2f} s" if g.get("restore_seconds") is not None else "")
                  + ")" + (f": **{g['error']}**" if g["error"] else "."), "",
                  "| migration | status | seconds | locks | rows touched | rows rewritten | lint |", "|---|---|---|---|---|---|---|"]
        for m in g["migrations"]:
            locks = "<br>".join(f"{lk['mode']} {lk['table']} {lk['seconds']:.2f} s" for lk in m["locks"]) or "-"
            status = m["status"] + (f": {m['error']}" if m["error"] else "")
            lines.append(f"| {m['migration']} | {status} | {m['seconds']:.2f} | {locks} | {m['rows_touched']:,} | "
                         f"{m['rows_rewritten']:,} | {', '.join(m['lint']) or '-'} |")
        if g["lint"]:
            lines += ["", "Lint:", ""] + [f"- {note}" for note in g["lint"]]
    return lines


COMMENT_MARK = "<!-- backupcheck-gate -->"  # the pull request comment the workflow updates rather than adds


def gate_outputs(document: dict[str, Any]) -> dict[str, str]:
    """The gate's verdict as a CI job's outputs: verdict, findings (JSON, one line), rehearsal_seconds."""
    gate_checks = [c for c in document["checks"] if c["family"] == "gate"]
    bad = [c for c in gate_checks if c["outcome"] in BAD]
    findings = [f for c in bad for f in c["findings"]] or [
        {"check": "gate", "subject": c["backup"], "what": c["name"], "expected": "", "found": c["message"][:500],
         "hint": "", "where": ""} for c in bad if not c["findings"]]
    verdict = "failed" if bad or document["run"]["exit_status"] else "passed" if gate_checks else "not run"
    seconds = sum(g["seconds"] for g in document.get("gate", []))
    return {"verdict": verdict, "findings": json.dumps(findings, ensure_ascii=False),
            "rehearsal_seconds": f"{seconds:.2f}"}


def gate_comment(document: dict[str, Any]) -> str:
    """The pull request comment: the verdict, what failed, and the per-migration table."""
    out = gate_outputs(document)
    bad = [c for c in document["checks"] if c["family"] == "gate" and c["outcome"] in BAD]
    lines = [COMMENT_MARK, f"## Migration gate: **{out['verdict'].upper()}**", ""]
    if not document.get("gate"):
        lines.append("No migration was rehearsed (the gate looked at the backups only).")
    for c in bad:
        if not c["findings"]:
            lines.append(f"- `{c['name']}` on `{c['backup']}`: {(c['message'].strip().splitlines() or [''])[-1]}")
        for f in c["findings"]:
            where = f" ({f['where']})" if f["where"] else ""
            lines.append(f"- **{f['what']}**{where} on `{f['subject']}`: expected {f['expected']}; found {f['found']}"
                         + (f". Fix: {f['hint']}" if f["hint"] else ""))
    lines += gate_markdown(document)
    return "\n".join(lines) + "\n"


@functools.cache
def _templates() -> Any:
    """The HTML templates beside this module (Jinja2, as pytest-html renders its own), escaping every value."""
    import jinja2  # only where an HTML report is written

    return jinja2.Environment(loader=jinja2.PackageLoader("backupcheck.reports", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def html_summary(document: dict[str, Any], *, provider: str, containment: str, profiles: list[str],
                 streaks: list[str], charts: str, banner: str) -> str:
    """The block a single run's pytest-html report shows above its results (``charts`` is our own SVG markup)."""
    from markupsafe import Markup

    return _templates().get_template("summary.html.j2").render(
        columns=COLUMNS, rows=backup_rows(document), gates=document.get("gate", []), provider=provider,
        containment=containment, profiles=profiles, streaks=streaks, charts=Markup(charts), banner=banner)


def html_report(document: dict[str, Any]) -> str:
    """report.html of a merge of shards (a single run's is pytest-html's, with ``html_summary`` in it)."""
    run = document["run"]
    shard = run.get("shard") or {}
    checks = [{**c, "findings_text": _findings_text(c) if c["outcome"] != "passed" else ""}
              for c in sorted(document["checks"], key=lambda c: (c["outcome"] not in BAD, c["nodeid"]))]
    return _templates().get_template("report.html.j2").render(
        title=f"backupcheck — {shard.get('total', 1)} shard(s) of plan {shard.get('id', '')} merged", banner="",
        run=run, backups=document["backups"], checks=checks, bad=sum(c["outcome"] in BAD for c in checks),
        columns=COLUMNS, rows=backup_rows(document), gates=document.get("gate", []))
