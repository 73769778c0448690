"""Providers end to end: containers on a real Docker engine, local clusters, an existing server; profiles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory
from backupcheck.servers.containers import LABEL, docker_client

from . import farm as farmlib
from .conftest import CONTAINER_CONFIG, IMAGE, REPO, SUITES

RESTORE_SUITE = SUITES / "test_restore.py"


def restore_log(run) -> list[dict]:  # type: ignore[no-untyped-def]
    return run.restores()


@pytest.fixture(scope="session")
def killed_on_purpose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test that kills a run notes its pid, before killing, so that the other worker's look for
    leftovers does not count that run's container (left on purpose for the next run to sweep)."""
    return tmp_path_factory.getbasetemp().parent / "killed-on-purpose"


def leftover_containers(killed_on_purpose: Path) -> list[str]:
    """Containers of ours whose owning process is gone: what a crash would leave behind."""
    from backupcheck.servers.cluster import _alive

    on_purpose = set(killed_on_purpose.read_text().split()) if killed_on_purpose.exists() else set()
    client = docker_client()
    try:
        out = []
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}.pid"}):
            pid = c.labels[f"{LABEL}.pid"]
            if pid not in on_purpose and not _alive(int(pid), c.labels.get(f"{LABEL}.start") or None):
                out.append(c.name)
        return out
    finally:
        client.close()


SUPABASE_TIME = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)  # 3 h before the injected noon
STAMP = SUPABASE_TIME.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture(scope="session")
def supabase_dir(pg_run: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made three hours ago, so freshness holds."""
    root = tmp_path_factory.mktemp("supabase")
    with pg_run.cluster(pgbin.pick(None)) as cluster:
        farmlib.build_supabase(cluster, root, SUPABASE_TIME)
    return root


@pytest.mark.parametrize("provider", ["container", "local"])
def test_dumps_of_15_and_16_restore_in_matching_servers(provider, run_suites, clean_dir, farm_major, request,
                                                        killed_on_purpose):
    """A pg_dump 15 archive, a pg_dump 16 directory dump and a plain dump restore, each in a server of its version."""
    if provider == "container":
        request.getfixturevalue("docker_images")
    run = run_suites("--backups", str(clean_dir / "custom"), "--backups", str(clean_dir / "dir16"),
                     "--backups", str(clean_dir / "plain"), "--pg-provider", provider,
                     config=CONTAINER_CONFIG, suites=RESTORE_SUITE)
    assert run.ret == 0, run.stdout[-3000:]
    assert len(run.with_outcome("passed")) == 3 * 3
    servers = {r["series"]: r["server"] for r in restore_log(run)}
    if provider == "container":
        assert "restores in: containers (pg_provider = container was asked for" in run.stdout
        assert servers["shop"].startswith(f"container backupcheck/postgres:{farm_major} (PostgreSQL {farm_major}.")
        assert servers["backup"].startswith(f"container backupcheck/postgres:{farm_major} (PostgreSQL {farm_major}.")
        assert servers["vercel"].startswith("container backupcheck/postgres:16 (PostgreSQL 16.")
        assert all("inside the container" in r["tool"] for r in restore_log(run))
        assert leftover_containers(killed_on_purpose) == []
    else:
        assert "restores in: local clusters" in run.stdout
        assert servers["vercel"].startswith("local cluster, PostgreSQL 16.")


def test_a_16_dump_with_only_15_tools_fails_with_the_precise_sentence(run_suites, clean_dir, farm_major):
    """Archive 1.15 (pg_dump 16) with only PostgreSQL 15 here: the compatibility check names version, path and fix."""
    if farm_major != 15 or not Path("/usr/lib/postgresql/15/bin/pg_restore").exists():
        pytest.skip("needs Debian's PostgreSQL 15 (installed by .ci/run)")
    version = next(i.version for i in pgbin.installations() if i.major == 15)
    run = run_suites("--backups", str(clean_dir / "dir16"), "--pg-bin", "/usr/lib/postgresql/15/bin",
                     "--pg-bin-only", "--restore", "newest", suites=RESTORE_SUITE)
    compat = next(m for k, m in run.messages.items() if k.startswith("test_restoring_server_fits_the_dump"))
    assert (f"archive 1.15 needs pg_restore ≥ 16; found {version} at /usr/lib/postgresql/15/bin/pg_restore; "
            "install PostgreSQL 16 client tools or use --pg-provider container") in compat
    assert "vercel-" in compat  # names the backup
    restore = next(k for k in run.outcomes if k.startswith("test_restores_without_harmful_errors"))
    assert run.outcomes[restore] == "error" and "Places looked" in run.messages[restore]


@pytest.mark.parametrize("provider", ["container", "local"])
def test_a_supabase_dump_restores_under_the_supabase_profile(provider, run_suites, supabase_dir, request):
    """The CLI trio (roles, schema with pgsodium and an RLS policy on auth.uid(), data) and a dashboard download;
    in containers with the profile configured, locally with nothing configured (the dump's roles and schemas name it)."""
    if provider == "container":
        request.getfixturevalue("docker_images")
    configured = '[defaults]\nprofile = "supabase"\n' if provider == "container" else ""
    run = run_suites("--backups", str(supabase_dir), "--pg-provider", provider, config=CONTAINER_CONFIG + configured)
    assert run.failed() == set(), run.stdout[-3000:]
    passed = run.with_outcome("passed")
    for name in ("test_restoring_server_fits_the_dump", "test_restores_without_harmful_errors",
                 "test_every_foreign_key_has_no_orphans"):
        assert {f"{name}[cli-{STAMP}]", f"{name}[db_cluster-{STAMP}]"} <= passed
    log = {r["series"]: r for r in restore_log(run)}
    assert log["cli"]["profile"] == "supabase" and log["cli"]["compatibility"] == []
    if configured:
        assert "profile of cli: supabase (configured)" in run.stdout
    else:
        assert "profile of cli: supabase (auto-detected: " in run.stdout
        assert "auto-detected" in log["db_cluster"]["profile_reason"]
        assert "Profiles:" in (run.reports / "report.html").read_text()
    if provider == "local":  # plain SQL through our runner skips the statement; psql in a container tolerates it
        assert any("pgsodium" in s for s in log["cli"]["skipped"])


def test_the_same_supabase_dump_fails_precisely_under_vanilla(run_suites, supabase_dir, docker_images,
                                                               killed_on_purpose):
    """With the vanilla profile asked for: pgsodium named with the fix (the Supabase profile; the platform's roles
    become placeholders), and the rows and key the restore lost; the orphans that loss leaves are not judged."""
    run = run_suites("--backups", str(supabase_dir / "cli"), "--pg-provider", "container",
                     config=CONTAINER_CONFIG + '[defaults]\nprofile = "vanilla"\n')
    key = f"cli-{STAMP}"
    compat = run.messages[f"test_restoring_server_fits_the_dump[{key}]"]
    assert "references role(s)" not in compat, "a disposable server gets placeholders for the roles"
    assert 'set profile = "supabase" for series cli' in compat
    assert "creates extension(s) pgsodium, which container backupcheck/postgres:15" in compat
    restore = run.messages[f"test_restores_without_harmful_errors[{key}]"]
    assert "lost rows of table auth.users" in restore and "lost constraint profiles_id_fkey" in restore
    assert 'schema "auth" does not exist' in restore
    orphans = f"test_every_foreign_key_has_no_orphans[{key}]"
    assert run.outcomes[orphans] == "skipped" and "not judged" in run.messages[orphans]
    assert leftover_containers(killed_on_purpose) == []


@pytest.fixture(scope="session")
def big_dump(pg_run: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A custom dump whose restore takes seconds, so a run can be killed in the middle of it."""
    root = tmp_path_factory.mktemp("big")
    os.chmod(root, 0o755)
    with pg_run.cluster(pgbin.pick(None)) as cluster:
        with psycopg.connect(**cluster.conninfo("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("create database big")
        with psycopg.connect(**cluster.conninfo("big"), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("create table items as select g as id, md5(g::text) as a, md5((g * 7)::text) as b "
                         "from generate_series(1, 2000000) g")
            conn.execute("alter table items add primary key (id)")
            conn.execute("create index on items (a)")
            conn.execute("create index on items (b)")
        farmlib.Farm(cluster, datetime.now(UTC)).dump("big", root / "big_20261122_020000.dump")
    return root


def _pg_restore_running(pid: int) -> bool:
    client = docker_client()
    try:
        for c in client.containers.list(filters={"label": f"{LABEL}.pid={pid}"}):
            if any("pg_restore" in " ".join(p) for p in c.top().get("Processes") or []):
                return True
    finally:
        client.close()
    return False


def test_a_run_killed_mid_restore_leaves_no_container_after_the_next_run(big_dump, run_suites, clean_dir, tmp_path,
                                                                         docker_images, killed_on_purpose):
    """SIGKILL while pg_restore runs in the container; the next run sweeps the container and says so."""
    cmd = [sys.executable, "-m", "pytest", str(RESTORE_SUITE), "--backups", str(big_dump), "--pg-provider", "container",
           "--container-image", IMAGE, "--container-ryuk", "off", "--reports-dir", str(tmp_path / "killed"),
           "-p", "no:cacheprovider", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(killed_on_purpose, "a") as f:
        f.write(f"{proc.pid}\n")
    try:
        deadline = time.monotonic() + 120
        while not _pg_restore_running(proc.pid):
            assert proc.poll() is None, "the run ended before its restore could be caught"
            assert time.monotonic() < deadline, "pg_restore never started in a container"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    client = docker_client()
    try:
        orphans = client.containers.list(all=True, filters={"label": f"{LABEL}.pid={proc.pid}"})
    finally:
        client.close()
    assert len(orphans) == 1, "the killed run's container should still be there before the next run"
    run = run_suites("--backups", str(clean_dir / "custom"), "--pg-provider", "container", config=CONTAINER_CONFIG,
                     suites=RESTORE_SUITE)
    assert run.ret == 0, run.stdout[-2000:]
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # with -n, a container test beside it may sweep it first
        assert "removed 1 container(s) left by a crashed run" in run.stdout
    client = docker_client()
    try:
        assert client.containers.list(all=True, filters={"label": f"{LABEL}.pid={proc.pid}"}) == []
    finally:
        client.close()


@pytest.fixture
def staging(pg_run: ClusterFactory) -> Iterator[tuple[str, dict]]:
    """An existing server with a database of its own that no restore may touch."""
    with pg_run.cluster(pgbin.pick(None)) as cluster:
        with psycopg.connect(**cluster.conninfo("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("create database keepme")
        with psycopg.connect(**cluster.conninfo("keepme"), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute("create table precious as select g from generate_series(1, 10) g")
        info = cluster.conninfo("postgres")
        yield f"host={info['host']} port={info['port']} user=postgres dbname=postgres", dict(info)


def _databases(info: dict) -> set[str]:
    with psycopg.connect(**info, autocommit=True) as conn:
        return {r[0] for r in conn.execute("select datname from pg_database")}


def test_the_dsn_provider_restores_into_a_fresh_database_and_drops_it(run_suites, clean_dir, staging):
    """Each backup gets its own database on the given server; afterwards the server holds what it held before."""
    dsn, info = staging
    before = _databases(info)
    run = run_suites("--backups", str(clean_dir / "custom"), "--backups", str(clean_dir / "plain"),
                     config=f'pg_provider = "dsn"\ndsn = "{dsn}"\n', suites=RESTORE_SUITE)
    assert run.ret == 0, run.stdout[-3000:]
    assert "restores in: an existing server (pg_provider = dsn was asked for" in run.stdout
    assert _databases(info) == before
    with psycopg.connect(**{**info, "dbname": "keepme"}) as conn:
        assert conn.execute("select count(*) from precious").fetchone()[0] == 10


def test_auto_falls_back_to_local_clusters_and_says_why(run_suites, clean_dir, docker_images):
    """auto with an image that cannot be had: local clusters, and the header gives the reason."""
    run = run_suites("--backups", str(clean_dir / "custom"), "--pg-provider", "auto",
                     "--container-image", "backupcheck/no-such-image:{major}", suites=RESTORE_SUITE)
    assert run.ret == 0, run.stdout[-2000:]
    assert "restores in: local clusters (auto: Docker engine" in run.stdout
    assert "image backupcheck/no-such-image:" in run.stdout and "could not be pulled" in run.stdout


def test_auto_uses_containers_when_docker_answers(run_suites, clean_dir, docker_images):
    run = run_suites("--backups", str(clean_dir / "custom"), "--pg-provider", "auto", config=CONTAINER_CONFIG,
                     suites=RESTORE_SUITE)
    assert run.ret == 0, run.stdout[-2000:]
    assert "restores in: containers (auto: Docker engine" in run.stdout


def test_ryuk_that_cannot_start_is_an_error_naming_the_switch(run_suites, clean_dir, docker_images, killed_on_purpose):
    """Ryuk stays on by default; where its image cannot be had, the restore errors and names container.ryuk."""
    run = run_suites("--backups", str(clean_dir / "custom"), "--pg-provider", "container",
                     "--container-image", IMAGE, "--container-ryuk", "on", suites=RESTORE_SUITE)
    restore = next(k for k in run.outcomes if k.startswith("test_restores_without_harmful_errors"))
    if run.outcomes[restore] == "passed":
        pytest.skip("Ryuk's image is available here, so it started")
    assert run.outcomes[restore] == "error"
    assert "set container.ryuk = false (--container-ryuk off)" in run.messages[restore]
    assert leftover_containers(killed_on_purpose) == []


def test_the_server_started_ahead_serves_the_first_restore_and_none_outlives_the_factory(tmp_path):
    """Started in a background thread while pytest collects, the first restore's server must survive that
    thread (the server dies with the thread that started it), be the one the restore gets, and stop with the
    factory's end like the one nobody claimed."""
    from backupcheck.servers.cluster import RunDir, fast_base

    inst = pgbin.ANY_TOOLS.pick(None)
    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        factory.prewarm(inst, start_for=0)
        first = factory.started(inst, 0)
        assert first.process is not None and first.process.poll() is None
        time.sleep(0.3)  # the prewarm thread has long finished starting: the server must still answer
        with psycopg.connect(**first.conninfo(), connect_timeout=5) as conn:  # type: ignore[arg-type]
            assert conn.execute("select 1").fetchone() == (1,)
        second = factory.started(inst, 0)  # nothing left ahead: a new one
        assert second is not first
        factory.prewarm(inst, start_for=0)  # started ahead and never claimed
        time.sleep(0.1)
        homes = [first.home, second.home]
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        factory.wait()
        assert not any(h.exists() for h in homes)
        assert not [p for p in (fastdir or rundir).iterdir() if p.name.startswith("cluster-")]
        assert all(t.name != f"prewarm-{inst.version}" or not t.is_alive() for t in __import__("threading").enumerate())


def test_a_run_that_ends_before_the_server_started_ahead_is_up_ends_at_once():
    """A run that restores nothing (``-m integrity``) ends while initdb is still running: the server meant for
    the first restore is then never started, and the end does not wait for one that never stops."""
    from backupcheck.servers.cluster import RunDir, fast_base

    inst = pgbin.ANY_TOOLS.pick(None)
    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        factory.prewarm(inst, start_for=0)
        done = __import__("threading").Event()
        waiter = __import__("threading").Thread(target=lambda: (factory.wait(), done.set()), daemon=True)
        waiter.start()
        assert done.wait(60), "the factory's end waits for a server that nobody stops"
        assert not [p for p in (fastdir or rundir).iterdir() if p.name.startswith("cluster-")]


def test_a_local_server_is_reused_only_when_put_back_as_it_was(tmp_path):
    """The next backup of a process gets the last one's server, reset: the databases and roles that restore
    added are gone, and the restoring role keeps none of its settings. A server a cluster dump was restored in
    (postgres and template1 were the restoring role's) is not reused."""
    from backupcheck.restore.providers import LocalProvider
    from backupcheck.restore.targets import RESTORER
    from backupcheck.servers.cluster import RunDir, fast_base

    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        provider = LocalProvider(factory)
        first = provider.target(None, 0, "test").__enter__()
        first.contain(cluster_dump=False)
        first.make_roles(["ghost_owner"])
        first.create_database("first_backup")
        with first.user_connect("first_backup") as conn:
            conn.execute("create table t (id int)")
            conn.execute(f'alter role "{RESTORER}" set work_mem = \'77MB\'')
        first.__exit__(None, None, None)
        provider.release(first)
        second = provider.target(None, 0, "test").__enter__()
        assert second.cluster is first.cluster, "the server was not reused"
        with second.connect("postgres") as conn:
            roles = {r[0] for r in conn.execute("select rolname from pg_roles")}
            dbs = {r[0] for r in conn.execute("select datname from pg_database")}
            owners = {r[0] for r in conn.execute("select pg_get_userbyid(datdba) from pg_database "
                                                 "where datname in ('postgres', 'template1')")}
        assert "ghost_owner" not in roles and RESTORER not in roles
        assert "first_backup" not in dbs and owners == {"postgres"}
        second.contain(cluster_dump=True)  # a cluster dump: postgres and template1 become the restorer's
        second.__exit__(None, None, None)
        provider.release(second)
        assert not second.reusable and second.cluster.process is None, "a cluster dump's server was kept"
        third = provider.target(None, 0, "test").__enter__()
        assert third.cluster is not second.cluster
        with third.connect("postgres") as conn:
            setting = conn.execute("select count(*) from pg_db_role_setting").fetchone()[0]
        assert setting == 0
        third.__exit__(None, None, None)
        provider.release(third)
        provider.close()
        factory.wait()
        assert third.cluster.process is None


def test_the_last_restore_of_a_process_throws_its_server_away_instead_of_resetting_it(monkeypatch):
    """Nothing restores after the run's last backup: its server is stopped and removed as it is, not emptied
    first for a next backup that never comes (dropping a restored gigabyte costs 0.2 s)."""
    from backupcheck.restore import targets
    from backupcheck.restore.providers import LocalProvider
    from backupcheck.servers.cluster import RunDir, fast_base

    resets: list[object] = []
    monkeypatch.setattr(targets, "_reset", lambda *a: resets.append(a))
    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        provider = LocalProvider(factory)
        target = provider.target(None, 0, "test").__enter__()
        target.contain(cluster_dump=False)
        target.create_database("last_backup")
        target.wanted_again = False
        target.__exit__(None, None, None)
        provider.release(target)
        assert resets == [] and not target.reusable and target.cluster.process is None
        assert provider.idle == {}, "a server nobody will reset was kept for reuse"
        home = target.cluster.home
        provider.close()
        factory.wait()
        assert not home.exists()
