"""The machine's cores, shared by the backups one run holds restored at once (its xdist workers each hold one).

pg_restore's parallel jobs pay off when its jobs have cores to themselves; in a fleet checked on ``-n 2`` with two
cores, each worker's restore and checks already keep one core busy, and ``-j 2`` only adds processes and
connections for them to share (a fleet of 100 small dumps: 1.71 × the bare loop's time with -j 2, 1.49 × with -j
1, in alternating rounds). Each backup held restored is a file in a folder the run's processes share, named by its
process: a restore asks how many are held, its own included, and takes its part of the cores.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

_HOLDS = itertools.count(1)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CoreShare:
    """The backups held restored in one run, across its processes (``folder``: one they all see)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "restored-now"

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While a backup is restored and checked; nothing is counted where the folder cannot be written."""
        mark = self.folder / f"{os.getpid()}-{next(_HOLDS)}"
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            mark.touch()
        except OSError:
            mark = None  # type: ignore[assignment]
        try:
            yield
        finally:
            if mark is not None:
                with contextlib.suppress(OSError):
                    mark.unlink()

    def held(self) -> int:
        """Backups held restored now by live processes of the run (one at the least: the one asking)."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return 1
        pids = [int(n.split("-", 1)[0]) for n in names if n.split("-", 1)[0].isdigit()]
        return max(1, sum(1 for p in pids if p == os.getpid() or _alive(p)))

    def jobs(self, wanted: int) -> tuple[int, int]:
        """(pg_restore jobs for a restore that wants ``wanted``, backups held restored now): the cores shared
        evenly among those backups, one job at the least."""
        held = self.held()
        return max(1, min(wanted, cores() // held)), held
