"""A backup restored into its own disposable cluster, and the questions one can ask it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import manifest
from ..dumpscan import ForeignKey, PlainScanner, split_ident
from ..evidence import ArtifactEvidence, EvidenceStore
from ..model import ARCHIVE_FORMATS, Artifact, Backup
from ..servers import pgbin
from ..servers.cluster import ServerStartError
from ..servers.containers import ContainerError
from ..stock import StockEventTriggers
from . import progress
from .archive import archive_owners
from .compat import Compatibility, assess
from .cores import CoreShare
from .errors import DATA_LOSS, HARMFUL, RESTORER, RestoreError, RestoreResult, denied_extension
from .profiles import Profile, builtin, detect
from .providers import Provider, ProviderError
from .targets import DsnTarget, Inventory, Target

log = logging.getLogger(__name__)


# Exact counts run on this many connections at once (the server's cores do the scanning); a table of this size
# or more says what counting it cost.
COUNTERS = max(2, min(os.cpu_count() or 2, 8))
COSTLY_TABLE = 256 * 1024**2
# Tables smaller than this together are counted and joined on the checks' own connection: a new connection
# costs the server about what counting a small table does (a fleet of small databases paid two per backup).
SPREAD_FROM = 64 * 1024**2

# What pg_restore and the statement runner say when restore_timeout ends their sessions.
_STOPPED = re.compile(r"terminating connection due to administrator command|no connection to the server|"
                      r"server closed the connection|connection to server .* (?:lost|failed)|consuming input failed",
                      re.I)


class RestoreRefused(Exception):
    """The backup carries something that must not run; it is not restored."""


DATED = ("created_at", "updated_at", "inserted_at")  # columns that say when a row was written
DATED_TYPES = ("timestamptz", "timestamp", "date")


def dated_columns(conn: Any, names: tuple[str, ...] | set[str]) -> list[tuple[str, str, str]]:
    """(schema, table, column) of every timestamp or date column with one of ``names``, in tables that are not
    partitions (a partitioned table's own scan covers them), outside the system schemas."""
    rows = conn.execute(
        "select n.nspname, c.relname, a.attname from pg_attribute a "
        "join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
        "join pg_type t on t.oid = a.atttypid "
        "where c.relkind in ('r', 'p') and not c.relispartition and a.attnum > 0 and not a.attisdropped "
        "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%%' "
        "and t.typname = any(%s) and a.attname = any(%s) order by 1, 2, 3",
        (list(DATED_TYPES), sorted(names)),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def table_sizes(conn: Any) -> list[tuple[str, str, int, bool]]:
    """(schema, table, bytes on disk, partitioned) of every table, a partitioned one with its direct partitions:
    the order in which to scan them."""
    rows = conn.execute(
        "select n.nspname, c.relname, pg_table_size(c.oid) + coalesce((select sum(pg_table_size(i.inhrelid)) "
        "from pg_inherits i where i.inhparent = c.oid), 0), c.relkind = 'p' from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') "
        "and n.nspname not in ('pg_catalog', 'information_schema')"
    ).fetchall()
    return [(r[0], r[1], int(r[2]), bool(r[3])) for r in rows]


class QueryFailed(Exception):
    """A check's query on the restored database failed for another reason than a missing object: one sentence."""


class NoServer(Exception):
    """No server could be had for the backup; ``compat`` says what does not fit, when that is why."""

    headline = "no server to restore into."

    def __init__(self, message: str, compat: Compatibility) -> None:
        super().__init__(message)
        self.compat = compat


class NoRoom(NoServer):
    """The server's disk has less room than the restore needs: refused before minutes of work."""

    headline = "not restored: too little disk."


@dataclass(frozen=True)
class Orphans:
    relation: str
    count: int
    samples: tuple[str, ...]
    seconds: float = 0.0  # what the anti-join took


def _split_key(key: str) -> tuple[str | None, str, str]:
    db, _, rest = key.rpartition("/")
    parts = split_ident(rest) if '"' in rest else rest.split(".", 1)
    if len(parts) == 1:
        parts = ["public", parts[0]]
    return (db or None), parts[0], parts[1]


class ThreadConnections:
    """One connection per thread and database, for queries spread over a thread pool (a connection costs about as
    much as counting a small table); all closed on exit, so a copy of the database can be made afterwards."""

    def __init__(self, connect: Callable[[str], Any]) -> None:
        self.connect = connect
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def get(self, db: str) -> Any:
        mine = self._local.__dict__.setdefault("conns", {})
        conn = mine.get(db)
        if conn is None or conn.closed or conn.broken:
            conn = mine[db] = self.connect(db)
            with self._lock:
                self._opened.append(conn)
        return conn

    def __enter__(self) -> ThreadConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._opened:
            try:
                conn.close()
            except Exception:
                pass


class RestoredBackup:
    """Context manager: restore ``backup`` on enter (compatibility assessed first), clean up on exit."""

    def __init__(self, backup: Backup, provider: Provider, store: EvidenceStore, jobs: int = 2,
                 profile: Profile | None = None, tolerated: tuple[str, ...] = (), tools: pgbin.Tools = pgbin.ANY_TOOLS,
                 locale_fallback: str = "", timeout: float | None = None, progress: Any = None,
                 expected_seconds: float | None = None, one_pass_from: int | None = None) -> None:
        """``profile`` None: the dump's own roles and schemas decide (supabase when unmistakable); ``timeout``:
        seconds the restore may take before it is stopped (restore_timeout); ``progress``: a ``Reporter`` that is
        told what the restore is doing while it runs; ``expected_seconds``: how long earlier restores of the
        series suggest it takes (for the time left, where the manifest gives no size); ``one_pass_from``: a plain
        dump this large is read once, by its restore (``read_by_restore``)."""
        self.timeout = timeout
        self.one_pass_from = one_pass_from
        self._one_pass: set[str] = set()  # names of the dumps read by their restore
        self._roles_known: set[str] = set()
        self.late_roles: list[str] = []  # placeholders made as the restore met their names
        self.progress = progress
        self.expected_seconds = expected_seconds
        self.phases: dict[str, float] = {}  # seconds per step: server and database, then the restore's phases
        self.backup = backup
        self.provider = provider
        self.store = store
        self.jobs = jobs
        self.profile = profile or Profile()
        self.profile_reason = "configured" if profile is not None else ""
        self._auto_profile = profile is None
        self._user_tolerated = tuple(tolerated)
        self.tolerated = self._user_tolerated + self.profile.tolerated()
        self.locale_fallback = locale_fallback
        self.dumps: tuple = backup.dumps
        self.tools = tools
        self.target: Target | None = None
        self.result = RestoreResult(backup=backup.key, databases=[])
        self.evidence: list[ArtifactEvidence] = []
        self.compat = Compatibility()
        self.skipped: list[str] = []
        self.main_db = "restored"
        self._entries: dict[str, list] = {}
        self.target_label = ""
        self._counts: dict[str, int | None] | None = None
        self._newest: dict[str, object] = {}
        self._partitioned: set[tuple[str, str, str]] = set()
        self.copies: list[str] = []
        self.inventory = Inventory(frozenset(), frozenset(), frozenset())
        self.owners: frozenset[str] = frozenset()  # roles made for this restore that may own the dump's objects
        self.costs: list[str] = []  # what counting each large table took
        self._sessions: dict[str, Any] = {}
        self._room: tuple[int, str] | None = None
        self._sizes: dict[tuple[str, str, str], int] = {}  # bytes of each table counted: (db, schema, table)
        self._dated: dict[tuple[str, frozenset[str]], list[tuple[str, str, str]]] = {}
        self._cores = CoreShare(store.cache)  # the machine's cores, shared with the run's other restores
        self._held = contextlib.ExitStack()  # this backup counted among those the run holds restored
        self.jobs_now = jobs  # pg_restore's jobs for this restore: restore_jobs, or the cores' share of it

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> RestoredBackup:
        try:
            self._held.enter_context(self._cores.holding())
            self._prepare()
            t0 = time.monotonic()
            self._acquire()
            self.phases["server and database"] = round(time.monotonic() - t0, 3)
            self._restore()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _prepare(self) -> None:
        dumps = self.backup.dumps
        if not dumps:
            raise RestoreRefused(f"{self.backup.key} holds no database dump to restore "
                                 f"(found: {self.backup.format_summary()})")
        self._one_pass = {a.name for a in dumps if read_by_restore(a, self.one_pass_from) and not self.store.known(a)}
        evidence = [self.store.head(a) if a.name in self._one_pass else self.store.inspect(a, full=False)
                    for a in dumps]
        # Restore in the order of what each file holds (roles, schema, whole dumps, data), whatever the names say.
        order = sorted(range(len(dumps)), key=lambda i: (_content_rank(dumps[i], evidence[i]), i))
        self.dumps = dumps = tuple(dumps[i] for i in order)
        self.evidence = [evidence[i] for i in order]
        unsafe = [f"{a.name}: {s}" for a, ev in zip(dumps, self.evidence, strict=True) for s in ev.security]
        if unsafe:
            raise RestoreRefused("not restored, because the backup carries commands for the checking host:\n  "
                                 + "\n  ".join(unsafe[:10]))
        broken = [f"{a.name}: {ev.broken}" for a, ev in zip(dumps, self.evidence, strict=True) if ev.broken]
        if broken:
            raise RestoreRefused("not restored, because pg_restore does not stop on a tar archive this damaged:\n  "
                                 + "\n  ".join(broken[:10]))
        unreadable = [p for ev in self.evidence for p in ev.problems if ev.scan is None]
        if unreadable:
            raise RestoreRefused("not restored, because the dump cannot be read:\n  " + "\n  ".join(unreadable[:10]))
        for a in dumps:
            if a.format in ARCHIVE_FORMATS:
                info = self.store.archive_info(a)  # read above without error: pg_restore reads it at least
                self._entries[a.name] = info.entries
                if info.dbname and info.dbname not in ("postgres", "template1", "template0") and \
                        self.main_db == "restored":
                    self.main_db = info.dbname
        if self._auto_profile:
            scans = [ev.scan for ev in self.evidence if ev.scan is not None]
            name, why = detect({r for s in scans for r in s.roles_used}, {t for s in scans for t in s.tables})
            self.profile = builtin(name)
            self.profile_reason = f"auto-detected: {why}" if why else "auto-detected: the dump names no Supabase role or schema"
            self.tolerated = self._user_tolerated + self.profile.tolerated()

    def need_major(self) -> int | None:
        """The oldest server that can restore the dump: its archive's, its pg_dump's, or its syntax's (a dump that
        names no version but calls uuidv7() needs PostgreSQL 18)."""
        need = max([ev.min_restore_major or ev.dump_major or 0 for ev in self.evidence] or [0])
        features = [n for ev in self.evidence if ev.scan for n in ev.scan.features.values()]
        return max([need, *features]) or None

    def wanted_extensions(self) -> frozenset[str]:
        """Extensions the dump creates and the restore will ask the server for."""

        skip = set(self.profile.skipped_extensions())
        return frozenset(e for ev in self.evidence if ev.scan for e in ev.scan.extensions
                         if e not in skip and not denied_extension(e))

    def _acquire(self) -> None:
        """Get a server, prepare it for the profile, and compare it with the dump before restoring."""
        need_bytes = self.backup.room_needed
        kind = self.provider.kind
        try:
            self.target = self.provider.target(self.need_major(), need_bytes, f"the dump of {self.backup.key} needs it",
                                               extensions=self.wanted_extensions())
            self.target.__enter__()
        except (pgbin.NoSuitableBinaries, ServerStartError, ContainerError, ProviderError) as exc:
            self.target = None
            self.compat = assess(self.evidence, None, None, self.profile, kind, self.backup.series, self.tools)
            raise NoServer(str(exc), self.compat) from None
        self.target_label = self.target.label
        if self.target.contained:
            self.target.contain(cluster_dump=any(a.format == "dumpall" for a in self.dumps))
            self.owners = frozenset(self.target.make_roles(
                sorted({r for ev in self.evidence if ev.scan for r in ev.scan.roles_created})))
        if isinstance(self.target, DsnTarget):
            self.main_db = self.target.dbname
        # A cluster dump restores into the databases it names; what it holds before any \connect (a roles dump
        # followed by a pg_dump output, concatenated) belongs to the database under test, as other dumps do.
        tables = self.expected_tables()
        own_tables = any("/" not in t for t in tables)
        dumpall_only = all(a.format == "dumpall" for a in self.dumps)
        bootstrap = self.profile.bootstrap(frozenset(t.rsplit("/", 1)[-1] for t in tables))
        if not dumpall_only or own_tables or bootstrap:
            self.target.create_database(self.main_db)
            self.result.databases.append(self.main_db)
        for script in bootstrap:
            self.target.run_sql(self.main_db, script)
        if bootstrap:
            self.target.hand_over(self.main_db)
        created = {r for ev in self.evidence if ev.scan for r in ev.scan.roles_created}
        self._roles_known = created | {r for ev in self.evidence if ev.scan for r in ev.scan.roles_used}
        placeholders = self.target.make_roles(
            sorted({r for ev in self.evidence if ev.scan for r in ev.scan.roles_used} - created))
        # The roles made for this restore may own what the dump gives them: the restoring role joins them.
        self.owners = self.owners | frozenset(placeholders)
        self.target.lend_roles(sorted(self.owners))
        self.inventory = self.target.inventory(self.main_db if self.result.databases else self.target.admin_db)
        self.compat = assess(self.evidence, self.target, self.inventory, self.profile, kind, self.backup.series,
                             self.tools, self.locale_fallback)
        self._preflight()
        self.compat.compared.insert(0, f"profile {self.profile.name} ({self.profile_reason})")
        if placeholders:
            self.compat.compared.append(
                f"placeholder role(s) {', '.join(placeholders)} created (NOLOGIN, no privilege): the dump's owners "
                "and grantees are not on this server, so its ownership, grants and policies naming them restore "
                "as they were")

    def phase_times(self) -> dict[str, float]:
        """Seconds per step of this backup's restore, in order: the download (where this process fetched it;
        "download ahead" where it did so while checking the backup before, time that adds to no other step),
        the server and database, then the phases the restore was seen in (sampled every second)."""
        urls = [a.url for a in self.backup.artifacts if a.url]
        downloaded = sum(self.store.downloads.get(u, 0.0) for u in urls)
        ahead = sum(self.store.ahead.get(u, 0.0) for u in urls)
        alongside = sum(self.store.alongside.get(u, 0.0) for u in urls)
        return ({"download ahead": round(ahead, 3)} if ahead else {}) | \
            ({"download": round(downloaded, 3)} if downloaded else {}) | \
            ({"download during the restore": round(alongside, 3)} if alongside else {}) | self.phases

    def space_needed(self) -> tuple[int, str]:
        """(bytes the restored database will take, how that is known): its manifest's database size where one
        reads, else at least the dumps' own size (an estimate: a restore is rarely smaller than its dump). Read
        once: the preflight and the progress lines ask."""
        if self._room is None:
            self._room = self._space_needed()
        return self._room

    def _space_needed(self) -> tuple[int, str]:
        for a in self.dumps:
            if a.manifest is not None:
                try:
                    size = manifest.read(a.manifest).doc["database"]["size"]
                except manifest.ManifestError:
                    continue
                if size:
                    return size, "the database's size when the backup was taken (its manifest)"
        return sum(a.size for a in self.dumps), "at least the dump's own size (an estimate)"

    def _preflight(self) -> None:
        assert self.target is not None
        room = self.target.free_space()
        if room is None:
            return
        free, where = room
        need, basis = self.space_needed()
        if need > free:
            message = (f"the restore needs about {_size(need)} ({basis}); {_size(free)} are free in {where}, where "
                       f"the server's data lives: give a folder on a larger disk with --work-dir (config: work_dir)")
            self.compat.mismatches.append(f"too little disk: {message}")
            raise NoRoom(message, self.compat)
        self.compat.compared.append(f"disk: {_size(need)} needed ({basis}), {_size(free)} free in {where}")

    def _restore(self) -> None:
        target = self.target
        assert target is not None
        t0 = time.monotonic()
        jobs = f"-j {self.jobs}"
        if target.kind != "dsn":  # a server of this machine: its cores are shared with the run's other restores
            self.jobs_now, held = self._cores.jobs(self.jobs)
            if self.jobs_now < self.jobs:
                jobs = (f"-j {self.jobs_now}: restore_jobs {self.jobs} shared with the {held - 1} other backup(s) "
                        "this run holds restored on its cores")
        self.result.tool = f"{target.label}; " + ("pg_restore runs inside the container" if target.kind == "container"
                                                   else "pg_restore from this machine") + \
            f" ({jobs} where the archive allows)" + \
            ", plain SQL through psycopg (psql is never used)" + \
            (f"; {', '.join(sorted(self._one_pass))} read once, by the restore: it began after the schema, each "
             "statement checked before it ran (one_pass_from)" if self._one_pass else "") + \
            (f"; {target.containment}" if target.containment else "")
        skip = self.profile.skipped_extensions()
        wanted = {e for ev in self.evidence if ev.scan for e in ev.scan.extensions} - set(skip)
        vetted = target.vetted(wanted, self.inventory.extensions)
        stock = StockEventTriggers() if self.profile.supabase else None
        watchdog = None
        if self.timeout:
            watchdog = threading.Timer(self.timeout, lambda: target.stop_restore(
                sorted({self.main_db, *self.result.databases})))
            watchdog.daemon = True
            watchdog.start()
        try:
            with self._watched(target):
                self._restore_each(target, skip, vetted, stock)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if self.late_roles:
            self.compat.compared.append(
                f"placeholder role(s) {', '.join(self.late_roles)} created as the restore met them (NOLOGIN, no "
                "privilege): the dump names them after its first rows")
        if target.stopped.is_set():
            limit = f"{self.timeout:g} s"
            self.result.errors.append(RestoreError(
                HARMFUL, f"the restore took longer than restore_timeout ({limit}) and was stopped", "",
                "everything after the moment it was stopped", self.backup.key))
        self.result.seconds = time.monotonic() - t0

    @contextlib.contextmanager
    def _watched(self, target: Target) -> Iterator[None]:
        """Look at the restore while it runs, from a connection of its own opened at the first look (a restore
        shorter than a second opens none): the time spent in each phase (``phases``), and what it is doing said
        through ``progress`` when there is one."""
        size, basis = self.space_needed()
        total = size if "manifest" in basis else None
        conn: Any = None

        def look() -> progress.Sample:
            nonlocal conn
            if conn is None:
                conn = target.connect(target.admin_db)
            return progress.sample(conn, sorted({self.main_db, *self.result.databases}), total)

        reporter = self.progress
        watch = progress.Watch(look, reporter.say if reporter else None, self.backup.key,
                               reporter.every if reporter else 60.0, reporter.first if reporter else 60.0,
                               self.expected_seconds)
        try:
            with watch:
                yield
        finally:
            seen = watch.phases or {"restore": time.monotonic() - watch.started}  # too short for a look
            self.phases.update({k: round(v, 3) for k, v in seen.items()})
            if reporter is not None:
                reporter.done()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _roles_met(self, names: list[str]) -> list[str]:
        """Roles a dump read by its restore names past its first rows (grantees, owners of what comes after the
        data): made as those named before were, before the statement that names them runs; the names made."""
        new = [n for n in names if n not in self._roles_known]
        if not new or self.target is None:
            return []
        self._roles_known.update(new)
        made = self.target.make_roles(new)
        if made:
            self.target.lend_roles(made)
            self.owners = self.owners | frozenset(made)
            self.late_roles += made
        return made

    def _restore_each(self, target: Target, skip: tuple[str, ...], vetted: frozenset[str],
                      stock: StockEventTriggers | None) -> None:
        for i, (a, ev) in enumerate(zip(self.dumps, self.evidence, strict=True)):
            if target.stopped.is_set():
                break
            if a.format in ARCHIVE_FORMATS:
                jobs = self.jobs_now if a.format != "tar" and ev.has_offsets else 1
                entries = self._entries.get(a.name, [])
                omit = _stock_entries(entries, stock) if stock is not None else frozenset()
                done = target.restore_archive(a, self.store.archive_path(a), entries, self.main_db, jobs,
                                              self.tolerated, skip, vetted, omit)
                if omit and stock is not None:
                    done.skipped.append(stock.note())
                if self.owners and not done.fatal:
                    done.owned = [(self.main_db, *item) for item in archive_owners(entries, self.owners)]
            else:
                first = "postgres" if a.format == "dumpall" and self.main_db not in self.result.databases else self.main_db
                scanner = PlainScanner() if a.name in self._one_pass else None
                done = target.restore_plain(a, first, self.tolerated, skip, self.locale_fallback,
                                            self.inventory.locales, vetted, stock, self.owners, scanner,
                                            self._roles_met if scanner is not None else None)
                if scanner is not None and not done.refused and not target.stopped.is_set():
                    # Read to its end (or to where it cannot be read): the checks take this read, not another.
                    self.evidence[i] = self.store.remember(a, scanner.finish(),
                                                           [done.unreadable] if done.unreadable else [])
                    # Known once every byte was read (a dump from S3 restored while it downloaded): bytes that are
                    # not the ones the checksum describes were restored, and the restore cannot pass.
                    done.errors += [RestoreError(HARMFUL, f"the dump restored does not match its checksum: {c}", "",
                                                 "trust in every row restored", a.name)
                                    for c in self.evidence[i].checksums]
            if target.stopped.is_set():  # what stopping it caused is no error of the backup's: one finding says it
                done.errors = [e for e in done.errors if not _STOPPED.search(e.message)]
                done.fatal = ""
            self.result.errors += done.errors
            self.skipped += done.skipped
            if done.fatal:
                self.result.aborted = f"{a.name}: the restore stopped: {done.fatal}"
                self.result.errors.append(RestoreError(HARMFUL, done.fatal, "", "everything after the failure", a.name))
            for db in done.databases:
                if db not in self.result.databases:
                    self.result.databases.append(db)
            self._hand_over(target, done.owned)

    def _hand_over(self, target: Target, owned: list[tuple[str, str, str, str]]) -> None:
        """Objects the dump gives to roles made for this restore: to them, as it says (ownership as it was)."""
        by_db: dict[str, list[tuple[str, str, str]]] = {}
        for db, kind, name, owner in owned:
            if db in self.result.databases or db == self.main_db:
                by_db.setdefault(db, []).append((kind, name, owner))
        handed, refused = 0, []
        for db, items in by_db.items():
            done, failed = target.restore_owners(db, items)
            handed, refused = handed + done, refused + failed
        if handed:
            self.skipped.append(f"{handed} object(s) owned by the roles the dump gives them (note only)")
        self.skipped += [f"ownership not restored: {r}" for r in refused[:20]]

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._close_sessions()
        target, self.target = self.target, None
        if target is not None and self.copies:
            from psycopg import sql

            try:  # on a shared server (dsn) nothing else would drop them
                with target.admin() as conn:
                    for name in self.copies:
                        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except Exception:
                log.exception("dropping the copies of %s failed", self.backup.key)
        if target is not None:
            try:
                target.__exit__(et, ev, tb)
                self.provider.release(target)
            except Exception:
                log.exception("cleaning up after the restore of %s failed", self.backup.key)
        for a in self.dumps:
            try:
                self.store.release(a)
            except Exception:
                log.exception("removing a decompressed copy of %s failed", a.name)
        self._held.close()

    def qualify(self, kind: str, name: str) -> str:
        """``orders`` -> ``public.orders``: a table or function a restore error names without its schema, where the
        dump (tables) or the restored database (functions) has exactly one of that name; else ``name``."""
        if "." in name:
            return name
        if kind == "table":
            found = [t for t in self.expected_tables() if t.rsplit("/", 1)[-1].split(".", 1)[-1] == name]
            return found[0] if len(found) == 1 else name
        try:
            with self.connect_checks() as conn:
                rows = conn.execute("select distinct n.nspname from pg_proc p join pg_namespace n on "
                                    "n.oid = p.pronamespace where p.proname = %s", (name,)).fetchall()
        except Exception:  # noqa: BLE001 (the name as the error gave it)
            return name
        return f"{rows[0][0]}.{name}" if len(rows) == 1 else name

    def lost_data(self) -> list[str]:
        """What the restore left out of the data (tables, their rows, databases), in words; [] when every row the
        dump holds was restored. Checks of the rows do not judge a restore that lost some."""

        lost = [self.qualified_loss(e.lost) for e in self.result.harmful if e.lost.startswith(DATA_LOSS)]
        return ([self.result.aborted] if self.result.aborted else []) + lost

    def qualified_loss(self, lost: str) -> str:
        """What an error lost, its table named with its schema ("rows of table orders" -> "… public.orders")."""

        return re.sub(r"(?<=table )([^\s.]+)$", lambda m: self.qualify("table", m.group(1)), lost)

    def copy(self) -> str:
        """A copy of the restored main database (``CREATE DATABASE … TEMPLATE``) for a check that changes data,
        so the other checks keep the untouched restore; its name. Dropped with the restore."""
        from psycopg import sql

        assert self.target is not None
        name = f"{self.main_db}_copy{len(self.copies) + 1}"
        owner = sql.SQL(" OWNER {}").format(sql.Identifier(RESTORER)) if self.target.contained else sql.SQL("")
        # From PostgreSQL 15 a copy is WAL-logged block by block unless told to copy the files (after one
        # checkpoint): 2-3 times faster for a database of a gigabyte, and nothing here needs the WAL.
        strategy = sql.SQL(" STRATEGY = FILE_COPY") if self.target.server_major() >= 15 else sql.SQL("")
        self._close_sessions()  # a template must have no other session: the checks' own reconnect when asked
        with self.target.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(self.main_db))
                         + owner + strategy)
        self.copies.append(name)
        return name

    # -- questions ---------------------------------------------------------------------------

    def locate(self, key: str) -> tuple[str, str, str]:
        """(database, schema, table) of a table key such as ``public.users`` or ``shop/public.users``."""
        db, schema, table = _split_key(key)
        return db or self.main_db, schema, table

    def connect_checks(self, db: str | None = None):  # type: ignore[no-untyped-def]
        """A connection to a restored database (the main one by default) for checks: the restoring role."""
        return self._connect(db or self.main_db)

    def dsn(self, db: str | None = None) -> str:
        """The same as a libpq connection string."""
        assert self.target is not None
        from psycopg.conninfo import make_conninfo

        info = {k: v for k, v in self.target.user_conninfo(db or self.main_db).items() if v is not None}
        return make_conninfo(**{k: str(v) for k, v in info.items()})

    def _connect(self, db: str):  # type: ignore[no-untyped-def]
        assert self.target is not None
        return self.target.user_connect(db)

    @contextlib.contextmanager
    def session(self, db: str) -> Iterator[Any]:
        """The checks' own connection to ``db``, kept for every question of this restore (each new connection
        costs the server a process); a new one after a failure."""
        conn = self._session_conn(db)
        try:
            yield conn
        except BaseException:
            self._sessions.pop(db, None)
            conn.close()
            raise

    def dated_columns(self, db: str, names: tuple[str, ...] | set[str]) -> list[tuple[str, str, str]]:
        """``dated_columns`` of database ``db``, asked once per restore (counting and content freshness ask)."""
        key = (db, frozenset(names))
        if key not in self._dated:
            with self.session(db) as conn:
                self._dated[key] = dated_columns(conn, names)
        return self._dated[key]

    def _session_conn(self, db: str) -> Any:
        conn = self._sessions.get(db)
        if conn is None or conn.closed or conn.broken:
            conn = self._sessions[db] = self._connect(db)
        return conn

    def _close_sessions(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for conn in sessions.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (a server gone meanwhile)
                pass

    def expected_tables(self) -> list[str]:
        seen: list[str] = []
        for ev in self.evidence:
            if ev.scan:
                for t in ev.scan.tables:
                    if t not in seen:
                        seen.append(t)
        return seen

    def missing_tables(self) -> list[str]:
        import psycopg

        missing = []
        by_db: dict[str, list[str]] = {}
        for key in self.expected_tables():
            by_db.setdefault(self.locate(key)[0], []).append(key)
        for db, keys in by_db.items():
            try:
                names = [self.locate(key)[1:] for key in keys]
                with self.session(db) as conn:
                    found = {(r[0], r[1]) for r in conn.execute(
                        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                        "join unnest(%s::text[], %s::text[]) as x(s, t) on n.nspname = x.s and c.relname = x.t "
                        "where c.relkind in ('r','p')", ([n[0] for n in names], [n[1] for n in names]))}
                missing += [key for key, name in zip(keys, names, strict=True) if name not in found]
            except psycopg.OperationalError as exc:
                if f'database "{db}" does not exist' not in str(exc):
                    raise QueryFailed(f"looking for the tables of database {db} failed: "
                                      f"{str(exc).strip().splitlines()[0]}") from None
                missing += keys  # the database itself is missing
        return missing

    def row_counts(self, keys: list[str] | None = None) -> dict[str, int | None]:
        """Exact COUNT(*) per table, two connections at a time; None where the table (or its database) is missing.
        Counted once per restore: every check of the backup shares the figures. The same scan takes the newest
        value of each column named like DATED (see ``newest``), so content freshness reads no table again."""
        import psycopg
        from psycopg import sql

        if keys is None and self._counts is not None:
            return dict(self._counts)
        wanted = keys if keys is not None else self.expected_tables()
        dated: dict[tuple[str, str, str], list[str]] = {}
        size: dict[tuple[str, str, str], int] = {}
        if keys is None:
            for db in dict.fromkeys(self.locate(k)[0] for k in wanted):
                try:
                    for schema, table, column in self.dated_columns(db, DATED):
                        dated.setdefault((db, schema, table), []).append(column)
                    with self.session(db) as conn:
                        for schema, table, nbytes, partitioned in table_sizes(conn):
                            size[(db, schema, table)] = nbytes
                            if partitioned:
                                self._partitioned.add((db, schema, table))
                except psycopg.Error:
                    pass  # a missing database: counting says so
        newest: dict[str, object] = {}

        def count(key: str, connection: Callable[[str], Any]) -> tuple[str, int | None]:
            db, schema, table = self.locate(key)
            columns = dated.get((db, schema, table), [])
            started = time.monotonic()
            try:
                conn = connection(db)
                q = sql.SQL("select count(*){} from {}.{}").format(
                    sql.SQL("").join(sql.SQL(", max({})").format(sql.Identifier(c)) for c in columns),
                    sql.Identifier(schema), sql.Identifier(table))
                row = conn.execute(q).fetchone()
                prefix = "" if db == self.main_db else f"{db}/"
                for column, value in zip(columns, row[1:], strict=True):
                    newest[f"{prefix}{schema}.{table}.{column}"] = value
                nbytes = size.get((db, schema, table), 0)
                if nbytes >= COSTLY_TABLE:
                    self.costs.append(f"{key} ({nbytes / 1024**2:,.0f} MiB): counted exactly"
                                      f"{' with the newest ' + ', '.join(columns) if columns else ''} in "
                                      f"{time.monotonic() - started:.2f} s")
                return key, row[0]  # type: ignore[index]
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return key, None
            except psycopg.OperationalError as exc:
                if f'database "{db}" does not exist' in str(exc):
                    return key, None
                raise QueryFailed(f"counting the rows of {key} failed: {str(exc).strip().splitlines()[0]}") from None
            except psycopg.Error as exc:  # a timeout, a broken table: not "missing"
                raise QueryFailed(f"counting the rows of {key} failed: {str(exc).strip().splitlines()[0]}") from None

        # Largest first: the connections then finish together, not one scanning the biggest table last.
        ordered = sorted(wanted, key=lambda k: -size.get(self.locate(k), 0))
        self._sizes.update(size)
        if sum(size.values()) < SPREAD_FROM:
            done = dict(count(k, self._session_conn) for k in ordered)
        else:
            with ThreadConnections(self._connect) as conns, ThreadPoolExecutor(max_workers=COUNTERS) as pool:
                done = dict(pool.map(lambda k: count(k, conns.get), ordered))
        counts = {k: done[k] for k in wanted}
        if keys is None:
            self._counts, self._newest = dict(counts), newest
        return counts

    def leaf_counts(self) -> dict[str, int | None]:
        """The row counts without partitioned tables, whose rows are their partitions' (counted there): what the
        history and the reports keep, so that a database's rows add up to what it holds."""
        counts = self.row_counts()
        return {k: v for k, v in counts.items() if self.locate(k) not in self._partitioned}

    def newest(self) -> dict[str, object]:
        """max() of every DATED column of the counted tables, by ``[db/]schema.table.column`` (None: no rows)."""
        self.row_counts()
        return dict(self._newest)

    def _small(self, tables: set[str]) -> bool:
        """Whether these tables were counted and are under SPREAD_FROM together (one connection does)."""
        total = 0
        for t in tables:
            try:
                nbytes = self._sizes.get(self.locate(t))
            except Exception:  # noqa: BLE001 (a name that does not parse: its own check says so)
                return False
            if nbytes is None:
                return False
            total += nbytes
        return total < SPREAD_FROM

    def foreign_keys(self) -> list[ForeignKey]:
        keys: list[ForeignKey] = []
        for ev in self.evidence:
            if ev.scan:
                keys += ev.scan.foreign_keys
        return keys

    def validated_constraints(self, db: str) -> set[tuple[str, str, str]]:
        """(schema, table, constraint) of every foreign key the server holds as validated."""
        with self.session(db) as conn:
            rows = conn.execute(
                "select n.nspname, t.relname, c.conname from pg_constraint c "
                "join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace "
                "where c.contype = 'f' and c.convalidated"
            ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def orphans_all(self, asked: list[tuple[str, tuple[str, ...], str, tuple[str, ...], str]],
                    sample: int = 5) -> list[Orphans | Exception]:
        """Rows of each ``asked`` table whose key has no match in its ref_table (MATCH SIMPLE: NULL keys are not
        orphans), ((table, columns, ref_table, ref_columns, label) each), on as many connections as the cores (2 to
        8), in the order asked; an anti-join that cannot run gives its error."""
        from psycopg import sql

        def one(item: tuple[str, tuple[str, ...], str, tuple[str, ...], str],
                conns: ThreadConnections | None = None) -> Orphans | Exception:
            table, columns, ref_table, ref_columns, label = item
            try:
                db, schema, name = self.locate(table)
                _, rschema, rname = self.locate(ref_table)
            except Exception as exc:  # noqa: BLE001 (a name that does not parse: said by the check)
                return exc
            child = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            parent = sql.SQL("{}.{}").format(sql.Identifier(rschema), sql.Identifier(rname))
            not_null = sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(c)) for c in columns)
            match = sql.SQL(" and ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c))
                                          for c, r in zip(columns, ref_columns, strict=True))
            shown = sql.SQL(" || ', ' || ").join(sql.SQL("c.{}::text").format(sql.Identifier(c)) for c in columns)
            q = sql.SQL(
                "select count(*) over (), {shown} from {child} c where {not_null} "
                "and not exists (select 1 from {parent} p where {match}) limit {n}"
            ).format(shown=shown, child=child, not_null=not_null, parent=parent, match=match, n=sql.Literal(sample))
            started = time.monotonic()
            try:
                if conns is None:  # one question: the checks' own connection, no new one
                    with self.session(db) as conn:
                        rows = conn.execute(q).fetchall()
                else:
                    rows = conns.get(db).execute(q).fetchall()
            except Exception as exc:  # noqa: BLE001 (a table or column missing after the restore: said by the check)
                return exc
            count = rows[0][0] if rows else 0
            return Orphans(label, count, tuple(str(r[1]) for r in rows), time.monotonic() - started)

        if len(asked) <= 1 or self._small({t for t, *_ in asked} | {r for _, _, r, *_ in asked}):
            return [one(item) for item in asked]
        with ThreadConnections(self._connect) as conns, \
                ThreadPoolExecutor(max_workers=min(COUNTERS, len(asked))) as pool:
            return list(pool.map(lambda item: one(item, conns), asked))


def read_by_restore(artifact: Artifact, one_pass_from: int | None) -> bool:
    """Whether a plain dump is read once, by the restore that runs it (``one_pass_from``: the size from which it
    is; None: never). Its restore starts when the statements before its first rows are read (pg_dump's schema:
    enough to choose a server and make its roles); each statement after is checked as it comes, before it runs,
    so one that carries a command for the checking host ends the restore there. A smaller dump is read whole
    first and refused before any statement runs."""
    return one_pass_from is not None and artifact.format in ("plain", "dumpall") and artifact.size >= one_pass_from


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _stock_entries(entries: list, stock: StockEventTriggers) -> frozenset[int]:
    """Dump ids of an archive's entries for the platform's own event triggers (and their comments)."""
    for e in entries:
        if e.desc == "FUNCTION" and e.defn:
            stock.function(e.defn)
    omit = {e.dump_id for e in entries if e.desc == "EVENT TRIGGER" and e.defn and stock.is_stock(e.defn)}
    omit |= {e.dump_id for e in entries if e.desc == "COMMENT" and e.tag.startswith("EVENT TRIGGER ")
             and e.tag.split(" ", 2)[2] in stock.recognised}
    return frozenset(omit)


def _content_rank(artifact: Artifact, ev: ArtifactEvidence) -> int:
    """0 roles only, 1 schema without data, 2 schema and data (or unknown), 3 data without schema."""
    scan = ev.scan
    if scan is None:
        return 2
    # A plain dump's first rows (its head was read, not its rows: data_sections says they follow).
    rows = bool(scan.row_counts) or (scan.kind in ("plain", "dumpall") and scan.data_sections > 0)
    if not scan.tables and not rows and scan.roles_created:
        return 0
    if scan.tables and not rows:
        return 1
    if rows and not scan.tables:
        return 3
    return {"roles": 0, "schema": 1, "data": 3}.get(artifact.role, 2)


class RestoreCache:
    """Keeps the one backup this process restored last; restoring another removes it first.

    Tests are ordered backup by backup, so each backup is restored once per run
    while at most one restored database's disk is in use per process.
    """

    def __init__(self, provider: Provider, store: EvidenceStore, jobs: int, tools: pgbin.Tools = pgbin.ANY_TOOLS,
                 progress: Any = None, expected: Callable[[Backup], float | None] | None = None,
                 physical: Callable[[Backup], dict[str, Any]] | None = None) -> None:
        """``expected``: how long a backup's restore should take, from earlier restores of its series;
        ``physical``: what a base backup's recovery is asked (``RecoveredBackup``'s target and wal_archive)."""
        self.physical = physical
        self.progress = progress
        self.expected = expected
        self.provider = provider
        self.store = store
        self.jobs = jobs
        self.tools = tools
        self._current: RestoredBackup | None = None
        self._failures: dict[str, Exception] = {}

    def get(self, backup: Backup, profile: Profile | None = None, tolerated: tuple[str, ...] = (),
            locale_fallback: str = "", timeout: float | None = None,
            one_pass_from: int | None = None) -> RestoredBackup:
        if backup.key in self._failures:
            raise self._failures[backup.key]
        if self._current is not None and self._current.backup.key == backup.key:
            return self._current
        self.close()
        expected = None
        if self.expected is not None and self.progress is not None:
            try:
                expected = self.expected(backup)
            except Exception:  # noqa: BLE001 (a history that cannot be read: no time left from it)
                log.warning("reading earlier restore times for %s failed", backup.key, exc_info=True)
        kind: type[RestoredBackup] = RestoredBackup
        extra: dict[str, Any] = {"one_pass_from": one_pass_from}
        if backup.base_backup is not None:  # a physical backup is recovered, then asked the same questions
            from .recovery import RecoveredBackup

            kind, extra = RecoveredBackup, (self.physical(backup) if self.physical is not None else {})
        restored = kind(backup, self.provider, self.store, self.jobs, profile, tolerated, self.tools,
                        locale_fallback, timeout, self.progress, expected, **extra)
        try:
            self._current = restored.__enter__()
        except Exception as exc:
            self._failures[backup.key] = exc
            raise
        return self._current

    def close(self, last: bool = False) -> None:
        """Let go of the backup restored last; ``last``: the process restores nothing more, so its server need
        not be put back for another backup (a local cluster or container is thrown away; a shared server's
        database is always dropped)."""
        current, self._current = self._current, None
        if current is not None:
            if last and current.target is not None:
                current.target.wanted_again = False
            current.__exit__(None, None, None)
