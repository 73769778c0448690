"""A backup's manifest: what the database held at the moment of the dump, written beside it as PATH.manifest.json.

The figures are taken by ``figures()`` on a connection inside the dump's own snapshot (``backupcheck dump``) or
right after it (``backupcheck manifest --for``), and by the same function on the restored database, so both sides
are normalised alike: exact rows per table, sequence values, one definition per table (columns and types,
constraints with NOT VALID, indexes, printed by the server with ``search_path`` empty), the extensions, and with
``checksums`` an order-free fingerprint of every table's rows. A manifest is untrusted input like the dump:
``read()`` validates it against the schema below, refuses oversized files and fields, and checks its HMAC.

Schema (version 1; every key required unless marked, no others)::

    backupcheck_manifest  1
    created               ISO 8601 moment the figures were taken
    snapshot              "dump": in the dump's snapshot; "after": taken after a dump made elsewhere
    database              {name, server_version, server_major, size}
    pg_dump               {version, format, args}          (args: the options pg_dump was given, as a list)
    artifact              {name, bytes, sha256, files}     (files: {relative path: {bytes, sha256}} for a folder;
                          sha256 null: not recorded)
    tables                {"schema.table": {rows, dumped, data, definition, content}}
                          rows: int or null (not recorded, or a partitioned table: its partitions have the
                          rows); dumped / data: false where the dump's own options left
                          the table or its rows out; definition: list of lines; content: text or null
    sequences             {"schema.sequence": int or null}
    extensions            {name: version}
    checksums             "md5-sum-1" where content fingerprints were taken, else null
    unrecorded            list of sentences: what could not be recorded, and why
    hmac                  (optional) hex HMAC-SHA256 of the canonical JSON of everything else
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = 1
SUFFIX = ".manifest.json"
KEY_ENV = "BACKUPCHECK_MANIFEST_KEY"
MAX_BYTES = 64 << 20  # a manifest of 100,000 tables with their definitions is about 40 MB
MAX_TEXT = 16384  # one name, definition line or sentence
MAX_ITEMS = 200_000
CHECKSUMS = "md5-sum-1"

# Both sides print values and definitions under the same settings: names schema-qualified, times in UTC, floats
# exact, bytea in hex; row-level security off as pg_dump has it (a policy that would hide rows is an error).
SESSION = ("SET search_path = ''", "SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'",
           "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 3", "SET bytea_output = 'hex'",
           "SET row_security = off")


class ManifestError(Exception):
    """The manifest cannot be used: unreadable, not valid JSON, outside the schema, or its signature is wrong."""


@dataclass(frozen=True)
class Manifest:
    doc: dict[str, Any]
    path: Path
    signed: bool  # its HMAC was checked against BACKUPCHECK_MANIFEST_KEY

    @property
    def in_snapshot(self) -> bool:
        return self.doc["snapshot"] == "dump"


# -- the figures -------------------------------------------------------------------------------------------

_TABLES = """
select c.oid, n.nspname, c.relname, c.relkind, c.relkind = 'p' or c.relhassubclass, pg_table_is_visible(c.oid)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and c.relpersistence <> 't'
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'
  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                  and d.deptype = 'e')
order by n.nspname, c.relname
"""
_COLUMNS = """
select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text
from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = any(%s) and a.attnum > 0 and not a.attisdropped
order by a.attrelid, a.attnum
"""
# Not-null constraints became rows of pg_constraint in PostgreSQL 18: the columns say NOT NULL instead.
_CONSTRAINTS = """
select conrelid, conname, pg_get_constraintdef(oid) from pg_constraint
where conrelid = any(%s) and contype <> 'n' order by conrelid, conname
"""
_INDEXES = """
select i.indrelid, c.relname, pg_get_indexdef(i.indexrelid) from pg_index i join pg_class c on c.oid = i.indexrelid
where i.indrelid = any(%s) order by i.indrelid, c.relname
"""


def _key(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def figures(conn: Any, checksums: bool = False, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Tables (rows, definition, content), sequences and extensions as this connection's snapshot sees them.

    ``conn`` is a psycopg connection, in a transaction (a snapshot) or not; what cannot be read with its privileges
    is left null and said in ``unrecorded``. Tables in ``skip`` get their definition only (their rows are not in
    the dump)."""
    import psycopg

    for statement in SESSION:
        conn.execute(statement)
    unrecorded: list[str] = []
    rows = conn.execute(_TABLES).fetchall()
    oids = [r[0] for r in rows]
    definition: dict[int, list[str]] = {oid: [] for oid in oids}
    for relid, name, typ, notnull, default, generated, identity in conn.execute(_COLUMNS, (oids,)).fetchall():
        line = f"column {name} {typ}"
        if identity:
            line += f" GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY"
        elif generated:
            line += f" GENERATED ALWAYS AS ({default}) STORED"
        elif default is not None:
            line += f" DEFAULT {default}"
        definition[relid].append(line + (" NOT NULL" if notnull else ""))
    for relid, name, text in conn.execute(_CONSTRAINTS, (oids,)).fetchall():
        definition[relid].append(f"constraint {name} {text}")
    for relid, name, text in conn.execute(_INDEXES, (oids,)).fetchall():
        definition[relid].append(f"index {name} {text}")
    tables: dict[str, dict[str, Any]] = {}
    for oid, schema, name, kind, _parent, _visible in rows:
        key = _key(schema, name)
        entry: dict[str, Any] = {"rows": None, "dumped": True, "data": True, "definition": definition[oid],
                                 "content": None}
        if kind == "r" and key not in skip:
            entry["rows"], entry["content"] = _count(conn, schema, name, checksums, unrecorded)
        # A partitioned table holds no rows of its own (null): its partitions are counted.
        tables[key] = entry
    sequences: dict[str, int | None] = {}
    try:
        with conn.transaction():  # a savepoint, as for every table
            for schema, name, value in conn.execute(
                    "select schemaname, sequencename, last_value from pg_catalog.pg_sequences "
                    "order by 1, 2").fetchall():
                if schema not in ("pg_catalog", "information_schema"):
                    sequences[_key(schema, name)] = value
    except psycopg.Error as exc:
        unrecorded.append(f"sequence values: {_first_line(exc)}")
    unread = sorted(k for k, v in sequences.items() if v is None)
    if unread:
        unrecorded.append(f"the value of {len(unread)} sequence(s) not yet used or not readable with this role's "
                          f"privileges: {', '.join(unread[:10])}{' …' if len(unread) > 10 else ''}")
    extensions = dict(conn.execute("select extname, extversion from pg_catalog.pg_extension order by 1").fetchall())
    return {"tables": tables, "sequences": sequences, "extensions": extensions, "unrecorded": unrecorded,
            "checksums": CHECKSUMS if checksums else None}


def _count(conn: Any, schema: str, name: str, checksums: bool, unrecorded: list[str]) -> tuple[int | None, str | None]:
    """Exact rows of one table (ONLY: an inheritance parent's own), with its content fingerprint when asked: the
    sum of the first 64 bits of every row's md5, which no row order changes."""
    import psycopg
    from psycopg import sql

    table = sql.Identifier(schema, name)
    query = (sql.SQL("select count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)"
                     "::text from only {} as t").format(table)
             if checksums else sql.SQL("select count(*), null from only {}").format(table))
    try:
        with conn.transaction():  # a savepoint: one unreadable table does not end the snapshot
            count, content = conn.execute(query).fetchone()
        return count, content
    except psycopg.Error as exc:
        unrecorded.append(f"rows of {_key(schema, name)}: {_first_line(exc)}")
        return None, None


# -- the artifact's bytes ----------------------------------------------------------------------------------

class Digest:
    """sha256 and size of bytes as they pass (a dump while it is written)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.bytes = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.bytes += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def digest_stream(stream: Any) -> Digest:
    d = Digest()
    while chunk := stream.read(1 << 20):
        d.update(chunk)
    return d


def digest_path(path: Path) -> dict[str, Any]:
    """{name, bytes, sha256, files} of a file, or of a folder (a directory-format dump) file by file."""
    def one(p: Path) -> tuple[int, str]:
        d = Digest()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                d.update(chunk)
        return d.bytes, d.sha256

    if path.is_dir():
        files = {}
        total = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            size, sha = one(p)
            rel = str(p.relative_to(path))
            files[rel] = {"bytes": size, "sha256": sha}
            total.update(f"{rel}\0{sha}\n".encode())
        return {"name": path.name, "bytes": sum(f["bytes"] for f in files.values()), "sha256": total.hexdigest(),
                "files": files}
    size, sha = one(path)
    return {"name": path.name, "bytes": size, "sha256": sha, "files": {}}


# -- writing, signing, reading -----------------------------------------------------------------------------

def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "hmac"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def sign(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {**doc, "hmac": hmac.new(key.encode(), canonical(doc), hashlib.sha256).hexdigest()}


def write(doc: dict[str, Any], path: Path) -> None:
    """Atomically: a reader sees the whole manifest or none (a listed manifest means a complete write)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def path_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + SUFFIX)


def read(path: Path, key: str | None = None) -> Manifest:
    """The manifest at ``path``, validated; ``key`` (else $BACKUPCHECK_MANIFEST_KEY) checks its HMAC."""
    key = key if key is not None else os.environ.get(KEY_ENV) or None
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ManifestError(f"{path.name} is {size:,} bytes: larger than a manifest may be ({MAX_BYTES:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{path.name} is not valid JSON (cut short?): {str(exc)[:200]}") from None
    _validate(doc, path.name)
    signed = False
    if key:
        if "hmac" not in doc:
            raise ManifestError(f"{path.name} carries no signature, and {KEY_ENV} is set: a manifest written "
                                "without the key, or one whose signature was removed")
        expected = hmac.new(key.encode(), canonical(doc), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(doc["hmac"])):
            raise ManifestError(f"{path.name}: the signature does not match its content ({KEY_ENV}): the manifest "
                                "was changed after it was written, or signed with another key")
        signed = True
    return Manifest(doc, path, signed)


_TOP = {"backupcheck_manifest", "created", "snapshot", "database", "pg_dump", "artifact", "tables", "sequences",
        "extensions", "checksums", "unrecorded"}
_TABLE = {"rows", "dumped", "data", "definition", "content"}


def _validate(doc: Any, name: str) -> None:
    def fail(why: str) -> None:
        raise ManifestError(f"{name} is not a backupcheck manifest of version {VERSION}: {why}")

    def text(value: Any, where: str, empty: bool = True) -> None:
        if not isinstance(value, str) or len(value) > MAX_TEXT or (not empty and not value):
            fail(f"{where} must be a text of at most {MAX_TEXT:,} characters")

    def count(value: Any, where: str, null: bool = True) -> None:
        if value is None and null:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(f"{where} must be a whole number{' or null' if null else ''}")

    def mapping(value: Any, where: str, keys: set[str] | None = None, optional: frozenset[str] = frozenset()) -> None:
        if not isinstance(value, dict) or len(value) > MAX_ITEMS:
            fail(f"{where} must be an object")
        if keys is not None:
            extra, missing = set(value) - keys - optional, keys - set(value)
            if extra:
                fail(f"{where} has unknown key(s) {', '.join(sorted(extra)[:5])}")
            if missing:
                fail(f"{where} lacks {', '.join(sorted(missing))}")

    mapping(doc, "the document", _TOP, frozenset({"hmac"}))
    if doc["backupcheck_manifest"] != VERSION:
        fail(f"backupcheck_manifest is {doc['backupcheck_manifest']!r} (this backupcheck reads version {VERSION})")
    text(doc["created"], "created", False)
    if "hmac" in doc:
        text(doc["hmac"], "hmac", False)
    if doc["snapshot"] not in ("dump", "after"):
        fail("snapshot must be \"dump\" or \"after\"")
    mapping(doc["database"], "database", {"name", "server_version", "server_major", "size"})
    text(doc["database"]["name"], "database.name")
    text(doc["database"]["server_version"], "database.server_version")
    count(doc["database"]["server_major"], "database.server_major")
    count(doc["database"]["size"], "database.size")
    mapping(doc["pg_dump"], "pg_dump", {"version", "format", "args"})
    text(doc["pg_dump"]["version"], "pg_dump.version")
    text(doc["pg_dump"]["format"], "pg_dump.format")
    if not isinstance(doc["pg_dump"]["args"], list) or len(doc["pg_dump"]["args"]) > 1000:
        fail("pg_dump.args must be a list")
    for i, a in enumerate(doc["pg_dump"]["args"]):
        text(a, f"pg_dump.args[{i}]")
    mapping(doc["artifact"], "artifact", {"name", "bytes", "sha256", "files"})
    text(doc["artifact"]["name"], "artifact.name", False)
    count(doc["artifact"]["bytes"], "artifact.bytes", False)
    sha = doc["artifact"]["sha256"]
    if sha is not None and (not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha)):
        fail("artifact.sha256 must be 64 hex digits (or null: not recorded)")
    mapping(doc["artifact"]["files"], "artifact.files")
    for rel, f in doc["artifact"]["files"].items():
        text(rel, "a name in artifact.files", False)
        mapping(f, f"artifact.files[{rel}]", {"bytes", "sha256"})
        count(f["bytes"], f"artifact.files[{rel}].bytes", False)
        text(f["sha256"], f"artifact.files[{rel}].sha256", False)
    mapping(doc["tables"], "tables")
    for t, entry in doc["tables"].items():
        text(t, "a table name", False)
        mapping(entry, f"tables[{t}]", _TABLE)
        count(entry["rows"], f"tables[{t}].rows")
        for flag in ("dumped", "data"):
            if not isinstance(entry[flag], bool):
                fail(f"tables[{t}].{flag} must be true or false")
        if not isinstance(entry["definition"], list) or len(entry["definition"]) > 10_000:
            fail(f"tables[{t}].definition must be a list of lines")
        for line in entry["definition"]:
            text(line, f"a line of tables[{t}].definition")
        if entry["content"] is not None:
            text(entry["content"], f"tables[{t}].content")
    mapping(doc["sequences"], "sequences")
    for s, value in doc["sequences"].items():
        text(s, "a sequence name", False)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            fail(f"sequences[{s}] must be a whole number or null")
    mapping(doc["extensions"], "extensions")
    for e, v in doc["extensions"].items():
        text(e, "an extension name", False)
        text(v, f"extensions[{e}]")
    if doc["checksums"] not in (None, CHECKSUMS):
        fail(f"checksums must be null or \"{CHECKSUMS}\"")
    if not isinstance(doc["unrecorded"], list) or len(doc["unrecorded"]) > 10_000:
        fail("unrecorded must be a list")
    for line in doc["unrecorded"]:
        text(line, "a line of unrecorded")
