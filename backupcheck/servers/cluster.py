"""Disposable PostgreSQL clusters: on a unix socket only, tuned for throwaway restores, swept after a crash."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from . import account
from .account import SERVER_ACCOUNT
from .pgbin import Installation
from .templates import TemplateCache

log = logging.getLogger(__name__)

RUN_PREFIX = "backupcheck-run-"
PORT = 5432

# Safe only because the cluster is thrown away: nothing here needs to survive a crash.
THROWAWAY_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "archive_mode": "off",
    "autovacuum": "off",
    "maintenance_work_mem": "'512MB'",
    "work_mem": "'64MB'",
    "shared_buffers": "'256MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'1h'",
    "max_connections": "30",
    "jit": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "dynamic_shared_memory_type": "mmap",
    "unix_socket_permissions": "0700",  # with its folder 0700 too: only the server's account (and root) connect
}


class ServerStartError(Exception):
    """A disposable server did not come up; the message carries its log's tail."""


def _process_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):
            return None  # a zombie is dead, whether or not anybody has reaped it
        return fields[19].decode()  # starttime, in clock ticks since boot
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    now = _process_start_time(pid)
    return now is not None and (start is None or now == start)


def _pdeathsig() -> None:
    """In the child: die when the process that started us dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _kill_postmaster(datadir: Path) -> None:
    pidfile = datadir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"postgres" in cmdline and str(datadir).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep_stale_runs(base: Path) -> list[Path]:
    """Remove what runs killed without cleanup left in ``base``; return what was removed."""
    removed = []
    for run in sorted(base.glob(RUN_PREFIX + "*")):
        owner = run / "owner.json"
        try:
            info = json.loads(owner.read_text())
            if _alive(int(info["pid"]), info.get("start")):
                continue
        except (OSError, ValueError, KeyError):
            # No readable owner file: only sweep it once it is clearly old.
            with contextlib.suppress(OSError):
                if time.time() - run.stat().st_mtime < 3600:
                    continue
        for pidfile in _pidfiles(run):
            _kill_postmaster(pidfile.parent)
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    return removed


class RunDir:
    """A private folder for one pytest process, marked with its owner so a later run can sweep it."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base) if base else Path(tempfile.gettempdir())
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        sweep_stale_runs(self.base)
        self.path = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=self.base))
        user = server_user()
        if user:  # as root: the server's own account may pass through (group), nobody else may enter
            os.chown(self.path, 0, user[1])
            os.chmod(self.path, 0o710)
        else:
            os.chmod(self.path, 0o700)
        pid = os.getpid()
        (self.path / "owner.json").write_text(json.dumps({"pid": pid, "start": _process_start_time(pid)}))
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            for pidfile in _pidfiles(self.path):
                _kill_postmaster(pidfile.parent)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _pidfiles(folder: Path) -> list[Path]:
    """postmaster.pid files under ``folder``; folders removed meanwhile (a removal in the background) are skipped."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder, onerror=lambda _exc: None):
        if "postmaster.pid" in files:
            found.append(Path(root) / "postmaster.pid")
    return found


def server_user() -> tuple[int, int] | None:
    """The account servers run as (None: ours); see ``account.server_user``."""
    try:
        return account.server_user()
    except account.AccountError as exc:
        raise ServerStartError(str(exc)) from None


def check_reachable(folder: Path) -> None:
    """As root the server runs as its own account, which must be able to pass through every parent folder."""
    user = server_user()
    if user is None:
        return
    for parent in [folder, *folder.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue
        if st.st_uid == user[0] or (st.st_gid == user[1] and st.st_mode & 0o010):
            continue
        if not st.st_mode & 0o001:
            raise ServerStartError(
                f"PostgreSQL runs as the system account '{SERVER_ACCOUNT}' here (initdb refuses root), and it "
                f"cannot enter {parent} (mode {oct(st.st_mode & 0o777)}). Fix: choose a --work-dir (config: "
                f"work_dir) outside private folders, or allow passing through with: chmod o+x {parent}"
            )


class Cluster:
    """One running disposable server on a unix socket; use as a context manager."""

    def __init__(self, installation: Installation, template: Path, home: Path,
                 remove: Callable[[Path], None] | None = None) -> None:
        self.installation = installation
        self.template = template
        self.home = home
        self._remove = remove or (lambda path: shutil.rmtree(path, ignore_errors=True))
        self.datadir = home / "data"
        self.sockdir = home / "sock"
        self.logfile = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self.stopped = threading.Event()  # set once the server is gone

    @property
    def os_user(self) -> str:
        user = server_user()
        return pwd.getpwuid(user[0]).pw_name if user else pwd.getpwuid(os.geteuid()).pw_name

    def conninfo(self, dbname: str = "postgres") -> dict[str, str | int]:
        return {"host": str(self.sockdir), "port": PORT, "user": "postgres", "dbname": dbname}

    def env(self) -> dict[str, str]:
        """Environment for client tools: the socket, no password, nothing of the caller's PG* settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=str(self.sockdir), PGPORT=str(PORT), PGUSER="postgres")
        return env

    def __enter__(self) -> Cluster:
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start(self) -> None:
        user = server_user()
        self.home.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(self.template), str(self.datadir)], check=True)
        self.sockdir.mkdir(mode=0o700)
        os.chmod(self.home, 0o700)
        os.chmod(self.sockdir, 0o700)  # the socket: for the server's account, and root, only
        if user:
            os.chown(self.home, *user)
            os.chown(self.sockdir, *user)
        with open(self.logfile, "wb") as logf:
            self.process = subprocess.Popen(
                [self.installation.tool("postgres"), "-D", str(self.datadir), "-k", str(self.sockdir),
                 "-p", str(PORT), "-c", "listen_addresses="],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                user=user[0] if user else None, group=user[1] if user else None,
                extra_groups=[] if user else None, preexec_fn=_pdeathsig, start_new_session=True,
            )
        self._wait_ready(timeout=60)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        sock = self.sockdir / f".s.PGSQL.{PORT}"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(f"PostgreSQL exited with code {self.process.returncode} at start.\n{self.log_tail()}")
            if sock.exists():
                try:
                    with psycopg.connect(**self.conninfo(), connect_timeout=5) as conn:  # type: ignore[arg-type]
                        conn.execute("select 1")
                    return
                except psycopg.OperationalError:
                    pass
            time.sleep(0.02)
        raise ServerStartError(f"PostgreSQL did not accept connections within {timeout:.0f} s.\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "server log (last lines):\n" + "\n".join("  " + line for line in text[-lines:])

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        steps = [self._stop, lambda: self._remove(self.home)]
        for step in steps:
            try:
                step()
            except Exception:  # teardown goes on; the test's own error is not hidden
                log.exception("cleanup step failed for %s", self.home)

    def _stop(self) -> None:
        try:
            self._stop_server()
        finally:
            self.stopped.set()

    def _stop_server(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown: nothing to keep
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def fast_base() -> Path | None:
    """A RAM-backed folder for data directories, when the machine has one (Linux: /dev/shm)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class ClusterFactory:
    """Makes clusters from one template data directory per installation (initdb once, copy after).

    With ``fastdir`` (a tmpfs run folder), templates and clusters whose expected
    size fits comfortably live in RAM: a cluster starts in 0.1 s there against
    about 1 s on a disk mounted with ``discard`` right after a delete.
    """

    RESERVE = 2 * 1024**3  # leave this much of the tmpfs free

    def __init__(self, rundir: Path, fastdir: Path | None = None, templates: TemplateCache | None = None) -> None:
        self.rundir = rundir
        self.fastdir = fastdir
        self.templates = templates  # kept between runs: no initdb after the first run
        self._templates: dict[Path, Path] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._background: list[threading.Thread] = []
        self._ready: dict[Path, tuple[threading.Event, list[Cluster]]] = {}  # started ahead, per installation
        self._ahead: list[Cluster] = []  # every cluster started ahead, until wait() stops it
        self._starting: list[threading.Event] = []  # set when a prewarm has done what it will do
        self._closing = False

    def _in_background(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        with self._lock:
            self._background.append(thread)
        thread.start()

    def prewarm(self, inst: Installation, start_for: int | None = None) -> None:
        """Make ``inst``'s template in the background (initdb takes 0.6 s) while pytest collects; with
        ``start_for`` (the bytes the first restore needs), also start that restore's server ahead.

        The thread that starts a server stays until the server stops: the server is told to die with the
        thread that started it (PR_SET_PDEATHSIG follows the thread, not the process)."""
        ready = threading.Event()
        started: list[Cluster] = []

        def work() -> None:
            try:
                self.template(inst)
                if start_for is not None:
                    cluster = self.cluster(inst, start_for)
                    with self._lock:
                        if self._closing:
                            return  # the run ended first: nothing to start
                        self._ahead.append(cluster)
                    started.append(cluster.__enter__())
            except Exception:  # the first real use retries and reports it
                log.debug("prewarm for %s failed", inst.describe(), exc_info=True)
            finally:
                ready.set()
            for cluster in started:
                cluster.stopped.wait()

        thread = threading.Thread(target=work, name=f"prewarm-{inst.version}", daemon=True)
        with self._lock:
            self._background.append(thread)
            self._starting.append(ready)
            if start_for is not None and inst.bindir not in self._ready:
                self._ready[inst.bindir] = (ready, started)
        thread.start()

    def started(self, inst: Installation, need_bytes: int = 0) -> Cluster:
        """A running cluster for a restore of about ``need_bytes``: the one started ahead when it fits there."""
        with self._lock:
            ahead = self._ready.pop(inst.bindir, None)
        if ahead is not None:
            ready, started = ahead
            ready.wait()
            for cluster in started:
                if cluster.process is not None and cluster.home.parent == self.place(need_bytes):
                    return cluster
                cluster.__exit__(None, None, None)
        return self.cluster(inst, need_bytes).__enter__()

    def remove_later(self, path: Path) -> None:
        """Remove a stopped cluster's folder while the run goes on (a restored gigabyte takes a while)."""
        self._in_background(f"remove-{path.name}", lambda: shutil.rmtree(path, ignore_errors=True))

    def wait(self) -> None:
        """Stop what was started ahead (used or not: stopping twice is harmless) and let background work finish,
        before the run folder is removed."""
        with self._lock:
            self._closing = True  # a prewarm that has not started its server yet will not
            starting, self._starting = self._starting, []
        for ready in starting:
            ready.wait()  # a server being started is stopped once it is up, not under its feet
        while True:
            with self._lock:
                threads, self._background = self._background, []
                ahead, self._ahead = self._ahead, []
                self._ready.clear()
            if not threads and not ahead:
                break
            for cluster in ahead:
                cluster.__exit__(None, None, None)
            for thread in threads:
                thread.join()
        with self._lock:
            self._closing = False

    def place(self, need_bytes: int) -> Path:
        if self.fastdir is not None and free_bytes(self.fastdir) > need_bytes + self.RESERVE:
            return self.fastdir
        return self.rundir

    def template(self, inst: Installation) -> Path:
        with self._lock:
            if inst.bindir in self._templates:
                return self._templates[inst.bindir]
            user = server_user()
            args = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
            cache_key = self.templates.key(inst, THROWAWAY_SETTINGS, user, args) if self.templates else ""
            cached = self.templates.find(cache_key) if self.templates else None
            if cached is not None:
                self._templates[inst.bindir] = cached
                return cached
            base = self.place(64 * 1024**2)
            check_reachable(base)
            path = base / f"template-{inst.version}"
            holder = base / f"template-{inst.version}.owner"
            shutil.rmtree(holder, ignore_errors=True)  # what a failed attempt left
            holder.mkdir()
            if user:
                os.chown(holder, *user)
            target = holder / "data"
            proc = subprocess.run(
                [inst.tool("initdb"), "-D", str(target), *args],
                capture_output=True, text=True, user=user[0] if user else None,
                group=user[1] if user else None, extra_groups=[] if user else None, cwd=str(holder),
            )
            if proc.returncode != 0:
                raise ServerStartError(f"initdb ({inst.describe()}) failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            with open(target / "postgresql.conf", "a") as conf:
                conf.write("\n# backupcheck: a throwaway server\n")
                for key, value in THROWAWAY_SETTINGS.items():
                    conf.write(f"{key} = {value}\n")
            target.rename(path)
            holder.rmdir()
            kept = self.templates.keep(cache_key, path) if self.templates else None
            if kept is not None:
                shutil.rmtree(path, ignore_errors=True)  # the cached copy serves this run too
                path = kept
            self._templates[inst.bindir] = path
            return path

    def cluster(self, inst: Installation, need_bytes: int = 0) -> Cluster:
        """A cluster (not yet started) with room for about ``need_bytes`` of restored data."""
        template = self.template(inst)
        with self._lock:
            self._count += 1
            # pid and count: unique even when several factories share one run folder
            home = self.place(need_bytes) / f"cluster-{os.getpid()}-{self._count}"
        return Cluster(inst, template, home, self.remove_later)
