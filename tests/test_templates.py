"""Server templates kept between runs: made once, served after, never taken from a folder others may write to."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, RunDir
from backupcheck.servers.templates import KEEP_UNUSED, TemplateCache


def initdb_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every initdb the cluster module runs from now on."""
    import backupcheck.servers.cluster as cluster_module

    calls: list[list[str]] = []
    real = subprocess.run

    def spy(cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(str(cmd[0])).name == "initdb":
            calls.append([str(c) for c in cmd])
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(cluster_module.subprocess, "run", spy)
    return calls


def answers(factory: ClusterFactory, inst: pgbin.Installation) -> bool:
    with factory.cluster(inst) as cluster, psycopg.connect(**cluster.conninfo(), connect_timeout=5) as conn:  # type: ignore[arg-type]
        return conn.execute("select 1").fetchone() == (1,)


def test_a_template_is_made_once_and_the_next_run_starts_from_it(tmp_path, monkeypatch):
    inst = pgbin.ANY_TOOLS.pick(None)
    cache = TemplateCache(tmp_path / "templates")
    calls = initdb_calls(monkeypatch)
    with RunDir() as first_run:
        first = ClusterFactory(first_run, None, cache).template(inst)
        assert first.is_relative_to(cache.root) and len(calls) == 1
        assert not [p for p in first_run.iterdir() if p.name.startswith("template-")], "the run's own copy is kept"
    with RunDir() as second_run:
        factory = ClusterFactory(second_run, None, cache)
        assert factory.template(inst) == first
        assert len(calls) == 1, "the second run ran initdb again"
        assert answers(factory, inst)
    assert oct(cache.root.stat().st_mode & 0o777) == "0o700"


def test_a_cache_others_may_write_to_is_not_used(tmp_path, monkeypatch, caplog):
    """A template's postgresql.conf decides what the server runs: a planted one must never be started."""
    inst = pgbin.ANY_TOOLS.pick(None)
    root = tmp_path / "templates"
    cache = TemplateCache(root)
    with RunDir() as run:
        planted = ClusterFactory(run, None, cache).template(inst)
    os.chmod(root, 0o777)
    calls = initdb_calls(monkeypatch)
    caplog.set_level(logging.WARNING, "backupcheck.servers.templates")
    with RunDir() as run:
        factory = ClusterFactory(run, None, TemplateCache(root))
        made = factory.template(inst)
        assert made != planted and made.is_relative_to(run) and len(calls) == 1
        assert answers(factory, inst)
    assert "not this user's alone" in caplog.text and "mode 777" in caplog.text


def test_half_made_copies_and_templates_unused_for_a_month_are_removed(tmp_path):
    inst = pgbin.ANY_TOOLS.pick(None)
    root = tmp_path / "templates"
    root.mkdir(mode=0o700)
    crashed, fresh_tmp, old = root / ".tmp-1-2", root / ".tmp-3-4", root / "pg9.6-0000000000000000"
    for entry in (crashed, fresh_tmp, old):
        (entry / "data").mkdir(parents=True)
    hour_ago = time.time() - 3700
    os.utime(crashed, (hour_ago, hour_ago))
    month_ago = time.time() - KEEP_UNUSED - 60
    os.utime(old, (month_ago, month_ago))
    with RunDir() as run:
        ClusterFactory(run, None, TemplateCache(root)).template(inst)
    left = sorted(p.name for p in root.iterdir())
    assert crashed.name not in left and old.name not in left
    assert fresh_tmp.name in left, "a copy another process is making right now was removed"
    assert len(left) == 2


def test_processes_making_the_same_template_at_once_all_get_one_that_starts(tmp_path):
    """xdist workers start together: each may run initdb; one copy wins, the others use it or their own."""
    inst = pgbin.ANY_TOOLS.pick(None)
    root = tmp_path / "templates"
    results: list[bool] = []
    with RunDir() as a, RunDir() as b:
        factories = [ClusterFactory(a, None, TemplateCache(root)), ClusterFactory(b, None, TemplateCache(root))]
        threads = [threading.Thread(target=lambda f=f: results.append(answers(f, inst))) for f in factories]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [True, True]
    assert len([p for p in root.iterdir() if not p.name.startswith(".tmp-")]) == 1
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
