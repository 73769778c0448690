"""reports/results.json: the run as data, valid against its schema, and the reports rendered from it."""

from __future__ import annotations

import html
import re

import jsonschema

from backupcheck.results import SCHEMA


def test_results_validate_and_every_report_renders_from_them(run_suites, faulty):
    root, expected = faulty
    run = run_suites("--backups", str(root))
    document = run.results()
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(document)
    assert document["run"]["exit_status"] == run.ret == 1
    # checks: the same outcomes as JUnit, and the findings of every failure as data
    checks = {c["nodeid"].split("::")[-1]: c for c in document["checks"]}
    assert {k: c["outcome"] for k, c in checks.items()} == run.outcomes
    for name, keys in expected.items():
        for key in keys:
            check = checks[f"{name}[{key}]"]
            assert check["outcome"] == "failed" and check["findings"], check
            f = check["findings"][0]
            assert f["subject"] == key and f["expected"] and f["found"] and f["found"] in run.messages[f"{name}[{key}]"]
    # backups: the terminal table and the HTML summary show exactly the document's rows
    table = run.stdout.split("backups verified", 1)[1]
    report = (run.reports / "report.html").read_text()
    from backupcheck.results import shown_verdicts

    shown = shown_verdicts(document)  # the backup's own verdict, or a failure of it or of its series, with why
    for b in document["backups"]:
        when = b["taken_at"][:10] + " " + b["taken_at"][11:16] + " UTC"
        assert re.search(rf"^{re.escape(b['series'])}\s+{when}\s+.*\s{re.escape(shown[b['key']])}\s*$", table,
                         re.M), b
        assert html.escape(b["series"]) in report and when in report
        assert shown[b["key"]].split(":")[0] == ("failed" if b["verdict"] == "failed" else shown[b["key"]].split(":")[0])
    verdicts = {b["key"]: b["verdict"] for b in document["backups"]}
    planted = {k for keys in expected.values() for k in keys if k in verdicts}  # backups, not series
    assert planted and all(verdicts[k] == "failed" for k in planted), {k: verdicts[k] for k in planted}


def test_the_restore_log_is_kept_across_runs(run_suites, clean_dir):
    first = run_suites("--backups", str(clean_dir / "custom")).results()["run"]["id"]
    second = run_suites("--backups", str(clean_dir / "custom"))
    lines = (second.reports / "restore-log.jsonl").read_text().splitlines()
    assert len(lines) == 2 and first != second.results()["run"]["id"]
    assert len(second.restores()) == 1


def test_the_html_templates_escape_what_a_backup_names():
    """Names and findings come from backups and configs: the HTML reports show them as text, never as markup."""
    from backupcheck.reports.render import html_report, html_summary

    hostile = "<script>alert(1)</script>"
    document = {"run": {"started": "2026-12-07T02:00:00+00:00", "finished": "2026-12-07T02:01:00+00:00",
                        "now": "2026-12-07T03:00:00+00:00", "exit_status": 1, "shard": None},
                "backups": [], "gate": [],
                "checks": [{"nodeid": f"suites/test_restore.py::test_x[{hostile}]", "outcome": "failed", "backup": "",
                            "series": "",
                            "findings": [{"check": "restore", "subject": hostile, "what": hostile, "expected": "e",
                                          "found": hostile, "hint": ""}], "message": hostile}]}
    page = html_report(document)
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "1 check(s), 1 failed" in page
    block = html_summary(document, provider=hostile, containment="", profiles=[hostile], streaks=[hostile],
                         charts="<svg id='ours'></svg>", banner="")
    assert hostile not in block and "<svg id='ours'></svg>" in block, "our own charts stay markup"


def test_allure_results_written_while_the_run_goes_on_end_as_the_whole_document_writes_them(tmp_path):
    """Each check's Allure result is written as the check ends; at the end the folder is what the renderer
    writes from the whole results document: a check that changed since (a streak made it a blocker, its
    teardown failed) is written again, one never handed over is added, one not in the document is gone, and the
    last run's results are gone while what a CI step put there stays."""
    import json
    import time

    from backupcheck.reports import render
    from backupcheck.reports.allure_stream import AllureStream

    def check(n: int, outcome: str = "passed") -> dict:
        return {"nodeid": f"suites/test_x.py::test_{n}[shop-20261207T020000Z]", "name": f"test_{n}",
                "family": "restore", "series": "shop", "backup": "shop-20261207T020000Z", "outcome": outcome,
                "seconds": 0.5, "message": "", "findings": [], "severity": "normal"}

    checks = [check(n) for n in range(5)]
    attachments = {checks[0]["nodeid"]: [("restore errors", "none")]}
    streamed = tmp_path / "streamed" / "allure-results"
    streamed.mkdir(parents=True)
    (streamed / "old-result.json").write_text("{}")
    (streamed / "categories.json").write_text("[]")
    stream = AllureStream(streamed, "2026-12-07T02:00:00+00:00", {"shop-20261207T020000Z": "newest"})
    for c in checks[:4]:
        stream.add(c, attachments.get(c["nodeid"], []))
    stream.add(check(9), [])  # a check the document will not hold
    for _ in range(100):
        if len(list(streamed.glob("*-result.json"))) == 5:
            break
        time.sleep(0.05)
    assert len(list(streamed.glob("*-result.json"))) == 5, "written as the checks ended, before the end"
    checks[2] = {**checks[2], "outcome": "error", "message": "teardown failed"}
    document = {"run": {"started": "2026-12-07T02:00:00+00:00"}, "checks": checks,
                "backups": [{"key": "shop-20261207T020000Z", "series": "shop", "taken_at": "2026-12-07T02:00:00"}],
                "streaks": [{"series": "shop", "check": "test_3", "runs": 3, "since": "2026-12-05"}]}
    stream.finish(document, attachments)
    whole = tmp_path / "whole"
    render.allure(document, whole, attachments)

    def seen(folder):  # every result and attachment, the random uuid taken out
        out = []
        for path in folder.glob("*-result.json"):
            r = json.loads(path.read_text())
            texts = [(a["name"], (folder / a["source"]).read_text()) for a in r.pop("attachments")]
            r.pop("uuid")
            out.append(json.dumps([r, texts], sort_keys=True))
        return sorted(out)

    assert seen(streamed) == seen(whole)
    assert len(seen(streamed)) == 5 and (streamed / "categories.json").exists()
    assert len(list(streamed.glob("*-attachment.txt"))) == 1, "the attachments of results written again are gone"
    assert sorted(p.name for p in streamed.iterdir() if not p.name.endswith(("-result.json", "-attachment.txt"))) \
        == ["categories.json"], "no spare file is left"


def test_the_next_run_rewrites_the_last_runs_allure_files_instead_of_making_new_ones(tmp_path):
    """Making a file costs some filesystems ten times what rewriting one does (this machine's: 2,300 results of
    a fleet, 1.5 s of CPU against 0.2 s): the next run into the same folder gives the last run's files the new
    results' names and contents. Nothing of the last run is left to be read as this run's, also when the run
    dies half way (its spares have names Allure does not read) and the run after it cleans up."""
    import contextlib
    import json
    import os

    from backupcheck.reports import render

    def document(n: int, started: str) -> dict:
        checks = [{"nodeid": f"suites/test_x.py::test_{i}[shop-1]", "name": f"test_{i}", "family": "restore",
                   "series": "shop", "backup": "shop-1", "outcome": "passed", "seconds": 0.5, "message": "",
                   "findings": [], "severity": "normal"} for i in range(n)]
        return {"run": {"started": started}, "checks": checks, "streaks": [],
                "backups": [{"key": "shop-1", "series": "shop", "taken_at": "2026-12-07T02:00:00"}]}

    folder = tmp_path / "allure-results"
    render.allure(document(6, "2026-12-06T02:00:00+00:00"), folder, clean=True)
    with contextlib.ExitStack() as held:  # held open: a file removed and made anew cannot get its inode back
        inodes = {held.enter_context(p.open()) and p.stat().st_ino for p in folder.iterdir()}
        assert len(inodes) == 6
        render.allure(document(4, "2026-12-07T02:00:00+00:00"), folder, clean=True)
        results = list(folder.iterdir())
        assert len(results) == 4 and all(p.name.endswith("-result.json") for p in results), "no spare left"
        assert {p.stat().st_ino for p in results} <= inodes, "the last run's files, rewritten"
    assert {json.loads(p.read_text())["start"] for p in results} == {render.allure_start("2026-12-07T02:00:00+00:00")}

    # A link is not written through: removed, not reused
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    (folder / "planted-result.json").symlink_to(outside)
    os.link(outside, folder / "linked-result.json")
    render.allure(document(4, "2026-12-07T02:00:00+00:00"), folder, clean=True)
    assert outside.read_text() == "mine" and len(list(folder.iterdir())) == 4

    # A run that dies half way: its spares stay, under names Allure does not read; the next run uses them
    files = render.AllureFiles(folder, clean=True)
    files.write("a-result.json", "{}")
    assert sorted(p.name for p in folder.glob("*-result.json")) == ["a-result.json"]
    assert len(list(folder.iterdir())) == 4
    render.allure(document(2, "2026-12-08T02:00:00+00:00"), folder, clean=True)
    assert len(list(folder.iterdir())) == 2 and len(list(folder.glob("*-result.json"))) == 2
