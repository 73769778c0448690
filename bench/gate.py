"""Benchmark: the pre-migration gate with one ALTER TABLE against the restore alone, both through pytest.

The gate restores the newest backup, copies it, lints and applies the migration on the copy, and compares the
copy before and after (every table counted twice). Printed as ratios against the restore-only run of the same
round; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import PYTEST, ROOT, dataset_args, run_child, timed, tuned_dataset  # noqa: E402

from backupcheck.servers import pgbin  # noqa: E402

MIGRATION = "alter table order_items alter column quantity type bigint;\n"  # a rewrite of the largest table


def pytest_run(backups: Path, scratch: Path, name: str, extra: list[str]) -> tuple[float, dict, str]:
    config = scratch / "empty.toml"
    config.touch()
    reports = scratch / f"reports-{name}"
    pytest = list(PYTEST)
    cmd = [*pytest, "suites", "--backups", str(backups), "--backup-config", str(config), "--reports-dir",
           str(reports), "--history", "off", *extra]
    out: list[tuple[int, str]] = []
    seconds = timed(lambda: out.append(run_child(cmd, ROOT)))
    code, text = out[0]
    try:
        document = json.loads((reports / "results.json").read_text())
    except (OSError, ValueError):
        document = {}
    return seconds, document, f"exit {code}: " + (text.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    args, target, label = dataset_args(parser, argv)
    inst = pgbin.pick(15)
    print(f"backupcheck gate benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size {label}, repeat {args.repeat}",
          flush=True)
    with ExitStack() as stack:
        _, data = tuned_dataset(stack, inst, label, target)
        folder = data.dump.parent
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bc-bench-gate-")))
        migrations = scratch / "migrations"
        migrations.mkdir()
        (migrations / "20261202090000_bigger_quantity.sql").write_text(MIGRATION)
        times: dict[str, list[float]] = {"restore": [], "gate": [], "in_restore": [], "rehearsal": [],
                                         "gate_steps": [], "copy": [], "before": [], "after": []}
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}: restore", end="", flush=True)
            seconds, doc, said = pytest_run(folder, scratch, f"restore-{i}",
                                            ["-m", "restore", "-k", "test_restores_without_harmful_errors"])
            times["restore"].append(seconds)
            print(f" {seconds:.2f} s ({said}); gate", end="", flush=True)
            seconds, doc, said = pytest_run(folder, scratch, f"gate-{i}",
                                            ["--migrations", str(migrations), "-m", "gate"])
            times["gate"].append(seconds)
            (g,) = doc.get("gate") or [{}]
            times["in_restore"].append(float(g.get("restore_seconds") or 0))
            times["rehearsal"].append(float(g.get("seconds") or 0))
            times["gate_steps"].append(float(g.get("total_seconds") or 0))
            for phase in ("copy", "before", "after"):
                times[phase].append(float((g.get("phases") or {}).get(phase, 0)))
            print(f" {seconds:.2f} s ({said})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = sum(data.tables.values())
    print(f"\ndataset: {data.dump.name}, {data.db_bytes / 1024**3:.2f} GiB in the database, {rows:,} rows; "
          f"migration: {MIGRATION.strip()} ({data.tables.get('order_items', 0):,} rows)")
    print(f"{'':44}{'median':>10}  all")
    for key, what in (("restore", "pytest -m restore (the restore alone)"),
                      ("gate", "pytest -m gate --migrations (whole gate)"),
                      ("in_restore", "  of which the restore"),
                      ("gate_steps", "  of which copy + snapshots + migration"),
                      ("copy", "    the copy (CREATE DATABASE … TEMPLATE)"),
                      ("before", "    counting and reading it before"),
                      ("rehearsal", "    the migration itself"),
                      ("after", "    counting and reading it after")):
        print(f"{what:44}{med[key]:>9.2f}s  {', '.join(f'{x:.2f}' for x in times[key])}")
    print(f"\ngate / restore alone: {med['gate'] / med['restore']:.2f}")
    print(f"gate beyond the restore alone: {med['gate'] - med['restore']:.2f} s "
          f"(the migration on the copy {med['rehearsal']:.2f} s)")


if __name__ == "__main__":
    main()
