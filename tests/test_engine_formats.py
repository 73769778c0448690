"""The engine on real files: sniffing, archive headers, timestamps, discovery."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupcheck.discovery import discover
from backupcheck.pgarchive import read_archive
from backupcheck.sniff import sniff
from backupcheck.timestamps import find_timestamp

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, when, stem",
    [
        ("schema_20250115_020000.sql.gz", "2025-01-15T02:00:00", "schema"),
        ("data_20250115-020000.sql.gz", "2025-01-15T02:00:00", "data"),
        ("backup_20250115_020000.sql", "2025-01-15T02:00:00", "backup"),
        ("scenescout_backup_20250115.sql.gz", "2025-01-15T00:00:00", "scenescout_backup"),
        ("db_cluster-15-01-2025@02-00-11.backup.gz", "2025-01-15T02:00:11", "db_cluster"),
        ("backup-2025-01-15T02-00-00-000Z", "2025-01-15T02:00:00", "backup"),
        ("vercel_2025-01-15T02:00:00Z.json", "2025-01-15T02:00:00", "vercel"),
        ("orders_2025-01-15T03:00:00+01:00.dump", "2025-01-15T02:00:00", "orders"),
        ("orders-20250115T020000Z-full.dump", "2025-01-15T02:00:00", "orders_full"),
    ],
)
def test_timestamps_in_names_are_read_as_utc(name, when, stem):
    found = find_timestamp(name)
    assert found is not None
    assert found.when == datetime.fromisoformat(when).replace(tzinfo=UTC)
    assert found.stem.split(".")[0] == stem


def test_a_name_without_a_date_has_no_timestamp():
    assert find_timestamp("latest.dump") is None
    assert find_timestamp("backup_99999999.sql") is None


EXPECTED_FORMATS = {
    "custom": ("custom", ()), "scripts": ("custom", ("gzip",)), "plain": ("plain", ()),
    "pairs": ("plain", ("gzip",)), "dir16": ("directory", ()), "tar18": ("tar", ()),
    "zstd": ("plain", ("zstd",)), "lz4": ("plain", ("lz4",)), "bz2": ("plain", ("bz2",)),
    "supabase": ("dumpall", ("gzip",)), "bundles": ("git-bundle", ()),
}


def test_formats_are_told_by_content_not_by_name(clean_dir):
    for folder, (fmt, layers) in EXPECTED_FORMATS.items():
        if not (clean_dir / folder).exists():
            assert folder == "bundles" and shutil.which("git") is None
            continue
        for path in sorted((clean_dir / folder).iterdir()):
            if path.name.endswith(".sha256"):
                continue
            got = sniff(path)
            assert got[:2] == (fmt, layers), f"{path.name}: {got}"


def test_a_renamed_file_keeps_its_format(clean_dir, tmp_path):
    src = next((clean_dir / "custom").glob("*.dump"))
    disguised = tmp_path / "notes.txt"
    disguised.write_bytes(src.read_bytes())
    assert sniff(disguised)[0] == "custom"
    json_as_sql = tmp_path / "dump.sql"
    json_as_sql.write_text('{"not": "sql"}')
    assert sniff(json_as_sql)[0] == "json"


@pytest.mark.parametrize("content, note", [(b"", "no bytes"), (b"\x00\x01\x02garbage" * 50, "binary"),
                                           (b"hello, this is a letter\n", "neither SQL")])
def test_empty_and_unknown_files_are_named_not_guessed(tmp_path, content, note):
    p = tmp_path / "backup_20250115.sql"
    p.write_bytes(content)
    fmt, _layers, why = sniff(p)
    assert fmt in ("empty", "unknown")
    assert note in why


ARCHIVE_VERSION = {12: (1, 14), 13: (1, 14), 14: (1, 14), 15: (1, 14), 16: (1, 15), 17: (1, 16), 18: (1, 16)}


@pytest.mark.parametrize("folder, major", [("custom", None), ("dir16", 16), ("tar18", 18)])
def test_archive_headers_of_pg_dump_15_16_and_18_are_read(clean_dir, farm_major, folder, major):
    version = ARCHIVE_VERSION[major or farm_major]
    path = sorted(p for p in (clean_dir / folder).iterdir() if not p.name.endswith(".sha256"))[-1]
    fmt = sniff(path)[0]
    info = read_archive(path, fmt)
    assert info.version[:2] == version
    assert ("public", "orders") in info.tables()
    assert ("public", "orders") in info.data_tables()
    assert info.has_offsets
    # What choosing a server needs, read without the entries; the same header
    head = read_archive(path, fmt, header_only=True)
    assert (head.version, head.dump_version, head.created) == (info.version, info.dump_version, info.created)
    assert head.entries == [] and info.entries


def test_an_archive_written_to_a_pipe_has_no_offsets(farm, tmp_path):
    target = tmp_path / "piped.dump"
    proc = subprocess.run([farm.cluster.installation.tool("pg_dump"), "-Fc", farm.states[0]],
                          stdout=subprocess.PIPE, env=farm.cluster.env(), check=True)
    target.write_bytes(proc.stdout)
    # pg_dump to stdout cannot seek back to record offsets
    assert not read_archive(target, "custom").has_offsets


def test_discovery_groups_series_pairs_and_folders(clean_dir):
    listing = discover([clean_dir])
    names = {s.name for s in listing.series}
    assert {"shop", "scenescout_backup", "pairs", "vercel", "analytics", "db_cluster"} <= names
    pairs = next(s for s in listing.series if s.name == "pairs")
    assert all({a.role for a in b.artifacts} == {"schema", "data"} for b in pairs.backups)
    folders = next(s for s in listing.series if s.name == "folders-backup")
    assert all(sorted(a.name for a in b.artifacts) == ["configuration.json", "database.sql"] for b in folders.backups)
    shop = next(s for s in listing.series if s.name == "shop")
    assert all(b.artifacts[0].sidecars for b in shop.backups), "the .sha256 sidecar belongs to its dump"
    assert all(len(s.backups) == 4 for s in listing.series)
    assert listing.problems == []


def test_discovery_falls_back_to_the_archive_header_then_mtime(clean_dir, tmp_path):
    src = sorted((clean_dir / "custom").glob("*.dump"))[0]
    undated = tmp_path / "latest.dump"
    undated.write_bytes(src.read_bytes())
    note = tmp_path / "notes.sql"
    note.write_text("SELECT 1;\n")
    listing = discover([tmp_path])
    by_name = {b.artifacts[0].name: b for b in listing.backups()}
    assert by_name["latest.dump"].time_source == "header"
    assert by_name["notes.sql"].time_source == "mtime"


def test_a_missing_source_is_a_problem_not_a_crash(tmp_path):
    listing = discover([tmp_path / "nope"])
    assert listing.backups() == []
    assert "no such file or folder" in listing.problems[0]


def test_the_engine_never_imports_pytest():
    offenders = [p for p in (REPO / "backupcheck").rglob("*.py")
                 if any(line.strip().startswith(("import pytest", "from pytest", "from _pytest"))
                        for line in p.read_text().splitlines())]
    assert offenders == []
