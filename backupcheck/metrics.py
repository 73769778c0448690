"""Telling people: a Prometheus textfile (node_exporter's textfile collector) and a webhook (Slack-compatible),
both rendered from the run's results document. Neither may fail the run: trouble is a warning."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


def write_metrics(document: dict[str, Any], path: Path, last_passed: dict[str, str]) -> None:
    """The run's gauges per series, written atomically (prometheus_client writes a temp file and renames it).
    ``last_passed``: per series, when its newest backup last passed every check (from the history)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    from .results import newest_by_series

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
    for (family, series), ok in sorted(outcome.items()):
        passed.labels(family, series).set(1 if ok else 0)
    for series, when in sorted(last_passed.items()):
        verified.labels(series).set(datetime.fromisoformat(when).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    os.chmod(path, 0o644)  # node_exporter runs as its own user; the file holds no secret


@dataclass(frozen=True)
class Notify:
    url_env: str  # the environment variable holding the webhook URL (a secret: never shown)
    on: str = "failure"  # failure or always
    timeout: float = 10.0


def summary_text(document: dict[str, Any], streaks: list[dict[str, Any]]) -> str:
    run = document["run"]
    failed = [c for c in document["checks"] if c["outcome"] in ("failed", "error")]
    lines = [f"backupcheck: {'FAILED' if run['exit_status'] else 'passed'} — "
             f"{len(document['backups'])} backup(s), {len(document['checks'])} check(s), {len(failed)} failed"]
    for b in document["backups"]:
        if b["verdict"] == "failed":
            lines.append(f"• {b['key']}: failed")
    for s in streaks:
        lines.append(f"• {s['check']} on {s['series']}: failing for {s['runs']} nights since {s['since'][:10]}")
    return "\n".join(lines[:40])


def send(document: dict[str, Any], cfg: Notify, streaks: list[dict[str, Any]],
         environ: dict[str, str] | None = None) -> tuple[str, bool]:
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
    text = summary_text(document, streaks)
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
