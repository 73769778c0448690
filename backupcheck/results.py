"""One run's results as data: ``reports/results.json``, from which the terminal table, the HTML summary and the
CI job summary are rendered, and which later tools (history, merging shards) read.

The document is versioned (``version``); SCHEMA is its JSON Schema. Nothing secret goes in: sources are the
paths and URLs as given (credentials never are), servers are described without passwords.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

VERSION = 2  # 2: backups carry their tables' rows; streaks of failing checks

_FINDING = {
    "type": "object",
    "required": ["check", "subject", "what", "expected", "found", "hint", "where"],
    "properties": {k: {"type": "string"} for k in ("check", "subject", "what", "expected", "found", "hint", "where")},
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://backupcheck.invalid/results-2.json",
    "title": "backupcheck results",
    "type": "object",
    "required": ["schema", "version", "run", "backups", "checks", "streaks"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": "backupcheck-results"},
        "version": {"const": VERSION},
        "run": {
            "type": "object",
            "required": ["id", "started", "finished", "now", "demo", "provider", "containment", "sources",
                         "versions", "exit_status", "shard"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "started": {"type": "string", "format": "date-time"},
                "finished": {"type": "string", "format": "date-time"},
                "now": {"type": "string", "format": "date-time"},
                "demo": {"type": "boolean"},
                "provider": {
                    "type": "object", "required": ["kind", "reason"], "additionalProperties": False,
                    "properties": {"kind": {"enum": ["local", "container", "dsn"]}, "reason": {"type": "string"}},
                },
                "containment": {"type": "string"},
                "sources": {"type": "array", "items": {"type": "string"}},
                "versions": {"type": "object", "additionalProperties": {"type": "string"}},
                "exit_status": {"type": "integer"},
                # A run that selected part of the checks: what it selected and how many it ran ("" for a full run).
                "partial": {"type": "string"},
                "shard": {  # a plan's share (index 0 of N: the shards merged), or null for a run on its own
                    "oneOf": [{"type": "null"}, {
                        "type": "object", "required": ["id", "index", "total"], "additionalProperties": False,
                        "properties": {"id": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
                                       "total": {"type": "integer", "minimum": 1}}}],
                },
            },
        },
        "backups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "series", "taken_at", "format", "size", "artifacts", "verdict", "restore",
                             "tables"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "series": {"type": "string"},
                    "taken_at": {"type": "string", "format": "date-time"},
                    "format": {"type": "string"},
                    "size": {"type": "integer", "minimum": 0},
                    "artifacts": {"type": "array", "items": {"type": "string"}},
                    "verdict": {"enum": ["passed", "failed", "skipped", "not run"]},
                    "tables": {  # rows per table of the restored copy, when they were counted
                        "oneOf": [{"type": "null"},
                                  {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}],
                    },
                    "restore": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["seconds", "server", "tool", "profile", "profile_reason",
                                             "harmful_errors", "errors", "aborted", "skipped"],
                                "additionalProperties": False,
                                "properties": {
                                    "seconds": {"type": "number", "minimum": 0},
                                    "server": {"type": "string"},
                                    "tool": {"type": "string"},
                                    "profile": {"type": "string"},
                                    "profile_reason": {"type": "string"},
                                    "harmful_errors": {"type": "integer", "minimum": 0},
                                    "errors": {"type": "integer", "minimum": 0},
                                    "aborted": {"type": "string"},
                                    "skipped": {"type": "array", "items": {"type": "string"}},
                                    # seconds per step: download, server and database, the restore's phases
                                    "phases": {"type": "object",
                                               "additionalProperties": {"type": "number", "minimum": 0}},
                                },
                            },
                        ],
                    },
                },
            },
        },
        "streaks": {  # checks failing on this run and the runs before it, at least streak_runs in a row
            "type": "array",
            "items": {
                "type": "object", "required": ["series", "check", "runs", "since"], "additionalProperties": False,
                "properties": {"series": {"type": "string"}, "check": {"type": "string"},
                               "runs": {"type": "integer", "minimum": 1}, "since": {"type": "string"}},
            },
        },
        "gate": {  # the migrations rehearsed by the pre-migration gate, one entry per backup (absent: no gate)
            "type": "array",
            "items": {
                "type": "object",
                "required": ["backup", "mode", "seconds", "total_seconds", "applied_from", "error", "migrations",
                             "lint", "output", "restore_seconds", "phases"],
                "additionalProperties": False,
                "properties": {
                    "backup": {"type": "string"}, "mode": {"type": "string"},
                    "seconds": {"type": "number", "minimum": 0}, "total_seconds": {"type": "number", "minimum": 0},
                    "restore_seconds": {"type": ["number", "null"]},
                    "applied_from": {"type": "string"}, "error": {"type": "string"}, "output": {"type": "string"},
                    "phases": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                    "lint": {"type": "array", "items": {"type": "string"}},
                    "migrations": {"type": "array", "items": {
                        "type": "object",
                        "required": ["migration", "status", "seconds", "transactional", "locks",
                                     "longest_exclusive_lock", "rows_touched", "rows_rewritten", "lint", "error",
                                     "notes"],
                        "additionalProperties": False,
                        "properties": {
                            "migration": {"type": "string"},
                            "status": {"enum": ["applied", "skipped", "failed", "not run", "pending"]},
                            "seconds": {"type": "number", "minimum": 0}, "transactional": {"type": "boolean"},
                            "locks": {"type": "array", "items": {
                                "type": "object", "required": ["table", "mode", "seconds", "line"],
                                "additionalProperties": False,
                                "properties": {"table": {"type": "string"}, "mode": {"type": "string"},
                                               "seconds": {"type": "number"}, "line": {"type": "integer"}}}},
                            "longest_exclusive_lock": {"type": "number", "minimum": 0},
                            "rows_touched": {"type": "integer"}, "rows_rewritten": {"type": "integer"},
                            "lint": {"type": "array", "items": {"type": "string"}}, "error": {"type": "string"},
                            "notes": {"type": "array", "items": {"type": "string"}},
                        },
                    }},
                },
            },
        },
        "checks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["nodeid", "name", "family", "series", "backup", "outcome", "seconds", "message",
                             "findings", "severity"],
                "additionalProperties": False,
                "properties": {
                    "nodeid": {"type": "string"},
                    "name": {"type": "string"},
                    "family": {"type": "string"},
                    "series": {"type": "string"},
                    "backup": {"type": "string"},
                    "outcome": {"enum": ["passed", "failed", "error", "skipped"]},
                    "seconds": {"type": "number", "minimum": 0},
                    "message": {"type": "string"},
                    "findings": {"type": "array", "items": _FINDING},
                    "severity": {"enum": ["blocker", "critical", "normal", "minor", "trivial"]},
                },
            },
        },
    },
}


def write(document: dict[str, Any], path: Path, *, sort_keys: bool = False) -> None:
    """Write a JSON document atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False, sort_keys=sort_keys) + "\n")
    tmp.replace(path)


def newest_by_series(backups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Series -> its newest backup among a results document's backups (or a history run's)."""
    newest: dict[str, dict[str, Any]] = {}
    for b in backups:
        if b["series"] not in newest or b["taken_at"] > newest[b["series"]]["taken_at"]:
            newest[b["series"]] = b
    return newest


_WORST = {"error": 4, "failed": 3, "passed": 2, "skipped": 1, "not run": 0}


def shown_verdicts(document: dict[str, Any]) -> dict[str, str]:
    """Backup key -> the verdict a table of backups shows: the worst outcome of the backup's own checks and, for
    the newest backup of each series, of the series' checks (RPO, gaps, retention), with the first failing
    check's reason: ``failed: the newest backup is older than the RPO``."""
    worst: dict[str, tuple[int, str]] = {}
    newest = {s: b["key"] for s, b in newest_by_series(document["backups"]).items()}
    for c in document["checks"]:
        key = c["backup"] if c["backup"] in {b["key"] for b in document["backups"]} else newest.get(c["series"], "")
        if not key or c["outcome"] not in ("failed", "error"):
            continue
        rank = _WORST[c["outcome"]]
        what = (c["findings"][0]["what"] if c["findings"] else (c.get("message") or c["name"]).splitlines()[0])
        if rank > worst.get(key, (0, ""))[0]:
            worst[key] = (rank, what)
    out = {}
    for b in document["backups"]:
        if b["key"] in worst:
            out[b["key"]] = f"failed: {worst[b['key']][1][:90]}"
        else:
            out[b["key"]] = b["verdict"]
    return out


def load(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    if document.get("schema") != "backupcheck-results" or document.get("version") != VERSION:
        raise ValueError(f"{path} is not a backupcheck results file of version {VERSION}")
    return document
