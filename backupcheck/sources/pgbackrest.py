"""pgBackRest repositories, read through the real ``pgbackrest`` binary (``info --output=json``, ``repo-ls``,
``verify``, ``restore``, ``archive-get``), never by parsing its files: a repository is a folder holding ``backup/``
and ``archive/`` with a ``backup.info`` per stanza; each stanza is a series, each of its full, differential and
incremental backups one backup of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .basebackup import SEGMENT_NAME, Segment, WalArchive

BINARY = "pgbackrest"


class PgBackRestError(Exception):
    """The pgbackrest binary is missing or refused; the message says which and what to do."""


def is_repository(folder: Path) -> bool:
    try:
        return (folder / "archive").is_dir() and any((folder / "backup").glob("*/backup.info"))
    except OSError:
        return False


def run(repo: Path, *args: str, timeout: float = 3600, console: str = "warn") -> subprocess.CompletedProcess[str]:
    """pgbackrest against ``repo`` with no configuration file of the host's, its logs and locks in a private
    temporary folder."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise PgBackRestError("pgbackrest is not installed here, and a pgBackRest repository is read with it: "
                              "apt-get install pgbackrest (Debian, Ubuntu), or put it on PATH")
    with tempfile.TemporaryDirectory(prefix="backupcheck-pgbackrest-") as tmp:
        command = args[0]
        extra = [f"--log-path={tmp}"] if command in ("info", "verify", "restore", "archive-get") else []
        if command in ("info", "restore", "archive-get"):
            extra.append(f"--lock-path={tmp}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGBACKREST_")}
        return subprocess.run([binary, "--config=/dev/null", f"--repo1-path={repo}", "--log-level-file=off",
                               f"--log-level-console={console}", *extra, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def info(repo: Path) -> list[dict[str, Any]]:
    proc = run(repo, "info", "--output=json")
    if proc.returncode != 0:
        raise PgBackRestError(f"pgbackrest info on {repo} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise PgBackRestError(f"pgbackrest info on {repo} gave no JSON ({exc})") from None


@dataclass(frozen=True)
class RestBackup:
    """One backup of a stanza, as pgbackrest info describes it."""

    repo: Path
    stanza: str
    label: str
    kind: str  # full, diff, incr
    started: datetime
    stopped: datetime
    major: int
    start_segment: str
    size: int  # the database's size when it was backed up (what a restore of it takes)
    error: bool = False

    @property
    def path(self) -> Path:
        return self.repo / "backup" / self.stanza / self.label

    compression: tuple[str, ...] = ()
    tablespaces: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"pgBackRest {self.kind} backup {self.label}, PostgreSQL {self.major}"

    def restore_into(self, datadir: Path) -> None:
        """``pgbackrest restore`` of this set into an empty ``datadir``; recovery is configured by the caller."""
        datadir.mkdir(parents=True, exist_ok=True)
        proc = run(self.repo, f"--stanza={self.stanza}", f"--pg1-path={datadir}", "restore", f"--set={self.label}",
                   "--type=none")
        if proc.returncode != 0:
            raise OSError(f"pgbackrest restore of {self.label} failed: {(proc.stderr or proc.stdout).strip()[:800]}")


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def backups(repo: Path) -> list[RestBackup]:
    """Every backup of every stanza of ``repo``, oldest first per stanza."""
    out = []
    for stanza in info(repo):
        versions = {db.get("id"): db.get("version", "") for db in stanza.get("db", [])}
        for b in stanza.get("backup", []):
            ts = b.get("timestamp", {})
            out.append(RestBackup(
                repo, stanza["name"], b["label"], b.get("type", "full"),
                datetime.fromtimestamp(ts.get("start", 0), UTC), datetime.fromtimestamp(ts.get("stop", 0), UTC),
                _major(versions.get(b.get("database", {}).get("id"), "")), b.get("archive", {}).get("start", ""),
                int(b.get("info", {}).get("size", 0)), bool(b.get("error"))))
    return out


def find(artifact_path: Path) -> RestBackup | None:
    """The backup an artifact of a repository stands for (``<repo>/backup/<stanza>/<label>``)."""
    repo = artifact_path.parent.parent.parent
    try:
        found = backups(repo)
    except PgBackRestError:
        return None
    return next((b for b in found if b.stanza == artifact_path.parent.name and b.label == artifact_path.name), None)


def archive(repo: Path, stanza: str) -> WalArchive:
    """The stanza's WAL archive as pgbackrest lists it (``repo-ls``): segments and their times; fetching one is
    ``archive-get`` (decompressed and checked by pgbackrest)."""
    proc = run(repo, "repo-ls", f"archive/{stanza}", "--recurse", "--output=json")
    if proc.returncode != 0:
        raise PgBackRestError(f"pgbackrest repo-ls on {repo} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    listing = json.loads(proc.stdout or "{}")
    ids = sorted({name.split("/", 1)[0] for name in listing if "/" in name and name[0].isdigit()})
    current = ids[-1] if ids else ""  # the archive of the stanza's current database (after an upgrade: the newest)
    major = _major(current.split("-", 1)[0]) if current else None
    wal = WalArchive(repo / "archive" / stanza / current, 16 << 20, major)
    for name, entry in sorted(listing.items()):
        if entry.get("type") != "file" or not name.startswith(current + "/"):
            continue
        base = name.rsplit("/", 1)[-1]
        seg = base.split("-", 1)[0]
        if SEGMENT_NAME.match(seg) and "-" in base:
            wal.segments.append(Segment(seg, repo / "archive" / stanza / name, int(seg[:8], 16), wal.number(seg),
                                        datetime.fromtimestamp(entry.get("time", 0), UTC), ()))
        elif re.fullmatch(r"[0-9A-F]{8}\.history", base):
            wal.histories.append(base)
    wal.fetch = lambda name, target, datadir: fetch(repo, stanza, name, target, datadir)
    return wal


def fetch(repo: Path, stanza: str, name: str, target: Path, datadir: Path) -> bool:
    """One segment or history file written to ``target`` by ``archive-get`` (which checks it belongs to the
    cluster restored at ``datadir``); False when the archive lacks it."""
    proc = run(repo, f"--stanza={stanza}", f"--pg1-path={datadir}", "archive-get", name, str(target))
    return proc.returncode == 0 and target.exists()


def verify(repo: Path, stanza: str) -> list[str]:
    """``pgbackrest verify``: every file of the repository against its checksums; the problems it reports."""
    proc = run(repo, f"--stanza={stanza}", "verify", console="info")
    text = proc.stdout + proc.stderr
    problems = []
    for line in text.splitlines():
        said = re.sub(r"^\S+ \S+ P\d+\s+\w+: ", "", line).strip()
        if "verify command" in said or not said:
            continue
        if re.search(r"\b(ERROR|WARN)\b", line) or re.search(r"invalid|missing|not found", said, re.I):
            problems.append(said)
    if proc.returncode != 0 and not problems:
        problems = [f"pgbackrest verify ended with code {proc.returncode}: {text.strip()[-500:]}"]
    return problems
