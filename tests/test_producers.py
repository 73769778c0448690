"""Dumps from producers nobody described to us, made here with real pg_dump and pg_dumpall: each one restores, or
fails with one precise sentence naming what is missing and the fix.

Noise before the header, owners and grantees from another platform, tablespaces, the search_path trap, a dump
with no data, Supabase's own event triggers, syntax and extensions only some servers have, partitions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backupcheck import sampledb
from backupcheck.checks import integrity, restoring
from backupcheck.discovery import discover
from backupcheck.evidence import EvidenceStore
from backupcheck.restore.database import NoServer
from backupcheck.restore.errors import HARMFUL
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import Cluster, ClusterFactory, server_user
from backupcheck.sniff import sniff


def _sql(cluster: Cluster, db: str, *statements: str) -> None:
    with psycopg.connect(**cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def source(pg_run: ClusterFactory) -> Iterator[Cluster]:
    """A server of ours to make the producers' dumps on (the oldest PostgreSQL here)."""
    with pg_run.cluster(pgbin.pick(None)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shop(source: Cluster) -> str:
    """customers -> orders -> order_items, 3 + 5 + 7 rows."""
    _sql(source, "postgres", "CREATE DATABASE shop")
    _sql(source, "shop",
         "CREATE TABLE customers (id int PRIMARY KEY, name text)",
         "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id))",
         "CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders(id), qty int)",
         "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 3) g",
         "INSERT INTO orders SELECT g, 1 + g % 3 FROM generate_series(1, 5) g",
         "INSERT INTO order_items SELECT g, 1 + g % 5, g FROM generate_series(1, 7) g")
    return "shop"


SHOP_ROWS = {"public.customers": 3, "public.orders": 5, "public.order_items": 7}


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _only_backup(folder: Path):  # type: ignore[no-untyped-def]
    backups = discover([folder]).backups()
    assert len(backups) == 1, backups
    return backups[0]


def _dumped(cluster: Cluster, db: str, tmp_path: Path, fmt: str):  # type: ignore[no-untyped-def]
    """``db`` dumped by real pg_dump in ``fmt`` (custom or plain) as the one backup of a folder of its own."""
    folder = _folder(tmp_path, f"{db}-{fmt}")
    sampledb.pg_dump(cluster, db, folder / f"{db}_20261120_020000.{'dump' if fmt == 'custom' else 'sql'}", fmt)
    return _only_backup(folder)


# --- 1. lines before the header ------------------------------------------------------------------

NOISE = {
    "pg_dump-warnings": lambda sql: (b"pg_dump: warning: there are circular foreign-key constraints on this table:\n"
                                     b"pg_dump: detail: orders\npg_dump: hint: You might not be able to restore the "
                                     b"dump without using --disable-triggers.\n" + sql),
    "pg_dump-verbose": lambda sql: b"".join(b"pg_dump: reading policies for table \"public.t%d\"\n" % i
                                            for i in range(3000)) + sql,  # more than a first read holds
    "bom": lambda sql: b"\xef\xbb\xbf" + sql,
    "crlf-blank-line": lambda sql: b"\r\n" + sql.replace(b"\n", b"\r\n"),
}


@pytest.mark.parametrize("noise", sorted(NOISE))
def test_a_plain_dump_with_noise_before_its_header_is_read_and_restores_completely(noise, source, shop, tmp_path,
                                                                                   restore, private_dir):
    clean = sampledb.pg_dump(source, shop, tmp_path / "clean.sql", "plain").read_bytes()
    folder = _folder(tmp_path, noise)
    path = folder / "shop_20261120_020000.sql"
    path.write_bytes(NOISE[noise](clean))
    assert sniff(path)[0] == "plain"
    backup = _only_backup(folder)
    ev = EvidenceStore(private_dir).inspect(backup.artifacts[0], full=True)
    assert ev.problems == [] and ev.scan is not None and ev.scan.row_counts == SHOP_ROWS
    db = restore(backup, private_dir)
    assert restoring.restored_cleanly(db) == [], db.result.report()
    assert db.row_counts() == SHOP_ROWS
    said = " ".join(db.skipped)
    assert {"pg_dump-warnings": "3 line(s) before pg_dump's header", "bom": "byte-order mark",
            "pg_dump-verbose": "3000 line(s) before pg_dump's header",
            "crlf-blank-line": "CR LF read as LF"}[noise] in said, said


def test_sql_before_the_header_is_not_taken_for_noise(source, shop, tmp_path):
    """A roles script concatenated in front of a dump is part of the backup, not noise to skip."""
    from backupcheck.sniff import preamble_of

    clean = sampledb.pg_dump(source, shop, tmp_path / "clean.sql", "plain").read_bytes()
    assert preamble_of(b"CREATE ROLE app;\n" + clean).skip == 0


# --- 2. owners and grantees from another platform --------------------------------------------------

@pytest.fixture(scope="module")
def heroku(source: Cluster) -> str:
    """A database owned by a role named like Heroku's, with a grant and an RLS policy for a role 'api'."""
    _sql(source, "postgres", "CREATE ROLE jaspmcxfsxyjfs LOGIN", "CREATE ROLE api NOLOGIN",
         "CREATE DATABASE heroku OWNER jaspmcxfsxyjfs")
    _sql(source, "heroku", "SET ROLE jaspmcxfsxyjfs",
         "CREATE TABLE notes (id int PRIMARY KEY, owner text, body text)",
         "INSERT INTO notes SELECT g, 'u' || g, 'n' FROM generate_series(1, 4) g",
         "GRANT SELECT ON notes TO api",
         "ALTER TABLE notes ENABLE ROW LEVEL SECURITY",
         "CREATE POLICY notes_read ON notes FOR SELECT TO api USING (owner = current_user)")
    return "heroku"


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_owners_and_grantees_the_server_lacks_become_placeholder_roles(fmt, source, heroku, tmp_path, restore,
                                                                      private_dir):
    db = restore(_dumped(source, heroku, tmp_path, fmt), private_dir)
    assert db.compat.mismatches == []
    assert any("placeholder role(s) api, jaspmcxfsxyjfs" in c for c in db.compat.compared), db.compat.compared
    assert restoring.restored_cleanly(db) == [], db.result.report()
    assert db.row_counts() == {"public.notes": 4}
    with db.target.connect(db.main_db) as conn:
        assert conn.execute("select roles::text[] from pg_policies where policyname = 'notes_read'").fetchone()[0] \
            == ["api"], "the policy names its role as it did"
        assert conn.execute("select has_table_privilege('api', 'public.notes', 'SELECT')").fetchone()[0]
        assert conn.execute("select rolcanlogin from pg_roles where rolname = 'jaspmcxfsxyjfs'").fetchone()[0] is False
        assert conn.execute("select tableowner from pg_tables where tablename = 'notes'").fetchone()[0] \
            == "jaspmcxfsxyjfs", ("ownership as it was", db.skipped, db.owners)


# --- 3. tablespaces ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spaced_cluster(pg_run: ClusterFactory) -> Iterator[Cluster]:
    """A server of its own for the tablespaces, so its cluster dump holds nothing the other tests add."""
    with pg_run.cluster(pgbin.pick(None)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def spaced(spaced_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database stored in tablespace 'fast', and a table and an index in tablespace 'archive'."""
    source = spaced_cluster
    root = tmp_path_factory.mktemp("spaces")
    os.chmod(root, 0o755)
    for parent in root.parents:
        os.chmod(parent, os.stat(parent).st_mode | 0o001)
    user = server_user()
    for name in ("fast", "archive"):
        (root / name).mkdir()
        if user:
            os.chown(root / name, *user)
        _sql(source, "postgres", f"CREATE TABLESPACE {name} LOCATION '{root / name}'")
    _sql(source, "postgres", "CREATE DATABASE spaced TABLESPACE fast")
    _sql(source, "postgres", "CREATE ROLE archivist")
    _sql(source, "spaced", "CREATE TABLE hot (id int PRIMARY KEY)", "INSERT INTO hot SELECT generate_series(1, 6)",
         "CREATE TABLE cold (id int) TABLESPACE archive", "CREATE INDEX cold_id ON cold (id) TABLESPACE archive",
         "INSERT INTO cold SELECT generate_series(1, 9)", "ALTER TABLE cold OWNER TO archivist")
    return "spaced"


def test_a_cluster_dump_with_tablespaces_restores_every_database(spaced_cluster, spaced, tmp_path, restore,
                                                                 private_dir):
    folder = _folder(tmp_path, "cluster")
    sampledb.pg_dumpall(spaced_cluster, folder / "cluster_20261120_020000.sql")
    text = (folder / "cluster_20261120_020000.sql").read_text()
    assert "CREATE TABLESPACE fast" in text and "TABLESPACE = fast" in text
    db = restore(_only_backup(folder), private_dir)
    assert db.compat.mismatches == []
    assert restoring.restored_cleanly(db) == [], db.result.report()
    assert db.row_counts(["spaced/public.hot", "spaced/public.cold"]) == {"spaced/public.hot": 6,
                                                                          "spaced/public.cold": 9}
    assert any("tablespace(s) fast, archive" in s for s in db.skipped), db.skipped
    with db.target.connect("spaced") as conn:  # a role the cluster dump creates owns its table, as it did
        assert conn.execute("select tableowner from pg_tables where tablename = 'cold'").fetchone()[0] == "archivist"


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_database_dump_with_tablespaces_restores_into_the_default_one(fmt, spaced_cluster, spaced, tmp_path,
                                                                         restore, private_dir):
    db = restore(_dumped(spaced_cluster, spaced, tmp_path, fmt), private_dir)
    assert db.compat.mismatches == [] and any("archive: mapped to the default" in c for c in db.compat.compared)
    assert restoring.restored_cleanly(db) == [], db.result.report()
    assert db.row_counts() == {"public.hot": 6, "public.cold": 9}
    with db.target.connect(db.main_db) as conn:  # a placeholder for the owner the server lacks
        assert conn.execute("select tableowner from pg_tables where tablename = 'cold'").fetchone()[0] == "archivist"


def test_a_database_a_cluster_dump_cannot_create_is_a_harmful_loss(tmp_path, restore, private_dir):
    text = ("--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\n"
            "CREATE DATABASE lost WITH TEMPLATE = template0 ENCODING = 'UTF8' LC_COLLATE = 'zz_ZZ.UTF-8' "
            "LC_CTYPE = 'zz_ZZ.UTF-8';\n\\connect lost\n\n--\n-- PostgreSQL database dump\n--\n\n"
            "CREATE TABLE public.t (a int);\nCOPY public.t (a) FROM stdin;\n1\n\\.\n\n"
            "--\n-- PostgreSQL database dump complete\n--\n\n"
            "--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    folder = _folder(tmp_path, "lost")
    (folder / "lost_20261120_020000.sql").write_text(text)
    db = restore(_only_backup(folder), private_dir)
    findings = restoring.restored_cleanly(db)
    assert [f.what for f in findings] == ["a restore error lost database lost and everything the dump puts in it"]
    assert "locale_fallback" in findings[0].hint
    assert not any(e.statement.startswith("CREATE TABLE") for e in db.result.errors), \
        "the lost database's statements are not run in another one"
    assert db.lost_data()


# --- 4. the search_path trap ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trapped(source: Cluster) -> str:
    """orders has a CHECK calling a function that names customers without its schema."""
    _sql(source, "postgres", "CREATE DATABASE trapped")
    _sql(source, "trapped",
         "CREATE TABLE customers (id int PRIMARY KEY)",
         "CREATE FUNCTION customer_exists(int) RETURNS boolean LANGUAGE sql AS "
         "'select exists (select 1 from customers where id = $1)'",
         "CREATE TABLE orders (id int PRIMARY KEY, customer_id int CHECK (customer_exists(customer_id)))",
         "CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders(id))",
         "INSERT INTO customers SELECT generate_series(1, 3)",
         "INSERT INTO orders SELECT g, 1 + g % 3 FROM generate_series(1, 5) g",
         "INSERT INTO order_items SELECT g, 1 + g % 5 FROM generate_series(1, 7) g")
    return "trapped"


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_the_search_path_trap_names_the_table_the_function_and_the_fix(fmt, source, trapped, tmp_path, restore,
                                                                      private_dir):
    db = restore(_dumped(source, trapped, tmp_path, fmt), private_dir)
    findings = restoring.restored_cleanly(db)
    rows = [f for f in findings if "rows of table public.orders" in f.what]
    assert len(rows) == 1, [f.what for f in findings]
    assert "customer_exists" in rows[0].found and "search_path" in rows[0].found
    assert "ALTER FUNCTION public.customer_exists SET search_path" in rows[0].hint
    assert "rows of table public.orders" in db.lost_data()


def test_checks_of_rows_lost_to_the_search_path_trap_are_not_judged(source, trapped, tmp_path, run_suites):
    folder = _folder(tmp_path, "trapped-suite")
    sampledb.pg_dump(source, trapped, folder / "trapped_20261120_020000.dump", "custom")
    run = run_suites("--backups", str(folder), "-m", "not freshness and not size and not content_freshness")
    key = "trapped-20261120T020000Z"
    assert run.ret == 1
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "failed"
    assert "customer_exists" in run.messages[f"test_restores_without_harmful_errors[{key}]"]
    orphans = f"test_every_foreign_key_has_no_orphans[{key}]"
    assert run.outcomes[orphans] == "skipped" and "not judged" in run.messages[orphans], run.messages[orphans]
    assert "VALIDATE CONSTRAINT" not in run.stdout and "max_row_drop" not in run.stdout


# --- 5. a backup with no data ------------------------------------------------------------------------

def test_a_schema_only_backup_fails_unless_the_series_says_so(source, shop, tmp_path, run_suites):
    folder = _folder(tmp_path, "schema")
    sampledb.pg_dump(source, shop, folder / "shop_20261120_020000.sql", "plain", extra=("--schema-only",))
    key = "test_backup_holds_data[shop-20261120T020000Z]"
    run = run_suites("--backups", str(folder), "-m", "integrity")
    assert run.outcomes[key] == "failed"
    assert "holds no data: a schema-only dump" in run.messages[key] and "schema_only = true" in run.messages[key]
    ok = run_suites("--backups", str(folder), "-m", "integrity", config="[series.shop]\nschema_only = true\n")
    assert ok.outcomes[key] == "passed"


@pytest.mark.parametrize("fmt", ["custom", "directory", "tar", "plain"])
def test_every_format_says_whether_it_holds_data(fmt, source, shop, tmp_path, private_dir):
    for extra, expected in [(("--schema-only",), 1), ((), 0)]:
        folder = _folder(tmp_path, f"{fmt}{len(extra)}")
        sampledb.pg_dump(source, shop, folder / f"shop_20261120_020000{'' if fmt == 'directory' else '.x'}", fmt,
                         extra=extra)
        backup = _only_backup(folder)
        store = EvidenceStore(private_dir)
        evidence = [store.inspect(a, full=False) for a in store.localize(backup).artifacts]
        assert len(integrity.holds_data(backup, evidence, False)) == expected, (fmt, extra)


# --- 6. Supabase's own event triggers ---------------------------------------------------------------------

# Bodies of the shape of the platform's functions (written here, not copied): they grant and notify, nothing else.
WATCH = """
DECLARE
  c record;
BEGIN
  FOR c IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF c.schema_name IS DISTINCT FROM 'pg_temp' THEN
      NOTIFY pgrst, 'reload schema';
    END IF;
  END LOOP;
END;
"""
CRON = """
BEGIN
  IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() AS ev JOIN pg_extension AS x ON ev.objid = x.oid
             WHERE x.extname = 'pg_cron') THEN
    GRANT USAGE ON SCHEMA cron TO postgres WITH GRANT OPTION;
    ALTER DEFAULT PRIVILEGES IN SCHEMA cron GRANT ALL ON TABLES TO postgres WITH GRANT OPTION;
  END IF;
END;
"""
COPIED_NAME = "BEGIN EXECUTE 'SELECT 1'; END;"  # a stock name on a body that runs dynamic SQL


@pytest.fixture(scope="module")
def supa(source: Cluster) -> str:
    _sql(source, "postgres", "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN "
                             "CREATE ROLE anon; CREATE ROLE authenticated; END IF; END $$",
         "CREATE DATABASE supa")
    _sql(source, "supa",
         "CREATE SCHEMA extensions", "GRANT USAGE ON SCHEMA extensions TO anon, authenticated",
         "CREATE TABLE public.todos (id int PRIMARY KEY)", "INSERT INTO public.todos VALUES (1), (2)",
         f"CREATE FUNCTION extensions.pgrst_ddl_watch() RETURNS event_trigger LANGUAGE plpgsql AS $f${WATCH}$f$",
         f"CREATE FUNCTION extensions.grant_pg_cron_access() RETURNS event_trigger LANGUAGE plpgsql AS $f${CRON}$f$",
         f"CREATE FUNCTION extensions.pgrst_drop_watch() RETURNS event_trigger LANGUAGE plpgsql AS $f${COPIED_NAME}$f$",
         "CREATE FUNCTION public.audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$BEGIN NULL; END;$f$",
         "CREATE EVENT TRIGGER pgrst_ddl_watch ON ddl_command_end EXECUTE FUNCTION extensions.pgrst_ddl_watch()",
         "CREATE EVENT TRIGGER issue_pg_cron_access ON ddl_command_end WHEN TAG IN ('CREATE EXTENSION') "
         "EXECUTE FUNCTION extensions.grant_pg_cron_access()",
         "CREATE EVENT TRIGGER pgrst_drop_watch ON sql_drop EXECUTE FUNCTION extensions.pgrst_drop_watch()",
         "CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION public.audit_ddl()")
    return "supa"


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_supabases_own_event_triggers_are_recognised_by_name_and_body(fmt, source, supa, tmp_path, restore,
                                                                     private_dir):
    db = restore(_dumped(source, supa, tmp_path, fmt), private_dir)
    assert db.profile.name == "supabase"
    findings = [f for f in restoring.restored_cleanly(db) if f.what.startswith("SECURITY")]
    named = " ".join(f.found for f in findings)
    assert "pgrst_drop_watch" in named and "audit_ddl" in named, ("a copied name or another trigger is a finding",
                                                                   db.result.report(), db.skipped)
    assert "pgrst_ddl_watch" not in named.replace("pgrst_drop_watch", "") and "issue_pg_cron_access" not in named
    assert any("issue_pg_cron_access" in s and "pgrst_ddl_watch" in s for s in db.skipped), db.skipped
    assert db.row_counts() == {"public.todos": 2}


def test_the_platforms_trigger_bodies_are_judged_by_what_they_do():
    from backupcheck.stock import body_problem

    assert body_problem(WATCH) == "" and body_problem(CRON) == ""
    assert "EXECUTE" in body_problem(COPIED_NAME)
    assert "pg_read_file" in body_problem("BEGIN IF (SELECT pg_read_file('/etc/passwd')) IS NULL THEN NULL; END IF; END;")
    assert body_problem("BEGIN GRANT pg_execute_server_program TO anon; END;")
    assert body_problem("BEGIN DROP TABLE public.orders; END;")


# --- 7. advice that sends people the right way -----------------------------------------------------------

TRAILER = "--\n-- PostgreSQL database dump complete\n--\n\n"


def _plain(body: str, version: str) -> str:
    return (f"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version {version}\n"
            f"-- Dumped by pg_dump version {version}\n\n{body}\n{TRAILER}")


def _only(major: int) -> pgbin.Tools:
    found = [i for i in pgbin.installations() if i.major == major]
    if not found:
        pytest.skip(f"no PostgreSQL {major} here")
    return pgbin.Tools(folders=(str(found[0].bindir),), only=True)


VECTOR = ("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;\n"
          "CREATE TABLE public.items (id int PRIMARY KEY, embedding public.vector(3));\n"
          "COPY public.items (id, embedding) FROM stdin;\n1\t[1,2,3]\n\\.\n")


def test_pgvector_outside_supabase_is_restored_on_a_server_that_has_it(tmp_path, restore, private_dir):
    if not any("vector" in i.extensions() for i in pgbin.installations()):
        pytest.skip("no installation here ships pgvector")
    folder = _folder(tmp_path, "vector")
    (folder / "items_20261120_020000.sql").write_text(_plain(VECTOR, "15.4"))
    db = restore(_only_backup(folder), private_dir)
    assert db.compat.mismatches == [] and restoring.restored_cleanly(db) == [], db.result.report()
    assert db.row_counts() == {"public.items": 1}


def test_pgvector_outside_supabase_is_not_told_to_use_the_supabase_profile(tmp_path, restore, private_dir):
    tools = _only(15)
    if "vector" in tools.installations()[0].extensions():
        pytest.skip("PostgreSQL 15 here ships pgvector")
    folder = _folder(tmp_path, "vector15")
    (folder / "items_20261120_020000.sql").write_text(_plain(VECTOR, "15.4"))
    db = restore(_only_backup(folder), private_dir, tools=tools)
    [said] = [m for m in db.compat.mismatches if "vector" in m]
    assert "supabase" not in said.lower() and "apt-get install postgresql-15-pgvector" in said, said


def _strip_comments(sql: bytes) -> bytes:
    """What the Supabase CLI does to a dump: every -- comment line gone (no version header left)."""
    return b"\n".join(line for line in sql.split(b"\n") if not line.startswith(b"--"))


@pytest.fixture(scope="module")
def pg18_dump(pg_run: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PostgreSQL 18 table with uuidv7() and a VIRTUAL generated column, dumped plain without its comments."""
    if not any(i.major >= 18 for i in pgbin.installations()):
        pytest.skip("no PostgreSQL 18 here")
    folder = tmp_path_factory.mktemp("pg18")
    with pg_run.cluster(pgbin.pick(18)) as cluster:
        _sql(cluster, "postgres", "CREATE DATABASE v")
        _sql(cluster, "v", "CREATE TABLE t (id uuid DEFAULT uuidv7() PRIMARY KEY, a int, "
                           "b int GENERATED ALWAYS AS (a * 2) VIRTUAL)", "INSERT INTO t (a) VALUES (1), (2)")
        raw = sampledb.pg_dump(cluster, "v", folder / "raw.sql", "plain")
    (folder / "dumps").mkdir()
    (folder / "dumps" / "v_20261120_020000.sql").write_bytes(_strip_comments(raw.read_bytes()))
    raw.unlink()
    return folder / "dumps"


def test_a_dump_using_uuidv7_and_virtual_columns_is_restored_on_18(pg18_dump, restore, private_dir):
    db = restore(_only_backup(pg18_dump), private_dir)
    assert re.search(r"PostgreSQL 1[89]\.", db.target_label), db.target_label
    assert restoring.restored_cleanly(db) == [] and db.row_counts() == {"public.t": 2}


def test_a_dump_using_uuidv7_is_told_it_needs_18_where_there_is_none(pg18_dump, restore, private_dir):
    with pytest.raises(NoServer) as caught:
        restore(_only_backup(pg18_dump), private_dir, tools=_only(16))
    [said] = [m for m in caught.value.compat.mismatches if "uuidv7" in m]
    assert "a VIRTUAL generated column" in said and "PostgreSQL 18 or newer" in said, said


def test_a_17_dump_with_contrib_extensions_is_told_which_server_has_them(tmp_path, restore, private_dir):
    contribless = [i for i in pgbin.installations() if i.major >= 17 and "pgcrypto" not in i.extensions()]
    with_contrib = [i for i in pgbin.installations() if i.major >= 17 and "pgcrypto" in i.extensions()]
    if not contribless or with_contrib:
        pytest.skip("needs a PostgreSQL 17+ here without contrib, and none with it")
    folder = _folder(tmp_path, "contrib")
    (folder / "app_20261120_020000.sql").write_text(_plain(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;\n"
        "CREATE TABLE public.k (id int PRIMARY KEY, salt bytea DEFAULT public.gen_random_bytes(8));\n", "17.2"))
    db = restore(_only_backup(folder), private_dir)
    [said] = [m for m in db.compat.mismatches if "pgcrypto" in m]
    assert "apt-get install postgresql-17" in said and "contrib" in said and "supabase" not in said.lower(), said
    if any("pgcrypto" in i.extensions() for i in pgbin.installations()):
        assert "has them but is older than the dump" in said, said


# --- 8. partitions ------------------------------------------------------------------------------------------

def test_row_totals_count_a_partitioned_table_once(source, tmp_path, run_suites):
    _sql(source, "postgres", "CREATE DATABASE parts")
    _sql(source, "parts",
         "CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at)",
         "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
         "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
         "INSERT INTO events SELECT g, date '2025-06-01' + g * 3 FROM generate_series(1, 100) g",
         "CREATE TABLE plain_rows (id int)", "INSERT INTO plain_rows SELECT generate_series(1, 17)")
    folder = _folder(tmp_path, "parts")
    sampledb.pg_dump(source, "parts", folder / "parts_20261120_020000.dump", "custom")
    run = run_suites("--backups", str(folder), "-m", "row_counts",
                     config='[series.parts]\ncritical_tables = ["events_2025"]\n')
    [backup] = run.results()["backups"]
    assert sum(backup["tables"].values()) == 117, backup["tables"]
    assert "public.events" not in backup["tables"] and backup["tables"]["public.events_2025"] > 0


def test_an_error_that_loses_a_database_is_harmful():
    from backupcheck.restore.errors import classify

    severity, lost = classify("invalid locale name", "CREATE DATABASE shop WITH LOCALE = 'x';", "", "")
    assert severity == HARMFUL and lost.startswith("database shop")


# --- all of them in one run, as a nightly job would see them ------------------------------------------------

def test_every_producer_restores_or_fails_with_one_sentence_and_its_fix(source, shop, heroku, spaced_cluster, spaced,
                                                                       trapped, tmp_path, run_suites):
    """One folder of every producer above, through the suites: no check errs or shows our traceback; every
    backup restores cleanly, or its restore fails naming what is missing and the fix."""
    from .test_bad_input import OWN_FRAME

    root = _folder(tmp_path, "all")
    clean = sampledb.pg_dump(source, shop, tmp_path / "clean.sql", "plain").read_bytes()
    _folder(root, "noisy")
    (root / "noisy" / "noisy_20261120_020000.sql").write_bytes(NOISE["pg_dump-warnings"](clean))
    sampledb.pg_dump(source, heroku, _folder(root, "heroku") / "heroku_20261120_020000.dump", "custom")
    sampledb.pg_dumpall(spaced_cluster, _folder(root, "cluster") / "cluster_20261120_020000.sql")
    sampledb.pg_dump(source, trapped, _folder(root, "trapped") / "trapped_20261120_020000.dump", "custom")
    sampledb.pg_dump(source, shop, _folder(root, "schema") / "schema_20261120_020000.sql", "plain",
                     extra=("--schema-only",))
    folders = [arg for d in sorted(root.iterdir()) for arg in ("--backups", str(d))]
    run = run_suites(*folders, "-m", "not freshness and not size and not content_freshness")
    assert not run.with_outcome("error"), {k: run.messages[k][:300] for k in run.with_outcome("error")}
    assert not any(OWN_FRAME.search(m) for m in run.messages.values())
    restores = {k.split("[")[1].split("-")[0]: v for k, v in run.outcomes.items()
                if k.startswith("test_restores_without_harmful_errors[")}
    assert restores == {"cluster": "passed", "heroku": "passed", "noisy": "passed", "schema": "passed",
                        "trapped": "failed"}, restores
    assert "fix:" in run.messages["test_restores_without_harmful_errors[trapped-20261120T020000Z]"]
    assert run.outcomes["test_backup_holds_data[schema-20261120T020000Z]"] == "failed"
    assert all(v == "passed" for k, v in run.outcomes.items() if k.startswith("test_restoring_server_fits_the_dump"))


@pytest.mark.parametrize("prefixes", ["pg_restore:pg_restore:  error: error: ", "pg_restore: error: pg_restore: error: ",
                                      "pg_restore: pg_restore: error: error: "])
def test_the_errors_of_parallel_restore_workers_writing_at_once_are_all_read(prefixes):
    """pg_restore -j 2: two workers' errors tangled on one line (the prefixes interleaved one way or another), the
    second message later without its prefix."""
    from backupcheck.restore.errors import SECURITY, parse_pg_restore_errors

    tangled = (
        prefixes + 'could not execute query: ERROR:  permission denied to create event '
        'trigger "audit_ddl"\nHINT:  Must be superuser to create an event trigger.\nCommand was: CREATE EVENT '
        "TRIGGER audit_ddl ON ddl_command_end\n   EXECUTE FUNCTION public.audit_ddl();\n\n\n"
        'could not execute query: ERROR:  relation "public.orders" does not exist\nCommand was: CREATE INDEX o ON '
        "public.orders USING btree (id);\n\n\npg_restore: warning: errors ignored on restore: 2\n")
    errors, fatal = parse_pg_restore_errors(tangled, "x.dump")
    assert fatal == "" and [e.severity for e in errors] == [SECURITY, HARMFUL], errors
    assert errors[1].lost == "index o"
