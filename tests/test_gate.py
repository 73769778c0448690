"""The pre-migration gate and the invariants family, end to end: real dumps of a database with tens of thousands
of rows, real migrations rehearsed on a copy of the restore, and the verdicts they must give."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import psycopg
import pytest

from backupcheck import sampledb
from backupcheck.lint import invariant_problem, lint_statement
from backupcheck.migrations import MigrationsError, find

from . import farm as farmlib
from .conftest import REAL_DUMPS

APPLIED = "20261101000000"  # recorded in the backup's supabase_migrations.schema_migrations
ORPHANS = 7  # audit_log rows whose user does not exist (the table has no foreign key on purpose)
GATE = ("-m", "gate")


@pytest.fixture(scope="module")
def gate_backups(farm, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The newest night of a shop with 10,000 orders, 30,000 order items and 20,000 audit rows, as pg_dump wrote it."""
    db = "gateshop"
    farm.sql("postgres", f"drop database if exists {db}")
    sampledb.create(farm.cluster, db, scale=2.0)
    with psycopg.connect(**farm.cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("create schema supabase_migrations; create table supabase_migrations.schema_migrations "
                     f"(version text primary key, name text); insert into supabase_migrations.schema_migrations "
                     f"values ('{APPLIED}', 'create_users')")
        conn.execute(f"insert into audit_log select 900000 + g, 9999990 + g, 'login', now() "
                     f"from generate_series(1, {ORPHANS}) g")
        rows = {t: conn.execute(f"select count(*) from {t}").fetchone()[0]  # type: ignore[index]
                for t in ("users", "orders", "order_items", "audit_log")}
        rows["logouts"] = conn.execute("select count(*) from audit_log where action = 'logout'").fetchone()[0]  # type: ignore[index]
    root = tmp_path_factory.mktemp("gate-backups")
    when = farmlib.nights(farm.now)[-1]
    farmlib.stamp(farm.dump(db, root / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    return root, rows


@pytest.fixture(scope="module")
def gate_key(farm) -> str:
    return f"shop-{farmlib.nights(farm.now)[-1]:%Y%m%dT%H%M%SZ}"


def migrations(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def gate_results(run) -> dict:  # type: ignore[no-untyped-def]
    (entry,) = run.results()["gate"]
    return entry


def test_a_nullable_column_passes_and_migrations_already_applied_are_skipped(run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    folder = migrations(tmp_path, {
        # Applied in the backup already: run again it would fail (the table exists).
        f"{APPLIED}_create_users.sql": "create table users (id bigint primary key);",
        "20261202090000_add_discount.sql": "alter table orders add column discount numeric;",
    })
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    assert run.ret == 0, run.stdout
    assert len(run.outcomes) == 8 and not run.failed()
    entry = gate_results(run)
    assert [(m["migration"], m["status"]) for m in entry["migrations"]] == [
        (f"{APPLIED}_create_users.sql", "skipped"), ("20261202090000_add_discount.sql", "applied")]
    assert entry["applied_from"] == "supabase_migrations.schema_migrations"
    add = entry["migrations"][1]
    assert add["locks"][0]["table"] == "public.orders" and add["locks"][0]["mode"] == "ACCESS EXCLUSIVE"
    assert add["rows_rewritten"] == 0
    assert "20261202090000_add_discount.sql" in run.stdout  # the per-migration table on the terminal


def test_deleting_rows_fails_with_the_table_and_the_count_and_the_restore_keeps_its_rows(
        run_suites, gate_backups, tmp_path):
    root, rows = gate_backups
    folder = migrations(tmp_path, {"20261202090000_prune.sql": "delete from audit_log where action = 'logout';"})
    audit = rows["audit_log"]
    config = f'[series.shop]\ncritical_tables = {{ "public.audit_log" = {audit} }}\n'
    run = run_suites("--backups", str(root), "--migrations", str(folder), "-m", "gate or row_counts", config=config)
    (name,) = run.failed()
    assert name.startswith("test_migrations_lose_no_rows"), run.stdout
    message = run.messages[name]
    assert "public.audit_log" in message and f"{audit:,} rows" in message
    assert f"{audit - rows['logouts']:,} rows: {rows['logouts']:,} gone" in message
    assert "20261202090000_prune.sql" in message
    # The nightly checks of the same run saw the backup's rows: the migration ran on a copy.
    assert any(k.startswith("test_critical_tables") and v == "passed" for k, v in run.outcomes.items()), run.outcomes
    # Allowed by the config, the same migration passes.
    allowed = run_suites("--backups", str(root), *GATE,
                         config=f'[gate]\nmigrations = "{folder}"\nallow_row_loss = ["audit_log"]\n')
    assert allowed.ret == 0, allowed.stdout


def test_a_column_rewrite_is_a_lint_finding_with_the_measured_lock(run_suites, gate_backups, tmp_path):
    root, rows = gate_backups
    folder = migrations(tmp_path, {
        "20261202090000_bigger.sql": "alter table order_items alter column quantity type bigint;"})
    warned = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    assert warned.ret == 0, warned.stdout  # lint = "warn": a note
    entry = gate_results(warned)
    (note,) = entry["lint"]
    assert "alter_type public.order_items.quantity" in note and f"({rows['order_items']:,} rows in the backup)" in note
    assert "held ACCESS EXCLUSIVE on public.order_items" in note
    assert entry["migrations"][0]["rows_rewritten"] == rows["order_items"]
    # lint = "fail", and a lock limit the measured lock exceeds (any lock at all is longer than zero seconds).
    failing = run_suites("--backups", str(root), *GATE, config=(
        f'[gate]\nmigrations = "{folder}"\nlint = "fail"\nmax_lock = 0\n'))
    assert {k.split("[")[0] for k in failing.failed()} == {"test_migrations_pass_lint",
                                                           "test_migrations_hold_no_long_exclusive_lock"}
    lint_msg = next(v for k, v in failing.messages.items() if k.startswith("test_migrations_pass_lint"))
    assert "alter_type" in lint_msg and f"{rows['order_items']:,} rows in the backup" in lint_msg
    lock_msg = next(v for k, v in failing.messages.items() if k.startswith("test_migrations_hold_no_long"))
    assert "public.order_items" in lock_msg and "at most 0 s (gate.max_lock)" in lock_msg
    assert "alter table order_items alter column quantity type bigint" in lock_msg


def test_a_foreign_key_with_orphans_in_the_real_data_fails_before_production_would(run_suites, gate_backups,
                                                                                   tmp_path):
    root, _ = gate_backups
    folder = migrations(tmp_path, {"20261202090000_audit_fk.sql":
                                   "alter table audit_log add constraint audit_user_fk foreign key (user_id) "
                                   "references users(id);\nalter table audit_log add column checked bool;"})
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    (name,) = run.failed()
    assert name.startswith("test_migrations_apply_on_the_backups_data")
    assert "20261202090000_audit_fk.sql line 1" in run.messages[name]
    assert "violates foreign key constraint" in run.messages[name]
    # NOT VALID, it applies; the orphans it would leave behind are named.
    (folder / "20261202090000_audit_fk.sql").write_text(
        "alter table audit_log add constraint audit_user_fk foreign key (user_id) references users(id) not valid;")
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    (name,) = run.failed()
    assert name.startswith("test_migrations_leave_no_new_orphans")
    assert f"{ORPHANS} orphan row(s) (the key is new)" in run.messages[name] and "audit_user_fk" in run.messages[name]


def test_a_migration_runs_sql_only_and_as_the_restoring_role(run_suites, gate_backups, tmp_path, marker_dir):
    root, _ = gate_backups
    mark = marker_dir / "ran"
    folder = migrations(tmp_path, {
        "20261202090000_shell.sql": f"\\! touch {mark}\nselect 1;",
        "20261202090001_program.sql": f"copy (select 1) to program 'touch {mark}';",
    })
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    (name,) = run.failed()
    assert "psql meta-command \\! is not run" in run.messages[name]
    entry = gate_results(run)
    assert [m["status"] for m in entry["migrations"]] == ["failed", "not run"]
    (folder / "20261202090000_shell.sql").unlink()
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    (name,) = run.failed()
    assert "pg_execute_server_program" in run.messages[name] or "permission denied" in run.messages[name]
    assert not mark.exists()


def test_a_dropped_table_is_named_unless_a_migration_drops_it_by_name(run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    folder = migrations(tmp_path, {"20261202090000_tidy.sql":
                                   "do $$ begin execute 'drop table ' || 'order_items'; end $$;\n"
                                   "alter table users drop column created_at;"})
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    failed = {k.split("[")[0]: v for k, v in run.messages.items() if k in run.failed()}
    assert set(failed) == {"test_migrations_drop_only_what_they_name"}, run.stdout
    assert "table public.order_items is gone" in failed["test_migrations_drop_only_what_they_name"]
    assert "created_at" not in failed["test_migrations_drop_only_what_they_name"]  # dropped by name: lint's
    assert any("drop_column public.users.created_at" in n for n in gate_results(run)["lint"])
    assert any("unparsed" in n for n in gate_results(run)["lint"])  # the DO block was not read by the linter
    # With lint = "fail" the dropped column fails the lint; the unparsed DO block stays a note (its drop is
    # caught by the comparison above).
    strict = run_suites("--backups", str(root), "--migrations", str(folder), "--gate-lint", "fail", *GATE)
    lint_msg = next(v for k, v in strict.messages.items() if k.startswith("test_migrations_pass_lint"))
    assert "drop_column" in lint_msg and "unparsed" not in lint_msg


def test_a_migrate_command_runs_against_the_copy_and_its_output_hides_the_password(run_suites, gate_backups,
                                                                                  tmp_path):
    root, rows = gate_backups
    script = tmp_path / "migrate.py"
    script.write_text(
        "import os, sys, psycopg\n"
        "print('url', os.environ['DATABASE_URL'])\n"
        "with psycopg.connect(os.environ['DATABASE_URL']) as conn:\n"
        "    conn.execute('alter table users add column nickname text')\n"
        "    conn.execute('update users set nickname = email')\n"
        "sys.exit(1 if '--fail' in sys.argv else 0)\n")
    command = f"{sys.executable} {script}"
    run = run_suites("--backups", str(root), "--migrate-command", command, *GATE)
    assert run.ret == 0, run.stdout
    entry = gate_results(run)
    assert entry["mode"] == "command" and entry["migrations"][0]["rows_touched"] == rows["users"]
    skipped = run.with_outcome("skipped")  # what a command drops on purpose cannot be told: said, not passed
    assert {k.split("[")[0] for k in skipped} == {"test_migrations_drop_only_what_they_name"}
    assert "nothing of the backup is gone" in next(iter(run.messages[k] for k in skipped))
    assert "postgresql://backupcheck_restore:***@" in entry["output"]
    text = (run.reports / "results.json").read_text() + (run.reports / "report.html").read_text()
    assert not re.search(r"backupcheck_restore:(?!\*\*\*@)", text)
    # A command that fails fails the gate (config spelling), its output attached.
    failing = run_suites("--backups", str(root), *GATE, config=f'[gate]\nmigrate_command = "{command} --fail"\n')
    (name,) = failing.failed()
    assert name.startswith("test_migrations_apply_on_the_backups_data")
    assert "exited with status 1" in failing.messages[name]
    bad = run_suites("--backups", str(root), "--migrate-command", "no-such-migrate-tool up", *GATE)
    (name,) = bad.failed()
    assert "no-such-migrate-tool" in bad.messages[name] and "no such program" in bad.messages[name]


def test_the_newest_backup_must_be_young_enough_to_roll_back_to(run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    run = run_suites("--backups", str(root), *GATE, config='[gate]\nmax_age = "1h"\n')
    (name,) = run.failed()  # no migrations: the gate is the backup alone (young enough, reads, restores)
    assert name.startswith("test_newest_backup_is_young_enough_to_roll_back_to")
    message = run.messages[name]
    assert "take a backup first" in message and "1h 00m (gate.max_age)" in message and "pg_dump -Fc" in message
    assert {k.split("[")[0] for k in run.outcomes} == {"test_newest_backup_is_young_enough_to_roll_back_to",
                                                       "test_newest_backup_reads_and_restores"}


def test_invariants_hold_fail_with_the_numbers_and_must_only_read(run_suites, gate_backups, gate_key, tmp_path):
    root, rows = gate_backups
    key = gate_key
    config = (
        "[[series.shop.invariants]]\nname = \"every order has a note\"\n"
        "sql = \"SELECT count(*) FROM orders WHERE note IS NULL\"\nexpect = 0\n"
        "[[series.shop.invariants]]\nname = \"a million orders\"\n"
        "sql = \"WITH o AS (SELECT id FROM orders) SELECT count(*) FROM o\"\nexpect_min = 1000000\n")
    run = run_suites("--backups", str(root), "-m", "invariants", config=config)
    assert run.outcomes[f"test_invariant_holds[{key}-every-order-has-a-note]"] == "passed", run.stdout
    message = run.messages[f"test_invariant_holds[{key}-a-million-orders]"]
    assert run.outcomes[f"test_invariant_holds[{key}-a-million-orders]"] == "failed"
    assert key in message and ">= 1000000" in message and f"{rows['orders']:,}" in message
    # In the gate, an invariant that held before and breaks after fails the gate.
    folder = migrations(tmp_path, {"20261202090000_forget.sql": "update orders set note = null where id = 1;"})
    gate = run_suites("--backups", str(root), "--migrations", str(folder), *GATE, config=config)
    (name,) = gate.failed()
    assert name.startswith("test_invariants_hold_after_the_migrations")
    assert "every order has a note" in gate.messages[name] and "after the migrations" in gate.messages[name]
    # (f) an invariant that writes is refused at start, by name.
    bad = run_suites("--backups", str(root), config=(
        "[[series.shop.invariants]]\nname = \"sneaky\"\nsql = \"WITH d AS (DELETE FROM orders RETURNING 1) "
        "SELECT count(*) FROM d\"\nexpect = 0\n"))
    assert bad.ret == 4 and "invariant 'sneaky'" in bad.stdout and "DELETE" in bad.stdout


@pytest.mark.parametrize("sql, problem", [
    ("select count(*) from t", ""),
    ("with x as (select 1) select count(*) from x", ""),
    ("delete from t", "DELETE statement"),
    ("with x as (update t set a = 1 returning 1) select count(*) from x", "UPDATE"),
    ("select count(*) into y from t", "SELECT … INTO"),
    ("select pg_read_file('/etc/passwd')", "pg_read_file"),
    ("select count(*) from t; select 1", "2 statements"),
    ("select * from t for update", "FOR UPDATE"),
])
def test_an_invariant_is_one_read_only_select(sql, problem):
    found = invariant_problem(sql)
    assert (problem in found) if problem else found == ""


@pytest.mark.parametrize("statement, rule", [
    ("drop table orders", "drop_table"),
    ("alter table orders drop column note", "drop_column"),
    ("alter table orders alter column note type varchar(10)", "alter_type"),
    ("create index o_status on orders (status)", "index_not_concurrent"),
    ("create index concurrently o_status on orders (status)", None),
    ("alter table orders add constraint f foreign key (user_id) references users(id)", "fk_not_valid"),
    ("alter table orders add constraint f foreign key (user_id) references users(id) not valid", None),
    ("alter table orders add constraint c check (id > 0)", "check_not_valid"),
    ("alter table orders alter column note set not null", "set_not_null"),
    ("alter table orders rename column note to remark", "rename"),
    ("alter table orders rename to purchases", "rename"),
    ("update orders set status = 'x'", "unbounded_write"),
    ("delete from orders where id < 10", None),
    ("truncate orders", "truncate"),
    ("create policy p on orders using (true)", "unparsed"),
    ("alter table orders add column discount numeric", None),
])
def test_lint_flags_what_hurts_production(statement, rule):
    found = lint_statement(statement, "m.sql", 1, {"public.orders": 500_000, "public.users": 10}, large=100_000)
    assert [f.rule for f in found] == ([rule] if rule else [])
    if rule and rule != "unparsed":
        assert found[0].table == "public.orders" and found[0].rows == 500_000


def test_migration_files_are_ordered_as_their_tool_applies_them(tmp_path):
    def folder(name: str, files: list[str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in files:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            (d / f).write_text("select 1;")
        return d

    flyway = find(folder("flyway", ["V10__ten.sql", "V2__two.sql", "V1_1__one_one.sql", "R__view.sql", "U2__undo.sql"]))
    assert [(m.name, m.version) for m in flyway] == [
        ("V1_1__one_one.sql", "1.1"), ("V2__two.sql", "2"), ("V10__ten.sql", "10"), ("R__view.sql", "")]
    golang = find(folder("golang", ["10_b.up.sql", "10_b.down.sql", "9_a.up.sql", "9_a.down.sql"]))
    assert [(m.name, m.version, m.tool) for m in golang] == [("9_a.up.sql", "9", "golang-migrate"),
                                                             ("10_b.up.sql", "10", "golang-migrate")]
    prisma = find(folder("prisma", ["20261102000000_b/migration.sql", "20261101000000_a/migration.sql",
                                    "migration_lock.toml"]))
    assert [(m.name, m.tool) for m in prisma] == [("20261101000000_a", "prisma"), ("20261102000000_b", "prisma")]
    supabase = find(folder("supabase", ["20261102000000_b.sql", "20261101000000_a.sql"]))
    assert [(m.version, m.tool) for m in supabase] == [("20261101000000", "supabase"), ("20261102000000", "supabase")]
    plain = find(folder("plain", ["002_b.sql", "001_a.sql", "README.md"]))
    assert [(m.name, m.tool) for m in plain] == [("001_a.sql", "lexical"), ("002_b.sql", "lexical")]
    with pytest.raises(MigrationsError, match="no such folder"):
        find(tmp_path / "absent")


def test_gate_options_in_both_spellings_and_bad_values_named(run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    missing = run_suites("--backups", str(root), "--migrations", str(tmp_path / "nope"), *GATE)
    assert missing.ret == 4 and "gate.migrations" in missing.stdout and "no such folder" in missing.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_suites("--backups", str(root), "--migrations", str(empty), *GATE)
    assert nothing.ret == 4 and "no migration file in it" in nothing.stdout
    folder = migrations(tmp_path, {"1_a.sql": "select 1;"})
    both = run_suites("--backups", str(root), "--migrate-command", "true", *GATE,
                      config=f'[gate]\nmigrations = "{folder}"\n')
    assert both.ret == 4 and "exclude each other" in both.stdout
    lint = run_suites("--backups", str(root), *GATE, config='[gate]\nlint = "loud"\n')
    assert lint.ret == 4 and "gate.lint = 'loud'" in lint.stdout
    # gate.series names the gated series: the shop is not among them here.
    other = run_suites("--backups", str(root), *GATE, config='[gate]\nseries = ["billing"]\n')
    assert other.ret == 5 and not other.outcomes  # nothing gated is not a green gate
    # Without -m gate and without migrations, a nightly run has no gate tests.
    nightly = run_suites("--backups", str(root), "-k", "gate or young_enough")
    assert not nightly.outcomes


def test_results_json_holds_the_rehearsal_and_matches_its_schema(run_suites, gate_backups, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from backupcheck.results import SCHEMA

    root, _ = gate_backups
    folder = migrations(tmp_path, {"20261202090000_idx.sql": "create index concurrently o_status on orders (status);"})
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    assert run.ret == 0, run.stdout
    document = run.results()
    jsonschema.validate(document, SCHEMA)
    (step,) = document["gate"][0]["migrations"]
    assert step["transactional"] is False and step["status"] == "applied"
    assert json.dumps(document).count("20261202090000_idx.sql") >= 1


@pytest.mark.parametrize("spelling", ["cli", "config"])
def test_gate_settings_in_both_spellings_and_the_ci_outputs(run_suites, gate_backups, tmp_path, monkeypatch,
                                                           spelling):
    root, _ = gate_backups
    folder = migrations(tmp_path, {"20261202090000_both.sql": "delete from audit_log where action = 'logout';\n"
                                   "alter table order_items alter column quantity type bigint;"})
    outputs, summary = tmp_path / "github-output", tmp_path / "step-summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    if spelling == "cli":
        run = run_suites("--backups", str(root), "--migrations", str(folder), "--gate-max-age", "1h",
                         "--gate-lint", "fail", "--gate-max-lock", "0s", "--allow-row-loss", "audit_log", *GATE)
    else:
        run = run_suites("--backups", str(root), *GATE, config=(
            f'[gate]\nmigrations = "{folder}"\nmax_age = "1h"\nlint = "fail"\nmax_lock = "0s"\n'
            'allow_row_loss = ["public.audit_log"]\n'))
    assert {k.split("[")[0] for k in run.failed()} == {
        "test_newest_backup_is_young_enough_to_roll_back_to", "test_migrations_pass_lint",
        "test_migrations_hold_no_long_exclusive_lock"}, run.stdout
    # What a deployment workflow reads: its outputs, the job summary's table, the pull request comment.
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values["verdict"] == "failed" and float(values["rehearsal_seconds"]) > 0
    whats = {f["what"] for f in json.loads(values["findings"])}
    assert any("take a backup first" in w for w in whats) and any(w.startswith("alter_type") for w in whats)
    assert "| 20261202090000_both.sql | applied |" in summary.read_text()
    comment = (run.reports / "gate.md").read_text()
    assert comment.startswith("<!-- backupcheck-gate -->") and "**FAILED**" in comment
    assert "ACCESS EXCLUSIVE public.order_items" in comment


def test_the_workflow_passes_options_that_exist(pytestconfig):
    import yaml

    from .conftest import REPO

    text = (REPO / ".github/workflows/pre-migration.yml").read_text()
    workflow = yaml.safe_load(text)
    assert set(workflow[True]["workflow_call"]["outputs"]) == {"verdict", "findings", "rehearsal_seconds"}
    run = next(s["run"] for s in workflow["jobs"]["gate"]["steps"] if s.get("id") == "gate")
    used = set(re.findall(r"(--[a-z][a-z-]+)", run))
    from backupcheck.plugins import options

    source = Path(options.__file__).read_text()
    assert used and all(f'"{opt}"' in source for opt in used), used


def test_the_gate_in_a_container_reaches_the_copy_over_a_local_port(run_suites, gate_backups, tmp_path,
                                                                   docker_images):
    from .conftest import CONTAINER_CONFIG

    root, rows = gate_backups
    script = tmp_path / "migrate.py"
    script.write_text(
        "import os, psycopg\n"
        "print('host', os.environ['PGHOST'])\n"
        "with psycopg.connect(os.environ['DATABASE_URL']) as conn:\n"
        "    conn.execute('delete from audit_log where id % 2 = 0')\n")
    run = run_suites("--backups", str(root), "--pg-provider", "container", "--migrate-command",
                     f"{sys.executable} {script}", *GATE, config=CONTAINER_CONFIG)
    (name,) = run.failed()
    assert name.startswith("test_migrations_lose_no_rows") and "public.audit_log" in run.messages[name]
    entry = gate_results(run)
    assert "host 127.0.0.1" in entry["output"]
    evens = (rows["audit_log"] - ORPHANS) // 2 + ORPHANS // 2  # ids 1..N and 900001..900007
    assert entry["migrations"][0]["rows_touched"] == evens


def test_supabase_style_migrations_create_vetted_extensions_and_leave_ownership_as_restored(
        run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    folder = migrations(tmp_path, {
        "20261202090000_tokens.sql": 'create extension if not exists "pgcrypto";\n'
                                     "create table tokens (id uuid primary key default gen_random_uuid());\n"
                                     'alter table "public"."tokens" owner to "postgres";\n'
                                     "insert into tokens default values;",
        "20261202090001_net.sql": "create extension if not exists dblink;",
    })
    run = run_suites("--backups", str(root), "--migrations", str(folder), *GATE)
    (name,) = run.failed()
    # dblink reaches other servers: never created for a migration, so production's answer is not faked here
    assert "20261202090001_net.sql" in run.messages[name] and "dblink" in run.messages[name]
    tokens = gate_results(run)["migrations"][0]
    assert tokens["status"] == "applied" and tokens["rows_touched"] == 1
    assert tokens["notes"] == ["1 ownership change(s) (ALTER … OWNER TO) not run: the copy's objects belong to "
                               "the restoring role"]


def test_a_newest_backup_that_does_not_restore_says_take_a_backup_first(run_suites, gate_backups, tmp_path):
    root, _ = gate_backups
    (dump,) = root.iterdir()
    cut = tmp_path / "cut"
    cut.mkdir()
    data = dump.read_bytes()
    (cut / dump.name).write_bytes(data[: len(data) // 2])  # the source stays as it is
    run = run_suites("--backups", str(cut), *GATE)
    (name,) = run.failed()
    assert name.startswith("test_newest_backup_reads_and_restores")
    assert "take a backup first: the newest backup cannot be rolled back to" in run.messages[name]
    assert "pg_dump -Fc" in run.messages[name]
    # An empty newest file: nothing to rehearse on, and every gate check fails saying so (none errs, none passes).
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / dump.name).write_bytes(b"")
    folder = migrations(tmp_path, {"20261202090000_a.sql": "alter table orders add column a int;"})
    run = run_suites("--backups", str(empty), "--migrations", str(folder), *GATE)
    assert run.with_outcome("passed") == {n for n in run.outcomes if n.startswith("test_newest_backup_is_young")}
    assert not run.with_outcome("error") and len(run.failed()) == 7
    assert all("no restore to rehearse on" in run.messages[n] for n in run.failed() if "migrations" in n)


def test_each_tools_version_table_says_which_migrations_are_applied(farm, tmp_path):
    from backupcheck.migrations import applied

    farm.sql("postgres", "drop database if exists versions")
    farm.sql("postgres", "create database versions")
    with psycopg.connect(**farm.cluster.conninfo("versions"), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("create table flyway_schema_history (installed_rank int, version text, success bool)")
        conn.execute("insert into flyway_schema_history values (1, '1', true), (2, '1.1', true), (3, '2', false)")
        conn.execute("create table schema_migrations (version bigint, dirty bool)")
        conn.execute("insert into schema_migrations values (9, false)")
        conn.execute("create table _prisma_migrations (migration_name text, finished_at timestamptz, "
                     "rolled_back_at timestamptz)")
        conn.execute("insert into _prisma_migrations values ('20261101000000_a', now(), null), "
                     "('20261102000000_b', null, null)")

        def layout(name: str, files: list[str]) -> list:
            d = tmp_path / name
            for f in files:
                (d / f).parent.mkdir(parents=True, exist_ok=True)
                (d / f).write_text("select 1;")
            return find(d)

        flyway = layout("flyway", ["V1__a.sql", "V1_1__b.sql", "V2__c.sql", "V3__d.sql"])
        assert applied(conn, flyway) == ({"1", "1.1"}, "public.flyway_schema_history")  # V2 failed: pending
        golang = layout("golang", ["8_a.up.sql", "9_b.up.sql", "10_c.up.sql"])
        assert applied(conn, golang) == ({"8", "9"}, "public.schema_migrations")
        prisma = layout("prisma", ["20261101000000_a/migration.sql", "20261102000000_b/migration.sql"])
        assert applied(conn, prisma) == ({"20261101000000_a"}, "public._prisma_migrations")
        supabase = layout("supabase", ["20261101000000_a.sql"])
        assert applied(conn, supabase) == (set(), "")  # no supabase_migrations here: everything is pending


REAL = REAL_DUMPS


@pytest.mark.real_dumps
def test_a_supabase_db_diff_migration_on_a_real_supabase_cli_backup(run_suites, tmp_path):
    """What `supabase db diff` writes, on a dump the Supabase CLI wrote: extensions, quoted names, grants to the
    platform's roles and ownership to postgres all apply; the unbounded UPDATE is the one lint note that hurts."""
    folder = migrations(tmp_path, {"20261202090000_slug.sql": (
        'create extension if not exists "uuid-ossp" with schema "extensions";\n'
        'alter table "public"."Tutorial" add column "slug" text;\n'
        'update "public"."Tutorial" set "slug" = lower("title");\n'
        'CREATE UNIQUE INDEX tutorial_slug_key ON public."Tutorial" USING btree (slug);\n'
        'grant select on table "public"."Tutorial" to "anon";\n'
        'alter table "public"."Tutorial" owner to "postgres";\n')})
    run = run_suites("--backups", str(REAL / "supabase-cli-dump-pair"), "--migrations", str(folder), *GATE,
                     "--gate-max-age", "36500d")
    assert run.ret == 0, run.stdout
    entry = gate_results(run)
    assert entry["migrations"][0]["status"] == "applied"
    assert [n.split(" ")[1] for n in entry["lint"]] == ["unbounded_write"]
