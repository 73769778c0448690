"""The ``backupcheck`` command (also ``python -m backupcheck``): reports that need no pytest run.

    backupcheck evidence --since 90d [--series S] [-o evidence.html | -o evidence.md] [--history SPEC]
    backupcheck merge shard-*/results.json -o reports/ [--plan plan.json]
    backupcheck dump --dsn DSN --out PATH [--format custom] [--checksums] [-- pg_dump options]
    backupcheck manifest --dsn DSN --for PATH [--checksums]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import __version__, audit, manifest
from . import dump as dumping
from .history import HistoryError, describe, open_store
from .plan import PlanError, assign, load
from .schema import ConfigError, parse_duration
from .settings import build, load_file, parse_now


def _config(path: str | None):  # type: ignore[no-untyped-def]

    if path is None:
        default = Path("backupcheck.toml")
        if not default.exists():
            return build({}, {}, None, Path.cwd())
        path = str(default)
    data = load_file(Path(path))
    return build({}, data, Path(path), Path(path).resolve().parent)


def evidence(args: argparse.Namespace) -> int:
    try:
        settings = _config(args.backup_config)
        span = parse_duration(args.since, "--since")
        until = parse_now(args.until, "--until") if args.until else datetime.now(UTC)
    except ConfigError as exc:
        print(f"backupcheck evidence: {exc}", file=sys.stderr)
        return 2
    spec = args.history or settings.history
    try:
        store = open_store(spec)
    except HistoryError as exc:
        print(f"backupcheck evidence: {exc}", file=sys.stderr)
        return 2
    if store is None:
        print("backupcheck evidence: the history is off; give --history PATH or a postgresql:// DSN", file=sys.stderr)
        return 2
    try:
        since = until - span
        runs = store.runs_between(since.isoformat(), (until + timedelta(seconds=1)).isoformat())
    finally:
        store.close()
    names = {b["series"] for r in runs for b in r["backups"]}
    rto = {s: (c.rto.total_seconds() if (c := settings.for_series(s)).rto else None) for s in names}
    rpo = {s: (c.rpo.total_seconds() if (c := settings.for_series(s)).rpo else None) for s in names}
    found = audit.collect(runs, since.date() + timedelta(days=1), until.date(), rto, rpo, args.series or "")
    if not found:
        print(f"backupcheck evidence: the history ({describe(spec)}) holds no run"
              + (f" of series {args.series}" if args.series else "") + f" between {since:%Y-%m-%d} and {until:%Y-%m-%d}",
              file=sys.stderr)
        return 1
    first, last = since.date() + timedelta(days=1), until.date()
    out = Path(args.output)
    text = audit.markdown(found, first, last) if out.suffix.lower() in (".md", ".markdown") else \
        audit.render_html(found, first, last, datetime.now(UTC))
    if str(out) == "-":
        sys.stdout.write(audit.markdown(found, first, last) + "\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"backupcheck evidence: {out} ({len(found)} series, {first} to {last})")
    for line in audit.totals(found):
        print(f"  {line}")
    return 0


def merge(args: argparse.Namespace) -> int:
    from . import merge as merging

    paths = [Path(p) for p in args.results]
    absent = [p for p in paths if not p.exists()]
    try:
        documents = merging.load_all([p for p in paths if p.exists()])
        plan = load(Path(args.plan)) if args.plan else None
    except (merging.MergeError, PlanError) as exc:
        print(f"backupcheck merge: {exc}", file=sys.stderr)
        return 2
    total = args.shards or next(((d["run"]["shard"] or {}).get("total") for d in documents), None)
    if total is None:
        print("backupcheck merge: no shard sent results, and --shards does not say how many there were",
              file=sys.stderr)
        return 2
    try:
        document = merging.merge(documents, total, assign(plan, total) if plan else None)
    except merging.MergeError as exc:
        print(f"backupcheck merge: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    merging.render_all(document, out)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(merging.markdown(document))
    bad = [c for c in document["checks"] if c["outcome"] in merging.BAD]
    print(f"backupcheck merge: {len(documents)} of {total} shard(s), {len(document['backups'])} backup(s), "
          f"{len(document['checks'])} check(s), {len(bad)} failed -> {out}/ (results.json, report.html, junit.xml, "
          "allure-results, summary.md)")
    for p in absent:
        print(f"  not found: {p}")
    for c in bad:
        print(f"  FAILED {c['nodeid']}: {c['message'].splitlines()[0] if c['message'] else ''}"[:300])
    return int(document["run"]["exit_status"])


def run(args: argparse.Namespace) -> int:
    """The suites, as ``pytest`` with the plugin: every argument goes to pytest."""

    return subprocess.run([sys.executable, "-m", "pytest", *args.pytest_args]).returncode


def dump(args: argparse.Namespace) -> int:
    """pg_dump with a manifest taken in its own snapshot (or, with --for, a manifest of a dump made elsewhere)."""
    key = os.environ.get(manifest.KEY_ENV) or None
    extra = [a for a in args.pg_dump_args if a != "--"]
    try:
        if args.command == "manifest":
            written = dumping.after(args.dsn, Path(args.artifact), args.checksums, key)
        else:
            written = dumping.dump(args.dsn, Path(args.out), args.format, args.checksums, extra, tuple(args.pg_bin),
                                   key, log=lambda line: print(line, file=sys.stderr))
        print(dumping.summary(written))
        if getattr(args, "to", None):
            for url in dumping.upload(written, args.to):
                print(f"uploaded {url}")
    except dumping.DumpError as exc:
        print(f"backupcheck {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backupcheck",
        description="Verify database backups by restoring them, and report on what the verifications found.",
        epilog="Verifying is a pytest run: `backupcheck run --backups DIR` is `pytest --backups DIR` (see "
               "`pytest --help`, group backupcheck, for every option); a gate run before a migration is `backupcheck "
               "run --backups DIR --migrations DIR -m gate`.")
    parser.add_argument("--version", action="version", version=f"backupcheck {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,evidence,merge,dump,manifest}")
    rn = sub.add_parser("run", help="Verify backups: the built-in suites through pytest (arguments are pytest's "
                                    "and the plugin's: --backups, -k, -m, -n, --series, ...).", add_help=False)
    rn.add_argument("pytest_args", nargs=argparse.REMAINDER)
    rn.set_defaults(func=run)
    ev = sub.add_parser("evidence", help="For auditors: each night of a period, was the newest backup restored "
                                         "and verified, in how long, and how old was it.")
    ev.add_argument("--since", default="90d", help="How far back, as a duration like 90d or 12w (default 90d).")
    ev.add_argument("--until", default=None, help="The period's end, ISO 8601 with an offset (default: now).")
    ev.add_argument("--series", default=None, help="Only this series.")
    ev.add_argument("-o", "--output", default="evidence.html",
                    help="File to write: .html (default evidence.html) or .md for Markdown; '-' prints Markdown.")
    ev.add_argument("--history", default=None, help="The history: a SQLite file or a postgresql:// DSN "
                                                    "(default: the config's history, else the default file).")
    ev.add_argument("--backup-config", default=None, help="backupcheck.toml, for each series' RTO and RPO "
                                                          "(default: ./backupcheck.toml when there is one).")
    ev.set_defaults(func=evidence)
    mg = sub.add_parser("merge", help="Merge the results.json of a plan's shards into one set of reports and one "
                                      "exit code.")
    mg.add_argument("results", nargs="+", help="The shards' results.json files.")
    mg.add_argument("-o", "--output", default="reports", help="Folder for the merged reports (default reports).")
    mg.add_argument("--plan", default=None, help="The plan the shards verified, to name what a missing shard held.")
    mg.add_argument("--shards", type=int, default=None, help="How many shards there were (default: as the "
                                                             "results say).")
    mg.set_defaults(func=merge)
    dp = sub.add_parser("dump", help="pg_dump with a manifest: the exact rows, sequences and schema of the database "
                                     "taken in the dump's own snapshot, and the dump's sha256, in PATH.manifest.json.")
    dp.add_argument("--dsn", required=True, help="The database to dump, as a libpq connection string or URI (give "
                                                 "the password through PGPASSWORD or ~/.pgpass).")
    dp.add_argument("--out", required=True, help="The dump to write (never overwritten); the manifest goes beside it.")
    dp.add_argument("--format", default="custom", choices=("custom", "directory", "tar", "plain"),
                    help="pg_dump's format (default custom).")
    dp.add_argument("--checksums", action="store_true", help="Also fingerprint every table's content, so a "
                                                             "changed value is found, not only a changed count.")
    dp.add_argument("--pg-bin", action="append", default=[], help="A PostgreSQL bin folder to take pg_dump from.")
    dp.add_argument("--to", default=None, help="Also upload dump and manifest under this s3://bucket/prefix/ (the "
                                               "manifest last), with boto3's standard credentials and endpoint.")
    dp.add_argument("pg_dump_args", nargs=argparse.REMAINDER, help="After --: options for pg_dump (-T, -n, -Z, ...).")
    dp.set_defaults(func=dump)
    mf = sub.add_parser("manifest", help="A manifest for a dump your own pg_dump line made: the same figures, taken "
                                         "right after it (compared with a tolerance, since not in its snapshot).")
    mf.add_argument("--dsn", required=True, help="The database that was dumped.")
    mf.add_argument("--for", dest="artifact", required=True, help="The dump (file or directory-format folder).")
    mf.add_argument("--checksums", action="store_true", help="Also fingerprint every table's content.")
    mf.set_defaults(func=dump, pg_dump_args=[])
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
