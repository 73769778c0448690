"""Benchmark: what containment costs. The same dump restored by pg_restore -j 2 into fresh tuned clusters, as the
superuser (no containment) and as the restoring role after contain() (no superuser, --no-owner), alternating, in
one run; and a server's start with and without contain(). Prints medians and ratios; asserts nothing."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import dataset_args, mb, run, tuned_dataset  # noqa: E402

from backupcheck.restore.errors import RESTORER  # noqa: E402
from backupcheck.restore.targets import LocalTarget  # noqa: E402
from backupcheck.servers import pgbin  # noqa: E402
from backupcheck.servers.cluster import ClusterFactory  # noqa: E402


def restore(factory: ClusterFactory, inst: pgbin.Installation, dump: Path, contained: bool) -> tuple[float, float]:
    """(seconds to start the server and make it ready, seconds of pg_restore -j 2)."""
    t0 = time.monotonic()
    cluster = factory.cluster(inst, 8 * dump.stat().st_size)
    with cluster:
        target = LocalTarget(cluster)
        if contained:
            target.contain()
        target.create_database("app") if contained else run([inst.tool("createdb"), "app"], cluster.env())
        ready = time.monotonic() - t0
        env = cluster.env()
        args = ["-j", "2", "-d", "app", str(dump)]
        if contained:
            env["PGUSER"] = RESTORER
            args = ["--no-owner", *args]
        t1 = time.monotonic()
        run([inst.tool("pg_restore"), *args], env)
        return ready, time.monotonic() - t1


def main(argv: list[str] | None = None) -> None:
    args, target, label = dataset_args(argparse.ArgumentParser(description=__doc__), argv)
    inst = pgbin.pick(15)
    print(f"containment benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size {label}, repeat {args.repeat}",
          flush=True)
    with ExitStack() as stack:
        factory, data = tuned_dataset(stack, inst, label, target)
        times: dict[str, list[float]] = {k: [] for k in ("start", "start_contained", "restore", "restore_contained")}
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}", flush=True)
            for contained in (False, True):
                ready, seconds = restore(factory, inst, data.dump, contained)
                suffix = "_contained" if contained else ""
                times["start" + suffix].append(ready)
                times["restore" + suffix].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{inst.describe()}; dump {data.dump.name} ({mb(data.dump.stat().st_size)}, {data.rows:,} rows)")
    for key, what in (("start", "cluster ready + createdb, as superuser"),
                      ("start_contained", "cluster ready + contain() + CREATE DATABASE … OWNER restorer"),
                      ("restore", "pg_restore -j2 as superuser"),
                      ("restore_contained", f"pg_restore -j2 --no-owner as {RESTORER}")):
        print(f"  {key:18} {what:62} {med[key]:8.2f} s   each: {' '.join(f'{t:.2f}' for t in times[key])}")
    print(f"ratios: restore contained / superuser = {med['restore_contained'] / med['restore']:.3f}; "
          f"start contained / superuser = {med['start_contained'] / med['start']:.3f}")


if __name__ == "__main__":
    main()
