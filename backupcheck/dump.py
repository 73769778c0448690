"""``backupcheck dump``: the real pg_dump, run in a snapshot of our own, with the manifest taken in that snapshot
while it runs; ``backupcheck manifest --for``: the same figures after a dump made elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import manifest
from .restore.targets import describe_dsn
from .servers import pgbin
from .sniff import sniff

FORMATS = {"custom": "c", "directory": "d", "tar": "t", "plain": "p"}
# Set by backupcheck itself: given again, they would break the snapshot, the output or the manifest.
_OURS = ("-f", "--file", "-F", "--format", "-d", "--dbname", "--snapshot", "-h", "--host", "-p", "--port", "-U",
         "--username", "-j", "--jobs")


class DumpError(Exception):
    """The dump or its manifest could not be made; the message says why, without credentials."""


@dataclass(frozen=True)
class Written:
    artifact: Path
    manifest: Path
    doc: dict[str, Any]
    seconds: float  # the whole dump
    figures_seconds: float  # the figures, taken while pg_dump ran


# -- pg_dump's own table selection, so that tables left out on purpose are no finding -------------------------

_TAKES = {  # option -> what its pattern selects
    "-t": "table", "--table": "table", "--table-and-children": "table",
    "-T": "exclude-table", "--exclude-table": "exclude-table", "--exclude-table-and-children": "exclude-table",
    "--exclude-table-data": "exclude-data", "--exclude-table-data-and-children": "exclude-data",
    "-n": "schema", "--schema": "schema", "-N": "exclude-schema", "--exclude-schema": "exclude-schema",
}


def _options(args: list[str]) -> tuple[dict[str, list[str]], bool]:
    """The table and schema patterns among pg_dump's arguments, and whether it dumps schema only."""
    found: dict[str, list[str]] = {}
    schema_only = False
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if a in ("-s", "--schema-only"):
            schema_only = True
        if name in _OURS or any(a.startswith(o) and len(o) == 2 and len(a) > 2 for o in _OURS if len(o) == 2):
            raise DumpError(f"pg_dump option {a} is set by backupcheck dump itself (use --out, --format, --dsn)")
        if eq and name in _TAKES:
            found.setdefault(_TAKES[name], []).append(value)
        elif a in _TAKES and i + 1 < len(args):
            found.setdefault(_TAKES[a], []).append(args[i + 1])
            i += 1
        elif len(a) > 2 and a[:2] in ("-t", "-T", "-n", "-N"):
            found.setdefault(_TAKES[a[:2]], []).append(a[2:])
        i += 1
    return found, schema_only


def _pattern(text: str) -> tuple[re.Pattern[str] | None, re.Pattern[str]]:
    """A psql-style pattern (``public.audit_*``, ``"Mixed".x``) as (schema, name) regular expressions."""
    parts, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and text[i + 1:i + 2] == '"':
                cur += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(cur)
            cur = ""
        elif quoted:
            cur += re.escape(ch)
        else:
            cur += ".*" if ch == "*" else "." if ch == "?" else re.escape(ch.lower())
        i += 1
    parts.append(cur)
    name = re.compile(f"^(?:{parts[-1]})$")
    return (re.compile(f"^(?:{parts[-2]})$") if len(parts) > 1 else None), name


def _matches(patterns: list[str], schema: str, name: str, visible: bool, schema_pattern: bool = False) -> bool:
    for p in patterns:
        if schema_pattern:
            if _pattern(p)[1].match(schema):
                return True
            continue
        s, n = _pattern(p)
        if n.match(name) and (s.match(schema) if s is not None else visible):
            return True
    return False


def left_out(conn: Any, args: list[str]) -> tuple[set[str], set[str]]:
    """(tables pg_dump leaves out, tables whose rows it leaves out) for these arguments, as the server resolves
    the patterns (an unqualified pattern: tables visible in the search path)."""
    found, schema_only = _options(args)
    if not found and not schema_only:
        return set(), set()
    rows = conn.execute(manifest._TABLES).fetchall()
    out, no_data = set(), set()
    for _oid, schema, name, _kind, _parent, visible in rows:
        key = f"{schema}.{name}"
        dumped = True
        if found.get("table"):
            dumped = _matches(found["table"], schema, name, visible)
        elif found.get("schema"):
            dumped = _matches(found["schema"], schema, name, visible, schema_pattern=True)
        if _matches(found.get("exclude-table", []), schema, name, visible) or \
                _matches(found.get("exclude-schema", []), schema, name, visible, schema_pattern=True):
            dumped = False
        if not dumped:
            out.add(key)
        elif schema_only or _matches(found.get("exclude-data", []), schema, name, visible):
            no_data.add(key)
    return out, no_data


# -- connections -------------------------------------------------------------------------------------------

class _Service:
    """The DSN as a private libpq service file for pg_dump: no password on a command line or in a process list."""

    def __init__(self, dsn: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        try:
            self.params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
        except Exception as exc:
            raise DumpError(f"--dsn is not a connection string or URI: {manifest._first_line(exc)}") from None
        if any("\n" in v for v in self.params.values()):
            raise DumpError("--dsn: a value holds a line break")
        self.folder = Path(tempfile.mkdtemp(prefix="backupcheck-dump-"))
        self.file = self.folder / "pg_service.conf"
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[backupcheck]\n" + "".join(f"{k}={v}\n" for k, v in self.params.items()))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k in ("PGPASSFILE", "PGSSLROOTCERT")}
        return {**env, "PGSERVICEFILE": str(self.file), "PGSERVICE": "backupcheck"}

    def describe(self) -> str:
        return describe_dsn(self.params)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _snapshot(dsn: str) -> Any:
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=False, application_name="backupcheck dump")
    except psycopg.Error as exc:
        raise DumpError(f"cannot connect: {manifest._first_line(exc)}") from None
    conn.execute("set transaction isolation level repeatable read, read only")
    return conn


def _database(conn: Any) -> dict[str, Any]:
    name, version, size = conn.execute(
        "select current_database(), current_setting('server_version'), "
        "pg_database_size(current_database())").fetchone()
    return {"name": name, "server_version": version.split()[0], "server_major": conn.info.server_version // 10000,
            "size": size}


def _pg_dump_for(major: int, pg_bin: tuple[str, ...]) -> pgbin.Installation:
    try:
        return pgbin.pick(major, pg_bin, why=f"pg_dump for a PostgreSQL {major} server")
    except pgbin.NoSuitableBinaries as exc:
        raise DumpError(str(exc)) from None


def _version(inst: pgbin.Installation) -> str:
    out = subprocess.run([inst.tool("pg_dump"), "--version"], capture_output=True, text=True).stdout
    return out.strip().rsplit(" ", 1)[-1] if out else inst.version


def dump(dsn: str, out: Path, fmt: str = "custom", checksums: bool = False, pg_args: list[str] | None = None,
         pg_bin: tuple[str, ...] = (), key: str | None = None, log: Callable[[str], None] = lambda s: None) -> Written:
    """Run pg_dump in a snapshot exported here, take the figures in the same snapshot meanwhile, and write the dump
    (sha256 and size computed as it is written) and then its manifest, each atomically."""
    import psycopg

    if fmt not in FORMATS:
        raise DumpError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    args = list(pg_args or [])
    _options(args)  # refuses options backupcheck sets itself, before connecting
    if out.exists():
        raise DumpError(f"{out} exists already: backupcheck dump never overwrites a backup")
    if not out.parent.is_dir():
        raise DumpError(f"{out.parent} is not a folder")
    started = time.monotonic()
    service = _Service(dsn)
    try:
        conn = _snapshot(dsn)
    except BaseException:
        service.close()  # the private service file holds the password: it never outlives the attempt
        raise
    partial = out.with_name(f".{out.name}.partial")
    proc: subprocess.Popen[bytes] | None = None
    try:
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        database = _database(conn)
        skip, no_data = left_out(conn, args)
        inst = _pg_dump_for(database["server_major"], pg_bin)
        command = [inst.tool("pg_dump"), "--no-password", f"--snapshot={snapshot}", f"-F{FORMATS[fmt]}", *args]
        if fmt == "directory":
            command += ["-f", str(partial)]
        log(f"pg_dump {inst.version} of {service.describe()} into {out} ({fmt}), figures in the same snapshot")
        taken: dict[str, Any] = {}
        failed: list[BaseException] = []

        def take() -> None:
            t0 = time.monotonic()
            try:
                taken.update(manifest.figures(conn, checksums, frozenset(skip | no_data)))
            except BaseException as exc:  # reported once pg_dump is done
                failed.append(exc)
            taken["seconds"] = time.monotonic() - t0

        counter = threading.Thread(target=take, name="backupcheck-figures", daemon=True)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=service.env(),
                                stdin=subprocess.DEVNULL)
        counter.start()  # once pg_dump has been started: both read the same snapshot
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        digest = manifest.Digest()
        assert proc.stdout is not None
        if fmt != "directory":
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                while chunk := proc.stdout.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        code = proc.wait()
        reader.join()
        counter.join()
        if code != 0:
            message = b"".join(errors).decode("utf-8", "replace").strip()[-2000:]
            raise DumpError(f"pg_dump {inst.version} failed (exit {code}): {message}")
        if failed:
            exc = failed[0]
            raise DumpError(f"the figures could not be taken: {manifest._first_line(exc)}") from None
        conn.rollback()
    except psycopg.Error as exc:
        _remove(partial)
        raise DumpError(f"reading {service.describe()} failed: {manifest._first_line(exc)}") from None
    except BaseException:
        if proc is not None and proc.poll() is None:  # Ctrl-C or a crash of ours: pg_dump does not outlive us
            proc.kill()
            proc.wait()
        _remove(partial)
        raise
    finally:
        conn.close()
        service.close()
    if fmt == "directory":  # pg_dump writes the folder's files itself: read once, after it
        artifact = manifest.digest_path(partial)
        artifact["name"] = out.name
    else:
        artifact = {"name": out.name, "bytes": digest.bytes, "sha256": digest.sha256, "files": {}}
    seconds = taken.pop("seconds", 0.0)
    doc = _document("dump", database, {"version": _version(inst), "format": fmt, "args": args}, artifact, taken,
                    skip, no_data)
    doc = manifest.sign(doc, key) if key else doc
    os.replace(partial, out)
    target = manifest.path_for(out)
    manifest.write(doc, target)
    return Written(out, target, doc, time.monotonic() - started, seconds)


def _document(snapshot: str, database: dict[str, Any], pg_dump: dict[str, Any], artifact: dict[str, Any],
              taken: dict[str, Any], skip: set[str], no_data: set[str]) -> dict[str, Any]:
    tables = taken["tables"]
    for key in skip:
        if key in tables:
            tables[key]["dumped"] = False
    for key in no_data:
        if key in tables:
            tables[key]["data"] = False
    return {"backupcheck_manifest": manifest.VERSION, "created": manifest.now_text(), "snapshot": snapshot,
            "database": database, "pg_dump": pg_dump, "artifact": artifact, "tables": tables,
            "sequences": taken["sequences"], "extensions": taken["extensions"], "checksums": taken["checksums"],
            "unrecorded": taken["unrecorded"]}


def after(dsn: str, artifact: Path, checksums: bool = False, key: str | None = None) -> Written:
    """The manifest of a dump made by a team's own pg_dump line, taken right after it: marked "after" (not the
    dump's snapshot), so its counts are compared with a tolerance."""
    import psycopg

    if not artifact.exists():
        raise DumpError(f"{artifact}: no such file or folder")
    started = time.monotonic()
    service = _Service(dsn)
    service.close()  # only for the DSN's description: no pg_dump runs here
    conn = _snapshot(dsn)
    try:
        database = _database(conn)
        t0 = time.monotonic()
        taken = manifest.figures(conn, checksums)
        seconds = time.monotonic() - t0
        conn.rollback()
    except psycopg.Error as exc:
        raise DumpError(f"reading {service.describe()} failed: {manifest._first_line(exc)}") from None
    finally:
        conn.close()
    fmt = sniff(artifact)[0] if artifact.is_file() or (artifact / "toc.dat").is_file() else "unknown"
    doc = _document("after", database, {"version": "", "format": fmt, "args": []}, manifest.digest_path(artifact),
                    taken, set(), set())
    doc = manifest.sign(doc, key) if key else doc
    target = manifest.path_for(artifact)
    manifest.write(doc, target)
    return Written(artifact, target, doc, time.monotonic() - started, seconds)


def upload(w: Written, url: str) -> list[str]:
    """Copy the dump and then its manifest under an S3 prefix (the manifest last: a listed manifest means a complete
    upload). Credentials and endpoint come from boto3's standard chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...)."""
    import boto3

    from .sources.s3 import S3Location, explain

    try:
        where = S3Location.parse(url)
    except ValueError as exc:
        raise DumpError(f"--to {exc}") from None
    prefix = where.prefix if where.prefix.endswith("/") or not where.prefix else where.prefix + "/"
    files = ([(p, f"{prefix}{w.artifact.name}/{p.relative_to(w.artifact)}") for p in sorted(w.artifact.rglob("*"))
              if p.is_file()] if w.artifact.is_dir() else [(w.artifact, prefix + w.artifact.name)])
    files.append((w.manifest, prefix + w.manifest.name))
    client = boto3.client("s3")
    done = []
    for path, key in files:
        try:
            client.upload_file(str(path), where.bucket, key)
        except Exception as exc:
            raise DumpError(str(explain(exc, f"uploading {path.name} to s3://{where.bucket}/{key}"))) from None
        done.append(f"s3://{where.bucket}/{key}")
    return done


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def summary(w: Written) -> str:
    doc = w.doc
    rows = sum(t["rows"] or 0 for t in doc["tables"].values() if t["dumped"])
    left = [k for k, t in doc["tables"].items() if not t["dumped"]]
    text = (f"wrote {w.artifact} ({doc['artifact']['bytes']:,} bytes, sha256 {doc['artifact']['sha256'][:16]}…) and "
            f"{w.manifest.name}: {len(doc['tables'])} tables, {rows:,} rows"
            f"{', content fingerprints' if doc['checksums'] else ''}"
            f"{', signed' if 'hmac' in doc else ''}; {w.seconds:.1f} s"
            + (f" (the figures {w.figures_seconds:.1f} s, in the dump's snapshot while pg_dump ran)"
               if doc["snapshot"] == "dump" else " (taken after the dump, not in its snapshot)"))
    if left:
        text += f"\nleft out by pg_dump's options: {', '.join(sorted(left)[:10])}"
    for line in doc["unrecorded"]:
        text += f"\nnot recorded: {line}"
    return text
