"""Verdicts on dumps other people made: the real artifacts in ../shared/real-dumps, and small reproductions of each
shape they showed, so the behaviour is tested where that folder is absent too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupcheck.checks import freshness, restoring
from backupcheck.discovery import discover
from backupcheck.dumpscan import scan_plain
from backupcheck.evidence import EvidenceStore
from backupcheck.model import Series
from backupcheck.pgarchive import major_of, parse_list, tar_problems
from backupcheck.restore.profiles import Profile, detect
from backupcheck.rolerefs import roles_named
from backupcheck.servers import pgbin
from backupcheck.settings import SeriesSettings

from .conftest import REAL_DUMPS

REAL = REAL_DUMPS
# Where the folder is absent, one stand-in parameter, so the test is there to skip (or to fail, where required).
EXPECT = json.loads((REAL / "expect.json").read_text()) if (REAL / "expect.json").is_file() else \
    {"artifacts": [{"id": "absent"}]}
needs_real = pytest.mark.real_dumps


# --- the real artifacts ------------------------------------------------------------------------

@needs_real
@pytest.mark.parametrize("item", EXPECT["artifacts"], ids=[a["id"] for a in EXPECT["artifacts"]])
def test_a_real_dump_gets_the_verdict_restoring_it_by_hand_gave(item, restore, private_dir):
    """Intact, restorable, with the exact rows per table and no orphans: as expect.json records."""
    listing = discover([REAL / item["id"]])
    assert len(listing.backups()) == 1, "the files of one artifact are one backup"
    backup = listing.backups()[0]
    store = EvidenceStore(private_dir)
    for a in store.localize(backup).artifacts:
        assert store.inspect(a, full=True).problems == [], a.name
    db = restore(backup, private_dir)
    assert db.compat.mismatches == []
    assert restoring.restored_cleanly(db) == []
    counts = db.row_counts(list(item["tables"]))
    assert counts == item["tables"]
    findings, notes = restoring.foreign_key_orphans(db)
    assert findings == [] and len(notes) == item.get("fks", {}).get("count", len(notes))
    if item["id"] == "supabase-cli-dump-pair":
        assert db.profile.name == "supabase" and "auto-detected" in db.profile_reason
        assert "everyone" not in {r for ev in db.evidence if ev.scan for r in ev.scan.roles_used}


@needs_real
def test_the_real_dumps_pass_the_suites_end_to_end(run_suites):
    """Every default, no config: the integrity, restore, row-count and relation checks all pass. (These are
    sample databases whose rows are years older than their files: content freshness rightly fails them, and
    the files' ages and sizes say nothing about nightly backups.)"""
    folders = [arg for a in EXPECT["artifacts"] for arg in ("--backups", str(REAL / a["id"]))]
    run = run_suites(*folders, "-m", "not freshness and not size and not content_freshness")
    assert run.ret == 0, run.stdout[-3000:]
    assert sum(1 for k, v in run.outcomes.items() if k.startswith("test_restores_without_harmful_errors") and v == "passed") == 5


@needs_real
def test_a_real_tar_dump_cut_in_half_fails_integrity(run_suites, tmp_path):
    data = (REAL / "dvdrental-tar-pg15" / "dvdrental.tar").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "dvdrental_20261101_020000.tar").write_bytes(data[: len(data) // 2])
    run = run_suites("--backups", str(tmp_path / "cut"), "-m", "integrity")
    key = "test_every_artifact_is_complete_and_readable[dvdrental-20261101T020000Z]"
    assert run.outcomes[key] == "failed" and "cut short" in run.messages[key]


@needs_real
def test_pg_restore_lists_what_the_reader_cannot_parse():
    """The --list fallback reads names, kinds and versions of an archive's entries."""
    from backupcheck.servers import pgbin

    tool = pgbin.installations()[0].tool("pg_restore")
    out = subprocess.run([tool, "--list", str(REAL / "chinook-custom-pg11-heroku" / "chinook.dump")],
                         capture_output=True, text=True, check=True).stdout
    info = parse_list(out)
    assert info.version[:2] == (1, 13) and info.dump_version.startswith("11.2") and info.listed_by_pg_restore
    assert ("public", "album") in info.tables() and ("public", "album") in info.data_tables()


# --- reproductions, made here ------------------------------------------------------------------

@pytest.mark.parametrize("text, major", [
    ("15beta2", 15), ("17rc1", 17), ("16devel", 16), ("9.6.24", 9), ("12.3 (Ubuntu 12.3-1.pgdg20.04+1)", 12),
    ("17.5 (Debian 17.5-1.pgdg120+1)", 17), ("EnterpriseDB 9.6.2.7", 9), ("PostgreSQL", None), ("", None),
])
def test_every_version_string_parses_or_is_unknown(text, major):
    assert major_of(text) == major


def test_a_quoted_policy_name_names_no_role():
    assert roles_named('CREATE POLICY "Enable read access to everyone" ON public."Tutorial" FOR SELECT USING (true);') == []
    assert roles_named('CREATE POLICY p ON t TO anon, "Odd Role" USING (true);') == ["anon", "Odd Role"]
    assert roles_named("ALTER TABLE public.t OWNER TO supabase_admin;") == ["supabase_admin"]


TRAILER = "--\n-- PostgreSQL database dump complete\n--\n\n"


def _plain(body: str, version: str = "15.4") -> str:
    return (f"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version {version}\n"
            f"-- Dumped by pg_dump version {version}\n\n{body}\n{TRAILER}")


def _scan(text: str):  # type: ignore[no-untyped-def]
    import io

    return scan_plain(io.BytesIO(text.encode()))


def test_completion_is_judged_the_way_each_producer_writes_files():
    data = _plain("SET session_replication_role = replica;\nCOPY public.t (a) FROM stdin;\n1\n\\.\n") + "RESET ALL;\n"
    assert _scan(data).errors == [], "supabase db dump's data.sql: trailer, then RESET ALL"
    assert _scan("CREATE TABLE IF NOT EXISTS public.t (a int);\nRESET ALL;\n").errors == [], "CLI schema: no header"
    whole = _plain("CREATE TABLE public.t (a int);\nCOPY public.t (a) FROM stdin;\n1\n2\n\\.\n")
    cut = whole[: whole.index("2\n")]
    assert any("truncated" in e for e in _scan(cut).errors) or any("COPY" in e for e in _scan(cut).errors)
    assert any("truncated" in e for e in _scan(whole[: whole.index("-- PostgreSQL database dump complete")]).errors)
    assert _scan("CREATE FUNCTION f() RETURNS int AS $$ select 1").errors != [], "an open dollar quote"


def test_a_roles_dump_followed_by_a_database_dump_has_each_trailer_checked():
    roles = ("--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\n\n"
             "--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    both = roles + _plain("CREATE TABLE public.t (a int);\n")
    scan = _scan(both)
    assert scan.errors == [] and scan.tables == ["public.t"], "statements before any \\connect are the database's"
    cut_roles = roles[: roles.index("-- PostgreSQL database cluster dump complete")] + _plain("SELECT 1;\n")
    assert _scan(cut_roles).errors, "the roles part lacks its own trailer"


def _touch(path: Path, text: str, when: datetime) -> None:
    path.write_text(text)
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_a_schema_and_data_pair_without_times_is_one_backup_restored_schema_first(tmp_path, restore, private_dir):
    when = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    folder = tmp_path / "pagila"
    folder.mkdir()
    # The data file is written first and sorts first by name: only its content says it goes second.
    _touch(folder / "app-data.sql", _plain("COPY public.actor (id) FROM stdin;\n1\n2\n\\.\n"), when)
    _touch(folder / "app-schema.sql", _plain("CREATE TABLE public.actor (id int PRIMARY KEY);\n"),
           when + timedelta(seconds=1, milliseconds=300))
    listing = discover([folder])
    assert [len(b.artifacts) for b in listing.backups()] == [2]
    db = restore(listing.backups()[0], private_dir)
    assert [a.name for a in db.dumps] == ["app-schema.sql", "app-data.sql"]
    assert restoring.restored_cleanly(db) == [] and db.row_counts(["public.actor"]) == {"public.actor": 2}


def test_times_in_names_are_read_in_the_series_zone_and_a_future_backup_fails(tmp_path):
    folder = tmp_path / "dumps"
    folder.mkdir()
    (folder / "shop_20261120_030000.sql").write_text(_plain("SELECT 1;\n"))
    utc = discover([folder]).backups()[0]
    paris = discover([folder], name_zone=lambda s: "Europe/Paris").backups()[0]
    assert utc.taken_at - paris.taken_at == timedelta(hours=1)
    series = Series("shop", (utc,))
    findings = freshness.newest_within_rpo(series, SeriesSettings(), datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    assert findings and "future" in findings[0].what and "name_timezone" in findings[0].hint


def test_a_tar_cut_short_or_without_its_end_is_found(tmp_path):
    src = tmp_path / "m"
    src.write_bytes(os.urandom(5000))
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(src, arcname="toc.dat")
        tar.add(src, arcname="3001.dat")
    assert tar_problems(whole, ["toc.dat", "3001.dat"]) == []
    data = whole.read_bytes()
    for cut, words in [(3000, "cut short"), (512 * 11, "lacks: 3001.dat"), (512 * 13, "cut short"),
                        (512 * 22, "without its end-of-archive"), (512 * 23, "marker at byte 11,264 is incomplete")]:
        part = tmp_path / f"cut{cut}.tar"
        part.write_bytes(data[:cut])
        assert any(words in p for p in tar_problems(part, ["toc.dat", "3001.dat"])), (cut, tar_problems(part, []))


def test_a_tarball_wrapping_a_directory_dump_is_restored_as_that_dump(farm, tmp_path, restore, private_dir):
    inner = farm.dump(farm.states[-1], tmp_path / "work" / "shop", "directory")
    (inner / "._toc.dat").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    folder = tmp_path / "wrapped"
    folder.mkdir()
    with tarfile.open(folder / "shop_20261120_020000.tar", "w") as tar:
        tar.add(inner, arcname="shop")
    backup = discover([folder]).backups()[0]
    assert backup.restorable and backup.artifacts[0].format == "dump-tarball"
    db = restore(backup, private_dir)
    assert [a.format for a in db.dumps] == ["directory"]
    assert restoring.restored_cleanly(db) == []
    counts = db.row_counts()
    assert all(counts.values()), counts


def test_a_cluster_dump_from_another_platform_restores_with_notices(tmp_path, restore, private_dir):
    """Preload settings and alterations of the restoring role are skipped; a missing locale is named, then replaced."""
    locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    if "en_us.utf8" in locales:
        pytest.skip("en_US.utf8 is installed here, so it cannot be missing")
    text = ("--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\n"
            "ALTER ROLE app SET session_preload_libraries TO 'supautils';\nALTER ROLE postgres WITH NOSUPERUSER;\n"
            "CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'en_US.utf8';\n"
            "\\connect shop\n\n" + _plain("CREATE TABLE public.p (id int PRIMARY KEY);\nCREATE TABLE public.t (a int);\n"
                                           "COPY public.p (id) FROM stdin;\n1\n\\.\nCOPY public.t (a) FROM stdin;\n1\n\\.\n"
                                           "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_a_fkey FOREIGN KEY (a) "
                                           "REFERENCES public.p(id);\n")
            + "--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    folder = tmp_path / "cluster"
    folder.mkdir()
    (folder / "db_cluster-20-11-2026@02-00-00.backup").write_text(text)
    backup = discover([folder]).backups()[0]
    store = EvidenceStore(private_dir)
    assert store.inspect(backup.artifacts[0]).security == [], "a preload setting is no command for the host"
    plain = restore(backup, private_dir)
    assert any("en_US.utf8" in m and "locale_fallback" in m for m in plain.compat.mismatches)
    lost, _ = restoring.foreign_key_orphans(plain)  # its database was never created: a finding, not a traceback
    assert [f.what for f in lost] == ["the foreign keys of database shop cannot be checked"]
    fixed = restore(backup, private_dir, locale_fallback="C.UTF-8")
    assert fixed.compat.mismatches == [] and restoring.restored_cleanly(fixed) == []
    assert fixed.row_counts(["shop/public.t"]) == {"shop/public.t": 1}
    fixed_keys = restoring.foreign_key_orphans(fixed)
    assert fixed_keys[0] == [] and "validated by the server" in fixed_keys[1][0]
    assert any("preload" in s for s in fixed.skipped) and any("NOSUPERUSER" in s for s in fixed.skipped)


def test_supabase_is_detected_and_its_stand_ins_yield_to_tables_the_dump_defines():
    assert detect({"postgres", "anon", "authenticated"}, set())[0] == "supabase"
    assert detect({"postgres", "app"}, {"public.orders"})[0] == "vanilla"
    full = Profile(name="supabase", base="supabase").bootstrap(frozenset({"auth.users", "storage.buckets"}))
    assert "auth.users (" not in full[0] and "storage.buckets (" not in full[0] and "storage.objects (" in full[0]


def test_a_17_dump_with_17_only_syntax_restores_on_a_newer_server(tmp_path, restore, private_dir):
    """GRANT … WITH INHERIT (16+) and the MAINTAIN privilege (17+): the server is at least the dump's version."""
    if not any(i.major >= 17 for i in pgbin.installations()):
        pytest.skip("no PostgreSQL 17 or newer here (the embedded wheel brings 18)")
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app_20261120_020000.sql").write_text(_plain(
        "CREATE ROLE reader;\nCREATE ROLE helper;\nGRANT reader TO helper WITH INHERIT TRUE;\n"
        "CREATE TABLE public.t (a int);\nGRANT MAINTAIN ON TABLE public.t TO helper;\n"
        "COPY public.t (a) FROM stdin;\n1\n\\.\n", version="17.2"))
    db = restore(discover([folder]).backups()[0], private_dir)
    assert restoring.restored_cleanly(db) == [] and not [e for e in db.result.errors if "syntax" in e.message]
    assert db.row_counts(["public.t"]) == {"public.t": 1}
    assert re.search(r"PostgreSQL (1[7-9])\.", db.target_label), db.target_label
