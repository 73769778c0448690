"""What a running restore is doing, said while it runs: its phase, the bytes restored so far (of how many, where
the manifest says), the time it has taken and what is left (from the manifest's size, else from how long earlier
restores of the series took). The same looks add up the time spent in each phase, for the report."""

from __future__ import annotations

import statistics
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


def expected_seconds(costs: list[tuple[int, float]], size: int) -> float | None:
    """How long restoring ``size`` bytes of dump should take, from earlier restores of the series ((dump bytes,
    seconds) each): the median seconds per byte times the size; None without an earlier restore."""
    rates = [seconds / n for n, seconds in costs if n > 0 and seconds > 0]
    if not rates or size <= 0:
        return None
    return statistics.median(rates) * size


def line(key: str, s: Sample, elapsed: float, expected: float | None = None) -> str:
    """``expected``: seconds earlier restores of the series suggest, used where the manifest gives no size."""
    text = f"restoring {key}: {s.phase}, {_size(s.restored)}"
    if s.total:
        share = min(s.restored / s.total, 1.0)
        text += f" of ~{_size(s.total)} ({share:.0%})"
    text += f", {_duration(elapsed)}"
    if s.total and s.restored and elapsed > 2:
        left = elapsed * max(s.total - s.restored, 0) / s.restored
        text += f", about {_duration(left)} left"
    elif expected:
        if expected - elapsed >= 1:
            text += f", about {_duration(expected - elapsed)} left (from earlier restores)"
        else:
            text += f", longer than earlier restores (about {_duration(expected)})"
    return text


def download_line(url: str, done: int, total: int, elapsed: float) -> str:
    """``downloading s3://b/k: 120.0 MiB of 512.0 MiB (23%), 12s, about 40s left``."""
    text = f"downloading {url}: {_size(done)} of {_size(total)} ({done / total if total else 0:.0%}), " \
           f"{_duration(elapsed)}"
    if done and elapsed > 2:
        text += f", about {_duration(elapsed * (total - done) / done)} left"
    return text


class Watch:
    """A thread that looks at the restore every ``tick`` seconds and adds the time since the last look to the
    phase it sees (``phases``); every ``every`` seconds (the first time after ``first``) it says what the restore
    is doing, when there is a ``say``. A failed look is skipped, never the restore's failure."""

    def __init__(self, look: Callable[[], Sample], say: Callable[[str], None] | None, key: str, every: float,
                 first: float, expected: float | None = None, tick: float = 1.0) -> None:
        self.look, self.say, self.key = look, say, key
        self.every, self.first, self.expected = every, first, expected
        self.tick = min(tick, every, first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"backupcheck-progress-{key}", daemon=True)
        self.started = time.monotonic()
        self.said = 0
        self.phases: dict[str, float] = {}
        self._last = self.started
        self._phase = ""

    def __enter__(self) -> Watch:
        self.started = self._last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._phase and not self._thread.is_alive():  # from the last look to the end: the phase last seen
            self._add(self._phase, time.monotonic())

    def _add(self, phase: str, now: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + (now - self._last)
        self._last = now

    def _run(self) -> None:
        due = self.first
        while not self._stop.wait(self.tick):
            try:
                s = self.look()
            except Exception:  # noqa: BLE001 (a server busy or gone: the next look, or the restore, says so)
                continue
            now = time.monotonic()
            self._add(s.phase, now)
            self._phase = s.phase
            elapsed = now - self.started
            if self.say is not None and elapsed >= due:
                self.say(line(self.key, s, elapsed, self.expected))
                self.said += 1
                due = elapsed + self.every
