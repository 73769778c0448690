"""Long nights: a restore that hangs is stopped by restore_timeout, with a finding, and the run goes on."""

from __future__ import annotations

from . import farm as farmlib

SLOW = """
create function public.slow(i int) returns boolean language sql as
  $$ select case when current_setting('bc.fast', true) = 'on' then true else pg_sleep(0.5) is not null end $$;
create table public.slowly (id int primary key check (public.slow(id)));
"""


def test_a_hung_restore_is_stopped_by_restore_timeout_and_the_run_goes_on(farm, run_suites, tmp_path):
    """An archive whose every row takes half a second to check, and a plain dump that sleeps: both stopped."""
    db = farm.clone(farm.states[-1], "long_night")
    farm.sql(db, SLOW)
    farm.sql(db, "set bc.fast = 'on'; insert into public.slowly select generate_series(1, 200)")
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "slow"
    archive = farm.dump(db, folder / f"archive_{when:%Y%m%d_%H%M%S}.dump")
    plain = farm.dump(farm.states[-1], folder / f"plain_{when:%Y%m%d_%H%M%S}.sql", "plain")
    text = plain.read_text()
    at = text.index("CREATE TABLE")
    plain.write_text(text[:at] + "SELECT pg_catalog.pg_sleep(600);\n\n" + text[at:])
    quick = farm.dump(farm.states[-1], folder / f"quick_{when:%Y%m%d_%H%M%S}.dump")
    for path in (archive, plain, quick):
        farmlib.stamp(path, when)
    run = run_suites("--backups", str(folder), "-m", "restore or row_counts",
                     config='[defaults]\nrestore_timeout = "3s"\n')
    stamp = f"{when:%Y%m%dT%H%M%SZ}"
    for series in ("archive", "plain"):
        test = f"test_restores_without_harmful_errors[{series}-{stamp}]"
        assert run.outcomes[test] == "failed", run.stdout[-3000:]
        assert "the restore took longer than restore_timeout (3 s) and was stopped" in run.messages[test]
        assert "raise restore_timeout for the series" in run.messages[test]
        assert "no connection to the server" not in run.messages[test], "what the stop caused is no second finding"
        rows = f"test_no_table_lost_more_rows_than_allowed_since_previous_backup[{series}-{stamp}]"
        assert run.outcomes.get(rows, "skipped") == "skipped", "rows the restore never reached are not judged"
    assert run.outcomes[f"test_restores_without_harmful_errors[quick-{stamp}]"] == "passed"
