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
