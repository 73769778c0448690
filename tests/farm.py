"""Build folders of real backups, made by real pg_dump, shaped like the ones users keep."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import lz4.frame
import psycopg
import zstandard

from backupcheck import sampledb
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import Cluster

NIGHTS = 4


def nights(now: datetime, count: int = NIGHTS, end_offset_days: int = 0) -> list[datetime]:
    last = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if last > now:
        last -= timedelta(days=1)
    last -= timedelta(days=end_offset_days)
    return [last - timedelta(days=i) for i in reversed(range(count))]


def stamp(path: Path, when: datetime) -> None:
    t = when.timestamp()
    os.utime(path, (t, t))


def gz(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(target, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return target


@dataclass
class Farm:
    """A database at several nights, and the tools that dump it."""

    cluster: Cluster
    now: datetime
    states: list[str] = field(default_factory=list)  # database name per night

    def tool(self, major: int, name: str) -> str:
        for inst in pgbin.installations():
            if inst.major == major and inst.has(name):
                return inst.tool(name)
        raise LookupError(f"no PostgreSQL {major} {name}")

    def sql(self, db: str, statement: str) -> None:
        with psycopg.connect(**self.cluster.conninfo(db), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(statement)

    def others(self) -> tuple[str, ...]:
        """The databases of the cluster that are not one of the nights (clones other tests made)."""
        with psycopg.connect(**self.cluster.conninfo("postgres")) as conn:  # type: ignore[arg-type]
            names = [r[0] for r in conn.execute("select datname from pg_database where not datistemplate")]
        return tuple(n for n in names if n not in (*self.states, "postgres"))

    def clone(self, source: str, name: str) -> str:
        self.sql("postgres", f'create database "{name}" template "{source}"')
        return name

    def dump(self, db: str, target: Path, fmt: str = "custom", major: int | None = None,
             extra: tuple[str, ...] = ()) -> Path:
        tool = self.tool(major, "pg_dump") if major else None
        return sampledb.pg_dump(self.cluster, db, target, fmt, extra=extra, tool=tool)


def make_states(farm: Farm, count: int = NIGHTS) -> None:
    """One database per night; each night adds a batch of rows to the one before."""
    sampledb.create(farm.cluster, "night0", scale=0.3)
    farm.states = ["night0"]
    for i in range(1, count):
        name = farm.clone(farm.states[-1], f"night{i}")
        with psycopg.connect(**farm.cluster.conninfo(name), autocommit=True) as conn:  # type: ignore[arg-type]
            sampledb.populate(conn, scale=0.02, start=10 * i)
        farm.states.append(name)


def build_clean(farm: Farm, root: Path, newer: Farm | None = None) -> dict[str, int]:
    """Every shape users keep, all intact; returns series name -> number of backups.

    The pg_dump 16 and 18 series are dumped from ``newer`` (a PostgreSQL 16 server): a
    newer pg_dump of a 15.20 server writes column options 16 and 18 reject (see
    test_a_newer_pg_dump_of_a_15_20_server_is_caught_unrestorable).
    """
    newer = newer or farm
    times = nights(farm.now)
    expected: dict[str, int] = {}

    def series(name: str) -> None:
        expected[name] = len(times)

    for i, when in enumerate(times):
        db = farm.states[i]
        ts = when.strftime("%Y%m%d_%H%M%S")
        # custom format, with a sidecar checksum as backup scripts write it
        p = farm.dump(db, root / "custom" / f"shop_{ts}.dump")
        (p.parent / (p.name + ".sha256")).write_text(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n")
        # custom format named .sql and gzipped (a common script mistake that must still be handled)
        raw = farm.dump(db, root / "scripts" / f"scenescout_backup_{ts}.sql")
        gz(raw)
        # plain dumps: a bare one, and schema/data pairs gzipped
        farm.dump(db, root / "plain" / f"backup_{ts}.sql", "plain")
        gz(farm.dump(db, root / "pairs" / f"schema_{ts}.sql", "plain", extra=("--schema-only",)))
        gz(farm.dump(db, root / "pairs" / f"data_{ts}.sql", "plain", extra=("--data-only",)))
        # directory and tar formats, made by pg_dump 16 and 18 from the embedded wheel
        newer.dump(newer.states[i], root / "dir16" / f"vercel_{ts}", "directory", major=16)
        newer.dump(newer.states[i], root / "tar18" / f"analytics_{ts}.tar", "tar", major=18)
        # plain compressed with zstd, lz4 and bz2
        body = (farm.dump(db, root / "tmp" / f"x_{ts}.sql", "plain")).read_bytes()
        (root / "zstd").mkdir(exist_ok=True)
        (root / "zstd" / f"reports_{ts}.sql.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
        (root / "lz4").mkdir(exist_ok=True)
        (root / "lz4" / f"ledger_{ts}.sql.lz4").write_bytes(lz4.frame.compress(body))
        (root / "bz2").mkdir(exist_ok=True)
        (root / "bz2" / f"archive_{ts}.sql.bz2").write_bytes(bz2.compress(body))
        # a Supabase dashboard download: pg_dumpall, gzipped, named DD-MM-YYYY@HH-MM-SS
        # (the nights alone: a database another test cloned with planted damage is not this folder's)
        gz(sampledb.pg_dumpall(farm.cluster, root / "supabase" / f"db_cluster-{when:%d-%m-%Y@%H-%M-%S}.backup",
                               exclude=farm.others()))
        # a timestamped folder holding database.sql and configuration.json
        folder = root / "folders" / f"backup-{when:%Y-%m-%dT%H-%M-%S}-000Z"
        folder.mkdir(parents=True)
        farm.dump(db, folder / "database.sql", "plain")
        (folder / "configuration.json").write_text(json.dumps({"app": "shop", "night": i}))
        # config JSON files and a tarball of them
        (root / "configs").mkdir(exist_ok=True)
        cfg = root / "configs" / f"settings_{ts}.json"
        cfg.write_text(json.dumps({"feature_flags": {"beta": i % 2 == 0}, "night": i}))
        with tarfile.open(root / "configs" / f"storage_{ts}.tar.gz", "w:gz") as tar:
            tar.add(cfg, arcname=cfg.name)
    shutil.rmtree(root / "tmp")
    for d in root.rglob("*"):
        t = _time_of(d.name, times)
        if t:
            stamp(d, t)
    for name in ("shop", "scenescout_backup", "backup", "pairs", "vercel", "analytics", "reports", "ledger",
                 "archive", "db_cluster", "backup-folders", "settings", "storage"):
        series(name)
    return expected


def _time_of(name: str, times: list[datetime]) -> datetime | None:
    from backupcheck.timestamps import find_timestamp

    found = find_timestamp(name)
    return found.when if found else None


def add_git_bundles(root: Path, now: datetime) -> None:
    repo = root / "_repo"
    repo.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    # A repository with some history, so a night's commit changes the bundle's size only a little.
    (repo / "schema.sql").write_text("".join(f"-- line {n} {'x' * (n % 70)}\n" for n in range(4000)))
    for i, when in enumerate(nights(now)):
        (repo / "migrations.sql").write_text(f"-- migration {i}\n")
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", f"night {i}"], check=True, env=env)
        bundle = root / "bundles" / f"infra_{when:%Y%m%d_%H%M%S}.bundle"
        bundle.parent.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(repo), "bundle", "create", "-q", str(bundle), "--all"], check=True,
                       env=env, capture_output=True)
        stamp(bundle, when)
    shutil.rmtree(repo)


def build_faulty(farm: Farm, root: Path) -> dict[str, set[str]]:
    """One planted fault per family; returns test name -> the ids that must fail it."""
    times = nights(farm.now)
    last = len(times) - 1
    k = [t.strftime("%Y%m%dT%H%M%SZ") for t in times]
    ts = [t.strftime("%Y%m%d_%H%M%S") for t in times]

    # 1. a truncated gzip in a schema/data pair (second night)
    for i in range(len(times)):
        db = farm.states[i]
        gz(farm.dump(db, root / "pairs" / f"schema_{ts[i]}.sql", "plain", extra=("--schema-only",)))
        data = gz(farm.dump(db, root / "pairs" / f"data_{ts[i]}.sql", "plain", extra=("--data-only",)))
        if i == 1:
            blob = data.read_bytes()
            data.write_bytes(blob[: int(len(blob) * 0.9)])

    # 2. bit rot inside a gzipped custom archive (second night)
    for i in range(len(times)):
        p = gz(farm.dump(farm.states[i], root / "orders" / f"orders_{ts[i]}.sql"))
        if i == 1:
            blob = bytearray(p.read_bytes())
            blob[len(blob) // 2] ^= 0xFF
            p.write_bytes(bytes(blob))

    # 3. invalid JSON in a timestamped folder (second night)
    for i, when in enumerate(times):
        folder = root / "folders" / f"backup-{when:%Y-%m-%dT%H-%M-%S}-000Z"
        folder.mkdir(parents=True)
        farm.dump(farm.states[i], folder / "database.sql", "plain")
        (folder / "configuration.json").write_text('{"app": "shop", "night": ' + ("" if i == 1 else str(i)) + "}")

    # 4. orphans hidden behind a NOT VALID foreign key (newest night)
    bad = farm.clone(farm.states[last], "orphans")
    farm.sql(bad, "insert into audit_log values (900001, 990001, 'ghost', now()), (900002, 990002, 'ghost', now())")
    farm.sql(bad, "alter table audit_log add constraint audit_log_user_fk foreign key (user_id) references users(id) not valid")
    for i in range(len(times)):
        farm.dump(bad if i == last else farm.states[i], root / "shop" / f"shop_{ts[i]}.dump")

    # 5. a table that lost most of its rows since the previous night (newest night)
    lost = farm.clone(farm.states[last], "lost_rows")
    farm.sql(lost, "delete from audit_log where id % 10 <> 0")
    for i in range(len(times)):
        farm.dump(lost if i == last else farm.states[i], root / "crm" / f"crm_{ts[i]}.dump")

    # 6. a series that stopped three nights ago
    for i, when in enumerate(nights(farm.now, end_offset_days=3)):
        p = farm.dump(farm.states[i], root / "billing" / f"billing_{when:%Y%m%d_%H%M%S}.dump")
        stamp(p, when)

    # 7. a dump far smaller than usual (the night before the newest, so the newest still compares fine)
    tiny = farm.clone("night0", "tiny")
    farm.sql(tiny, "truncate order_items, orders, audit_log, users cascade")
    for i in range(len(times)):
        farm.dump(tiny if i == last - 1 else farm.states[i], root / "events" / f"events_{ts[i]}.dump")

    # 8. a gap: two nights missing in the middle of a nightly series
    ledger = nights(farm.now, count=6)
    for i, when in enumerate(ledger):
        if i in (2, 3):
            continue
        farm.dump(farm.states[min(i, len(farm.states) - 1)], root / "ledger" / f"ledger_{when:%Y%m%d_%H%M%S}.dump")

    # 9. a sidecar checksum that no longer matches its file (second night)
    for i in range(len(times)):
        p = farm.dump(farm.states[i], root / "invoices" / f"invoices_{ts[i]}.dump")
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if i == 1:
            digest = digest[::-1]
        (p.parent / (p.name + ".sha256")).write_text(f"{digest}  {p.name}\n")

    # 10. an empty file where a dump should be (a backup job that failed silently)
    (root / "notes").mkdir()
    (root / "notes" / f"notes_{ts[last]}.sql").write_bytes(b"")

    for d in root.rglob("*"):
        t = _time_of(d.name, times) if "billing" not in str(d) else None
        if t:
            stamp(d, t)
    return {
        "test_every_artifact_is_complete_and_readable": {f"pairs-{k[1]}", f"orders-{k[1]}", f"backup-{k[1]}",
                                                         f"notes-{k[last]}"},
        "test_backup_meets_minimum_size": {f"notes-{k[last]}"},
        "test_sidecar_checksums_match": {f"invoices-{k[1]}"},
        "test_no_gap_between_backups_exceeds_schedule": {"ledger"},
        "test_every_foreign_key_has_no_orphans": {f"shop-{k[last]}"},
        "test_no_table_lost_more_rows_than_allowed_since_previous_backup": {f"crm-{k[last]}"},
        "test_newest_backup_is_within_rpo": {"billing"},
        "test_backup_size_is_within_tolerance_of_usual": {f"events-{k[last - 1]}"},
    }


HOSTILE_LINES = {
    "shell": "\\! touch {marker}\n",
    "pipe": "\\o |touch {marker}\nSELECT 1;\n\\o\n",
    "program": "COPY public.users (id) TO PROGRAM 'touch {marker}';\n",
    "backtick": "\\set x `touch {marker}`\n",
}


def build_hostile(farm: Farm, root: Path, marker: Path) -> dict[str, Path]:
    """Plain dumps carrying commands for the host, one kind each; none of them may run."""
    out = {}
    times = nights(farm.now, count=1)
    for kind, line in HOSTILE_LINES.items():
        clean = farm.dump(farm.states[-1], root / "tmp" / f"{kind}.sql", "plain")
        # As the Supabase CLI writes them: \restrict commented out, so psql has no protection.
        text = "\n".join("-- " + ln if ln.startswith(("\\restrict", "\\unrestrict")) else ln
                         for ln in clean.read_text().splitlines()) + "\n"
        cut = text.index("CREATE TABLE")
        body = text[:cut] + line.format(marker=marker) + text[cut:]
        target = root / kind / f"{kind}_{times[0]:%Y%m%d_%H%M%S}.sql"
        target.parent.mkdir(parents=True)
        target.write_text(body)
        out[kind] = target
    shutil.rmtree(root / "tmp")
    return out


SUPABASE_SOURCE = """
CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN BYPASSRLS;
CREATE ROLE app_reader NOLOGIN;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
CREATE TABLE auth.users (id uuid PRIMARY KEY, email varchar(255));
CREATE TABLE public.profiles (id uuid PRIMARY KEY REFERENCES auth.users(id), username text NOT NULL);
CREATE TABLE public.notes (id bigserial PRIMARY KEY, owner uuid NOT NULL REFERENCES public.profiles(id), body text);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owners read their notes" ON public.notes FOR SELECT TO authenticated USING (auth.uid() = owner);
GRANT SELECT ON public.notes TO anon, authenticated, app_reader;
GRANT ALL ON public.notes, public.profiles TO service_role;
INSERT INTO auth.users SELECT md5(g::text)::uuid, 'user' || g || '@example.com' FROM generate_series(1, 50) g;
INSERT INTO public.profiles SELECT id, split_part(email, '@', 1) FROM auth.users;
INSERT INTO public.notes (owner, body) SELECT id, 'note ' || n FROM public.profiles, generate_series(1, 3) n;
"""
_PLATFORM = ("auth", "storage", "extensions", "graphql", "graphql_public", "realtime", "vault", "pgsodium")


def _like_supabase_cli(sql: str) -> str:
    """What `supabase db dump` does to pg_dump's output: no comments, \\restrict commented out, IF NOT EXISTS."""
    out = []
    for line in sql.splitlines():
        if line.startswith("--"):
            continue
        if line.startswith(("\\restrict", "\\unrestrict")):
            line = "-- " + line
        line = line.replace("CREATE SCHEMA ", "CREATE SCHEMA IF NOT EXISTS ").replace(
            "CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
        out.append(line)
    return "\n".join(out) + "\n"


def build_supabase(cluster: Cluster, root: Path, when: datetime) -> dict[str, Path]:
    """A Supabase project's backups, made by real pg_dump on a cluster shaped like Supabase's:
    the CLI trio (roles.sql, schema.sql, data.sql) and a dashboard download (pg_dumpall, gzipped)."""
    with psycopg.connect(**cluster.conninfo("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("CREATE DATABASE supa")
    with psycopg.connect(**cluster.conninfo("supa"), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(SUPABASE_SOURCE)
    trio = root / "cli" / f"{when:%Y-%m-%dT%H-%M-%S}"
    trio.mkdir(parents=True)
    tmp = root / "tmp"
    env = cluster.env()
    proc = subprocess.run([cluster.installation.tool("pg_dumpall"), "--roles-only"], env=env, capture_output=True,
                          text=True, check=True)
    # The CLI leaves out the roles the platform owns; the project's own roles stay.
    kept = [ln for ln in proc.stdout.splitlines()
            if "app_reader" in ln or not ln.startswith(("CREATE ROLE", "ALTER ROLE"))]
    (trio / "roles.sql").write_text(_like_supabase_cli("\n".join(kept)))
    excluded = [a for s in _PLATFORM for a in ("--exclude-schema", s)]
    schema = sampledb.pg_dump(cluster, "supa", tmp / "schema.sql", "plain", extra=("--schema-only", *excluded))
    text = _like_supabase_cli(schema.read_text())
    (trio / "schema.sql").write_text('CREATE EXTENSION IF NOT EXISTS "pgsodium" WITH SCHEMA "pgsodium";\n' + text)
    data = sampledb.pg_dump(cluster, "supa", tmp / "data.sql", "plain", extra=("--data-only",))
    (trio / "data.sql").write_text("SET session_replication_role = replica;\n" + _like_supabase_cli(data.read_text()))
    for f in trio.iterdir():
        stamp(f, when)
    stamp(trio, when)
    dashboard = root / "dashboard" / f"db_cluster-{when:%d-%m-%Y@%H-%M-%S}.backup"
    gz(sampledb.pg_dumpall(cluster, dashboard))
    shutil.rmtree(tmp)
    return {"trio": trio, "dashboard": dashboard.parent}
