"""Plan once, verify in shards: the listing and the restore plan written to a file by one job, read by N shard
jobs that never list a source themselves.

A shard is a set of whole series (a series' backups, and its series-wide checks, never split), balanced by
expected cost: largest first into the lightest shard. The plan is deterministic: the same sources give the same
file, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import listing_io, results
from .model import Listing

VERSION = 1
FIXED_COST = 2.0  # seconds a restore costs whatever its size: a server, the checks, the teardown
BYTES_PER_SECOND = 20 * 1024**2  # restore speed of a compressed dump when no history says better


class PlanError(Exception):
    """A plan file or a shard setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_shard(text: str, where: str = "--shard") -> Shard:
    try:
        k, n = (int(x) for x in text.strip().split("/"))
    except ValueError:
        raise PlanError(f"{where} = {text!r}: expected K/N, like 3/8 (shard 3 of 8, counted from 1)") from None
    if not 1 <= k <= n:
        raise PlanError(f"{where} = {text!r}: K must be between 1 and N")
    return Shard(k, n)


def shard_from_environment(env: dict[str, str]) -> Shard | None:
    """The shard a CI system says this job is: GitLab's CI_NODE_INDEX / CI_NODE_TOTAL (from 1), a Kubernetes
    Indexed Job's JOB_COMPLETION_INDEX (from 0) with BACKUPCHECK_SHARD_TOTAL, or BACKUPCHECK_SHARD = K/N."""
    if env.get("BACKUPCHECK_SHARD"):
        return parse_shard(env["BACKUPCHECK_SHARD"], "BACKUPCHECK_SHARD")
    if env.get("CI_NODE_INDEX") and env.get("CI_NODE_TOTAL"):
        return parse_shard(f"{env['CI_NODE_INDEX']}/{env['CI_NODE_TOTAL']}", "CI_NODE_INDEX/CI_NODE_TOTAL")
    if env.get("JOB_COMPLETION_INDEX") is not None and env.get("JOB_COMPLETION_INDEX", "") != "":
        total = env.get("BACKUPCHECK_SHARD_TOTAL", "")
        if not total:
            raise PlanError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but BACKUPCHECK_SHARD_TOTAL is "
                            "not: set it to the Job's completions")
        try:
            index = int(env["JOB_COMPLETION_INDEX"]) + 1
        except ValueError:
            raise PlanError(f"JOB_COMPLETION_INDEX = {env['JOB_COMPLETION_INDEX']!r} is not a number") from None
        return parse_shard(f"{index}/{total}", "JOB_COMPLETION_INDEX/BACKUPCHECK_SHARD_TOTAL")
    return None


def make(listing: Listing, sources: list[str], to_restore: list[Any], major_of: Callable[[Any], int | None],
         past_seconds: Callable[[str], list[tuple[int, float]]]) -> dict[str, Any]:
    """The plan document: the listing as found, and per backup to restore the server version it needs and its
    expected cost (from the history's restore times of that series, scaled by size, when there are some)."""
    data = listing_io.to_data(listing)
    restore = []
    for b in to_restore:
        size = sum(a.size for a in b.dumps) or b.size
        known = past_seconds(b.series)
        if known:
            rate = sum(s for _, s in known) / max(1, sum(n for n, _ in known))  # seconds per byte, from history
            cost = FIXED_COST + size * rate
        else:
            cost = FIXED_COST + size / BYTES_PER_SECOND
        restore.append({"key": b.key, "series": b.series, "major": major_of(b), "bytes": size,
                        "cost": round(cost, 3), "cost_from": "history" if known else "size"})
    body = {"sources": sorted(sources), "listing": data, "restore": restore}
    ident = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"schema": "backupcheck-plan", "version": VERSION, "id": ident, **body}


def write(plan: dict[str, Any], path: Path) -> None:
    results.write(plan, path, sort_keys=True)  # sorted: the same sources, the same bytes


def load(path: Path) -> dict[str, Any]:
    try:
        plan = json.loads(path.read_text())
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not a plan (not JSON: {exc})") from None
    if plan.get("schema") != "backupcheck-plan" or plan.get("version") != VERSION:
        raise PlanError(f"{path} is not a backupcheck plan of version {VERSION}; make one with --plan-out")
    return plan


def listing_of(plan: dict[str, Any]) -> Listing:
    return listing_io.from_data(plan["listing"])


def assign(plan: dict[str, Any], total: int) -> dict[str, int]:
    """Series -> shard (1-based): whole series, largest expected cost first into the lightest shard."""
    cost: dict[str, float] = {s["name"]: 0.1 for s in plan["listing"]["series"]}  # every series has some checks
    for r in plan["restore"]:
        cost[r["series"]] = cost.get(r["series"], 0.1) + float(r["cost"])
    load_of = [0.0] * total
    out: dict[str, int] = {}
    for series in sorted(cost, key=lambda s: (-cost[s], s)):
        k = min(range(total), key=lambda i: (load_of[i], i))
        out[series] = k + 1
        load_of[k] += cost[series]
    return out


def shard_listing(plan: dict[str, Any], shard: Shard) -> Listing:
    """Shard K's part of the planned listing: its series whole; the sources' problems go to shard 1."""
    full = listing_of(plan)
    owner = assign(plan, shard.total)
    part = Listing(problems=list(full.problems) if shard.index == 1 else [])
    part.series = [s for s in full.series if owner.get(s.name) == shard.index]
    return part


def drift(listing: Listing) -> dict[str, list[str]]:
    """Per backup key, what changed in its local files since the plan listed them (gone, or another size or
    time): a plan that no longer matches its sources is that backup's failure, not a crash."""
    out: dict[str, list[str]] = {}
    for b in listing.backups():
        for a in b.artifacts:
            if a.is_remote:
                continue
            try:
                st = a.path.stat()
            except FileNotFoundError:
                out.setdefault(b.key, []).append(f"{a.path} is gone since the plan was made")
                continue
            except OSError as exc:
                out.setdefault(b.key, []).append(f"{a.path} cannot be read ({exc.strerror or exc})")
                continue
            if a.path.is_dir():
                continue  # a directory-format dump: its members are checked by the integrity test itself
            mtime = datetime.fromtimestamp(st.st_mtime, a.mtime.tzinfo)
            if st.st_size != a.size or abs((mtime - a.mtime).total_seconds()) > 1:
                out.setdefault(b.key, []).append(
                    f"{a.path} changed since the plan was made: {a.size:,} bytes of {a.mtime:%Y-%m-%d %H:%M:%S} planned, "
                    f"{st.st_size:,} bytes of {mtime:%Y-%m-%d %H:%M:%S} found")
    return out
