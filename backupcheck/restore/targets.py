"""Where one backup is restored: a local cluster, a database in a container, or a database on a given server."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..dumpscan import PlainScanner
from ..model import Artifact
from ..pgarchive import TocEntry, major_of
from ..servers import pgbin
from ..servers.cluster import Cluster
from ..servers.containers import ContainerServer
from ..sniff import UnreadableError, open_sql
from ..stock import StockEventTriggers
from .archive import Pass, pg_restore_args, restore_passes
from .errors import RESTORER, RestoreError, denied_extension, outcome_of_pg_restore
from .plain import PlainRunner, create_database

log = logging.getLogger(__name__)

_NO_SUPERUSER = (f"restored as {RESTORER}, no superuser: no server programs, server files, untrusted languages or "
                 "network extensions")
CONTAINMENT = {
    "local": f"{_NO_SUPERUSER}; socket and files for this user only; server as its own OS account",
    "container": f"{_NO_SUPERUSER}; inside the container, its port on 127.0.0.1 only",
    "dsn": "none by backupcheck: the restore runs with the DSN user's own rights on your server "
           "(give it a role without superuser)",
}


@functools.cache
def _restorer_secret() -> str:
    """The restoring role's password, one per process: each server it makes is disposable and reached by this
    process only, and one password lets its SCRAM verifier be computed once (``_verifier``)."""
    return secrets.token_urlsafe(18)


_VERIFIERS: dict[str, str] = {}  # password -> its SCRAM verifier


def _verifier(conn: Any, password: str) -> str:
    """What CREATE ROLE … PASSWORD stores, computed here once per process (libpq's PQencryptPasswordConn), so no
    server hashes it again for every backup (4,096 rounds of SHA-256: 3 ms of a server's CPU each time); the
    password itself before PostgreSQL 10, which knows no SCRAM."""
    if conn.info.server_version < 100000:
        return password
    found = _VERIFIERS.get(password)
    if found is None:
        found = _VERIFIERS[password] = bytes(conn.pgconn.encrypt_password(
            password.encode(), RESTORER.encode(), b"scram-sha-256")).decode()
    return found


@dataclass
class Restored:
    """What restoring one artifact did."""

    errors: list[RestoreError] = field(default_factory=list)
    fatal: str = ""
    databases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    owned: list[tuple[str, str, str, str]] = field(default_factory=list)  # (database, kind, name, owner) to hand over
    unreadable: str = ""  # a dump read while it was restored: where and why it could not be read on
    refused: str = ""  # the same: the command for the checking host that ended its restore ("line N: why")


@dataclass(frozen=True)
class Inventory:
    """What the restoring server has before the dump is restored."""

    roles: frozenset[str]
    extensions: frozenset[str]  # available to CREATE EXTENSION
    tablespaces: frozenset[str]
    locales: frozenset[str] = frozenset()  # libc locales the server can create databases with


class Target:
    """A server and a fresh database to restore one backup into; a context manager."""

    kind = ""
    confined = False  # True: a shared server, so nothing outside the fresh database may change
    contained = False  # True: the restore runs as RESTORER, a role that is no superuser (see contain())

    gave_admin_dbs = False  # contain() handed postgres and template1 to the restoring role
    # False once nothing else will restore on this server in this process (the run's last backup): exit may then
    # throw a local cluster or a container away instead of putting it back (dropping a restored gigabyte: 0.2 s).
    wanted_again = True

    def __init__(self) -> None:
        self.server_version = ""
        self.tool_version = ""  # the pg_restore used
        self.tool_path = ""
        self._restorer_password = _restorer_secret()
        self.stopped = threading.Event()  # set when the restore ran out of its time (restore_timeout)
        self._admin: Any = None
        self._admin_lock = threading.RLock()
        self._shipped: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None  # see inventory()

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """The server's one admin connection, reused by every step of a restore (a new one after a failure):
        each connection costs the server a process start."""
        with self._admin_lock:
            conn = self._admin
            if conn is None or conn.closed or conn.broken:
                conn = self._admin = self.connect(self.admin_db)
            try:
                yield conn
            except BaseException:
                self.close_admin()
                raise

    def close_admin(self) -> None:
        with self._admin_lock:
            conn, self._admin = self._admin, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (a connection already gone)
                pass

    def free_space(self) -> tuple[int, str] | None:
        """(bytes free, where) on the disk the server's data is on, where this machine can see it."""
        return None

    def stop_restore(self, databases: list[str]) -> None:
        """End a restore that ran out of time: no more statements or passes start, and every session in its
        databases is terminated, which ends pg_restore and the statement running."""
        self.stopped.set()
        try:
            with self.connect(self.admin_db) as conn:  # its own: the restore's thread may hold the shared one
                conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                             "where datname = any(%s) and pid <> pg_backend_pid()", (databases,))
        except Exception as exc:  # noqa: BLE001 (a server gone meanwhile: the restore ends on its own)
            log.warning("ending the restore's sessions failed: %s", exc)

    def user_conninfo(self, dbname: str) -> dict[str, Any]:
        """Where the dump's statements and the checks' queries run: the restoring role when contained."""
        info = self.conninfo(dbname)
        if self.contained:
            info = {**info, "user": RESTORER, "password": self._restorer_password}
        return info

    def user_connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(**self.user_conninfo(dbname), autocommit=True)

    @property
    def containment(self) -> str:
        """What keeps a hostile dump's code from the host, in words for the report."""
        return CONTAINMENT.get(self.kind, "")

    def contain(self, cluster_dump: bool = True) -> None:
        """Create the restoring role and, for a cluster dump (``cluster_dump``), give it the databases such a
        dump restores into (postgres, template1); any other backup leaves them to the superuser, so nothing it
        runs can change what later databases are created from.

        The role is no superuser and gets none of pg_execute_server_program, pg_read_server_files,
        pg_write_server_files: whatever a dump runs while it restores (a CHECK constraint during COPY, an index
        expression, a materialized view refresh, a function assembling SQL at run time) runs with its rights,
        so the server refuses COPY … PROGRAM, server files, untrusted languages, event triggers and
        extensions that reach the network. No CREATEROLE: before PostgreSQL 16 it could grant those roles.
        """
        from psycopg import sql

        with self.admin() as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (RESTORER,)).fetchone()
            # A role of that name left by an earlier restore in a shared server gets these attributes anew.
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEROLE CREATEDB BYPASSRLS NOREPLICATION "
                                 "INHERIT PASSWORD {}").format(sql.SQL("ALTER" if exists else "CREATE"),
                                                               sql.Identifier(RESTORER),
                                                               sql.Literal(_verifier(conn, self._restorer_password))))
            if exists:  # and no membership it may have been given, no setting it may have set on itself
                for (granted,) in conn.execute("select r.rolname from pg_auth_members m join pg_roles r "
                                               "on r.oid = m.roleid where m.member = %s::regrole",
                                               (RESTORER,)).fetchall():
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(granted), sql.Identifier(RESTORER)))
                conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(RESTORER)))
            if cluster_dump:  # pg_dumpall output restores into these by name
                self.gave_admin_dbs = True
                for db in ("postgres", "template1"):
                    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db),
                                                                               sql.Identifier(RESTORER)))

    def make_roles(self, names: list[str]) -> list[str]:
        """Roles made beforehand by backupcheck, NOLOGIN and without any attribute or privilege, for the names the
        dump creates (the restoring role cannot create roles, so the dump's CREATE ROLE and ALTER ROLE … SUPERUSER
        are refused harmlessly) or only names (owners, grantees, policies the server lacks: placeholders, so what
        names them restores as it was); the names made. Nothing on a server that is not ours alone."""
        from psycopg import sql

        if not self.contained or not names:
            return []
        made = []
        with self.admin() as conn:
            have = {r[0] for r in conn.execute("select rolname from pg_roles")}
            for name in names:
                if name not in have and not name.startswith("pg_") and name.lower() != "public" and name != RESTORER:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
                    have.add(name)
                    made.append(name)
        return made

    def lend_roles(self, names: list[str]) -> None:
        """Make the restoring role a member of roles backupcheck made for this restore (no attribute, no login,
        no privilege of their own), so it reads what they own and objects can be handed to them as the dump
        says: ownership as it was."""
        from psycopg import sql

        if not self.contained or not names:
            return
        with self.admin() as conn:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.SQL(", ").join(sql.Identifier(n) for n in names),
                                                          sql.Identifier(RESTORER)))

    def restore_owners(self, dbname: str, items: list[tuple[str, str, str]]) -> tuple[int, list[str]]:
        """Hand objects to the owners the dump gives them, where those are roles made for this restore: ``items``
        are (kind, name as the dump writes it, owner). Each name is resolved by the server itself (to_regclass,
        to_regprocedure, ...: data, never SQL) and the statement is built from what it returns, so the superuser
        runs nothing of the dump's; the new owners need no privilege on the schema. Returns how many were handed
        over and what could not be."""
        import psycopg
        from psycopg import sql

        done, failed = 0, []
        if not self.contained or not items:
            return 0, []
        with self.connect(dbname) as conn:
            for kind, name, owner in items:
                lookup = _LOOKUP.get(kind)
                try:
                    found = conn.execute(lookup, (name,)).fetchone() if lookup else None
                    if not found or found[0] is None:
                        failed.append(f"{kind.lower()} {name}: not found after the restore")
                        continue
                    conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                        sql.SQL(kind), sql.SQL(found[0]), sql.Identifier(owner)))
                    done += 1
                except psycopg.Error as exc:
                    failed.append(f"{kind.lower()} {name} to {owner}: {str(exc).strip().splitlines()[0]}")
        return done, failed

    def hand_over(self, dbname: str) -> None:
        """Give the restoring role what backupcheck made as superuser in ``dbname`` (a profile's schemas, tables
        and functions), so the dump can fill and alter them."""
        if not self.contained:
            return
        with self.connect(dbname) as conn:
            conn.execute(_HAND_OVER.replace("RESTORER", RESTORER))

    def vetted(self, wanted: set[str] | frozenset[str], available: frozenset[str]) -> frozenset[str]:
        """Extensions the superuser creates for a contained restore: on the server, and not denied."""
        if not self.contained:
            return frozenset()
        return frozenset(e for e in wanted if e in available and not denied_extension(e))

    # -- what every target answers the same way, over a connection ---------------------------
    def conninfo(self, dbname: str) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError

    def connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(**self.conninfo(dbname), autocommit=True)

    def server_major(self) -> int:
        return major_of(self.server_version) or 0

    def create_database(self, name: str) -> None:
        with self.admin() as conn:
            create_database(conn, name, owner=RESTORER if self.contained else None,
                            throwaway=self.kind in ("local", "container"))

    admin_db = "postgres"

    def run_sql(self, dbname: str, script: str) -> None:
        with self.connect(dbname) as conn:
            conn.execute(script)

    def inventory(self, dbname: str) -> Inventory:
        """What the server has, before the dump is restored. The roles are asked each time (a restore adds its
        own); what the server ships (extensions, tablespaces, the libc locales initdb imported into every
        database) is asked once per server, on the admin connection: a fleet's backups each spared a connection."""
        with self.admin() as conn:
            roles = frozenset(r[0] for r in conn.execute("select rolname from pg_roles"))
            if self._shipped is None:
                exts = frozenset(r[0] for r in conn.execute("select name from pg_available_extensions"))
                spaces = frozenset(r[0] for r in conn.execute("select spcname from pg_tablespace"))
                # initdb imports the operating system's locales as libc collations: what CREATE DATABASE can use.
                locales = frozenset(r[0] for r in conn.execute(
                    "select collcollate from pg_collation where collprovider = 'c' and collcollate is not null"))
                self._shipped = (exts, spaces, locales | {"C", "POSIX"})
        return Inventory(roles, *self._shipped)

    def _read_server_version(self) -> None:
        with self.admin() as conn:
            self.server_version = str(conn.execute("show server_version").fetchone()[0]).split()[0]

    # -- restoring ---------------------------------------------------------------------------
    def restore_archive(self, artifact: Artifact, path: Path, entries: list[TocEntry], dbname: str, jobs: int,
                        tolerated: tuple[str, ...], skip_extensions: tuple[str, ...],
                        vetted: frozenset[str] = frozenset(), omit: frozenset[int] = frozenset()) -> Restored:
        raise NotImplementedError

    def restore_plain(self, artifact: Artifact, first_db: str, tolerated: tuple[str, ...],
                      skip_extensions: tuple[str, ...], locale_fallback: str = "",
                      locales: frozenset[str] = frozenset(), vetted: frozenset[str] = frozenset(),
                      stock: StockEventTriggers | None = None, owners: frozenset[str] = frozenset(),
                      scanner: PlainScanner | None = None,
                      on_roles: Callable[[list[str]], list[str]] | None = None) -> Restored:
        """Plain SQL through this package's statement runner (psql never reads a dump), for every kind of server.
        With ``scanner`` the dump was not read before: the scanner reads each statement before it runs (see
        PlainRunner._events), and what cannot be read ends the restore with a finding."""
        runner = PlainRunner(self.user_conninfo, first_db, artifact.name, tolerated, confined=self.confined,
                             skip_extensions=skip_extensions, locale_fallback=locale_fallback, locales=locales,
                             admin_conninfo=self.conninfo if self.contained else None, vetted_extensions=vetted,
                             stock=stock, owners=owners, stop=self.stopped)
        fatal = unreadable = ""
        try:
            with open_sql(artifact.path, artifact.compression) as (stream, preamble):
                if preamble.describe():
                    runner.skipped.append(f"{artifact.name}: {preamble.describe()}")
                runner.run(stream, scanner, on_roles)
            runner.finish()
        except (UnreadableError, OSError, EOFError) as exc:
            if scanner is None:
                raise
            unreadable = f"{artifact.name}: cannot be read past line {runner.line} ({exc})"
            fatal = f"the dump cannot be read past line {runner.line}: {exc}"
        finally:
            runner.close()
        if runner.refused:
            fatal = (f"stopped at {runner.refused}: the dump carries a command for the checking host there; nothing "
                     "from that statement on was run")
        return Restored(runner.errors, fatal, list(runner.databases), runner.skipped, runner.owned,
                        unreadable=unreadable, refused=runner.refused)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close_admin()


# How the server names an object the dump names, as text it made itself (quoted as needed): what the ALTER …
# OWNER TO above is built from. Kinds the dump's ownership statements use.
_LOOKUP = {
    "TABLE": "select to_regclass(%s)::text", "VIEW": "select to_regclass(%s)::text",
    "MATERIALIZED VIEW": "select to_regclass(%s)::text", "SEQUENCE": "select to_regclass(%s)::text",
    "FOREIGN TABLE": "select to_regclass(%s)::text", "FUNCTION": "select to_regprocedure(%s)::text",
    "PROCEDURE": "select to_regprocedure(%s)::text", "AGGREGATE": "select to_regprocedure(%s)::text",
    "TYPE": "select to_regtype(%s)::text", "DOMAIN": "select to_regtype(%s)::text",
    "SCHEMA": "select quote_ident(nspname) from pg_namespace where nspname = %s",
}


_HAND_OVER = """
DO $backupcheck$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n WHERE n.oid >= 16384 AND n.nspowner <> 'RESTORER'::regrole LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO RESTORER', r.nspname);
  END LOOP;
  FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND c.relowner <> 'RESTORER'::regrole
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO RESTORER', r.rel);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p WHERE p.oid >= 16384 AND p.proowner <> 'RESTORER'::regrole
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                           AND d.deptype = 'e') LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO RESTORER', r.fn);
  END LOOP;
END $backupcheck$;
"""


def run_passes(passes: list[Pass], run: Any, artifact: str, tolerated: tuple[str, ...],
               stop: threading.Event | None = None) -> tuple[list[RestoreError], str]:
    """Run each pass (``run(pass) -> (returncode, stderr)``) and gather what pg_restore said; stop at a fatal one."""
    errors: list[RestoreError] = []
    for p in passes:
        if stop is not None and stop.is_set():
            break
        code, stderr = run(p)
        more, fatal = outcome_of_pg_restore(code, stderr, artifact, tolerated)
        errors += more
        if fatal:
            return errors, fatal
    return errors, ""


def _pg_restore_here(target: Target, inst: pgbin.Installation, env: dict[str, str], dbname: str, jobs: int,
                     artifact: Artifact, path: Path, entries: list[TocEntry], tolerated: tuple[str, ...],
                     skip_extensions: tuple[str, ...], vetted: frozenset[str] = frozenset(),
                     omit: frozenset[int] = frozenset()) -> Restored:
    passes, skipped = restore_passes(entries, skip_extensions, vetted, target.contained, omit)

    def run(p: Pass) -> tuple[int, str]:
        user = target.conninfo(dbname) if p.as_admin else target.user_conninfo(dbname)
        penv = {**env, "PGUSER": str(user["user"])}
        if user.get("password"):
            penv["PGPASSWORD"] = str(user["password"])
        with tempfile.NamedTemporaryFile("w", suffix=".list") as lf:
            lf.write(p.listing or "")
            lf.flush()
            cmd = [inst.tool("pg_restore"), *pg_restore_args(dbname, jobs if p.parallel else 1, str(path),
                                                             lf.name if p.listing is not None else None,
                                                             no_owner=target.contained)]
            with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  errors="replace", env=penv, stdin=subprocess.DEVNULL) as proc:
                while True:
                    try:
                        _, stderr = proc.communicate(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        if target.stopped.is_set():  # out of time: its sessions are being ended; so is it
                            proc.kill()
        return proc.returncode, stderr

    errors, fatal = run_passes(passes, run, artifact.name, tolerated, target.stopped)
    return Restored(errors, fatal, [dbname], [f"extension {s}" for s in skipped])


class LocalTarget(Target):
    """A disposable cluster of its own, started from this machine's binaries."""

    kind = "local"
    contained = True

    def __init__(self, cluster: Cluster, before: tuple[set[str], set[str]] | None = None) -> None:
        super().__init__()
        self.cluster = cluster
        self.before = before  # the server's roles and databases when it was new: what a reset goes back to
        self.installation = cluster.installation
        self.server_version = self.tool_version = cluster.installation.version
        self.tool_path = cluster.installation.tool("pg_restore")

    @property
    def label(self) -> str:
        return f"local cluster, {self.installation.describe()}"

    def free_space(self) -> tuple[int, str] | None:
        # the folder the cluster's home is in: a home made at start (a recovery's) does not exist yet
        return shutil.disk_usage(self.cluster.home.parent).free, str(self.cluster.home.parent)

    def conninfo(self, dbname: str) -> dict[str, Any]:
        return dict(self.cluster.conninfo(dbname))

    @property
    def containment(self) -> str:
        return CONTAINMENT["local"].replace("its own OS account", f"OS account {self.cluster.os_user}")

    def restore_archive(self, artifact: Artifact, path: Path, entries: list[TocEntry], dbname: str, jobs: int,
                        tolerated: tuple[str, ...], skip_extensions: tuple[str, ...],
                        vetted: frozenset[str] = frozenset(), omit: frozenset[int] = frozenset()) -> Restored:
        return _pg_restore_here(self, self.installation, self.cluster.env(), dbname, jobs, artifact, path, entries,
                                tolerated, skip_extensions, vetted, omit)


    def __enter__(self) -> LocalTarget:
        if self.before is None:
            self.before = _globals(self)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        """Put the cluster back as it was found, for the next backup of this process, when that can be trusted:
        the restore ran as the restoring role and never owned postgres or template1 (no cluster dump). Else,
        or when the reset fails, the cluster is stopped and removed."""
        self.reusable = False
        if self.wanted_again and self.contained and not self.gave_admin_dbs and self.before is not None and et is None:
            try:
                _reset(self, *self.before)
                self.reusable = True
            except Exception as exc:  # noqa: BLE001 (the cluster is thrown away instead)
                log.warning("resetting %s after a restore failed (%s): a new server for the next backup",
                            self.cluster.home, exc)
        if not self.reusable:
            self.close_admin()  # a reusable one keeps it: the next backup's target takes it over (see follow)
            self.cluster.__exit__(et, ev, tb)

    def follow(self, previous: LocalTarget) -> LocalTarget:
        """Take over the admin connection and what the server ships from the target that used this cluster for
        the backup before (reset since): a fleet's backups each spared a connection and the server's catalogs."""
        with previous._admin_lock:
            self._admin, previous._admin = previous._admin, None
        self._shipped = previous._shipped
        return self

    reusable = False


def _globals(target: Target) -> tuple[set[str], set[str]]:
    """The roles and databases of a server, to put it back to them."""
    with target.admin() as conn:
        return ({r[0] for r in conn.execute("select rolname from pg_roles")},
                {r[0] for r in conn.execute("select datname from pg_database")})


def _reset(target: Target, roles: set[str], dbs: set[str]) -> None:
    """Drop the databases and roles a restore added, and take back what contain() gave (ContainerTarget and a
    reused LocalTarget)."""
    from psycopg import sql

    with target.admin() as conn:
        for (db,) in conn.execute("select datname from pg_database").fetchall():
            if db not in dbs:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            elif db in ("postgres", "template1"):  # contain() may have given them to the restoring role
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(db)))
        added = [r for (r,) in conn.execute("select rolname from pg_roles").fetchall() if r not in roles]
        if added:
            names = sql.SQL(", ").join(sql.Identifier(r) for r in added)
            # Where they own or were granted anything: pg_shdepend (shared by every database) says, so no other
            # database is connected to for nothing (a connection per backup in a fleet).
            holding = {r[0] for r in conn.execute(
                "select d.datname from pg_shdepend s join pg_database d on d.oid = s.dbid "
                "join pg_roles r on r.oid = s.refobjid where s.refclassid = 'pg_authid'::regclass "
                "and r.rolname = any(%s)", (added,))}
            for db in sorted(dbs - {"template0"}):
                if db == target.admin_db:
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(names))
                    continue
                if db not in holding:
                    continue
                with target.connect(db) as other:
                    other.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(names))
            conn.execute(sql.SQL("DROP ROLE {}").format(names))
        if RESTORER in roles:  # it stays: no setting it gave itself survives
            conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(RESTORER)))


class ContainerTarget(Target):
    """A fresh database in a running container; pg_restore and psql run inside it.

    Databases and roles the restore creates are dropped on exit, so the next backup
    restored in the same container starts from the same state.
    """

    kind = "container"
    contained = True

    def __init__(self, server: ContainerServer) -> None:
        super().__init__()
        self.server = server
        self.server_version = self.tool_version = server.version
        self.tool_path = f"pg_restore inside {server.image}"
        self._roles: set[str] = set()
        self._dbs: set[str] = set()

    @property
    def label(self) -> str:
        return f"container {self.server.image} (PostgreSQL {self.server.version})"

    def conninfo(self, dbname: str) -> dict[str, Any]:
        return dict(self.server.conninfo(dbname))

    def __enter__(self) -> ContainerTarget:
        self._roles, self._dbs = _globals(self)
        return self

    def restore_archive(self, artifact: Artifact, path: Path, entries: list[TocEntry], dbname: str, jobs: int,
                        tolerated: tuple[str, ...], skip_extensions: tuple[str, ...],
                        vetted: frozenset[str] = frozenset(), omit: frozenset[int] = frozenset()) -> Restored:
        passes, skipped = restore_passes(entries, skip_extensions, vetted, self.contained, omit)
        if path.is_dir():
            files: list[tuple[Path | bytes, str]] = [(f, f"dump/{f.name}") for f in sorted(path.iterdir()) if f.is_file()]
        else:
            files = [(path, "dump")]
        files += [((p.listing or "").encode(), f"pass{i}.list") for i, p in enumerate(passes)]
        folder = self.server.copy_in(files)

        def run(p: Pass) -> tuple[int, str]:
            i = passes.index(p)
            user = "postgres" if p.as_admin else RESTORER
            code, _out, err = self.server.exec_split(
                ["pg_restore", "-U", user, *pg_restore_args(dbname, jobs if p.parallel else 1, f"{folder}/dump",
                                                            f"{folder}/pass{i}.list" if p.listing is not None else None,
                                                            no_owner=True)])
            return code, err

        try:
            errors, fatal = run_passes(passes, run, artifact.name, tolerated, self.stopped)
        finally:
            self.server.remove(folder)
        return Restored(errors, fatal, [dbname], [f"extension {s}" for s in skipped])


    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        """Drop what the restore added: its databases, then its roles (or, when not wanted again, let the provider
        stop the container)."""
        if not self.wanted_again:
            self.dirty = True
            self.close_admin()
            return
        try:
            _reset(self, self._roles, self._dbs)
        except Exception as exc:
            # The container cannot be trusted to be clean: the provider replaces it.
            log.warning("cleaning container %s after a restore failed: %s", self.server.image, exc)
            self.dirty = True
        finally:
            self.close_admin()

    dirty = False


class DsnTarget(Target):
    """A fresh database on a server the user runs (a staging instance), dropped afterwards.

    Nothing outside that database changes: statements that create roles or databases,
    or \\connect to another database, are skipped and reported.
    """

    kind = "dsn"
    confined = True

    def __init__(self, params: dict[str, Any], installation: pgbin.Installation) -> None:
        super().__init__()
        self.params = params
        self.admin_db = str(params.get("dbname") or "postgres")
        self.installation = installation
        self.tool_version = installation.version
        self.tool_path = installation.tool("pg_restore")
        self.dbname = f"backupcheck_{secrets.token_hex(4)}"
        self._created = False

    @property
    def label(self) -> str:
        return f"server {describe_dsn(self.params)} (PostgreSQL {self.server_version}), database {self.dbname}"

    def conninfo(self, dbname: str) -> dict[str, Any]:
        return {**self.params, "dbname": dbname}

    def __enter__(self) -> DsnTarget:
        self._read_server_version()
        self.create_database(self.dbname)
        self._created = True
        return self

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        keys = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
                "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "passfile": "PGPASSFILE"}
        for key, var in keys.items():
            if self.params.get(key) not in (None, ""):
                env[var] = str(self.params[key])
        for var in ("PGPASSWORD", "PGPASSFILE"):
            if var not in env and var in os.environ:
                env[var] = os.environ[var]
        return env

    def restore_archive(self, artifact: Artifact, path: Path, entries: list[TocEntry], dbname: str, jobs: int,
                        tolerated: tuple[str, ...], skip_extensions: tuple[str, ...],
                        vetted: frozenset[str] = frozenset(), omit: frozenset[int] = frozenset()) -> Restored:
        return _pg_restore_here(self, self.installation, self._env(), dbname, jobs, artifact, path, entries,
                                tolerated, skip_extensions)


    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close_admin()
        if not self._created:
            return
        from psycopg import sql

        try:
            with self.admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
        except Exception as exc:
            log.warning("dropping database %s on %s failed: %s", self.dbname, describe_dsn(self.params), exc)


def describe_dsn(params: dict[str, Any]) -> str:
    """host:port/dbname as user, never the password."""
    host = params.get("host") or "localhost"
    port = params.get("port") or 5432
    user = params.get("user")
    return f"{host}:{port}/{params.get('dbname') or 'postgres'}" + (f" as {user}" if user else "")
