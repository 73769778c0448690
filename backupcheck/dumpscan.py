"""One read of a dump that yields its evidence: tables, row counts, keys, trailer, safety."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import BinaryIO

from . import security, sqllex
from .pgarchive import ArchiveInfo, major_of
from .rolerefs import roles_named

_TRAILERS = ("PostgreSQL database dump complete", "PostgreSQL database cluster dump complete")
_IDENT = r'(?:"(?:[^"]|"")+"|[^\W\d][\w$]*)'
_QNAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_CREATE_TABLE = re.compile(
    rf"^\s*CREATE\s+(?:UNLOGGED\s+|GLOBAL\s+|LOCAL\s+|TEMP(?:ORARY)?\s+)*TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_QNAME})",
    re.I,
)
_COPY = re.compile(rf"^\s*COPY\s+({_QNAME})", re.I)
_INSERT = re.compile(rf"^\s*INSERT\s+INTO\s+({_QNAME})\s*(\()?", re.I)
_FK = re.compile(
    rf"ALTER\s+TABLE\s+(?:ONLY\s+)?({_QNAME})\s+ADD\s+CONSTRAINT\s+({_IDENT})\s+FOREIGN\s+KEY\s*\(([^)]*)\)\s*"
    rf"REFERENCES\s+({_QNAME})\s*\(([^)]*)\)([^;]*)",
    re.I | re.S,
)
_CREATE_DB = re.compile(rf"^\s*CREATE\s+DATABASE\s+({_IDENT})", re.I)
_CREATE_ROLE = re.compile(rf"^\s*CREATE\s+(?:ROLE|USER|GROUP)\s+({_IDENT})", re.I)
_CREATE_EXTENSION = re.compile(rf"^\s*CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})", re.I)
_TABLESPACE = re.compile(rf"(?:\bTABLESPACE\s*=?\s*({_IDENT})|default_tablespace\s*(?:=|TO)\s*'?([^';\s]+)'?)", re.I)
_LOCALE_CLAUSE = re.compile(r"\b(LOCALE|LC_COLLATE|LC_CTYPE|ICU_LOCALE)\s*=\s*'((?:[^']|'')*)'", re.I)
_CREATE_TABLESPACE = re.compile(rf"^\s*CREATE\s+TABLESPACE\s+({_IDENT})", re.I)


def created_extension(sql: str) -> str:
    """The extension a ``CREATE EXTENSION`` statement creates (unquoted), or ""."""
    m = _CREATE_EXTENSION.match(sql)
    return split_ident(m.group(1))[0] if m else ""


def _add(into: list[str], name: str) -> None:
    if name and name not in into:
        into.append(name)


# Syntax and functions a server older than the given major rejects; a dump that names no pg_dump version (the
# Supabase CLI strips every comment) still says which server it needs through them.
_FEATURES = [
    (re.compile(r"\buuidv7\s*\(", re.I), "uuidv7()", 18),
    (re.compile(r"\bGENERATED\s+ALWAYS\s+AS\s*\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\s*(?:VIRTUAL\b|[,\n)])",
                re.I), "a VIRTUAL generated column", 18),
    (re.compile(r"\bGRANT\s+MAINTAIN\b|\bGRANT\s+[^;]*\bMAINTAIN\s+ON\b", re.I), "the MAINTAIN privilege", 17),
    (re.compile(r"^\s*GRANT\s+[^;]*\bTO\b[^;]*\bWITH\s+(?:INHERIT|SET)\s", re.I), "GRANT … WITH INHERIT/SET", 16),
]


def note_features(scan: DumpScan, sql: str) -> None:
    for pattern, what, major in _FEATURES:
        if what not in scan.features and pattern.search(sql):
            scan.features[what] = major


def note_requirements(scan: DumpScan, sql: str) -> None:
    """Record the roles, extensions, tablespaces and newer syntax one statement needs or creates."""
    upper = sql.upper()
    if "UUIDV7" in upper or "GENERATED" in upper or "MAINTAIN" in upper or "WITH" in upper:
        note_features(scan, sql)
    head = sql.lstrip()[:40].upper()
    if head.startswith(("CREATE ROLE", "CREATE USER", "CREATE GROUP")):
        m = _CREATE_ROLE.match(sql)
        if m:
            _add(scan.roles_created, split_ident(m.group(1))[0])
        return
    if head.startswith("CREATE EXTENSION"):
        _add(scan.extensions, created_extension(sql))
        return
    if head.startswith("CREATE DATABASE"):
        for m in _LOCALE_CLAUSE.finditer(sql):
            kind, value = m.group(1).upper(), m.group(2)
            _add(scan.icu_locales if kind == "ICU_LOCALE" else scan.locales, value)
        return
    if head.startswith("CREATE TABLESPACE"):
        m = _CREATE_TABLESPACE.match(sql)
        if m:
            _add(scan.tablespaces_created, split_ident(m.group(1))[0])
        return
    for name in roles_named(sql):
        _add(scan.roles_used, name)
    if "TABLESPACE" in sql.upper() and not head.startswith(("CREATE TABLESPACE", "DROP", "COMMENT")):
        for m in _TABLESPACE.finditer(sql):
            name = m.group(2) if m.group(2) is not None else split_ident(m.group(1))[0]
            if name and name.lower() not in ("pg_default", "pg_global"):
                _add(scan.tablespaces, name)


def split_ident(text: str) -> list[str]:
    """``public."Order Items"`` -> [``public``, ``Order Items``]; unquoted names fold to lower case."""
    parts = re.findall(rf"{_IDENT}", text)
    out = []
    for p in parts:
        out.append(p[1:-1].replace('""', '"') if p.startswith('"') else p.lower())
    return out


def table_key(qualified: str, db: str | None = None) -> str:
    parts = split_ident(qualified)
    name = ".".join(parts if len(parts) == 2 else ["public", *parts])
    return f"{db}/{name}" if db else name


@dataclass(frozen=True)
class ForeignKey:
    table: str  # table key: schema.name (db/schema.name in a cluster dump)
    name: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    not_valid: bool


@dataclass
class DumpScan:
    """What one full read of a dump showed."""

    kind: str = "plain"  # plain, dumpall, archive
    dump_version: str = ""
    server_version: str = ""
    tables: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)  # rows in the dump's data, per table
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    security: list[str] = field(default_factory=list)  # "line N: reason"
    errors: list[str] = field(default_factory=list)  # unreadable, truncated, incomplete
    has_header: bool = False
    trailer: bool = False
    statements: int = 0
    data_read: bool = False  # every data block was read (False: only the TOC)
    roles_used: list[str] = field(default_factory=list)  # owners, grantees, SET ROLE targets
    roles_created: list[str] = field(default_factory=list)  # CREATE ROLE in the dump itself
    extensions: list[str] = field(default_factory=list)  # CREATE EXTENSION
    tablespaces: list[str] = field(default_factory=list)  # non-default tablespaces objects are placed in
    tablespaces_created: list[str] = field(default_factory=list)  # CREATE TABLESPACE (cluster dumps)
    locales: list[str] = field(default_factory=list)  # libc locales CREATE DATABASE asks for
    icu_locales: list[str] = field(default_factory=list)  # ICU locales CREATE DATABASE asks for
    data_sections: int = -1  # COPY/INSERT blocks or TABLE DATA entries (-1: not known); 0 with tables: schema only
    features: dict[str, int] = field(default_factory=dict)  # syntax only newer servers know -> the major it needs

    @property
    def dump_major(self) -> int | None:
        return major_of(self.dump_version) if self.dump_version else None


def _fk_from(sql: str, db: str | None) -> ForeignKey | None:
    m = _FK.search(sql)
    if not m:
        return None
    cols = tuple(c for part in m.group(3).split(",") for c in split_ident(part.strip()))
    refs = tuple(c for part in m.group(5).split(",") for c in split_ident(part.strip()))
    return ForeignKey(
        table=table_key(m.group(1), db), name=split_ident(m.group(2))[0], columns=cols,
        ref_table=table_key(m.group(4), db), ref_columns=refs, not_valid="NOT VALID" in m.group(6).upper(),
    )


def _count_insert_rows(sql: str, has_column_list: bool) -> int:
    # Rows of a multi-row INSERT: top-level parenthesised groups after VALUES.
    upper = sql.upper()
    idx = upper.find("VALUES")
    if idx < 0:
        return 1
    depth = groups = 0
    quote = ""
    for ch in sql[idx:]:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            if depth == 0:
                groups += 1
            depth += 1
        elif ch == ")":
            depth -= 1
    return max(groups, 1)


class _Segments:
    """pg_dump and pg_dumpall outputs in one file, each to be closed by its own completion trailer.

    A file may hold one pg_dump output, a pg_dumpall output (database dumps nested in the
    cluster dump), or several outputs one after another (a roles dump, then a database
    dump); producers that write no header (the Supabase CLI) open no segment.
    """

    def __init__(self, scan: DumpScan) -> None:
        self.scan = scan
        self.open: list[tuple[str, int]] = []  # (kind, line of its header): kind "database" or "cluster"
        self.closed = 0

    def comment(self, text: str, line: int) -> None:
        if text == _TRAILERS[0]:
            if self.open and self.open[-1][0] == "database":
                self.open.pop()
                self.closed += 1
        elif text == _TRAILERS[1]:
            while self.open:
                kind, start = self.open.pop()
                if kind == "cluster":
                    self.closed += 1
                    break
                self._unclosed(kind, start, f"before the cluster dump's trailer at line {line}")
        elif text == "PostgreSQL database dump" or text == "PostgreSQL database cluster dump":
            kind = "cluster" if "cluster" in text else "database"
            if self.open and self.open[-1][0] == kind:
                self._unclosed(kind, self.open.pop()[1], f"before the next one starts at line {line}")
            self.open.append((kind, line))

    def _unclosed(self, kind: str, start: int, where: str) -> None:
        trailer = _TRAILERS[1] if kind == "cluster" else _TRAILERS[0]
        self.scan.errors.append(f"line {start}: the {kind} dump that starts here has no completion trailer "
                                f"('-- {trailer}') {where}: it was cut short")

    def finish(self) -> None:
        if self.open:
            kind, _start = self.open[-1]
            trailer = _TRAILERS[1] if kind == "cluster" else _TRAILERS[0]
            self.scan.errors.append(
                f"no pg_dump completion trailer after the last statement (expected '-- {trailer}'): the file is truncated")
        self.scan.trailer = not self.open and self.closed > 0


def scan_plain(stream: BinaryIO) -> DumpScan:
    """Read a plain or pg_dumpall SQL stream to its end without running any of it.

    Completion is judged as each producer writes files: every pg_dump or pg_dumpall output
    in the file ends with its trailer (only session resets may follow, as ``supabase db
    dump`` writes ``RESET ALL;``); a file without pg_dump's header (Supabase CLI schema
    files, migrations) must end cleanly: no open quote, dollar quote, COPY block or statement.
    """
    scanner = PlainScanner()
    for ev in sqllex.events(stream):
        scanner.feed(ev)
    return scanner.finish()


def scan_head(stream: BinaryIO) -> DumpScan:
    """What a plain dump says before its first rows: the header, roles, schemas, tables, extensions and the syntax
    its schema needs (all of pg_dump's pre-data), read without running it. A file without rows is read whole."""
    scanner = PlainScanner()
    for ev in sqllex.events(stream):
        if scanner.is_data(ev):
            scanner.scan.data_sections += 1  # rows follow (how many is the restore's read to count)
            break
        scanner.feed(ev)
    return scanner.scan


class PlainScanner:
    """A plain dump read event by event: the scan of ``scan_plain``, also fed by a restore that runs each event
    (``check`` before it runs, ``counted`` after its rows went to the server), so one read serves both."""

    def __init__(self) -> None:
        self.scan = DumpScan(data_sections=0)
        self._segments = _Segments(self.scan)
        self._db: str | None = None

    @staticmethod
    def is_data(ev: sqllex.Event) -> bool:
        """Rows: a COPY block or an INSERT (where pg_dump's pre-data ends)."""
        return isinstance(ev, sqllex.CopyIn) or (isinstance(ev, sqllex.Statement) and bool(_INSERT.match(
            ev.text[:200].decode("utf-8", "replace"))))

    def feed(self, ev: sqllex.Event) -> list[str]:
        """Note the event (a COPY block's rows read through); what it carries for the checking host."""
        problems = self.check(ev)
        if isinstance(ev, sqllex.CopyIn):
            for _ in ev.data:
                pass
            self.counted(ev)
        return problems

    def check(self, ev: sqllex.Event) -> list[str]:
        """Note everything the event says but a COPY block's rows; the security problems it adds ("line N: …")."""
        scan = self.scan
        before = len(scan.security)
        if isinstance(ev, sqllex.Comment):
            text = ev.text.lstrip("-").strip()
            if text.startswith("Dumped by pg_dump version") or text.startswith("Dumped by pg_dumpall version"):
                scan.dump_version = text.rsplit("version", 1)[1].strip()
                scan.has_header = True
            elif text.startswith("Dumped from database version"):
                scan.server_version = text.rsplit("version", 1)[1].strip()
                scan.has_header = True
            elif text.startswith("PostgreSQL database"):
                if text.startswith("PostgreSQL database cluster dump"):
                    scan.kind = "dumpall"
                scan.has_header = True
                self._segments.comment(text, ev.line)
        elif isinstance(ev, sqllex.MetaCommand):
            problem = security.meta_problem(ev.name, ev.args, ev.inside_statement)
            if problem:
                scan.security.append(f"line {ev.line}: {problem}")
            elif ev.name in ("connect", "c"):
                self._db = security.connect_target(ev.args)
                if self._db and self._db not in scan.databases:
                    scan.databases.append(self._db)
        elif isinstance(ev, sqllex.CopyIn):
            sql = ev.statement.text.decode("utf-8", "replace")
            for reason in security.statement_problems(sql):
                scan.security.append(f"line {ev.statement.line}: {reason}")
            scan.statements += 1
        elif isinstance(ev, sqllex.Statement):
            self._statement(ev)
        elif isinstance(ev, sqllex.Unterminated):
            scan.errors.append(f"line {ev.line}: {ev.what}")
        return scan.security[before:]

    def counted(self, ev: sqllex.CopyIn) -> None:
        """A COPY block whose rows were read: their number joins the table's."""
        m = _COPY.match(ev.statement.text.decode("utf-8", "replace"))
        if m:
            key = table_key(m.group(1), self._db if self.scan.kind == "dumpall" else None)
            self.scan.row_counts[key] = self.scan.row_counts.get(key, 0) + ev.rows
            self.scan.data_sections += 1

    def _statement(self, ev: sqllex.Statement) -> None:
        scan = self.scan
        sql = ev.text.decode("utf-8", "replace")
        scan.statements += 1
        for reason in security.statement_problems(sql):
            scan.security.append(f"line {ev.line}: {reason}")
        note_requirements(scan, sql)
        cluster_db = self._db if scan.kind == "dumpall" else None
        m = _CREATE_TABLE.match(sql)
        if m:
            scan.tables.append(table_key(m.group(1), cluster_db))
            return
        m = _INSERT.match(sql)
        if m:
            scan.data_sections += 1
            key = table_key(m.group(1), cluster_db)
            scan.row_counts[key] = scan.row_counts.get(key, 0) + _count_insert_rows(sql, bool(m.group(2)))
            return
        fk = _fk_from(sql, cluster_db)
        if fk:
            scan.foreign_keys.append(fk)

    def finish(self) -> DumpScan:
        """The stream ended: completion judged, the scan whole."""
        self.scan.data_read = True
        self._segments.finish()
        return self.scan


def scan_archive_toc(info: ArchiveInfo) -> DumpScan:
    """Evidence from an archive's table of contents alone (no data read)."""
    scan = DumpScan(kind="archive", dump_version=info.dump_version, server_version=info.server_version,
                    has_header=True, trailer=True, data_sections=0)
    for e in info.entries:
        if e.desc in ("TABLE DATA", "BLOBS", "BLOB DATA", "LARGE OBJECTS"):
            scan.data_sections += 1
        elif e.desc in ("TABLE", "DEFAULT") and e.defn:
            note_features(scan, e.defn)
        if e.owner:
            _add(scan.roles_used, e.owner)
        if e.tablespace and e.tablespace not in ("pg_default", "pg_global"):
            _add(scan.tablespaces, e.tablespace)
        if e.desc == "EXTENSION":
            _add(scan.extensions, e.tag)
        elif e.desc in ("ACL", "DEFAULT ACL", "POLICY") and e.defn:
            for statement in e.defn.split(";\n"):
                note_requirements(scan, statement)
        for text in (e.defn, e.copy_stmt):
            if text:
                for reason in security.statement_problems(text):
                    scan.security.append(f"TOC entry {e.dump_id} ({e.desc} {e.tag}): {reason}")
        if e.desc == "TABLE":
            scan.tables.append(f"{e.namespace}.{e.tag}")
        elif e.desc == "FK CONSTRAINT":
            fk = _fk_from(e.defn, None)
            if fk:
                scan.foreign_keys.append(fk)
        scan.statements += 1
    return scan


def scan_archive_data(archive_path: str, pg_restore: str, into: DumpScan) -> None:
    """Read every data block through ``pg_restore -f -`` and count each table's rows."""
    proc = subprocess.Popen(
        [pg_restore, "--data-only", "-f", "-", archive_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    counts: dict[str, int] = {}
    for ev in sqllex.events(proc.stdout):  # type: ignore[arg-type]
        if isinstance(ev, sqllex.CopyIn):
            for _ in ev.data:
                pass
            m = _COPY.match(ev.statement.text.decode("utf-8", "replace"))
            if m:
                key = table_key(m.group(1))
                counts[key] = counts.get(key, 0) + ev.rows
    _, err = proc.communicate()
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        into.errors.append("pg_restore could not read every data block: " + " | ".join(message[-3:]))
    into.row_counts = counts
    into.data_read = proc.returncode == 0


def scan_archive_sql(archive_path: str, pg_restore: str) -> DumpScan:
    """Evidence from the SQL pg_restore makes of a whole archive (TOC and every data block), read as a plain dump.

    For archives whose table of contents this package's reader cannot parse but pg_restore can.
    """
    proc = subprocess.Popen([pg_restore, "-f", "-", archive_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    scan = scan_plain(proc.stdout)  # type: ignore[arg-type]
    err = proc.stderr.read()
    proc.wait()
    scan.kind = "archive"
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        scan.errors.append("pg_restore could not read every data block: " + " | ".join(message[-3:]))
    scan.data_read = proc.returncode == 0
    return scan
