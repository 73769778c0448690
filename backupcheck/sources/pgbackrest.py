"""pgBackRest repositories, read through the real ``pgbackrest`` binary (``info --output=json``, ``repo-ls``,
``verify``, ``restore``, ``archive-get``), never by parsing its files: a repository is a folder holding ``backup/``
and ``archive/`` with a ``backup.info`` per stanza; each stanza is a series, each of its full, differential and
incremental backups one backup of it."""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class S3Repo:
    """A repository in an S3 bucket (repo1-type=s3), reached with the source's endpoint, region and profile; the
    credentials go to pgbackrest through its environment, never its command line."""

    url: str  # s3://bucket/prefix: the repository's root
    endpoint: str  # host
    port: int | None
    region: str
    uri_style: str  # path for an endpoint of its own, host for AWS
    profile: str | None = None

    @property
    def bucket(self) -> str:
        return self.url[len("s3://"):].partition("/")[0]

    @property
    def root(self) -> Path:
        """Where discovery groups its objects: /s3/bucket/prefix."""
        return Path("/s3") / self.url[len("s3://"):]

    def args(self) -> list[str]:
        prefix = "/" + self.url[len("s3://"):].partition("/")[2].strip("/")
        out = ["--repo1-type=s3", f"--repo1-path={prefix}", f"--repo1-s3-bucket={self.bucket}",
               f"--repo1-s3-endpoint={self.endpoint}", f"--repo1-s3-region={self.region}",
               f"--repo1-s3-uri-style={self.uri_style}"]
        if self.port:
            out.append(f"--repo1-storage-port={self.port}")
        if os.environ.get("AWS_CA_BUNDLE"):  # the CA boto3 is told to trust, for pgbackrest too
            out.append(f"--repo1-storage-ca-file={os.environ['AWS_CA_BUNDLE']}")
        return out

    def env(self) -> dict[str, str]:
        import boto3

        credentials = boto3.Session(profile_name=self.profile).get_credentials()
        if credentials is None:
            raise PgBackRestError(f"{self.url}: no AWS credentials in boto3's chain for pgbackrest")
        frozen = credentials.get_frozen_credentials()
        env = {"PGBACKREST_REPO1_S3_KEY": frozen.access_key, "PGBACKREST_REPO1_S3_KEY_SECRET": frozen.secret_key}
        if frozen.token:
            env["PGBACKREST_REPO1_S3_TOKEN"] = frozen.token
        return env

    def __str__(self) -> str:
        return self.url


def s3_repo(url: str, options: Any) -> S3Repo:
    """The repository at ``url`` (s3://bucket/prefix) with a source's S3 options (endpoint_url, region, profile)."""
    from urllib.parse import urlsplit

    region = getattr(options, "region", None) or os.environ.get("AWS_DEFAULT_REGION") or \
        os.environ.get("AWS_REGION") or "us-east-1"
    endpoint_url = getattr(options, "endpoint_url", None)
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        return S3Repo(url.rstrip("/"), parts.hostname or "", parts.port, region, "path",
                      getattr(options, "profile", None))
    return S3Repo(url.rstrip("/"), f"s3.{region}.amazonaws.com", None, region, "host", getattr(options, "profile", None))


Repo = Path | S3Repo  # a folder, or a bucket's prefix


def _root(repo: Repo) -> Path:
    return repo.root if isinstance(repo, S3Repo) else repo


def in_listing(objects: list[Any]) -> tuple[list[str], set[str]]:
    """Repository roots among a listing's keys (``<root>backup/<stanza>/backup.info`` beside
    ``<root>archive/``), and the keys that belong to them (read through pgbackrest, not as backups)."""
    keys = {o.key for o in objects}
    roots = sorted({m.group(1) for k in keys if (m := re.match(r"^(.*?)backup/[^/]+/backup\.info$", k))
                    and any(x.startswith(m.group(1) + "archive/") for x in keys)})
    consumed = {k for k in keys for r in roots if k.startswith((r + "backup/", r + "archive/"))}
    return roots, consumed


def is_repository(folder: Path) -> bool:
    try:
        return (folder / "archive").is_dir() and any((folder / "backup").glob("*/backup.info"))
    except OSError:
        return False


def run(repo: Repo, *args: str, timeout: float = 3600, console: str = "warn") -> subprocess.CompletedProcess[str]:
    """pgbackrest against ``repo`` with no configuration file of the host's, its logs and locks in a private
    temporary folder."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise PgBackRestError("pgbackrest is not installed here, and a pgBackRest repository is read with it: "
                              "apt-get install pgbackrest (Debian, Ubuntu), or put it on PATH")
    with tempfile.TemporaryDirectory(prefix="backupcheck-pgbackrest-") as tmp:
        command = next((a for a in args if not a.startswith("--")), "")
        extra = [f"--log-path={tmp}"] if command in ("info", "verify", "restore", "archive-get") else []
        if command in ("info", "restore", "archive-get"):
            extra.append(f"--lock-path={tmp}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGBACKREST_")}
        where = [f"--repo1-path={repo}"]
        if isinstance(repo, S3Repo):
            where = repo.args()
            env.update(repo.env())
        return subprocess.run([binary, "--config=/dev/null", *where, "--log-level-file=off",
                               f"--log-level-console={console}", *extra, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def info(repo: Repo) -> list[dict[str, Any]]:
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

    repo: Repo
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
        return _root(self.repo) / "backup" / self.stanza / self.label

    @property
    def url(self) -> str:
        """Its place in a bucket ("" for a local repository)."""
        return f"{self.repo.url}/backup/{self.stanza}/{self.label}" if isinstance(self.repo, S3Repo) else ""

    compression: tuple[str, ...] = ()
    tablespaces: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"pgBackRest {self.kind} backup {self.label}, PostgreSQL {self.major}"

    def restore_into(self, datadir: Path) -> None:
        """``pgbackrest restore`` of this set into an empty ``datadir``; recovery is configured by the caller."""
        datadir.mkdir(parents=True, exist_ok=True)
        proc = run(self.repo, f"--stanza={self.stanza}", f"--pg1-path={datadir}", "restore", f"--set={self.label}",
                   "--type=none", f"--process-max={_workers()}")
        if proc.returncode != 0:
            raise OSError(f"pgbackrest restore of {self.label} failed: {(proc.stderr or proc.stdout).strip()[:800]}")


def _workers() -> int:
    """Files read side by side (a bucket answers each request slowly): 2 to 8, by the cores."""
    return max(2, min(8, os.cpu_count() or 2))


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def backups(repo: Repo) -> list[RestBackup]:
    """Every backup of every stanza of ``repo``, oldest first per stanza."""
    out = []
    for stanza in info(repo):
        status = stanza.get("status", {})
        if stanza.get("name") == "[invalid]" or (status.get("code") and not stanza.get("backup")):
            said = "; ".join(r.get("status", {}).get("message", "") for r in stanza.get("repo", [])) or \
                status.get("message", "")
            raise PgBackRestError(f"pgbackrest info on {repo}: {said or 'no stanza readable'}")
        versions = {db.get("id"): db.get("version", "") for db in stanza.get("db", [])}
        for b in stanza.get("backup", []):
            ts = b.get("timestamp", {})
            out.append(RestBackup(
                repo, stanza["name"], b["label"], b.get("type", "full"),
                datetime.fromtimestamp(ts.get("start", 0), UTC), datetime.fromtimestamp(ts.get("stop", 0), UTC),
                _major(versions.get(b.get("database", {}).get("id"), "")), b.get("archive", {}).get("start", ""),
                int(b.get("info", {}).get("size", 0)), bool(b.get("error"))))
    return out


def repo_of(artifact: Any, remote: Any = None) -> Repo:
    """The repository an artifact of it (``<repo>/backup/<stanza>/<label>``) belongs to: a folder, or a bucket's
    prefix reached with the run's settings for it."""
    if artifact.url:
        root = artifact.url.rsplit("/backup/", 1)[0]
        options = remote.options_for(artifact.url) if remote is not None and hasattr(remote, "options_for") else None
        return s3_repo(root, options)
    return artifact.path.parent.parent.parent


@functools.lru_cache(maxsize=64)
def _listed(repo: Repo) -> tuple[RestBackup, ...]:
    return tuple(backups(repo))


def find(artifact: Any, remote: Any = None) -> RestBackup | None:
    """The backup an artifact of a repository stands for (``pgbackrest info`` asked once per repository and
    process: the archive checks and the recovery each want it)."""
    try:
        found = _listed(repo_of(artifact, remote))
    except PgBackRestError:
        return None
    return next((b for b in found if b.stanza == artifact.path.parent.name and b.label == artifact.path.name), None)


def archive(repo: Repo, stanza: str) -> WalArchive:
    """The stanza's WAL archive as pgbackrest lists it (``repo-ls``): segments and their times; fetching one is
    ``archive-get`` (decompressed and checked by pgbackrest)."""
    proc = run(repo, "repo-ls", f"archive/{stanza}", "--recurse", "--output=json")
    if proc.returncode != 0:
        raise PgBackRestError(f"pgbackrest repo-ls on {repo} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    listing = json.loads(proc.stdout or "{}")
    ids = sorted({name.split("/", 1)[0] for name in listing if "/" in name and name[0].isdigit()})
    current = ids[-1] if ids else ""  # the archive of the stanza's current database (after an upgrade: the newest)
    major = _major(current.split("-", 1)[0]) if current else None
    wal = WalArchive(_root(repo) / "archive" / stanza / current, 16 << 20, major)
    for name, entry in sorted(listing.items()):
        if entry.get("type") != "file" or not name.startswith(current + "/"):
            continue
        base = name.rsplit("/", 1)[-1]
        seg = base.split("-", 1)[0]
        if SEGMENT_NAME.match(seg) and "-" in base:
            wal.segments.append(Segment(seg, _root(repo) / "archive" / stanza / name, int(seg[:8], 16), wal.number(seg),
                                        datetime.fromtimestamp(entry.get("time", 0), UTC), ()))
        elif re.fullmatch(r"[0-9A-F]{8}\.history", base):
            wal.histories.append(base)
    wal.fetch = lambda name, target, datadir: fetch(repo, stanza, name, target, datadir)
    return wal


def fetch(repo: Repo, stanza: str, name: str, target: Path, datadir: Path) -> bool:
    """One segment or history file written to ``target`` by ``archive-get`` (which checks it belongs to the
    cluster restored at ``datadir``); False when the archive lacks it."""
    proc = run(repo, f"--stanza={stanza}", f"--pg1-path={datadir}", "archive-get", name, str(target))
    return proc.returncode == 0 and target.exists()


def verify(repo: Repo, stanza: str) -> list[str]:
    """``pgbackrest verify``: every file of the repository against its checksums; the problems it reports."""
    proc = run(repo, f"--stanza={stanza}", "verify", f"--process-max={_workers()}", console="info")
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
