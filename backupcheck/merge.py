"""Merging shards: the results documents of a plan's N shards become one document, and from it (through the same
writers as a single run's, ``backupcheck.reports``) one HTML report, one JUnit file, one Allure results folder,
one job summary and one exit code. A shard that sent nothing is a failure named in all of them, not a silently
smaller run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from . import results
from .reports import write_all
from .reports.render import BAD


class MergeError(Exception):
    """Shard results that cannot be merged (not results files, or of different plans)."""


def merge(documents: list[dict[str, Any]], expected: int | None = None,
          assignment: dict[str, int] | None = None) -> dict[str, Any]:
    """One results document from the shards' (``run.shard`` says which of how many each is). ``expected``: the
    number of shards when no document can say (none arrived); ``assignment``: series -> shard, from the plan,
    to name what a missing shard held."""
    planned = {(d["run"]["shard"] or {}).get("id") for d in documents}
    if len(planned) > 1:
        raise MergeError(f"the results come from different plans ({', '.join(sorted(str(p) for p in planned))}): "
                         "merge the shards of one plan")
    totals = {(d["run"]["shard"] or {}).get("total", 1) for d in documents}
    if len(totals) > 1:
        raise MergeError(f"the results disagree on the number of shards ({sorted(totals)})")
    total = totals.pop() if totals else (expected or 1)
    plan_id = planned.pop() if planned else ""
    present = sorted((d["run"]["shard"] or {}).get("index", 1) for d in documents)
    if len(set(present)) != len(present):
        raise MergeError(f"a shard's results were given twice (shards {present})")
    missing = [k for k in range(1, total + 1) if k not in present]
    checks = [c for d in documents for c in d["checks"]]
    for k in missing:
        held = sorted(s for s, shard in (assignment or {}).items() if shard == k)
        what = f"its series ({', '.join(held[:20])}{' ...' if len(held) > 20 else ''}) were not verified" if held \
            else "its backups were not verified"
        checks.append({
            "nodeid": f"backupcheck-merge::shard[{k}-of-{total}]", "name": "test_every_shard_sent_its_results",
            "family": "merge", "series": "", "backup": f"shard-{k}", "outcome": "failed", "seconds": 0.0,
            "severity": "blocker",
            "message": f"shard {k}/{total} sent no results.json: {what}",
            "findings": [{"check": "merge", "subject": f"shard {k}/{total}", "what": "the shard sent no results",
                          "expected": f"results.json from each of the {total} shards of plan {plan_id}",
                          "found": f"shards {', '.join(map(str, present)) or 'none'}", "where": "",
                          "hint": "look at that shard's job log (it failed or was cancelled before writing its "
                                  "reports); rerun it with the same --plan and --shard"}],
        })
    runs = [d["run"] for d in documents]
    failed = any(c["outcome"] in BAD for c in checks)
    first = runs[0] if runs else {}
    merged_run = {
        "id": f"merged-{plan_id or hashlib.sha256(''.join(sorted(r['id'] for r in runs)).encode()).hexdigest()[:12]}",
        "started": min((r["started"] for r in runs), default=""), "finished": max((r["finished"] for r in runs), default=""),
        "now": first.get("now", ""), "demo": False,
        "provider": first.get("provider", {"kind": "local", "reason": "no shard reported"}),
        "containment": first.get("containment", ""),
        "sources": sorted({s for r in runs for s in r["sources"]}), "versions": first.get("versions", {}),
        "exit_status": 1 if failed or missing else 0,
        "shard": {"id": plan_id, "index": 0, "total": total},
    }
    backups = sorted((b for d in documents for b in d["backups"]), key=lambda b: (b["series"], b["taken_at"]))
    return {"schema": "backupcheck-results", "version": results.VERSION, "run": merged_run, "backups": backups,
            "checks": sorted(checks, key=lambda c: c["nodeid"]),
            "streaks": [s for d in documents for s in d.get("streaks", [])],
            "gate": [g for d in documents for g in d.get("gate", [])], "missing_shards": missing}


def load_all(paths: list[Path]) -> list[dict[str, Any]]:
    docs = []
    for p in paths:
        try:
            docs.append(results.load(p))
        except (OSError, ValueError) as exc:
            raise MergeError(f"{p}: {exc}") from None
    return docs


# --- renderers, all from the document -----------------------------------------------------------------

def render_all(document: dict[str, Any], out: Path) -> None:
    """Every report of a merged run, through the same writers as a single run's."""

    write_all({k: v for k, v in document.items() if k != "missing_shards"}, out)
