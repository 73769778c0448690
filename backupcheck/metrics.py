"""Telling people: a Prometheus textfile (node_exporter's textfile collector) and a webhook (Slack-compatible),
both rendered from the run's results document. Neither may fail the run: trouble is a warning."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .results import newest_by_series, shown_verdicts


def write_metrics(document: dict[str, Any], path: Path, last_passed: dict[str, str], keep: bool = False) -> None:
    """The run's gauges per series, written atomically (prometheus_client writes a temp file and renames it).
    ``last_passed``: per series, when its newest backup last passed every check (from the history). ``keep`` (a
    partial run): the file's check_passed values for the families and series this run did not check stay."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile


    registry = CollectorRegistry()
    age = Gauge("backupcheck_backup_age_seconds", "Age of the newest backup of the series at the run's moment",
                ["series"], registry=registry)
    size = Gauge("backupcheck_backup_size_bytes", "Size of the newest backup of the series", ["series"],
                 registry=registry)
    restore = Gauge("backupcheck_restore_seconds", "Seconds the newest restore of the series took", ["series"],
                    registry=registry)
    passed = Gauge("backupcheck_check_passed", "1 when every check of the family passed on the series, else 0",
                   ["family", "series"], registry=registry)
    verified = Gauge("backupcheck_last_verified_timestamp_seconds",
                     "When the series' newest backup last passed every check (Unix time)", ["series"], registry=registry)
    now = datetime.fromisoformat(document["run"]["now"])
    for series, b in sorted(newest_by_series(document["backups"]).items()):
        age.labels(series).set((now - datetime.fromisoformat(b["taken_at"])).total_seconds())
        size.labels(series).set(b["size"])
    latest: dict[str, dict[str, Any]] = {}  # the newest restored backup of each series
    for b in document["backups"]:
        if b["restore"] and (b["series"] not in latest or b["taken_at"] > latest[b["series"]]["taken_at"]):
            latest[b["series"]] = b
    for series, b in sorted(latest.items()):
        restore.labels(series).set(b["restore"]["seconds"])
    outcome: dict[tuple[str, str], bool] = {}
    for c in document["checks"]:
        if not c["series"] or c["outcome"] == "skipped":
            continue
        k = (c["family"], c["series"])
        outcome[k] = outcome.get(k, True) and c["outcome"] == "passed"
    if keep:
        for (family, series), value in _passed_in(path).items():
            if (family, series) not in outcome:
                outcome[(family, series)] = bool(value)
    for (family, series), ok in sorted(outcome.items()):
        passed.labels(family, series).set(1 if ok else 0)
    for series, when in sorted(last_passed.items()):
        verified.labels(series).set(datetime.fromisoformat(when).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    os.chmod(path, 0o644)  # node_exporter runs as its own user; the file holds no secret


def _passed_in(path: Path) -> dict[tuple[str, str], float]:
    """The backupcheck_check_passed values of an existing metrics file ({} when there is none to read)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "backupcheck_check_passed":
                    out[(sample.labels.get("family", ""), sample.labels.get("series", ""))] = sample.value
    except ValueError:  # not a file this tool wrote: it is written anew
        return {}
    return out


@dataclass(frozen=True)
class Notify:
    url_env: str  # the environment variable holding the webhook URL (a secret: never shown)
    on: str = "failure"  # failure or always
    timeout: float = 10.0


def summary_text(document: dict[str, Any], streaks: list[dict[str, Any]], report: str = "") -> str:
    """The run in a few lines for a chat: each failing backup (or series) with the reason, the streaks, the report."""

    run = document["run"]
    failed = [c for c in document["checks"] if c["outcome"] in ("failed", "error")]
    lines = [f"backupcheck: {'FAILED' if run['exit_status'] else 'passed'} — "
             f"{len(document['backups'])} backup(s), {len(document['checks'])} check(s), {len(failed)} failed"
             + (f" (a partial run: {run['partial']})" if run.get("partial") else "")]
    for key, verdict in shown_verdicts(document).items():
        if verdict.startswith("failed"):
            lines.append(f"• {key}: {verdict}")
    shown = {b["key"] for b in document["backups"]}
    for c in failed:
        if c["backup"] not in shown and c["series"] == "":  # run-wide: the sources
            what = c["findings"][0]["what"] if c["findings"] else c["name"]
            lines.append(f"• {what}")
    for s in streaks:
        lines.append(f"• {s['check']} on {s['series']}: failed on {s['runs']} runs in a row, since {s['since'][:10]}")
    lines = lines[:40]
    if report:
        lines.append(f"report: {report}")
    return "\n".join(lines)


def send(document: dict[str, Any], cfg: Notify, streaks: list[dict[str, Any]],
         environ: dict[str, str] | None = None, report: str = "") -> tuple[str, bool]:
    """Post the run's summary to the webhook; returns what happened, for the terminal (never the URL), and
    whether all went well."""
    env = os.environ if environ is None else environ
    failed = document["run"]["exit_status"] != 0
    if cfg.on == "failure" and not failed:
        return "", True
    url = env.get(cfg.url_env, "")
    if not url:
        return f"notify: ${cfg.url_env} is not set, so no notification was sent", False
    if not url.startswith(("https://", "http://")):
        return f"notify: ${cfg.url_env} does not hold an http(s) URL, so no notification was sent", False
    text = summary_text(document, streaks, report)
    payload = {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        "backupcheck": {
            "run": {k: document["run"][k] for k in ("id", "started", "finished", "now", "exit_status")},
            "backups": [{k: b[k] for k in ("key", "series", "taken_at", "verdict")} for b in document["backups"]],
            "failed": [{k: c[k] for k in ("nodeid", "series", "backup", "outcome")} for c in document["checks"]
                       if c["outcome"] in ("failed", "error")],
            "streaks": streaks,
        },
    }
    import urllib.error  # http.client and ssl: 25 ms at every start otherwise
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "backupcheck"})
    where = f"the webhook in ${cfg.url_env}"
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as response:  # noqa: S310 (http(s) only, above)
            return f"notify: sent the summary to {where} (HTTP {response.status})", True
    except urllib.error.HTTPError as exc:
        return f"notify: {where} answered HTTP {exc.code}; the run's result stands", False
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return (f"notify: {where} did not take the summary ({type(reason).__name__}: timed out or unreachable); "
                "the run's result stands"), False
