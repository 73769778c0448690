"""Benchmark: local clusters against containers — time to the first query answered, and a ~1 GB restore.

Both are measured in the same run, on the same dump; ratios are container / local.
Needs a Docker engine and an image per major (images/build.sh, or postgres:{major} from a registry).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from backupcheck.discovery import discover
from backupcheck.evidence import EvidenceStore
from backupcheck.restore.database import RestoredBackup
from backupcheck.restore.providers import ContainerProvider, LocalProvider, Provider
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, RunDir, fast_base
from backupcheck.servers.containers import engine_answers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def first_query(provider: Provider, major: int) -> float:
    """From asking for a server to the answer of ``select 1`` in the backup's fresh database."""
    t0 = time.monotonic()
    target = provider.target(major, 0, "benchmark")
    with target:
        target.create_database("bench")
        with target.connect("bench") as conn:
            conn.execute("select 1").fetchone()
        seconds = time.monotonic() - t0
    provider.release(target)
    return seconds


def restore(provider: Provider, folder: Path, rundir: Path) -> tuple[float, float, str]:
    """(restore seconds, seconds including the server, server label) for the one backup in ``folder``."""
    backup = discover([folder]).backups()[-1]
    store = EvidenceStore(rundir / f"evidence-{provider.kind}")
    t0 = time.monotonic()
    with RestoredBackup(backup, provider, store, jobs=2) as restored:
        total = time.monotonic() - t0
        if restored.result.harmful or restored.result.aborted:
            sys.exit(f"the restore in {provider.kind} failed:\n{restored.result.report()}")
        return restored.result.seconds, total, restored.target_label


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1gb", help="Which bench dataset (bench/data/app-SIZE, made by bench/run.py).")
    parser.add_argument("--image", default="backupcheck/postgres:{major}", help="Container image template.")
    parser.add_argument("--repeat", type=int, default=3, help="Time every step N times and report the median.")
    args = parser.parse_args(argv)
    folder = ROOT / "bench" / "data" / f"app-{args.size}"
    if not any(folder.glob("app_*.dump")):
        sys.exit(f"no dataset in {folder}: make it first with .venv/bin/python bench/run.py --size {args.size}")
    answers, what = engine_answers()
    if not answers:
        sys.exit(f"a container cannot be measured: {what}")
    inst = pgbin.pick(15)
    print(f"backupcheck providers benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {what}, repeat {args.repeat}")
    with RunDir() as rundir, RunDir(fast_base()) as fast:
        # Cold: a new process's first server (local: initdb of the template; container: docker run + initdb).
        def fresh_factory() -> ClusterFactory:
            """Its own folders, so its first cluster pays for initdb as a new run's does."""
            dirs = [Path(tempfile.mkdtemp(dir=d)) for d in (rundir, fast)]
            for d in dirs:
                d.chmod(0o711)
            return ClusterFactory(dirs[0], dirs[1])

        cold_local = median(lambda: first_query(LocalProvider(fresh_factory()), inst.major), args.repeat)
        local = LocalProvider(ClusterFactory(rundir, fast))
        first_query(local, inst.major)
        warm_local = median(lambda: first_query(local, inst.major), args.repeat)

        def cold_container() -> float:
            provider = ContainerProvider(args.image, rundir.name, ryuk=False)
            try:
                return first_query(provider, inst.major)
            finally:
                provider.close()

        cold_cont = median(cold_container, args.repeat)
        container = ContainerProvider(args.image, rundir.name, ryuk=False)
        try:
            first_query(container, inst.major)
            warm_cont = median(lambda: first_query(container, inst.major), args.repeat)
            print(f"{'':34}{'local':>10}{'container':>12}{'ratio':>8}")
            print(f"{'first query, new process (cold)':34}{cold_local:>9.2f}s{cold_cont:>11.2f}s{cold_cont / cold_local:>7.1f}x")
            print(f"{'first query, next backup (warm)':34}{warm_local:>9.2f}s{warm_cont:>11.2f}s{warm_cont / warm_local:>7.1f}x")
            rl, rc, tl, tc = [], [], [], []
            label_l = label_c = ""
            for _ in range(args.repeat):
                seconds, total, label_l = restore(local, folder, rundir)
                rl.append(seconds)
                tl.append(total)
                seconds, total, label_c = restore(container, folder, rundir)
                rc.append(seconds)
                tc.append(total)
            ml, mc = statistics.median(rl), statistics.median(rc)
            print(f"{'restore of ' + folder.name + ' (pg_restore -j2)':34}{ml:>9.2f}s{mc:>11.2f}s{mc / ml:>7.2f}x")
            nl, nc = statistics.median(tl), statistics.median(tc)
            print(f"{'  with server and compatibility check':34}{nl:>9.2f}s{nc:>11.2f}s{nc / nl:>7.2f}x")
            print(f"local:     {label_l}\ncontainer: {label_c} (data directory on tmpfs, dump copied in)")
        finally:
            container.close()


if __name__ == "__main__":
    main()
