"""The ``backupcheck`` command (also ``python -m backupcheck``): reports that need no pytest run.

    backupcheck evidence --since 90d [--series S] [-o evidence.html | -o evidence.md] [--history SPEC]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _config(path: str | None):  # type: ignore[no-untyped-def]
    from .settings import build, load_file

    if path is None:
        default = Path("backupcheck.toml")
        if not default.exists():
            return build({}, {}, None, Path.cwd())
        path = str(default)
    data = load_file(Path(path))
    return build({}, data, Path(path), Path(path).resolve().parent)


def evidence(args: argparse.Namespace) -> int:
    from . import audit
    from .history import HistoryError, describe, open_store
    from .settings import ConfigError, parse_duration, parse_now

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backupcheck", description="Reports from backupcheck's history.")
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
