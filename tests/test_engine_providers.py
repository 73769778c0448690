"""Engine pieces of the providers and profiles that need no server: parsers, lists, grouping, settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backupcheck.discovery import discover
from backupcheck.dumpscan import DumpScan, note_requirements
from backupcheck.pgarchive import TocEntry
from backupcheck.restore.archive import restore_list
from backupcheck.restore.errors import BENIGN, HARMFUL, classify
from backupcheck.restore.profiles import Profile
from backupcheck.servers.containers import tar_stream
from backupcheck.settings import ConfigError, build


def test_the_supabase_profile_tolerates_platform_schemas_but_not_the_application():
    tolerated = Profile(name="supabase", base="supabase").tolerated()
    platform = classify('schema "auth" does not exist', "COPY auth.users (id, email) FROM stdin;", "", "", tolerated)
    own = classify('invalid input syntax for type integer: "x"', "COPY public.orders (id) FROM stdin;", "", "",
                   tolerated)
    assert platform == (BENIGN, "")  # auth.users rows belong to the platform
    assert own == (HARMFUL, "rows of table public.orders")  # public.orders does not


def _entry(dump_id: int, desc: str, tag: str, namespace: str = "") -> TocEntry:
    return TocEntry(dump_id, desc, namespace, tag, "postgres", "", "", False, True)


def test_a_restore_list_leaves_out_only_the_skipped_extensions():
    entries = [_entry(1, "EXTENSION", "pgsodium"), _entry(2, "COMMENT", "EXTENSION pgsodium"),
               _entry(3, "EXTENSION", "pgcrypto"), _entry(4, "TABLE", "users", "public")]
    listing, skipped = restore_list(entries, ["pgsodium"])
    assert skipped == ["pgsodium"]
    assert [line.split(";")[0] for line in listing.splitlines()] == ["3", "4"]


def test_roles_extensions_and_tablespaces_a_dump_needs_are_noted():
    scan = DumpScan()
    for sql in ["CREATE ROLE app_reader;", "ALTER TABLE public.t OWNER TO app_owner;",
                "GRANT SELECT ON TABLE public.t TO anon, authenticated, PUBLIC;",
                'CREATE POLICY "p" ON public.t FOR SELECT TO "service_role" USING (true);',
                'CREATE EXTENSION IF NOT EXISTS "pgsodium" WITH SCHEMA "pgsodium";',
                "SET default_tablespace = 'fast_ssd';", "CREATE INDEX i ON t (a) TABLESPACE archive;"]:
        note_requirements(scan, sql)
    assert scan.roles_created == ["app_reader"]
    assert scan.roles_used == ["app_owner", "anon", "authenticated", "service_role"]
    assert scan.extensions == ["pgsodium"]
    assert scan.tablespaces == ["fast_ssd", "archive"]


def test_a_supabase_cli_trio_written_minutes_apart_is_one_backup(tmp_path):
    base = time.time() - 3600
    for offset, name in ((0, "roles.sql"), (40, "schema.sql"), (200, "data.sql")):
        p = tmp_path / "project" / name
        p.parent.mkdir(exist_ok=True)
        p.write_text("SELECT 1;\n" if name != "roles.sql" else "CREATE ROLE app_reader;\n")
        os.utime(p, (base + offset, base + offset))
    (backup,) = discover([tmp_path]).backups()
    assert [a.path.name for a in backup.dumps] == ["roles.sql", "schema.sql", "data.sql"]


def test_a_trio_a_day_apart_is_two_backups(tmp_path):
    base = time.time() - 3 * 86400
    for offset, name in ((0, "schema.sql"), (86400, "data.sql")):
        p = tmp_path / "project" / name
        p.parent.mkdir(exist_ok=True)
        p.write_text("SELECT 1;\n")
        os.utime(p, (base + offset, base + offset))
    assert len(discover([tmp_path]).backups()) == 2


def test_the_copy_into_a_container_is_a_read_only_tar(tmp_path):
    import io
    import tarfile

    dump = tmp_path / "dump"
    dump.write_bytes(b"x" * 1000)
    data = b"".join(tar_stream([(dump, "in/1/dump"), (b"1; 0 0 TABLE", "in/1/restore.list")]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["in/1/dump"].size == 1000 and members["in/1/dump"].mode == 0o444
    assert members["in"].isdir() and members["in/1"].mode == 0o555


@pytest.mark.parametrize("data, message", [
    ({"pg_provider": "docker"}, "pg_provider = 'docker': expected one of auto, container, local, dsn"),
    ({"pg_provider": "dsn"}, "pg_provider = 'dsn' needs a server"),
    ({"container": {"ryuk": "maybe"}}, "container.ryuk = 'maybe': expected true or false"),
    ({"container": {"image": "postgres"}}, "container.image = 'postgres': expected a template"),
    ({"defaults": {"profile": "firebase"}}, "defaults.profile = 'firebase': expected one of supabase, vanilla"),
    ({"profiles": {"mine": {"base": "mysql"}}}, "profiles.mine.base = 'mysql': expected one of vanilla, supabase"),
])
def test_bad_provider_and_profile_settings_are_named(data, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build({}, data, tmp_path / "backupcheck.toml", tmp_path)


def test_provider_settings_in_the_file_and_on_the_command_line(tmp_path):
    (tmp_path / "boot.sql").write_text("CREATE ROLE app_reader;")
    data = {"pg_provider": "container", "container": {"image": "registry.local/pg:{major}", "ryuk": False},
            "profiles": {"shop": {"base": "supabase", "bootstrap_files": ["boot.sql"], "skip_extensions": ["x"]}},
            "series": {"shop": {"profile": "shop"}}}
    s = build({}, data, tmp_path / "backupcheck.toml", tmp_path)
    assert (s.pg_provider, s.container_image, s.ryuk) == ("container", "registry.local/pg:{major}", False)
    shop = s.profile("shop")
    assert shop.supabase and "app_reader" in shop.bootstrap()[-1] and "x" in shop.skipped_extensions()
    cli = build({"pg_provider": "local", "container_image": "postgres:{major}-alpine", "ryuk": "on"}, data,
                tmp_path / "backupcheck.toml", tmp_path)
    assert (cli.pg_provider, cli.container_image, cli.ryuk) == ("local", "postgres:{major}-alpine", True)
    assert s.profile("other") is None  # not configured: detected from each dump


def test_the_dsn_is_never_shown_with_its_password():
    from backupcheck.restore.providers import decide

    decision = decide("dsn", "postgres:{major}", "postgresql://restorer:hunter2secret@staging:5433/postgres", set())
    assert "hunter2secret" not in decision.reason and "staging:5433/postgres as restorer" in decision.reason


def test_no_pytest_import_anywhere_in_the_engine():
    root = Path(__file__).resolve().parent.parent / "backupcheck"
    modules = [p for p in root.rglob("*.py") if p.parent.name not in ("plugins", "fixtures", "suites")]
    assert len(modules) > 40
    assert [str(p) for p in modules if "import pytest" in p.read_text()] == []


def test_an_engine_that_is_not_there_is_named_in_a_sentence(monkeypatch, tmp_path):
    from backupcheck.servers.containers import engine_answers

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    answers, why = engine_answers()
    assert not answers
    assert why == f"no Docker engine: nothing answers at unix://{tmp_path}/docker.sock (is the engine running?)"
