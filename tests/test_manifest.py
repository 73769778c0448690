"""backupcheck dump and the manifest family: real pg_dump in every format, a writer during the dump, damage the
restore alone cannot see, hostile manifests, least privilege, and S3."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from backupcheck import dump, manifest

from . import farm as farmlib

KEY = "manifest-test-key-not-a-secret"


def dsn_of(farm: farmlib.Farm, db: str, **extra: str) -> str:
    info = {k: str(v) for k, v in farm.cluster.conninfo(db).items() if v is not None}
    return make_conninfo(**{**info, **extra})


def dumped(farm: farmlib.Farm, db: str, folder: Path, fmt: str = "custom", checksums: bool = False,
           args: list[str] | None = None, series: str = "shop", key: str | None = None) -> dump.Written:
    when = farmlib.nights(farm.now)[-1]
    suffix = {"custom": ".dump", "directory": "", "tar": ".tar", "plain": ".sql"}[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{series}_{when:%Y%m%d_%H%M%S}{suffix}"
    written = dump.dump(dsn_of(farm, db), out, fmt, checksums, args, key=key)
    farmlib.stamp(out, when)
    return written


def manifest_outcomes(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k.split("[")[0]: v for k, v in run.outcomes.items() if "manifest" in k}


def edit_manifest(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_a_writer_during_the_dump_changes_nothing_and_every_format_passes(farm, run_suites, tmp_path):
    """Counts taken in the dump's own snapshot equal the restore's exactly, while rows come and go meanwhile."""
    db = farm.clone(farm.states[-1], "manifest_busy")
    stop = threading.Event()
    changes = []

    def writer() -> None:
        with psycopg.connect(**farm.cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
            i = 0
            while not stop.is_set():
                conn.execute("insert into audit_log (id, user_id, action, at) select max(id) + 1, 1, 'busy', now() "
                             "from audit_log")
                conn.execute("delete from order_items where id = (select min(id) from order_items)")
                i += 1
                changes.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        busy = dumped(farm, db, tmp_path / "busy", checksums=True)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert len(changes) > 5, "the writer ran during the dump"
    with psycopg.connect(**farm.cluster.conninfo(db)) as conn:  # type: ignore[arg-type]
        live = conn.execute("select count(*) from audit_log").fetchone()[0]
    assert live != busy.doc["tables"]["public.audit_log"]["rows"], "the database moved on after the snapshot"
    assert busy.doc["snapshot"] == "dump" and busy.doc["artifact"]["sha256"] and busy.figures_seconds > 0
    for fmt in ("directory", "tar", "plain"):
        dumped(farm, farm.states[-1], tmp_path / "busy", fmt, series=f"shop{fmt}")
    farmlib.gz(dumped(farm, farm.states[-1], tmp_path / "busy", "plain", series="gzipped").artifact)  # after it
    run = run_suites("--backups", str(tmp_path / "busy"), "-m", "manifest")
    assert run.ret == 0, run.stdout[-3000:]
    assert len(run.outcomes) == 10 and set(run.outcomes.values()) == {"passed"}, run.outcomes


def test_a_changed_byte_is_caught_by_the_sha256_and_by_the_content_fingerprint(farm, run_suites, tmp_path):
    """A plain dump with one letter changed in a value restores cleanly with every count right: the manifest sees it."""
    w = dumped(farm, farm.states[-1], tmp_path / "b", "plain", checksums=True)
    text = w.artifact.read_bytes()
    at = text.index(b"@example", text.index(b"COPY public.users"))
    w.artifact.write_bytes(text[:at - 1] + (b"x" if text[at - 1:at] != b"x" else b"y") + text[at:])
    key = f"shop-{farmlib.nights(farm.now)[-1]:%Y%m%dT%H%M%SZ}"
    run = run_suites("--backups", str(tmp_path / "b"), "-m", "manifest or restore")
    assert run.outcomes[f"test_restores_without_harmful_errors[{key}]"] == "passed"
    assert run.outcomes[f"test_artifact_matches_its_manifest[{key}]"] == "failed"
    message = run.messages[f"test_artifact_matches_its_manifest[{key}]"]
    assert "the artifact is not the one its manifest describes" in message and w.doc["artifact"]["sha256"] in message
    edit_manifest(w.manifest, lambda d: d["artifact"].update(sha256=None))
    again = run_suites("--backups", str(tmp_path / "b"), "-m", "manifest")
    assert again.outcomes[f"test_artifact_matches_its_manifest[{key}]"] == "passed"
    assert again.outcomes[f"test_restore_matches_its_manifest[{key}]"] == "failed"
    said = again.messages[f"test_restore_matches_its_manifest[{key}]"]
    assert "the content of public.users differs from the manifest's fingerprint" in said
    assert f"with the same {w.doc['tables']['public.users']['rows']:,} rows" in said


def test_a_lost_row_a_left_out_table_and_another_database_are_each_named(farm, run_suites, tmp_path):
    when = farmlib.nights(farm.now)[-1]
    key = f"{{}}-{when:%Y%m%dT%H%M%SZ}"
    # One COPY row line gone (the sha256 removed too, as a careless edit would).
    lost = dumped(farm, farm.states[-1], tmp_path / "f", "plain", series="lost")
    lines = lost.artifact.read_text().split("\n")
    start = lines.index(next(line for line in lines if line.startswith("COPY public.orders ")))
    del lines[start + 3]
    lost.artifact.write_text("\n".join(lines))
    edit_manifest(lost.manifest, lambda d: d["artifact"].update(sha256=None))
    # A team's own pg_dump line with a -T added, and its manifest taken right after.
    own = tmp_path / "f" / f"own_{when:%Y%m%d_%H%M%S}.dump"
    subprocess.run([farm.cluster.installation.tool("pg_dump"), "-Fc", "-T", "audit_log", "-f", str(own),
                    "-d", farm.states[-1]], env=farm.cluster.env(), check=True)
    farmlib.stamp(own, when)
    after = dump.after(dsn_of(farm, farm.states[-1]), own)
    assert after.doc["snapshot"] == "after"
    # The right name, the manifest of the right database, the dump of another.
    other = dumped(farm, farm.states[-1], tmp_path / "f", series="other")
    farm.dump(farm.states[0], tmp_path / "x.dump").replace(other.artifact)
    farmlib.stamp(other.artifact, when)
    run = run_suites("--backups", str(tmp_path / "f"), "-m", "manifest")
    said = run.messages
    orders = lost.doc["tables"]["public.orders"]["rows"]
    assert run.outcomes[f"test_restore_matches_its_manifest[{key.format('lost')}]"] == "failed"
    assert "table public.orders holds fewer rows than the database had when the backup was taken" in \
        said[f"test_restore_matches_its_manifest[{key.format('lost')}]"]
    assert f"expected: {orders:,} rows exactly" in said[f"test_restore_matches_its_manifest[{key.format('lost')}]"]
    assert f"found:    {orders - 1:,} rows" in said[f"test_restore_matches_its_manifest[{key.format('lost')}]"]
    assert "table public.audit_log is not in the restored backup" in \
        said[f"test_restore_matches_its_manifest[{key.format('own')}]"]
    assert run.outcomes[f"test_artifact_matches_its_manifest[{key.format('other')}]"] == "failed"
    assert "the artifact is not the one its manifest describes" in \
        said[f"test_artifact_matches_its_manifest[{key.format('other')}]"]


def test_a_table_left_out_by_backupcheck_dumps_own_options_is_no_finding(farm, run_suites, tmp_path):
    w = dumped(farm, farm.states[-1], tmp_path / "t", args=["-T", "public.audit_*",
                                                          "--exclude-table-data=order_items"])
    assert w.doc["tables"]["public.audit_log"]["dumped"] is False
    assert w.doc["tables"]["public.order_items"]["data"] is False and w.doc["tables"]["public.orders"]["dumped"]
    run = run_suites("--backups", str(tmp_path / "t"), "-m", "manifest")
    assert run.ret == 0, run.stdout[-3000:]


@pytest.mark.parametrize("damage", ["truncated", "version", "huge", "hmac", "unsigned"])
def test_a_bad_manifest_fails_clearly_and_nothing_crashes(farm, run_suites, tmp_path, monkeypatch, damage):
    w = dumped(farm, farm.states[-1], tmp_path / "m", key=KEY)
    monkeypatch.setenv(manifest.KEY_ENV, KEY)
    text = w.manifest.read_text()
    why = {"truncated": "is not valid JSON (cut short?)", "version": "this backupcheck reads version 1",
           "huge": "has unknown key(s) padding", "hmac": "the signature does not match its content",
           "unsigned": "carries no signature"}[damage]
    if damage == "truncated":
        w.manifest.write_text(text[: len(text) // 2])
    elif damage == "version":
        edit_manifest(w.manifest, lambda d: d.update(backupcheck_manifest=2))
    elif damage == "huge":
        edit_manifest(w.manifest, lambda d: d.update(padding="x" * (10 << 20)))
    elif damage == "hmac":
        edit_manifest(w.manifest, lambda d: d["tables"]["public.orders"].update(rows=1))
    else:
        edit_manifest(w.manifest, lambda d: d.pop("hmac"))
    key = f"shop-{farmlib.nights(farm.now)[-1]:%Y%m%dT%H%M%SZ}"
    run = run_suites("--backups", str(tmp_path / "m"), "-m", "manifest")
    assert run.outcomes[f"test_artifact_matches_its_manifest[{key}]"] == "failed", run.stdout[-3000:]
    assert "the manifest cannot be used" in run.messages[f"test_artifact_matches_its_manifest[{key}]"]
    assert why in run.messages[f"test_artifact_matches_its_manifest[{key}]"]
    assert run.outcomes[f"test_restore_matches_its_manifest[{key}]"] == "skipped"
    assert "Traceback" not in run.stdout and "INTERNALERROR" not in run.stdout


def test_a_signed_manifest_passes_and_a_missing_one_fails_only_where_required(farm, run_suites, tmp_path,
                                                                              monkeypatch):
    dumped(farm, farm.states[-1], tmp_path / "s", key=KEY)
    monkeypatch.setenv(manifest.KEY_ENV, KEY)
    signed = run_suites("--backups", str(tmp_path / "s"), "-m", "manifest")
    assert signed.ret == 0 and set(signed.outcomes.values()) == {"passed"}, signed.stdout[-3000:]
    plain = tmp_path / "p"
    when = farmlib.nights(farm.now)[-1]
    farmlib.stamp(farm.dump(farm.states[-1], plain / f"shop_{when:%Y%m%d_%H%M%S}.dump"), when)
    key = f"shop-{when:%Y%m%dT%H%M%SZ}"
    optional = run_suites("--backups", str(plain), "-m", "manifest")
    assert optional.ret == 0 and set(optional.outcomes.values()) == {"skipped"}
    required = run_suites("--backups", str(plain), "-m", "manifest",
                          config="[series.shop]\nrequire_manifest = true\n")
    assert required.outcomes[f"test_artifact_matches_its_manifest[{key}]"] == "failed"
    assert "the backup has no manifest" in required.messages[f"test_artifact_matches_its_manifest[{key}]"]


def test_a_backup_role_without_superuser_dumps_and_says_what_it_could_not_record(farm, run_suites, tmp_path):
    db = farm.clone(farm.states[-1], "manifest_roles")
    farm.sql(db, "create sequence public.invoice_no; select nextval('public.invoice_no'); "
                 "create sequence public.private_no; select nextval('public.private_no')")
    farm.sql("postgres", "drop role if exists backup_job; create role backup_job login nosuperuser")
    farm.sql(db, "grant select on all tables in schema public to backup_job; "
                 "grant select on sequence public.invoice_no to backup_job")
    when = farmlib.nights(farm.now)[-1]
    out = tmp_path / "r" / f"shop_{when:%Y%m%d_%H%M%S}.dump"
    out.parent.mkdir()
    # pg_dump itself cannot read a sequence it may not select: the job leaves it out (-T covers sequences too).
    w = dump.dump(dsn_of(farm, db, user="backup_job"), out, "custom", False, ["-T", "public.private_no"])
    farmlib.stamp(out, when)
    assert w.doc["sequences"]["public.invoice_no"] == 1 and w.doc["sequences"]["public.private_no"] is None
    assert any("public.private_no" in line for line in w.doc["unrecorded"]), w.doc["unrecorded"]
    assert "not recorded: " in dump.summary(w)
    run = run_suites("--backups", str(tmp_path / "r"), "-m", "manifest")
    assert run.ret == 0, run.stdout[-3000:]


def readme_cron_line() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Proof from the moment of the backup"):]
    line = next(line for line in section.splitlines() if " backupcheck dump " in line)
    return line.split(None, 5)[5].replace("\\%", "%")  # after the five fields of the crontab line


def test_the_readmes_cron_line_dumps_uploads_to_s3_and_the_bucket_verifies(farm, run_suites, bucket, s3_endpoint,
                                                                          tmp_path):
    """The README's nightly line as a new user runs it (their host, folder and bucket put in), then pytest."""
    name, _writer = bucket
    when = farmlib.nights(farm.now)[-1]
    folder = tmp_path / "backups"
    folder.mkdir()
    password = "never-printed-9f3"
    line = readme_cron_line()
    assert line.startswith("backupcheck dump --dsn ") and "--to s3://" in line, line
    command = (line.replace('"host=db.internal dbname=shop user=backup"',
                            shlex.quote(dsn_of(farm, farm.states[-1], password=password)))
               .replace("/srv/backups/", f"{folder}/").replace("s3://acme-backups/database/", f"s3://{name}/nightly/")
               .replace("$(date -u +%Y%m%d_%H%M%S)", f"{when:%Y%m%d_%H%M%S}"))
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"
    assert f"uploaded s3://{name}/nightly/{out.name}.manifest.json" in proc.stdout.splitlines()[-1]
    assert password not in proc.stdout + proc.stderr
    again = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and "exists already: backupcheck dump never overwrites a backup" in again.stderr
    farmlib.stamp(out, when)
    local = run_suites("--backups", str(folder), "-m", "manifest")
    assert local.ret == 0 and len(local.outcomes) == 2, local.stdout[-3000:]
    config = (f'cache_dir = "{tmp_path / "cache"}"\nsources = [{{ url = "s3://{name}/nightly/", endpoint_url = '
              f'"{s3_endpoint}", region = "us-east-1" }}]\n')
    run = run_suites("-m", "manifest", config=config)
    assert run.ret == 0, run.stdout[-3000:]
    assert set(run.outcomes.values()) == {"passed"} and len(run.outcomes) == 2


def test_the_history_takes_earlier_nights_rows_from_their_manifests(farm, run_suites, tmp_path):
    """A first run over nights made with backupcheck dump judges trends from the manifests alone: the earlier dumps
    themselves are cut short here, so no row of theirs could be counted."""
    db = farm.clone(farm.states[0], "manifest_nights")
    farm.sql(db, "create table public.signups (id int primary key)")
    folder = tmp_path / "nights"
    folder.mkdir()
    start = farmlib.nights(farm.now)[-1] - timedelta(days=7)
    for night in range(8):
        farm.sql(db, f"insert into public.signups select g from generate_series(1, {min(night, 4) * 100}) g "
                     "on conflict do nothing")
        when = start + timedelta(days=night)
        out = folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"
        dump.dump(dsn_of(farm, db), out)
        farmlib.stamp(out, when)
    for earlier in sorted(folder.glob("*.dump"))[:-1]:
        earlier.write_bytes(earlier.read_bytes()[:200])
    run = run_suites("--backups", str(folder), "--history", str(tmp_path / "h.sqlite"), "-m", "trends",
                     config="[series.shop]\ntrend_min_history = 3\nstall_nights = 3\n")
    [key] = [k for k in run.outcomes if k.startswith("test_no_table_drops_leaks_or_stalls")]
    assert run.outcomes[key] == "failed", run.stdout[-3000:]
    assert "public.signups has not grown for 3 nights" in run.messages[key], run.messages[key]


def test_a_role_shaped_like_supabases_postgres_counts_every_row_under_row_level_security(farm, run_suites, tmp_path):
    """Supabase's postgres role is no superuser but reads all data and bypasses RLS: its counts are whole."""
    db = farm.clone(farm.states[-1], "manifest_supabase_role")
    farm.sql(db, "create table public.notes (id int primary key, owner text); "
                 "insert into public.notes select g, 'u' || g from generate_series(1, 40) g; "
                 "alter table public.notes enable row level security; alter table public.notes force row level security; "
                 "create policy own on public.notes using (owner = current_user)")
    farm.sql("postgres", "drop role if exists supa_postgres; create role supa_postgres login nosuperuser createdb "
                         "createrole bypassrls in role pg_read_all_data")
    when = farmlib.nights(farm.now)[-1]
    out = tmp_path / "s" / f"shop_{when:%Y%m%d_%H%M%S}.dump"
    out.parent.mkdir()
    w = dump.dump(dsn_of(farm, db, user="supa_postgres"), out, "custom", True)
    farmlib.stamp(out, when)
    assert w.doc["tables"]["public.notes"]["rows"] == 40 and w.doc["unrecorded"] == []
    run = run_suites("--backups", str(tmp_path / "s"), "-m", "manifest")
    assert run.ret == 0, run.stdout[-3000:]


def test_wrong_credentials_an_option_of_ours_or_a_failing_pg_dump_leave_nothing_behind(farm, tmp_path, monkeypatch):
    out = tmp_path / "shop.dump"
    scratch = tmp_path.parent / f"{tmp_path.name}-tmp"  # where the private service file (with the password) goes
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(dump.DumpError, match='cannot connect: .*role "nobody" does not exist'):
        dump.dump(dsn_of(farm, farm.states[-1], user="nobody", password="hunter2-not-shown"), out)
    with pytest.raises(dump.DumpError, match="pg_dump option -Fd is set by backupcheck dump itself"):
        dump.dump(dsn_of(farm, farm.states[-1]), out, pg_args=["-Fd"])
    with pytest.raises(dump.DumpError, match=r"pg_dump .* failed \(exit 1\): .*no matching tables were found"):
        dump.dump(dsn_of(farm, farm.states[-1]), out, pg_args=["--strict-names", "-t", "no_such_table"])
    assert sorted(tmp_path.iterdir()) == [], "no partial dump or manifest stays"
    cli = subprocess.run([sys.executable, "-m", "backupcheck", "dump", "--dsn",
                          dsn_of(farm, farm.states[-1], user="nobody", password="hunter2-not-shown"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(scratch)})
    assert cli.returncode == 1 and "backupcheck dump: cannot connect" in cli.stderr
    assert "hunter2" not in cli.stdout + cli.stderr and "Traceback" not in cli.stderr
    assert list(scratch.iterdir()) == [], "no service file with the password outlives a connection that failed"
