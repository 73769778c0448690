"""Server templates kept between runs: initdb once per installation and settings, not once per run (0.4 s)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from .pgbin import Installation

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what a template holds changes in a way its key does not show
KEEP_UNUSED = 30 * 86400  # a template no run has used for this long is removed
_TMP = ".tmp-"


def user_cache() -> Path:
    """$XDG_CACHE_HOME/backupcheck, else ~/.cache/backupcheck: downloads and server templates live there."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backupcheck"


class TemplateCache:
    """Data directories made by initdb, one per (installation, binary, settings, server account).

    A template's postgresql.conf decides what the server runs (``archive_command`` and the like run
    programs), so the cache is used only while its folder is this user's alone: created 0700, and skipped
    when it belongs to someone else or others may write to it. Every failure here falls back to initdb.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(self, inst: Installation, settings: dict[str, str], user: tuple[int, int] | None, args: list[str]) -> str:
        """'' when the installation cannot be told apart (its server program is not there): nothing is cached."""
        try:
            postgres = Path(inst.tool("postgres")).stat()
        except OSError:
            return ""
        what = [FORMAT, str(inst.bindir), inst.version, postgres.st_size, postgres.st_mtime_ns, sorted(settings.items()),
                list(user) if user else None, args]
        digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
        return f"pg{inst.version}-{digest}"

    def _private(self) -> bool:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.root.stat()
        except OSError as exc:
            log.debug("no template cache at %s: %s", self.root, exc)
            return False
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRWXO):
            log.warning("not using the server template cache %s: it is not this user's alone (owner uid %d, "
                        "mode %o); remove it, or make it mode 0700", self.root, st.st_uid, st.st_mode & 0o777)
            return False
        return True

    def find(self, key: str) -> Path | None:
        """The cached data directory, or None."""
        if not key or not self._private():
            return None
        entry = self.root / key
        data = entry / "data"
        if not (data / "PG_VERSION").is_file():
            return None
        try:
            os.utime(entry)  # used: not pruned
        except OSError:
            pass
        return data

    def keep(self, key: str, data: Path) -> Path | None:
        """Copy a fresh template into the cache (whole or not at all); the cached data directory, or None."""
        if not key or not self._private():
            return None
        self._prune(key)
        tmp = self.root / f"{_TMP}{os.getpid()}-{time.monotonic_ns()}"
        try:
            tmp.mkdir(mode=0o700)
            subprocess.run(["cp", "-a", str(data), str(tmp / "data")], check=True, capture_output=True)
            os.rename(tmp, self.root / key)
        except (OSError, subprocess.CalledProcessError) as exc:
            # Another process of this run may have put the same template first (a rename onto a full folder fails).
            log.debug("template %s not cached: %s", key, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return self.find(key)
        return self.root / key / "data"

    def _prune(self, keep: str) -> None:
        """Remove templates unused for a month and copies a crash left half made."""
        now = time.time()
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        for entry in entries:
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            stale = age > 3600 if entry.name.startswith(_TMP) else age > KEEP_UNUSED
            if entry.name != keep and stale:
                shutil.rmtree(entry, ignore_errors=True)
