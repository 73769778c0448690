"""Fixtures for our own tests: real clusters, real dumps, and a way to run the suites end to end."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker  # noqa: F401
import pytest
import requests.cookies  # noqa: F401

from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, RunDir, fast_base
from backupcheck.servers.containers import docker_client, engine_answers

from . import farm as farmlib

pytest_plugins = ["pytester"]
# docker and requests are imported above, before any test: pytester restores sys.modules after each test, and a
# requests.cookies imported inside one test and dropped after it makes the next test's docker client fail with
# "You can only merge into CookieJar" (a new RequestsCookieJar class against the old session's).

REPO = Path(__file__).resolve().parent.parent
# Real artifacts from public repositories, beside the checkout (never copied into it). Where they are absent the
# tests that need them skip; CI sets BACKUPCHECK_REQUIRE_REAL_DUMPS, which makes that a failure.
REAL_DUMPS = REPO.parent / "shared" / "real-dumps"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_dumps: needs the real artifacts in ../shared/real-dumps")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_dumps") is None or REAL_DUMPS.is_dir():
        return
    said = f"{REAL_DUMPS} is absent: the real artifacts are not here"
    if os.environ.get("BACKUPCHECK_REQUIRE_REAL_DUMPS"):
        pytest.fail(f"{said} (BACKUPCHECK_REQUIRE_REAL_DUMPS is set: they must be)", pytrace=False)
    pytest.skip(said)
SUITES = REPO / "suites"
IMAGE = "backupcheck/postgres:{major}"
CONTAINER_CONFIG = f'[container]\nimage = "{IMAGE}"\nryuk = false\n'


@pytest.fixture(scope="session", autouse=True)
def _own_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs that keep the default history write under $XDG_DATA_HOME: ours, not the user's."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture(scope="session")
def now() -> datetime:
    """One injected moment for the farms and the suites they run (--now): noon UTC of today, so the
    backups built relative to it are as old at 02:10 as at 23:50."""
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="session")
def pg_run() -> Iterator[ClusterFactory]:
    # In the system temp folder, not pytest's private one: as root the server runs as its own account.
    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        yield factory
        factory.wait()  # folders still being removed in the background


@pytest.fixture
def restore(pg_run: ClusterFactory) -> Iterator:  # type: ignore[type-arg]
    """Restore one backup of a folder with the local provider, as the suites do; yields the restored backup.
    ``tools`` limits the installations a server is picked from; other keywords go to RestoredBackup."""
    from backupcheck.evidence import EvidenceStore
    from backupcheck.restore.database import RestoredBackup
    from backupcheck.restore.providers import LocalProvider

    opened: list[RestoredBackup] = []

    def run(backup, rundir: Path, tools: pgbin.Tools = pgbin.ANY_TOOLS, **kwargs):  # type: ignore[no-untyped-def]
        store = EvidenceStore(rundir, tools=tools)
        local = store.localize(backup)
        db = RestoredBackup(local, LocalProvider(pg_run, tools), store, tools=tools, **kwargs)
        opened.append(db.__enter__())
        return db

    yield run
    for db in opened:
        db.__exit__(None, None, None)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    with RunDir() as d:
        yield d


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A work folder the server's OS user can reach, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="bc-work-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def farm(pg_run: ClusterFactory, now: datetime) -> Iterator[farmlib.Farm]:
    """The oldest PostgreSQL here (15 in CI, the wheel's 16 on a bare machine) holding a sample database at four nights."""
    inst = pgbin.pick(None)
    with pg_run.cluster(inst) as cluster:
        f = farmlib.Farm(cluster, now)
        farmlib.make_states(f)
        yield f


@pytest.fixture(scope="session")
def farm16(pg_run: ClusterFactory, farm: farmlib.Farm, now: datetime) -> Iterator[farmlib.Farm]:
    """A PostgreSQL 16 server with the same nights, for the series pg_dump 16 and 18 make."""
    if farm.cluster.installation.major == 16:
        yield farm
        return
    with pg_run.cluster(pgbin.pick(16)) as cluster:
        f = farmlib.Farm(cluster, now)
        farmlib.make_states(f)
        yield f


@pytest.fixture(scope="session")
def clean_dir(farm: farmlib.Farm, farm16: farmlib.Farm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    farmlib.build_clean(farm, root, newer=farm16)
    if shutil.which("git"):
        farmlib.add_git_bundles(root, farm.now)
    return root


@pytest.fixture(scope="session")
def farm_major(farm: farmlib.Farm) -> int:
    return farm.cluster.installation.major


@pytest.fixture(scope="session")
def faulty(farm: farmlib.Farm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    root = tmp_path_factory.mktemp("faulty")
    expected = farmlib.build_faulty(farm, root)
    return root, expected


@pytest.fixture
def marker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder anyone may write to, so a command run by the server's OS user would leave its mark."""
    d = tmp_path_factory.mktemp("marker")
    os.chmod(d, 0o777)
    for parent in d.parents:
        if str(parent).startswith(str(tmp_path_factory.getbasetemp().parent)):
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    return d


@dataclass
class SuiteRun:
    """What one run of the suites did, test by test."""

    ret: int
    stdout: str
    outcomes: dict[str, str] = field(default_factory=dict)  # "test_name[id]" -> passed/failed/error/skipped
    messages: dict[str, str] = field(default_factory=dict)
    reports: Path = Path()

    def with_outcome(self, outcome: str) -> set[str]:
        return {k for k, v in self.outcomes.items() if v == outcome}

    def failed(self) -> set[str]:
        return self.with_outcome("failed") | self.with_outcome("error")

    def results(self) -> dict:
        import json

        return json.loads((self.reports / "results.json").read_text())

    def restores(self) -> list[dict]:
        """This run's lines of restore-log.jsonl (the file is appended to, run after run)."""
        import json

        path = self.reports / "restore-log.jsonl"
        if not path.exists():
            return []
        run = self.results()["run"]["id"]
        return [line for line in map(json.loads, path.read_text().splitlines()) if line.get("run") == run]


def _parse_junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    outcomes, messages = {}, {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                text = (child.get("message") or "") + "\n" + (child.text or "")
        outcomes[name] = outcome
        messages[name] = text
    return outcomes, messages


@pytest.fixture
def run_suites(pytester: pytest.Pytester, tmp_path: Path, now: datetime):  # type: ignore[no-untyped-def]
    """Run the product's suites in a fresh pytest process, at the tests' injected moment; reports and work files
    stay in tmp_path."""

    def run(*args: str, config: str | None = None, work: Path | None = None, suites: Path = SUITES) -> SuiteRun:
        reports = tmp_path / "reports"
        cfg = tmp_path / "backupcheck.toml"
        cfg.write_text(config or "")
        # The test's own --reports-dir, given in args, comes last and wins.
        cmd = [str(suites), "--backup-config", str(cfg)]
        if "reports_dir" not in (config or ""):
            cmd += ["--reports-dir", str(reports)]
        cmd += args
        if work is not None:
            cmd += ["--work-dir", str(work)]
        if "--now" not in args and "now =" not in (config or ""):
            cmd += ["--now", now.isoformat()]
        if "--pg-provider" not in args and "pg_provider" not in (config or ""):
            cmd += ["--pg-provider", "local"]  # containers are asked for by the tests about them
        if "--history" not in args and "history =" not in (config or ""):
            cmd += ["--history", "off"]  # farms share backup names: one test's history must not judge another's
        result = pytester.runpytest_subprocess(*cmd, timeout=600)
        if "reports_dir" in (config or "") and (reports / "partial" / "junit.xml").exists() and \
                (not (reports / "junit.xml").exists() or
                 (reports / "partial" / "junit.xml").stat().st_mtime > (reports / "junit.xml").stat().st_mtime):
            reports = reports / "partial"  # a partial run's reports, beside the full run's (see selection())
        junit = reports / "junit.xml"
        outcomes, messages = _parse_junit(junit) if junit.exists() else ({}, {})
        return SuiteRun(result.ret, result.stdout.str() + result.stderr.str(), outcomes, messages, reports)

    return run


# --- S3 over real HTTP: moto's threaded server on 127.0.0.1, one per worker ----------------------

FAKE_SECRET = "fake-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3's standard chain, fed fake credentials through the environment only."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh bucket, filled through a plain (writing) client as a backup job would."""
    import boto3

    name = "backups-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    writer = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    writer.create_bucket(Bucket=name)
    return name, writer


# --- containers: a real Docker engine and the images images/build.sh makes ---------------------

@pytest.fixture(scope="session")
def docker_images() -> None:
    """A Docker engine with the images images/build.sh makes; CI sets BACKUPCHECK_REQUIRE_DOCKER so none is skipped."""
    answers, what = engine_answers()
    problem = "" if answers else what
    if answers:
        client = docker_client()
        try:
            missing = [IMAGE.format(major=m) for m in (15, 16) if not client.images.list(name=IMAGE.format(major=m))]
        finally:
            client.close()
        if missing:
            problem = f"images {', '.join(missing)} are not built (run images/build.sh)"
    if problem:
        if os.environ.get("BACKUPCHECK_REQUIRE_DOCKER"):
            pytest.fail(f"container tests cannot run: {problem}")
        pytest.skip(f"container tests need Docker: {problem}")
