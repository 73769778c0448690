"""Allure results written while the run goes on, each check's as it ends, so the end of a run does not wait for
thousands of small files (a fleet of 100 backups: 2,301 files, 0.4 to 1.5 s here at the end of every run).

A thread of its own writes what ``add`` is given; ``finish`` waits for it, then makes the folder what
``render.allure`` would write from the whole results document: a check whose result changed afterwards (a
streak made it a blocker, a teardown failed) is written again, one never given is written, one not in the
document is removed.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from pathlib import Path
from typing import Any

from . import render


class AllureStream:
    """``folder``: allure-results; ``started``: the run's start as results.json writes it; ``slots``: backup key ->
    which backup of its series it is, counted from the newest, as far as the run knows it yet
    (``render.slots`` of the results document has the last word)."""

    def __init__(self, folder: Path, started: str, slots: dict[str, str]) -> None:
        self.folder = folder
        self.t0 = render.allure_start(started)
        self.slots = slots
        self.error: OSError | None = None
        self._written: dict[str, tuple[str, list[Path]]] = {}  # node id -> (what was written, its files)
        self._files: render.AllureFiles | None = None
        self._queue: queue.Queue[tuple[dict[str, Any], list[tuple[str, str]]] | None] = queue.Queue()
        # A daemon: a run that dies before finish() must not hang on it; finish() waits for it.
        self._thread = threading.Thread(target=self._run, name="backupcheck-allure", daemon=True)
        self._thread.start()

    def add(self, check: dict[str, Any], attachments: list[tuple[str, str]]) -> None:
        """A check that has ended (its entry as results.json will hold it) and its attachments."""
        self._queue.put((dict(check), list(attachments)))

    def _run(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files = render.AllureFiles(self.folder, clean=True)
        except OSError as exc:
            self.error = exc
        while (item := self._queue.get()) is not None:
            if self.error is None:
                c, attachments = item
                self._write(c, attachments, self.slots.get(c["backup"], ""), blocker=False)

    def _write(self, c: dict[str, Any], attachments: list[tuple[str, str]], slot: str, blocker: bool) -> None:
        said = json.dumps([c, slot, blocker, attachments], sort_keys=True, default=str)
        before = self._written.get(c["nodeid"])
        if before is not None and before[0] == said:
            return
        folder = self._files
        if folder is None:  # the folder could not be made (self.error says why)
            return
        try:
            if before is not None:
                for path in before[1]:
                    folder.give_back(path)
            files = render.allure_result(folder, c, slot, blocker, self.t0, attachments)
        except OSError as exc:
            self.error = exc
            return
        self._written[c["nodeid"]] = (said, files)

    def finish(self, document: dict[str, Any], attachments: dict[str, list[tuple[str, str]]]) -> None:
        """The folder as ``render.allure`` writes it from ``document``; raises the first OSError met."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        blockers = {(s["series"], s["check"]) for s in document.get("streaks", [])}
        slots = render.slots(document)
        wanted = set()
        for c in document["checks"]:
            wanted.add(c["nodeid"])
            self._write(c, attachments.get(c["nodeid"], []), slots.get(c["backup"], ""),
                        (c["series"], c["name"]) in blockers)
        for nodeid in set(self._written) - wanted:
            for path in self._written.pop(nodeid)[1]:
                with contextlib.suppress(OSError):
                    path.unlink()
        if self._files is not None:
            self._files.close()
        if self.error is not None:
            raise self.error
