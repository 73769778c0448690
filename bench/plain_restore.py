"""Benchmark: restoring a plain SQL dump through backupcheck's lexer + psycopg against psql, in one run.

psql is the reference a user would use; backupcheck never runs it on a backup
(a plain dump can carry meta-commands for the host). This shows what the safer
path costs. Both restore the same file into fresh, identically tuned servers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backupcheck import sampledb  # noqa: E402
from backupcheck.restore.plain import PlainRunner, create_database  # noqa: E402
from backupcheck.servers import pgbin  # noqa: E402
from backupcheck.servers.cluster import Cluster, ClusterFactory, RunDir, fast_base  # noqa: E402


def make_plain(factory: ClusterFactory, inst: pgbin.Installation, target: Path, scale: float, pad: int) -> None:
    with factory.cluster(inst, 4 * 1024**3) as cluster:
        sampledb.create(cluster, "app", scale=scale, pad=pad)
        sampledb.pg_dump(cluster, "app", target, "plain")


def with_psql(cluster: Cluster, dump: Path) -> float:
    create_database(cluster.conninfo("postgres"), "app")
    t0 = time.monotonic()
    subprocess.run([cluster.installation.tool("psql"), "-X", "-q", "-d", "app", "-f", str(dump)],
                   env=cluster.env(), check=True, capture_output=True)
    return time.monotonic() - t0


def with_backupcheck(cluster: Cluster, dump: Path) -> float:
    create_database(cluster.conninfo("postgres"), "app")
    runner = PlainRunner(cluster.conninfo, "app", dump.name)
    t0 = time.monotonic()
    try:
        with open(dump, "rb") as stream:
            runner.run(stream)
    finally:
        runner.close()
    seconds = time.monotonic() - t0
    harmful = [e for e in runner.errors if e.severity == "harmful"]
    if harmful:
        raise SystemExit(f"backupcheck's restore had harmful errors: {harmful[:3]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=22.0, help="Sample database scale (22 is about 100 MB)")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; the median is reported")
    args = parser.parse_args()
    inst = pgbin.pick(15)
    with RunDir() as rundir, RunDir(fast_base()) as fastdir:
        factory = ClusterFactory(rundir, fastdir)
        dump = rundir / "app.sql"
        make_plain(factory, inst, dump, args.scale, 250)
        print(f"plain dump: {dump.stat().st_size / 1024**2:,.1f} MB, {inst.describe()}")
        times: dict[str, list[float]] = {"psql": [], "backupcheck": []}
        for _ in range(args.repeat):
            for name, fn in (("psql", with_psql), ("backupcheck", with_backupcheck)):
                with factory.cluster(inst, 4 * 1024**3) as cluster:
                    times[name].append(fn(cluster, dump))
    for name, values in times.items():
        print(f"{name:12} median {statistics.median(values):6.2f} s   runs: {' '.join(f'{v:.2f}' for v in values)}")
    ratio = statistics.median(times["backupcheck"]) / statistics.median(times["psql"])
    print(f"backupcheck / psql = {ratio:.2f}  (1.00 = as fast as psql)")


if __name__ == "__main__":
    main()
