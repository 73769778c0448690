"""A source kind is one module and its registration: a team registers its own in its conftest.py, and every check
(discovery, download, integrity, restore, rows) works on it through the protocol in backupcheck.sources.base."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from backupcheck.evidence import EvidenceStore
from backupcheck.model import Artifact, Backup
from backupcheck.servers.cluster import RunDir
from backupcheck.sources.base import Fetched

from . import farm as farmlib

TEAM_CONFTEST = '''
import hashlib
import shutil
from datetime import datetime, timezone
from pathlib import Path

from backupcheck import sources
from backupcheck.sources.base import Fetched, Location, Object, RemoteError

SHELF = Path({shelf!r})  # a store of the team's own, here a folder that stands in for it


class ShelfAccess:
    def __init__(self, cache: Path) -> None:
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)

    def _path(self, url: str) -> Path:
        return SHELF / url.split("://", 1)[1]

    def fetch(self, url, size, modified, etag):
        source = self._path(url)
        if not source.is_file():
            raise RemoteError(f"{{url}}: no such object on the shelf")
        target = self.cache / url.split("://", 1)[1].replace("/", "_")
        shutil.copyfile(source, target)
        return Fetched(target, hashlib.sha256(target.read_bytes()).hexdigest(), target.stat().st_size)

    def fetch_small(self, url, target, limit=1 << 20):
        target.write_bytes(self._path(url).read_bytes()[:limit])

    def head(self, url):
        return {{"sse": "", "kms_key_id": ""}}


def list_location(access, url):
    container, _, prefix = url.split("://", 1)[1].partition("/")
    root = SHELF / container
    if not root.is_dir():
        raise RemoteError(f"{{url}}: no shelf named {{container}}")
    found = []
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_file() and key.startswith(prefix):
            st = p.stat()
            found.append(Object("shelf", container, key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc),
                                str(st.st_mtime_ns)))
    return Location("shelf", container, prefix), found


KIND = sources.RemoteKind(
    "shelf", "shelf://box/prefix/", parse_options=lambda raw, base, where: None,
    access=lambda settings, cache, progress: ShelfAccess(cache), list_location=list_location,
    check_url=lambda url: None, cannot_read=lambda exc: isinstance(exc, RemoteError))
'''
REGISTERED = "sources.register(KIND)\n"  # as a module-level call
EXTENDED = '''
from backupcheck.reports import Writer


def write_csv(document, path, **_):
    path.write_text("".join(f"{b['key']},{b['verdict']}\\n" for b in document["backups"]))


def pytest_backupcheck_extend(extend):
    extend.source(KIND)
    extend.writer(Writer("csv", "backups.csv", write_csv))
'''

TEAM_TEST = '''
def test_the_shelf_backup_restored(restored_db):
    assert restored_db.execute("select count(*) from orders").fetchone()[0] > 0
'''


def test_a_source_kind_registered_in_a_teams_conftest_is_verified_like_s3(farm, run_suites, pytester, tmp_path):
    shelf = tmp_path / "shelf"
    nights = farmlib.nights(farm.now)
    for i, when in enumerate(nights):
        farmlib.stamp(farm.dump(farm.states[i], shelf / "box" / "nightly" / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    before = sorted(p.name for p in (shelf / "box" / "nightly").iterdir())
    pytester.makeconftest(TEAM_CONFTEST.format(shelf=str(shelf)) + REGISTERED)
    ours = pytester.makepyfile(test_ours=TEAM_TEST)
    run = run_suites("--backups", "shelf://box/nightly/", str(ours),
                     "-m", "not content_freshness")
    key = f"shop-{nights[-1]:%Y%m%dT%H%M%SZ}"
    assert run.ret == 0, run.stdout[-3000:]
    assert run.outcomes[f"test_every_artifact_is_complete_and_readable[{key}]"] == "passed"
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "passed"
    assert run.outcomes[f"test_the_shelf_backup_restored[{key}]"] == "passed"
    assert len([k for k in run.outcomes if k.startswith("test_every_artifact_is_complete_and_readable")]) == len(nights)
    # A shelf that is not there: the sources check fails with the kind's own sentence, nothing crashes.
    missing = run_suites("--backups", "shelf://nobox/nightly/", str(ours), "-m", "integrity")
    assert missing.outcomes["test_every_source_holds_readable_backups"] == "failed"
    assert "no shelf named nobox" in missing.messages["test_every_source_holds_readable_backups"]
    assert sorted(p.name for p in (shelf / "box" / "nightly").iterdir()) == before, "the source is never written"


def test_a_team_extends_backupcheck_through_its_hook(farm, run_suites, pytester, tmp_path):
    """pytest_backupcheck_extend in a team's conftest: its source kind and its own report format."""
    shelf = tmp_path / "shelf"
    when = farmlib.nights(farm.now)[-1]
    farmlib.stamp(farm.dump(farm.states[-1], shelf / "box" / "nightly" / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    pytester.makeconftest(TEAM_CONFTEST.format(shelf=str(shelf)) + EXTENDED)
    ours = pytester.makepyfile(test_ours=TEAM_TEST)
    run = run_suites("--backups", "shelf://box/nightly/", str(ours), "-m", "not content_freshness")
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    assert run.ret == 0, run.stdout[-3000:]
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "passed"
    assert (run.reports / "backups.csv").read_text() == f"{key},passed\n"


FAMILY_CONFTEST = '''
from backupcheck.families import Family
from backupcheck.schema import Setting, parse_columns


def pytest_backupcheck_extend(extend):
    extend.family(Family("masking", "the copy for staging holds no plain e-mail addresses", True, settings=(
        Setting("masked_columns", "masking", parse_columns, "columns that must hold no e-mail address"),)))
'''
FAMILY_SUITE = '''
def test_masked_columns_hold_no_email_address(restored_db, backup, series_settings):
    """Every masked column of the restored backup holds no e-mail address."""
    found = []
    for column in series_settings.option("masked_columns", ()):
        table, name = column.rsplit(".", 1)
        n = restored_db.execute(f"select count(*) from {table} where {name}::text like '%@%'").fetchone()[0]
        if n:
            found.append(f"{column}: {n} row(s)")
    assert not found, f"{backup.key}: expected no e-mail address in masked columns, found {', '.join(found)}"
'''


def test_a_team_family_gets_its_marker_its_restore_and_its_own_settings(farm, run_suites, pytester, tmp_path):
    """extend.family: the team's suite is a family (-m masking), restored like ours, with a setting it declares."""
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "backups"
    farmlib.stamp(farm.dump(farm.states[-1], folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    pytester.makeconftest(FAMILY_CONFTEST)
    suite = pytester.makepyfile(test_masking=FAMILY_SUITE)
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    clean = run_suites("--backups", str(folder), str(suite), "-m", "masking",
                       config='[series.shop]\nmasked_columns = ["products.name"]\n')
    assert clean.ret == 0, clean.stdout[-3000:]
    assert clean.outcomes == {f"test_masked_columns_hold_no_email_address[{key}]": "passed"}
    leaked = run_suites("--backups", str(folder), str(suite), "-m", "masking",
                        config='[series.shop]\nmasked_columns = ["users.email"]\n')
    assert leaked.outcomes == {f"test_masked_columns_hold_no_email_address[{key}]": "failed"}
    message = leaked.messages[f"test_masked_columns_hold_no_email_address[{key}]"]
    assert f"{key}: expected no e-mail address in masked columns, found users.email:" in message
    wrong = run_suites("--backups", str(folder), str(suite), "-m", "masking",
                       config='[series.shop]\nmasked_columns = "users.email"\n')
    assert wrong.ret == 4 and "series.shop.masked_columns = 'users.email': expected a list like" in wrong.stdout


class _SlowShelf:
    """A team's access as teams write them: the cache file written in place, slowly (a store far away)."""

    def __init__(self, source, cache):
        self.source, self.cache, self.calls, self.at_once, self.most = source, cache, 0, 0, 0
        self.guard = threading.Lock()

    def fetch(self, url, size, modified, etag):
        with self.guard:
            self.calls += 1
            self.at_once += 1
            self.most = max(self.most, self.at_once)
        try:
            target = self.cache / "object.dump"
            data = self.source.read_bytes()
            with open(target, "wb") as out:
                for i in range(0, len(data), 8192):
                    out.write(data[i:i + 8192])
                    out.flush()
                    time.sleep(0.002)
            return Fetched(target, hashlib.sha256(data).hexdigest(), len(data))
        finally:
            with self.guard:
                self.at_once -= 1


def test_a_download_ahead_and_the_check_never_fetch_the_same_object_at_once(farm, tmp_path):
    """The run downloads the next backup while it checks another; the check that then wants it waits for that
    download instead of starting its own into the same file (it read the half-written file as an empty dump)."""
    when = farmlib.nights(farm.now)[-1]
    dump = farm.dump(farm.states[-1], tmp_path / "shelf" / "shop.dump")
    shelf = _SlowShelf(dump, tmp_path / "cache")
    shelf.cache.mkdir()
    remote = Artifact(Path("/shelf/box/shop.dump"), dump.stat().st_size, when, "remote", url="shelf://box/shop.dump")
    backup = Backup("shop", when, (remote,))
    with RunDir() as rundir:
        store = EvidenceStore(rundir, remote=shelf)
        store.prefetch(backup)
        local = store.localize(backup)
        store.close()
    assert local.artifacts[0].format == "custom", local.artifacts[0].note
    assert shelf.calls == 2 and shelf.most == 1
