"""Benchmark: backupcheck dump (pg_dump in its snapshot, the manifest taken meanwhile) against a bare pg_dump -Fc.

The benchmark database is restored once into a tuned server; then each round times, one after the other on the
same server: a bare ``pg_dump -Fc``, ``backupcheck dump`` and ``backupcheck dump --checksums``. Printed as ratios
against the bare pg_dump of the same round, and per GB for the checksums; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import dataset_args, mb, run, timed, tuned_dataset  # noqa: E402

from backupcheck import dump  # noqa: E402
from backupcheck.servers import pgbin  # noqa: E402

TARGETS = {"dump / bare": 1.10, "dump --checksums / bare": 1.60}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    args, target, label = dataset_args(parser, argv)
    inst = pgbin.pick(15)
    print(f"backupcheck dump benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size {label}, repeat {args.repeat}, "
          f"PostgreSQL {inst.version}", flush=True)
    with ExitStack() as stack:
        factory, data = tuned_dataset(stack, inst, label, target)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bc-bench-dump-", dir="/var/tmp")))
        cluster = stack.enter_context(factory.cluster(inst, 3 * data.db_bytes))
        run([inst.tool("createdb"), "app"], env=cluster.env())
        restored = timed(lambda: run([inst.tool("pg_restore"), "-j", "2", "-d", "app", str(data.dump)],
                                     env=cluster.env()))
        print(f"database: {data.rows:,} rows, {mb(data.db_bytes)}; restored once in {restored:.1f} s", flush=True)
        info = {k: str(v) for k, v in cluster.conninfo("app").items() if v is not None}
        dsn = " ".join(f"{k}={v}" for k, v in info.items())
        times: dict[str, list[float]] = {"bare": [], "dump": [], "dump --checksums": [], "figures": [],
                                         "figures --checksums": []}
        size = 0
        for i in range(args.repeat):
            bare = scratch / f"bare-{i}.dump"
            times["bare"].append(timed(lambda bare=bare: subprocess.run(
                [inst.tool("pg_dump"), "-Fc", "-f", str(bare), "app"], env=cluster.env(), check=True)))
            size = bare.stat().st_size
            bare.unlink()
            for name, checksums in (("dump", False), ("dump --checksums", True)):
                out = scratch / f"{name.replace(' ', '')}-{i}.dump"
                written: list[dump.Written] = []
                times[name].append(timed(lambda w=written, o=out, c=checksums: w.append(dump.dump(dsn, o, "custom",
                                                                                                    c))))
                times["figures" + (" --checksums" if checksums else "")].append(written[0].figures_seconds)
                out.unlink()
                written[0].manifest.unlink()
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    gb = data.db_bytes / 1024**3
    print(f"\ndump file {mb(size)}; medians of {args.repeat}:")
    for k, v in med.items():
        print(f"  {k:22} {v:7.2f} s  ({', '.join(f'{x:.2f}' for x in times[k])})")
    for ratio, goal in TARGETS.items():
        top, bottom = ratio.split(" / ")
        value = med[top] / med[bottom]
        print(f"  {ratio:28} {value:5.2f}  (target <= {goal:.2f}: {'met' if value <= goal else 'NOT MET'})")
    print(f"  checksums cost per GB of database: {(med['dump --checksums'] - med['bare']) / gb:.2f} s "
          f"(the content fingerprints alone: {med['figures --checksums'] / gb:.2f} s per GB, in parallel with "
          "pg_dump)")


if __name__ == "__main__":
    main()
