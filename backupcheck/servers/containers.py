"""Disposable PostgreSQL containers: one per process and server version, ports on 127.0.0.1 only, swept after a crash."""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .cluster import THROWAWAY_SETTINGS, _alive, _process_start_time
from .pgbin import _VERSION, Installation

log = logging.getLogger(__name__)

LABEL = "io.backupcheck"
INBOX = "/backupcheck-in"  # where dumps are copied into the container, read-only
DATA_MOUNT = "/var/lib/postgresql/tmp"  # a tmpfs: the data directory never touches the host's disk


class ContainerError(Exception):
    """A container could not be started or used; the message says what to do."""


def docker_client(timeout: int = 5) -> Any:
    import docker

    return docker.from_env(timeout=timeout)


def engine_answers() -> tuple[bool, str]:
    """(True, what answered) when a Docker engine answers, else (False, why not)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False, f"no Docker engine: {_unanswered('')}"  # without importing the Docker SDK (0.1 s)
    try:
        client = docker_client(timeout=3)
        try:
            version = client.version().get("Version", "?")
            return True, f"Docker engine {version} at {client.api.base_url}"
        finally:
            client.close()
    except Exception as exc:  # docker.errors.DockerException, connection errors, a missing socket
        return False, f"no Docker engine: {_unanswered(str(exc))}"


def _unanswered(error: str) -> str:
    """Where the engine was looked for and what was there, for a person."""
    host = os.environ.get("DOCKER_HOST", "")
    where = host or "/var/run/docker.sock"
    if not host and not os.path.exists("/var/run/docker.sock"):
        return f"nothing answers at {where} (no such socket; set DOCKER_HOST if the engine listens elsewhere)"
    if "Permission denied" in error or "PermissionError" in error:
        return f"{where} is there, but this user may not use it (add it to the docker group)"
    if "Connection refused" in error or "FileNotFoundError" in error or "No such file" in error:
        return f"nothing answers at {where} (is the engine running?)"
    first = error.splitlines()[0][:160] if error else "no answer"
    return f"{where} did not answer ({first})"


def image_for(template: str, major: int) -> str:
    return template.replace("{major}", str(major))


def ensure_image(name: str) -> str:
    """'' when the image is here (pulled if needed), else why it cannot be had."""
    import docker

    client = docker_client(timeout=120)
    try:
        try:
            client.images.get(name)
            return ""
        except docker.errors.ImageNotFound:
            pass
        try:
            repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
            client.images.pull(repo, tag=tag)
            return ""
        except Exception as exc:
            said = str(getattr(exc, "explanation", None) or exc).splitlines()[0]
            return f"image {name} is not here and could not be pulled ({said if len(said) <= 160 else said[:157] + '…'})"
    finally:
        client.close()


def _labels(run: str) -> dict[str, str]:
    return {
        f"{LABEL}.run": run,
        f"{LABEL}.host": socket.gethostname(),
        f"{LABEL}.pid": str(os.getpid()),
        f"{LABEL}.start": _process_start_time(os.getpid()) or "",
    }


def sweep_stale(client: Any | None = None) -> list[str]:
    """Remove containers this tool started on this host from a process that is gone (kill -9, a crash)."""
    own = client is None
    try:
        client = client or docker_client()
    except Exception:
        return []
    removed = []
    try:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}.pid"}):
            labels = c.labels or {}
            if labels.get(f"{LABEL}.host") != socket.gethostname():
                continue
            try:
                pid = int(labels.get(f"{LABEL}.pid", "0"))
            except ValueError:
                continue
            if pid and _alive(pid, labels.get(f"{LABEL}.start") or None):
                continue
            try:
                c.remove(force=True, v=True)
                removed.append(c.name)
            except Exception as exc:
                log.warning("could not remove stale container %s: %s", c.name, exc)
    finally:
        if own:
            client.close()
    return removed


def tar_stream(files: list[tuple[Path | bytes, str]]) -> Iterator[bytes]:
    """A tar of ``(local path or bytes, name inside)`` pairs, streamed in blocks (no copy on disk), read-only."""
    dirs: set[str] = set()
    for _, name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o555
                yield info.tobuf(format=tarfile.PAX_FORMAT)
    for source, name in files:
        info = tarfile.TarInfo(name)
        info.size = len(source) if isinstance(source, bytes) else source.stat().st_size
        info.mode = 0o444
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        if isinstance(source, bytes):
            yield source
        else:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
        pad = (-info.size) % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class ContainerServer:
    """One PostgreSQL container (testcontainers), started on first use and removed on exit."""

    def __init__(self, image: str, run: str, ryuk: bool) -> None:
        self.image = image
        self.run = run
        self.ryuk = ryuk
        self.password = secrets.token_urlsafe(24)  # lives in this process and the container only
        self.port = 0
        self.version = ""
        self._pc: Any = None
        self._inbox = 0
        self._lock = threading.Lock()

    def __enter__(self) -> ContainerServer:
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.core.config import testcontainers_config

        testcontainers_config.ryuk_disabled = not self.ryuk
        settings = {k: v.strip("'") for k, v in THROWAWAY_SETTINGS.items()
                    if k not in ("listen_addresses", "logging_collector", "log_min_messages")}
        pc = PostgresContainer(self.image, username="postgres", password=self.password, dbname="postgres", driver=None)
        pc.ports["5432"] = ("127.0.0.1", None)  # never on other interfaces
        pc.tmpfs = {DATA_MOUNT: "mode=1777"}
        pc.with_env("PGDATA", f"{DATA_MOUNT}/data").with_env("POSTGRES_INITDB_ARGS", "--no-sync")
        pc.with_command(["postgres", *[f"-c{k}={v}" for k, v in settings.items()]])
        pc.with_name(f"backupcheck-{os.getpid()}-{secrets.token_hex(3)}")
        pc.with_kwargs(labels=_labels(self.run), shm_size="512m")
        self._pc = pc
        try:
            pc.start()
            self.port = int(pc.get_exposed_port(5432))
            code, out = self.exec(["postgres", "--version"])
            m = re.search(r"\) (\d+(?:\.\d+)?)", out)
            self.version = m.group(1) if m else out.strip()[-40:]
        except BaseException as exc:
            logs = self._logs()
            self.__exit__(None, None, None)
            if isinstance(exc, Exception):
                if self.ryuk and "ryuk" in str(exc).lower():
                    raise ContainerError(f"Ryuk, testcontainers' cleanup container, could not start ({str(exc).splitlines()[0][:200]}); "
                                         "where its image cannot be had, set container.ryuk = false "
                                         "(--container-ryuk off): backupcheck's own labels still sweep leftovers") from None
                raise ContainerError(f"container {self.image} did not come up: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                     + ("\n  its log ends:\n    " + "\n    ".join(logs) if logs else "")) from None
            raise
        return self

    def _logs(self) -> list[str]:
        try:
            raw = self._pc.get_wrapped_container().logs(tail=15).decode("utf-8", "replace")
            return raw.splitlines()
        except Exception:
            return []

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            try:
                pc.stop()
            except Exception as exc:  # already gone, or the engine went away: the next run sweeps it
                log.warning("removing container %s failed: %s", self.image, exc)

    @property
    def container(self) -> Any:
        return self._pc.get_wrapped_container()

    def conninfo(self, dbname: str = "postgres") -> dict[str, str | int]:
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres", "password": self.password,
                "dbname": dbname, "connect_timeout": 10}

    def exec(self, cmd: list[str], user: str = "postgres") -> tuple[int, str]:
        """Run ``cmd`` inside the container; (exit code, stdout+stderr as text)."""
        result = self.container.exec_run(cmd, user=user, demux=False)
        return result.exit_code, (result.output or b"").decode("utf-8", "replace")

    def exec_split(self, cmd: list[str], user: str = "postgres") -> tuple[int, str, str]:
        result = self.container.exec_run(cmd, user=user, demux=True)
        out, err = result.output or (None, None)
        return result.exit_code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")

    def copy_in(self, files: list[tuple[Path | bytes, str]]) -> str:
        """Copy files into a new folder of the inbox (read-only for the server); returns the folder."""
        with self._lock:
            self._inbox += 1
            folder = f"{INBOX.strip('/')}/{self._inbox}"
        if not self.container.put_archive("/", tar_stream([(src, f"{folder}/{name}") for src, name in files])):
            raise ContainerError(f"copying the dump into container {self.image} failed")
        return "/" + folder

    def remove(self, folder: str) -> None:
        self.exec(["rm", "-rf", folder], user="root")


# --- a major version with no local binaries: its tools run from a container image --------------------------------


@dataclass(frozen=True)
class ContainerInstallation(Installation):
    """A PostgreSQL major version this machine has no binaries of, run from a container image: each tool is a
    container of its own (``docker run``: no network, a read-only root, no new privileges, the host folders it
    needs mounted at their own paths, labelled for the sweep of a run that died)."""

    image: str = ""
    in_container = True

    def tool(self, name: str) -> str:
        return name  # on the image's PATH

    def has(self, *names: str) -> bool:
        return True

    def describe(self) -> str:
        return f"PostgreSQL {self.version} in container image {self.image}"

    def extensions(self) -> frozenset[str]:
        return frozenset()

    def command(self, name: str, mounts: tuple[tuple[Path, bool], ...] = (), env: dict[str, str] | None = None,
                user: tuple[int, int] | None = None) -> list[str]:
        who = user or (os.getuid(), os.getgid())
        argv = [_docker(), "run", "--rm", "--name", f"backupcheck-{os.getpid()}-{secrets.token_hex(4)}",
                "--network", "none", "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/run/postgresql",
                "--security-opt", "no-new-privileges", "--user", f"{who[0]}:{who[1]}", "--entrypoint", name]
        for key, value in _labels("tool").items():
            argv += ["--label", f"{key}={value}"]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        for path, writable in mounts:
            argv += ["-v", f"{path}:{path}:{'rw' if writable else 'ro'}"]
        return [*argv, self.image]

    def stop(self, argv: list[str]) -> None:
        """The container of a command whose client was stopped or killed (the container outlives its client)."""
        if "--name" in argv:
            subprocess.run([_docker(), "rm", "-f", argv[argv.index("--name") + 1]], capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)


def _docker() -> str:
    return shutil.which("docker") or "docker"


@functools.cache
def installation_in_image(template: str, major: int) -> tuple[ContainerInstallation | None, str]:
    """PostgreSQL ``major`` from the image ``template`` names, or (None, why there is none)."""
    if shutil.which("docker") is None:
        return None, "no docker command here (apt-get install docker.io)"
    answers, what = engine_answers()
    if not answers:
        return None, what
    sweep_stale()  # a recovery's container left by a run that was killed (whatever provider restores dumps)
    image = image_for(template, major)
    problem = ensure_image(image)
    if problem:
        return None, problem
    try:
        proc = subprocess.run([_docker(), "run", "--rm", "--network", "none", "--entrypoint", "postgres", image,
                               "--version"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"image {image} could not be run ({exc})"
    m = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        return None, f"image {image} has no postgres to run ({(proc.stderr or proc.stdout).strip()[:200]})"
    version = f"{m.group(1)}.{m.group(2) or 0}"
    if int(m.group(1)) != major:
        return None, f"image {image} holds PostgreSQL {version}, not {major}"
    return ContainerInstallation(Path("/"), version, f"container image {image}", image), ""
