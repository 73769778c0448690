"""Containment: what a dump runs while it is restored cannot act on the host, whatever the text scan sees.

The corpus is made by real pg_dump from databases whose payloads are armed only outside a session setting
(so building and dumping them runs nothing): a function that assembles ``COPY … TO PROGRAM`` or a write to a
server file at run time, called by the restore itself through a CHECK constraint during COPY, an expression
index, a partial index, a materialized view refresh, a generated column and a domain check; an event trigger;
``lo_export`` assembled at run time; and dblink back to the server. None of it is visible to the text scan.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg
import pytest

from backupcheck.restore.errors import RESTORER
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, RunDir

from . import farm as farmlib
from .conftest import CONTAINER_CONFIG

ARM = "current_setting('app.building', true) IS DISTINCT FROM 'yes'"


def _function(name: str, action: str) -> str:
    """``public.payload(v)``: IMMUTABLE, so indexes and generated columns may call it; when armed it calls a VOLATILE
    function doing ``action`` (COPY is refused inside a non-volatile function itself, not inside one it calls)."""
    return (f"CREATE FUNCTION public.act_{name}() RETURNS void LANGUAGE plpgsql VOLATILE AS $f$\n"
            f"BEGIN\n  {action}\nEND $f$;\n"
            "CREATE FUNCTION public.payload(v int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$\n"
            f"BEGIN\n  IF {ARM} THEN PERFORM public.act_{name}(); END IF;\n  RETURN true;\nEND $f$;\n")


def _payload(kind: str, marker: Path) -> str:
    """SQL run at run time by ``public.payload``: nothing of it reads as COPY … PROGRAM or a file write."""
    if kind == "program":
        return (f"EXECUTE format('%s (SELECT 1) TO %s %L', 'CO' || 'PY', 'PRO' || 'GRAM', "
                f"'touch {marker}');")
    if kind == "file":
        return f"EXECUTE format('%s (SELECT 1) TO %L', 'CO' || 'PY', '{marker}');"
    if kind == "lo":
        return f"EXECUTE format('SELECT %s(%s, %L)', 'lo_' || 'export', 'lo_from_bytea(0, ''x'')', '{marker}');"
    raise ValueError(kind)


# shape -> the SQL that makes the restore call public.payload(v)
SHAPES = {
    "check": "CREATE TABLE public.t (v int CHECK (public.payload(v))); INSERT INTO public.t VALUES (1), (2);",
    "index": "CREATE TABLE public.t (v int); INSERT INTO public.t VALUES (1); CREATE INDEX ON public.t ((public.payload(v)));",
    "partial": "CREATE TABLE public.t (v int); INSERT INTO public.t VALUES (1); CREATE INDEX ON public.t (v) WHERE public.payload(v);",
    "matview": "CREATE TABLE public.t (v int); INSERT INTO public.t VALUES (1); "
               "CREATE MATERIALIZED VIEW public.mv AS SELECT public.payload(v) AS p FROM public.t;",
    "generated": "CREATE TABLE public.t (v int, g boolean GENERATED ALWAYS AS (public.payload(v)) STORED); "
                 "INSERT INTO public.t (v) VALUES (1);",
    "domain": "CREATE DOMAIN public.d AS int CHECK (public.payload(VALUE)); CREATE TABLE public.t (v public.d); "
              "INSERT INTO public.t VALUES (1);",
}


def _make(farm: farmlib.Farm, db: str, body: str) -> None:
    farm.sql("postgres", f'DROP DATABASE IF EXISTS "{db}"')
    farm.sql("postgres", f'CREATE DATABASE "{db}"')
    with psycopg.connect(**farm.cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("SET app.building = 'yes'")
        conn.execute(body)


@pytest.fixture(scope="module")
def corpus(farm: farmlib.Farm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """Folder of hostile dumps (custom and plain), name -> backup key, and the folder their markers would be in:
    one anyone may write to, so a command run by any server's OS user would leave its mark."""
    root = tmp_path_factory.mktemp("hostile-runtime")
    marker_dir = tmp_path_factory.mktemp("runtime-markers")
    os.chmod(marker_dir, 0o777)
    for parent in marker_dir.parents:
        if str(parent).startswith(str(tmp_path_factory.getbasetemp().parent)):
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    when = farmlib.nights(farm.now)[-1]
    keys: dict[str, str] = {}
    cases: dict[str, str] = {}
    for shape, make in SHAPES.items():
        for kind in ("program", "file"):
            marker = marker_dir / f"{shape}-{kind}"
            cases[f"{shape}_{kind}"] = _function(kind, _payload(kind, marker)) + make
    cases["lo_export"] = _function("lo", _payload("lo", marker_dir / "lo-export")) + SHAPES["check"]
    cases["event_trigger"] = (
        "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$\n"
        f"BEGIN\n  IF {ARM} THEN {_payload('program', marker_dir / 'event-trigger')} END IF;\nEND $f$;\n"
        "CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION public.on_ddl();\n"
        "CREATE TABLE public.t (v int); INSERT INTO public.t VALUES (1);")
    sock = farm.cluster.conninfo()["host"]
    cases["dblink"] = "CREATE EXTENSION dblink;\n" + _function("net", (
        f"PERFORM public.dblink_exec('host={sock} dbname=postgres user=postgres', format('%s (SELECT 1) TO %s %L', "
        f"'CO' || 'PY', 'PRO' || 'GRAM', 'touch {marker_dir / 'dblink'}'));")) + SHAPES["check"]
    cases["clean"] = "CREATE TABLE public.t (v int PRIMARY KEY); INSERT INTO public.t VALUES (1), (2), (3);"
    for name, body in cases.items():
        db = f"hostile_{name}"
        _make(farm, db, body)
        for fmt, suffix in (("custom", ".dump"), ("plain", ".sql")):
            series = f"{name.replace('_', '')}{fmt}"
            path = farm.dump(db, root / series / f"{series}_{when:%Y%m%d_%H%M%S}{suffix}", fmt)
            farmlib.stamp(path, when)
            keys[f"{name}/{fmt}"] = f"{series}-{when:%Y%m%dT%H%M%SZ}"
        if name == "event_trigger":
            farm.sql(db, "DROP EVENT TRIGGER watch")  # leave the source cluster as it was
    return root, keys, marker_dir


def _check(run, keys: dict[str, str], marker_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert sorted(p.name for p in marker_dir.iterdir()) == [], "a dump's code ran on the host"
    assert run.ret == 1, run.stdout[-3000:]
    problems = []
    for name, key in keys.items():
        mine = {t: o for t, o in run.outcomes.items() if t.endswith(f"[{key}]")}
        if name.startswith("clean/"):
            bad = {t: o for t, o in mine.items() if o not in ("passed", "skipped")}
            if bad or not mine:
                problems.append(f"{name}: the clean dump did not pass: {bad}")
            continue
        flagged = [t for t, o in mine.items() if o == "failed" and "SECURITY" in run.messages[t]]
        if not flagged:
            problems.append(f"{name}: no check failed with a SECURITY finding: "
                            + "; ".join(f"{t}={o}" for t, o in sorted(mine.items())))
        if any(o == "error" for o in mine.values()):
            problems.append(f"{name}: an error: {[t for t, o in mine.items() if o == 'error']}")
    assert problems == [], "\n".join(problems)


def test_code_a_dump_runs_during_the_restore_cannot_reach_the_host(run_suites, corpus):
    root, keys, marker_dir = corpus
    run = run_suites("--backups", str(root), "-m", "not freshness and not size")
    _check(run, keys, marker_dir)
    flagged = "\n".join(m for m in run.messages.values() if "SECURITY" in m)
    assert "tried to run a program on the server" in flagged and "tried to write a file on the server" in flagged
    assert "containment: restored as backupcheck_restore, no superuser" in run.stdout


def test_the_same_corpus_is_contained_in_containers(run_suites, corpus, docker_images):
    root, keys, marker_dir = corpus
    run = run_suites("--backups", str(root), "-m", "not freshness and not size", "--pg-provider", "container",
                     config=CONTAINER_CONFIG)
    _check(run, keys, marker_dir)


def test_no_other_local_account_reaches_the_server_or_the_files(pg_run: ClusterFactory, tmp_path):
    """While a disposable server runs: another account (daemon) cannot connect through any socket of the run
    folder, as any database user, nor read a file of it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another account")
    try:
        other = pwd.getpwnam("daemon")
    except KeyError:
        pytest.skip("no 'daemon' account here")
    inst = pgbin.pick(None)
    with pg_run.cluster(inst) as cluster, RunDir() as rundir:
        secret = rundir / "unwrapped" / "dump.sql"
        old = os.umask(0o077)
        try:
            secret.parent.mkdir()
            secret.write_text("COPY public.t FROM stdin;\n")
        finally:
            os.umask(old)
        psql = inst.tool("psql")
        sockets = [p.parent for p in cluster.home.parent.rglob(".s.PGSQL.*")] or [cluster.sockdir]
        for sock in sockets:
            for user in ("postgres", RESTORER):
                proc = subprocess.run([psql, "-h", str(sock), "-U", user, "-d", "postgres", "-c", "select 1"],
                                      capture_output=True, text=True, user=other.pw_uid, group=other.pw_gid,
                                      extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"})
                assert proc.returncode != 0 and "ermission denied" in proc.stderr, (sock, user, proc.stderr)
        for path in (secret, cluster.datadir / "PG_VERSION", cluster.logfile):
            proc = subprocess.run(["cat", str(path)], capture_output=True, text=True, user=other.pw_uid,
                                  group=other.pw_gid, extra_groups=[], cwd="/")
            assert proc.returncode != 0 and "ermission denied" in proc.stderr, (path, proc.stderr)
        owner = pwd.getpwuid(cluster.datadir.stat().st_uid).pw_name
        assert owner != "nobody" and cluster.os_user == owner
