"""A file still being downloaded, read as it arrives: a restore that reads a plain dump once can start on the first
bytes of an S3 object instead of after its last, and every reader of the file's path meanwhile (sniffing, the
schema read, the restore) gets the bytes in order, waiting for those not yet there."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

_ARRIVING: dict[str, Arriving] = {}
_LOCK = threading.Lock()


class DownloadStopped(OSError):
    """The download a reader was following failed or was given up: the bytes after the ones read never came."""


class Arriving:
    """Where a download writes (``begin``), how many bytes from the start are there (``advance``), and how it ended
    (``end``). Registered under the file's final path while it runs (``open_bytes`` reads through it)."""

    def __init__(self) -> None:
        self.final: Path | None = None
        self.part: Path | None = None
        self.done = 0
        self.finished = False
        self.error: BaseException | None = None
        self.result: Any = None  # what the download gave (a Fetched), once it ended well
        self._cond = threading.Condition()

    def begin(self, part: Path, final: Path) -> None:
        """The download writes ``part`` (from its first byte: a retry begins again), renamed ``final`` at its end."""
        with _LOCK:
            _ARRIVING[str(final)] = self
        with self._cond:
            self.part, self.final, self.done = part, final, 0
            self._cond.notify_all()

    def started(self) -> Path | None:
        """Wait until the download writes or ended: the file's final path (None: it failed before a byte)."""
        with self._cond:
            self._cond.wait_for(lambda: self.finished or self.part is not None)
        if self.final is None and self.result is not None:
            return Path(self.result.path)  # served from the cache: no download
        return self.final

    def advance(self, done: int) -> None:
        with self._cond:
            self.done = done
            self._cond.notify_all()

    def end(self, result: Any = None, error: BaseException | None = None) -> None:
        with _LOCK:
            if self.final is not None and _ARRIVING.get(str(self.final)) is self:
                del _ARRIVING[str(self.final)]
        with self._cond:
            self.finished, self.result, self.error = True, result, error
            self._cond.notify_all()

    def wait(self) -> Any:
        """Until the download ended: what it gave, or its error raised."""
        with self._cond:
            self._cond.wait_for(lambda: self.finished)
        if self.error is not None:
            raise self.error
        return self.result

    def _bytes_after(self, pos: int) -> tuple[Path | None, int]:
        """Wait until a byte at ``pos`` is there or the download ended: (the file it is in, bytes there from the
        start; None once the download ended well)."""
        with self._cond:
            self._cond.wait_for(lambda: self.finished or (self.part is not None and self.done > pos))
            if self.error is not None:
                raise DownloadStopped(f"the download stopped after {self.done:,} bytes: {self.error}")
            if self.finished:
                return None, -1
            return self.part, self.done


class _Follower(io.RawIOBase):
    """Read the arriving file from its start, waiting for bytes not written yet; once the download ended, the
    file in its final place (an open part file stays readable after it is renamed there)."""

    def __init__(self, arriving: Arriving) -> None:
        self.arriving = arriving
        self.pos = 0
        self.fd = -1
        self.opened: Path | None = None  # the part file the descriptor reads (a retry writes another)
        self.final = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self.final:
            part, done = self.arriving._bytes_after(self.pos)
            if part is None:  # ended: read on from the file where it now is
                self.final = True
                self._open(self.arriving.final)
            else:
                if self.opened != part:
                    try:
                        self._open(part)
                    except FileNotFoundError:  # renamed to its final place a moment ago
                        self._open(self.arriving.final)
                    self.opened = part
                want = min(len(view), done - self.pos)
                n = os.preadv(self.fd, [view[:want]], self.pos)
                self.pos += n
                return n
        n = os.preadv(self.fd, [view], self.pos)
        self.pos += n
        return n

    def _open(self, path: Path | None) -> None:
        assert path is not None
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


def open_bytes(path: Path) -> Any:
    """The file at ``path`` for reading: as it arrives while a download writes it, else as it is."""
    with _LOCK:
        arriving = _ARRIVING.get(str(path))
    if arriving is None:
        return open(path, "rb")
    return io.BufferedReader(_Follower(arriving), buffer_size=1 << 20)


def arriving(path: Path) -> Arriving | None:
    """The download still writing ``path``, if one is."""
    with _LOCK:
        return _ARRIVING.get(str(path))
