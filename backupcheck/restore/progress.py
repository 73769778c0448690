"""What a running restore is doing, said while it runs: its phase, the bytes restored so far (of how many, where
the manifest says), the time it has taken and what is left."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (phase, what a statement running in the restore starts with)
_PHASES = (("indexes and constraints", ("CREATE INDEX", "CREATE UNIQUE INDEX", "ALTER TABLE")),
           ("restore data", ("COPY", "INSERT")))


@dataclass(frozen=True)
class Reporter:
    """Where progress lines go and how often: ``say(line)``, every ``every`` seconds, the first after ``first``;
    ``done()`` when a restore ends (a live terminal line is cleared)."""

    say: Callable[[str], None]
    every: float
    first: float
    done: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Sample:
    phase: str
    restored: int  # bytes in the restored databases so far
    total: int | None  # bytes expected (the manifest's database size), else None


def sample(conn: Any, databases: list[str], total: int | None) -> Sample:
    """One look at the server through an admin connection: what runs in the restore's databases, and their size."""
    rows = conn.execute("select query from pg_stat_activity where datname = any(%s) and state = 'active' "
                        "and pid <> pg_backend_pid()", (databases,)).fetchall()
    running = [str(r[0]).lstrip().upper() for r in rows]
    phase = next((name for name, starts in _PHASES if any(q.startswith(starts) for q in running)),
                 "schema" if running else "between steps")
    size = conn.execute("select coalesce(sum(pg_database_size(datname)), 0) from pg_database where datname = any(%s)",
                        (databases,)).fetchone()[0]
    return Sample(phase, int(size), total)


def _size(n: float) -> str:
    return f"{n / 1024**2:,.1f} MiB" if n < 1024**3 else f"{n / 1024**3:,.2f} GiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def line(key: str, s: Sample, elapsed: float) -> str:
    text = f"restoring {key}: {s.phase}, {_size(s.restored)}"
    if s.total:
        share = min(s.restored / s.total, 1.0)
        text += f" of ~{_size(s.total)} ({share:.0%})"
    text += f", {_duration(elapsed)}"
    if s.total and s.restored and elapsed > 2:
        left = elapsed * max(s.total - s.restored, 0) / s.restored
        text += f", about {_duration(left)} left"
    return text


class Watch:
    """A thread that says every ``every`` seconds (the first time after ``first``) what the restore is doing,
    until stopped; a failed look is skipped, never the restore's failure."""

    def __init__(self, look: Callable[[], Sample], say: Callable[[str], None], key: str, every: float,
                 first: float) -> None:
        self.look, self.say, self.key = look, say, key
        self.every, self.first = every, first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"backupcheck-progress-{key}", daemon=True)
        self.started = time.monotonic()
        self.said = 0

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            try:
                s = self.look()
            except Exception:  # noqa: BLE001 (a server busy or gone: the next look, or the restore, says so)
                wait = self.every
                continue
            self.say(line(self.key, s, time.monotonic() - self.started))
            self.said += 1
            wait = self.every
