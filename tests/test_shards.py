"""Plan once, verify in shards, merge: the same verdicts as one run, a missing shard named, a deterministic plan,
shards that never list a source, and a plan that no longer matches its files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from backupcheck import plan as planning

from . import farm as farmlib


def merge(tmp_path: Path, results: list[Path], plan: Path, out: str = "merged") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backupcheck", "merge", *map(str, results), "-o",
                           str(tmp_path / out), "--plan", str(plan)], capture_output=True, text=True, cwd=tmp_path)


def verdicts(document: dict) -> dict[str, tuple[str, list]]:
    return {c["nodeid"]: (c["outcome"], c["findings"]) for c in document["checks"]}


def test_three_shards_and_a_merge_give_the_verdicts_of_one_run(run_suites, faulty, tmp_path):
    root, _ = faulty
    whole = run_suites("--backups", str(root))
    plan = tmp_path / "plan.json"
    made = run_suites("--backups", str(root), "--plan-out", str(plan))
    assert made.ret == 0 and plan.exists(), made.stdout
    assert "backupcheck: plan " in made.stdout and " passed" not in made.stdout and " failed" not in made.stdout, \
        "planning checks nothing"
    shards = []
    for k in (1, 2, 3):
        run = run_suites("--plan", str(plan), "--shard", f"{k}/3", "--reports-dir", str(tmp_path / f"shard-{k}"))
        shards.append(tmp_path / f"shard-{k}" / "results.json")
        assert shards[-1].exists(), run.stdout
        assert json.loads(shards[-1].read_text())["run"]["shard"]["index"] == k
    merged = merge(tmp_path, shards, plan)
    assert merged.returncode == whole.ret == 1, merged.stdout + merged.stderr
    together = json.loads((tmp_path / "merged" / "results.json").read_text())
    alone = whole.results()
    assert verdicts(together) == verdicts(alone)
    assert sorted(b["key"] for b in together["backups"]) == sorted(b["key"] for b in alone["backups"])
    series = {b["series"] for b in alone["backups"]}
    owners = [{b["series"] for b in json.loads(p.read_text())["backups"]} for p in shards]
    assert set().union(*owners) == series and sum(map(len, owners)) == len(series), "a series is in one shard"
    for name in ("report.html", "junit.xml", "summary.md"):
        assert (tmp_path / "merged" / name).stat().st_size > 0
    junit = (tmp_path / "merged" / "junit.xml").read_text()
    assert junit.count("<testcase") == len(alone["checks"]) and "<failure" in junit
    allure = list((tmp_path / "merged" / "allure-results").glob("*-result.json"))
    assert len(allure) == len(alone["checks"])

    # A shard that never reported: the merge fails and names it, with the series it held.
    partial = merge(tmp_path, [shards[0], shards[2]], plan, "partial")
    assert partial.returncode == 1
    assert "shard 2/3 sent no results.json" in partial.stdout
    held = sorted(planning.assign(planning.load(plan), 3).items())
    assert all(s in partial.stdout for s, k in held if k == 2)
    doc = json.loads((tmp_path / "partial" / "results.json").read_text())
    assert any(c["name"] == "test_every_shard_sent_its_results" and c["outcome"] == "failed" for c in doc["checks"])


def test_the_plan_is_deterministic_and_shards_never_list_a_source(run_suites, farm, tmp_path, now):
    root = tmp_path / "src"
    root.mkdir()
    nights = farmlib.nights(now, 3)
    for series in ("alpha", "beta", "gamma", "delta"):
        for night, state in zip(nights, farm.states[-3:], strict=True):
            farmlib.stamp(farm.dump(state, root / f"{series}_{night:%Y%m%d_%H%M%S}.dump"), night)
    first, second = tmp_path / "plan-1.json", tmp_path / "plan-2.json"
    run_suites("--backups", str(root), "--plan-out", str(first))
    run_suites("--backups", str(root), "--plan-out", str(second))
    assert first.read_bytes() == second.read_bytes()
    plan = planning.load(first)
    assert {r["series"] for r in plan["restore"]} == {"alpha", "beta", "gamma", "delta"}
    assert all(r["major"] == farm.cluster.installation.major for r in plan["restore"])

    # After planning: a new backup arrives (a shard must not see it) and a planned file is cut.
    late = now.replace(hour=3)
    farmlib.stamp(farm.dump(farm.states[-1], root / f"alpha_{late:%Y%m%d_%H%M%S}.dump"), late)
    cut = next(root.glob("beta_*"))
    cut_key = f"beta-{cut.name.split('_', 1)[1][:8]}T{cut.name.split('_', 1)[1][9:15]}Z"
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 2)
    for k in (1, 2):
        run_suites("--plan", str(first), "--shard", f"{k}/2", "--reports-dir", str(tmp_path / f"s{k}"))
    checks = [c for k in (1, 2) for c in json.loads((tmp_path / f"s{k}" / "results.json").read_text())["checks"]]
    assert checks and not [c for c in checks if f"alpha-{late:%Y%m%dT%H%M%SZ}" in c["nodeid"]], \
        "the shard listed the source again"
    test = f"test_every_artifact_is_complete_and_readable[{cut_key}]"
    found = [c for c in checks if c["nodeid"].endswith(test)]
    assert len(found) == 1, "the backup's checks run in exactly one shard"
    outcome, message = found[0]["outcome"], found[0]["message"]
    assert outcome == "failed" and "the backup is not what the plan listed" in message, message
    assert "changed since the plan was made" in message


def test_shards_from_the_ci_environment():
    assert planning.shard_from_environment({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "5"}) == planning.Shard(2, 5)
    assert planning.shard_from_environment({"JOB_COMPLETION_INDEX": "0", "BACKUPCHECK_SHARD_TOTAL": "4"}) == \
        planning.Shard(1, 4)
    assert planning.shard_from_environment({}) is None
    for bad in ("0/3", "4/3", "three"):
        try:
            planning.parse_shard(bad)
        except planning.PlanError as exc:
            assert "K/N" in str(exc) or "between 1 and N" in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_shards_are_balanced_by_cost_not_by_count():
    plan = {"listing": {"series": [{"name": n} for n in ("big", "a", "b", "c", "d")]},
            "restore": [{"series": "big", "cost": 100.0}] + [{"series": n, "cost": 10.0} for n in "abcd"]}
    owner = planning.assign(plan, 2)
    assert owner["big"] == 1 and {owner[n] for n in "abcd"} == {2}


def test_a_shard_without_a_plan_is_a_usage_error(run_suites, clean_dir):
    run = run_suites("--backups", str(clean_dir), "--shard", "1/2")
    assert run.ret == 4 and "needs a plan" in run.stdout


def test_a_fleet_of_fifty_two_backups_restores_each_once_and_catches_the_two_faults(run_suites, farm, tmp_path, now):
    """52 small databases (one newest backup each), two of them damaged, verified with -n 2."""
    root = tmp_path / "fleet"
    root.mkdir()
    night = farmlib.nights(now, 1)[0]
    first = farm.dump(farm.states[-1], root / f"tenant00_{night:%Y%m%d_%H%M%S}.dump")
    farmlib.stamp(first, night)
    for i in range(1, 52):
        copy = root / f"tenant{i:02d}_{night:%Y%m%d_%H%M%S}.dump"
        shutil.copyfile(first, copy)
        farmlib.stamp(copy, night)
    cut, zeroed = root / f"tenant17_{night:%Y%m%d_%H%M%S}.dump", root / f"tenant41_{night:%Y%m%d_%H%M%S}.dump"
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size * 2 // 3)
    data = bytearray(zeroed.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)
    zeroed.write_bytes(bytes(data))
    for p in (cut, zeroed):
        farmlib.stamp(p, night)
    run = run_suites("--backups", str(root), "-n", "2", "-m", "integrity or restore or row_counts")
    assert run.ret == 1, run.stdout
    stamp = f"{night:%Y%m%dT%H%M%SZ}"
    failed_backups = {b["key"] for b in run.results()["backups"] if b["verdict"] == "failed"}
    assert failed_backups == {f"tenant17-{stamp}", f"tenant41-{stamp}"}, failed_backups
    restored = [line["backup"] for line in run.restores()]
    assert len(restored) == len(set(restored)), "a backup was restored twice"
    assert {f"tenant{i:02d}-{stamp}" for i in range(52)} - {f"tenant17-{stamp}", f"tenant41-{stamp}"} <= set(restored)


def test_a_ci_node_index_without_a_plan_changes_nothing(run_suites, clean_dir, monkeypatch):
    """GitLab sets CI_NODE_INDEX in every parallel job: without --plan it is no shard, and no error."""
    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "3")
    run = run_suites("--backups", str(clean_dir / "custom"), "-m", "size")
    assert run.ret == 0, run.stdout
    assert any(k.startswith("test_backup_size_is_within_tolerance_of_usual[") for k in run.outcomes)
