"""A large plain dump is read once, by its restore (one_pass_from): the restore starts after the schema, the checks
take its read instead of another, and what it meets past the schema (a command for the checking host, a role the
schema never named, the end of a cut file) is a finding there, not a crash or a silent loss."""

from __future__ import annotations

import gzip
import json

from . import farm as farmlib

ONE_PASS = '[defaults]\none_pass_from = "0"\n'
TRAILER = "-- PostgreSQL database dump complete"


def _plain(farm, folder, when, tail: str = ""):
    """The newest night as a plain dump, with ``tail`` put just before its trailer (after the data and keys)."""
    path = farm.dump(farm.states[-1], folder / f"shop_{when:%Y%m%d_%H%M%S}.sql", "plain")
    if tail:
        text = path.read_text()
        at = text.rindex(TRAILER)
        path.write_text(text[:at] + tail + "\n\n--\n" + text[at:])
    farmlib.stamp(path, when)
    return path


def test_a_plain_dump_read_by_its_restore_passes_every_check_from_that_one_read(farm, run_suites, tmp_path):
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "plain"
    farmlib.stamp(farmlib.gz(_plain(farm, folder, when)), when)
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    run = run_suites("--backups", str(folder), config=ONE_PASS)
    assert run.ret == 0, run.stdout[-3000:]
    assert run.outcomes[f"test_every_artifact_is_complete_and_readable[{key}]"] == "passed"
    assert run.outcomes[f"test_every_table_in_the_dump_exists_after_restore[{key}]"] == "passed"
    restore = json.loads((run.reports / "results.json").read_text())["backups"][0]["restore"]
    assert "read once, by the restore: it began after the schema" in restore["tool"]
    default = run_suites("--backups", str(folder))  # a small dump: read whole first, as before
    assert default.ret == 0 and "read once" not in json.loads(
        (default.reports / "results.json").read_text())["backups"][0]["restore"]["tool"]


def test_a_command_for_the_host_past_the_data_ends_the_restore_before_it_runs(farm, run_suites, tmp_path):
    when = farmlib.nights(farm.now)[-1]
    marker = tmp_path / "ran"
    folder = tmp_path / "hostile"
    _plain(farm, folder, when, f"\\! touch {marker}")
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    run = run_suites("--backups", str(folder), config=ONE_PASS)
    restore = f"test_restores_without_harmful_errors[{key}]"
    assert run.outcomes[restore] == "failed", run.stdout[-3000:]
    assert "the dump carries a command for the checking host there; nothing from that statement on was run" \
        in run.messages[restore]
    assert run.outcomes[f"test_dump_carries_no_commands_for_the_host[{key}]"] == "failed"
    assert not marker.exists()
    whole = run_suites("--backups", str(folder))  # read whole first: refused before any statement
    assert "not restored, because the backup carries commands for the checking host" in whole.messages[restore]


GRANTED = '''
def test_the_grant_past_the_data_was_restored(restored_db):
    assert restored_db.execute("select has_table_privilege('late_reader', 'public.users', 'SELECT')").fetchone()[0]
'''


def test_a_role_named_past_the_data_is_made_before_its_grant_runs(farm, run_suites, pytester, tmp_path):
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "grants"
    _plain(farm, folder, when, "GRANT SELECT ON TABLE public.users TO late_reader;")
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    ours = pytester.makepyfile(test_granted=GRANTED)
    run = run_suites("--backups", str(folder), str(ours), config=ONE_PASS)
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "passed", run.stdout[-3000:]
    assert run.outcomes[f"test_the_grant_past_the_data_was_restored[{key}]"] == "passed", run.stdout[-3000:]
    assert json.loads((run.reports / "results.json").read_text())["backups"][0]["restore"]["errors"] == 0


def test_a_cut_plain_dump_read_by_its_restore_fails_both_checks_with_where_it_ends(farm, run_suites, tmp_path):
    """Cut in its rows (a table of 2 MB of data, well past the schema): the restore ran up to there."""
    when = farmlib.nights(farm.now)[-1]
    db = farm.clone(farm.states[-1], "cut_night")
    farm.sql(db, "create table public.notes (id int primary key, body text); insert into public.notes "
                 "select g, md5(g::text) || md5((g * 7)::text) from generate_series(1, 30000) g")
    folder = tmp_path / "cut"
    whole = gzip.compress(farm.dump(db, tmp_path / "src" / "shop.sql", "plain").read_bytes())
    cut = folder / f"shop_{when:%Y%m%d_%H%M%S}.sql.gz"
    folder.mkdir()
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    farmlib.stamp(cut, when)
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    run = run_suites("--backups", str(folder), config=ONE_PASS)
    restore = f"test_restores_without_harmful_errors[{key}]"
    assert run.outcomes[restore] == "failed", run.stdout[-3000:]
    assert "the dump cannot be read past line" in run.messages[restore]
    intact = f"test_every_artifact_is_complete_and_readable[{key}]"
    assert run.outcomes[intact] == "failed"
    assert "cannot be read past line" in run.messages[intact] and "Traceback" not in run.stdout


def _s3(name: str, endpoint: str, cache) -> str:
    return (f'cache_dir = "{cache}"\n[defaults]\none_pass_from = "0"\n[[sources]]\nurl = "s3://{name}/database/"\n'
            f'endpoint_url = "{endpoint}"\nregion = "us-east-1"\n')


def test_a_plain_dump_in_s3_is_restored_while_it_downloads_and_its_checksum_judges_the_restore(
        farm, run_suites, bucket, s3_endpoint, tmp_path):
    import hashlib

    name, writer = bucket
    when = farmlib.nights(farm.now)[-1]
    body = gzip.compress(_plain(farm, tmp_path / "src", when).read_bytes())
    good, wrong = hashlib.sha256(body).hexdigest(), hashlib.sha256(b"another night").hexdigest()
    writer.put_object(Bucket=name, Key=f"database/shop_{when:%Y%m%d_%H%M%S}.sql.gz", Body=body,
                      Metadata={"sha256": good})
    writer.put_object(Bucket=name, Key=f"database/bent_{when:%Y%m%d_%H%M%S}.sql.gz", Body=body,
                      Metadata={"sha256": wrong})  # the bytes restore cleanly; the checksum says they are not these
    stamp = f"{when:%Y%m%dT%H%M%SZ}"
    # One series a run: the second backup of a run would be downloaded ahead, while the first is checked.
    run = run_suites("-m", "integrity or restore", "--series", "shop", config=_s3(name, s3_endpoint, tmp_path / "c"))
    restored = json.loads((run.reports / "results.json").read_text())["backups"][0]["restore"]
    assert "download during the restore" in restored["phases"] and "download" not in restored["phases"], restored
    assert "read once, by the restore" in restored["tool"]
    for test in ("test_restores_without_harmful_errors", "test_every_artifact_is_complete_and_readable",
                 "test_sidecar_checksums_match", "test_every_table_in_the_dump_exists_after_restore"):
        assert run.outcomes[f"{test}[shop-{stamp}]"] == "passed", run.stdout[-3000:]
    run = run_suites("-m", "integrity or restore", "--series", "bent", config=_s3(name, s3_endpoint, tmp_path / "c"))
    restore = f"test_restores_without_harmful_errors[bent-{stamp}]"
    assert run.outcomes[restore] == "failed"
    assert f"the dump restored does not match its checksum: bent_{when:%Y%m%d_%H%M%S}.sql.gz.metadata.sha256 says " \
           f"sha256 {wrong}, the file's is {good}" in run.messages[restore]
    assert run.outcomes[f"test_sidecar_checksums_match[bent-{stamp}]"] == "failed"


class _HeldBody:
    """An object's body over real HTTP that stops after ``hold`` bytes until the test lets it go on (or fails)."""

    def __init__(self, body, hold: int, release, fail: bool) -> None:
        self.body, self.left, self.release, self.fail = body, hold, release, fail

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            self.release.wait(30)
            if self.fail:
                raise ConnectionError("connection reset by peer")
            return self.body.read(n)
        block = self.body.read(min(n if n > 0 else self.left, self.left))
        self.left -= len(block)
        return block


class _HeldClient:
    def __init__(self, client, hold_ranges_from: int, hold: int, release, fail: bool = False) -> None:
        self.client, self.hold_from, self.hold, self.release, self.fail = client, hold_ranges_from, hold, release, fail

    def get_object(self, **params):
        response = self.client.get_object(**params)
        start = int(params.get("Range", "bytes=0-").split("=")[1].split("-")[0])
        if start >= self.hold_from:
            response["Body"] = _HeldBody(response["Body"], self.hold, self.release, self.fail)
        return response

    def __getattr__(self, name):
        return getattr(self.client, name)


def _arriving(bucket, tmp_path, body: bytes, **held):
    import threading
    from datetime import UTC, datetime

    from backupcheck.arriving import Arriving
    from backupcheck.sources.s3 import DownloadCache, RemoteObject

    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/big.sql", Body=body)
    head = writer.head_object(Bucket=name, Key="database/big.sql")
    obj = RemoteObject(name, "database/big.sql", len(body), datetime.now(UTC), head["ETag"].strip('"'))
    cache = DownloadCache(tmp_path / "cache", reserve=0, parts_from=held.pop("parts_from"), part_size=256 * 1024,
                          parts_at_once=2)
    release = threading.Event()
    client = _HeldClient(writer, release=release, **held)
    arrival = Arriving()

    def download():
        try:
            arrival.end(cache.fetch(client, obj, attempts=1, arrival=arrival))
        except BaseException as exc:  # noqa: BLE001
            arrival.end(error=exc)

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    return arrival, release, thread


def test_a_download_is_read_in_order_as_it_arrives_in_one_stream_or_in_ranges(bucket, tmp_path):
    """Real HTTP (moto's server): the reader gets the first bytes while the rest is held back (one stream held after
    1 MiB; in ranges, those from 1 MiB on), then the rest in order, and the file is in its final place after."""
    import os

    from backupcheck.arriving import open_bytes

    body = os.urandom(3 * 1024 * 1024)
    for parts_from, hold_from in ((1 << 40, 0), (1024, 1024 * 1024)):
        arrival, release, thread = _arriving(bucket, tmp_path / str(parts_from), body, parts_from=parts_from,
                                             hold_ranges_from=hold_from, hold=1024 * 1024 if hold_from == 0 else 0)
        final = arrival.started()
        with open_bytes(final) as reader:
            first = reader.read(1024 * 1024)
            assert first == body[:1024 * 1024] and not arrival.finished, "read before the download ended"
            release.set()
            assert reader.read() == body[1024 * 1024:]
        thread.join(30)
        assert arrival.finished and final.read_bytes() == body


def test_a_download_that_breaks_stops_its_reader_with_where_it_broke(bucket, tmp_path):
    import os

    import pytest

    from backupcheck.arriving import DownloadStopped, open_bytes

    body = os.urandom(2 * 1024 * 1024)
    arrival, release, thread = _arriving(bucket, tmp_path, body, parts_from=1 << 40, hold_ranges_from=0,
                                         hold=1024 * 1024, fail=True)
    final = arrival.started()
    with open_bytes(final) as reader:
        assert reader.read(1024 * 1024) == body[:1024 * 1024]
        release.set()
        with pytest.raises(DownloadStopped, match="the download stopped after 1,048,576 bytes"):
            reader.read()
    thread.join(30)
    assert not final.exists() and not list(final.parent.glob(".part-*")), "nothing half-downloaded is kept"


def test_a_dump_read_to_its_first_rows_is_ordered_by_what_it_holds(farm, tmp_path):
    """Several dumps in one backup restore roles, schema, whole dumps, then data: a whole dump read only to its
    first rows still counts as one with rows (after a schema-only file, not tied with it)."""
    from backupcheck.discovery import artifact_of
    from backupcheck.evidence import EvidenceStore
    from backupcheck.restore.database import _content_rank
    from backupcheck.servers.cluster import RunDir

    when = farmlib.nights(farm.now)[-1]
    whole = _plain(farm, tmp_path / "w", when)
    schema = farm.dump(farm.states[-1], tmp_path / "s" / "schema.sql", "plain", extra=("--schema-only",))
    with RunDir() as rundir:
        store = EvidenceStore(rundir)
        ranks = {p.name: _content_rank(a, store.head(a)) for p in (whole, schema) for a in [artifact_of(p)]}
    assert ranks == {whole.name: 2, "schema.sql": 1}
