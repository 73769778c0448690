"""Benchmark at size: one large application database (sampledb: narrow and wide tables, primary keys, foreign keys
and their indexes), dumped custom and as plain SQL gzipped, restored four ways on disk, in one run:

  bare custom   createdb, pg_restore -j 2 on the engine's tuned server
  bare plain    createdb, gunzip | psql -X -v ON_ERROR_STOP=1 on the same kind of server
  bc custom     pytest suites --backups <the custom dump>, every family, --work-dir on disk
  bc plain      the same over the plain.sql.gz (read once, by its restore: one_pass_from)
  bc plain x2   the same, the dump read whole before its restore (one_pass_from out of reach)

For each backupcheck run it prints the ratio to its bare restore (target <= 1.08), the checks' share of the
restore (target <= 10%), the peak RSS of backupcheck's own processes (pytest and its workers; the servers and
pg_restore are not ours and not counted) and the peak disk used beyond the start on the work folder's
filesystem. Run it at two sizes to see whether RSS stays flat. Never asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupcheck.servers import pgbin  # noqa: E402
from backupcheck.servers.cluster import ClusterFactory, RunDir  # noqa: E402
from bench.run import DATA, PytestRun, dataset_args, generate, mb, reusable, run, suite, timed  # noqa: E402

TARGETS = {"whole / bare": 1.08, "checks / restore": 0.10}
TWICE = '[defaults]\none_pass_from = "1024TB"\n'  # never read once: the scan reads the dump whole before the restore
NOT_OURS = ("postgres", "pg_restore", "psql", "gzip", "pg_dump")


class Peaks:
    """Samples every 0.2 s, until stopped: the RSS of ``root``'s process tree minus the programs in NOT_OURS,
    and the bytes used on ``disk``'s filesystem beyond what was used at the start."""

    def __init__(self, root: int, disk: Path) -> None:
        self.root, self.disk = root, disk
        self.rss = 0
        self.used = 0
        os.sync()  # blocks freed by the step before count as free only once the journal has committed
        self._base = shutil.disk_usage(disk).used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def _ours(self, pid: int) -> int:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm.startswith(NOT_OURS):
                return 0
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.rss = max(self.rss, sum(self._ours(p) for p in self._tree() if p != os.getpid()))
            self.used = max(self.used, shutil.disk_usage(self.disk).used - self._base)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def plain_gz(dump: Path, inst: pgbin.Installation) -> Path:
    """The archive's plain SQL, gzipped, beside it (pg_restore -f writes what pg_dump -Fp would): made once."""
    folder = dump.parent.parent / f"{dump.parent.name}-plain"
    target = folder / dump.with_suffix(".sql.gz").name
    if target.exists():
        return target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    part = target.with_suffix(".part")
    with open(part, "wb") as out:
        sql = subprocess.Popen([inst.tool("pg_restore"), "-f", "-", str(dump)], stdout=subprocess.PIPE)
        gz = subprocess.run(["gzip", "-c", "-1"], stdin=sql.stdout, stdout=out, check=False)
        assert sql.stdout is not None
        sql.stdout.close()
        if sql.wait() != 0 or gz.returncode != 0:
            sys.exit("making the plain dump failed")
    os.utime(part, (dump.stat().st_atime, dump.stat().st_mtime))
    part.rename(target)
    return target


def bare_custom(factory: ClusterFactory, inst: pgbin.Installation, dump: Path) -> float:
    with factory.cluster(inst, 8 * dump.stat().st_size) as cluster:
        run([inst.tool("createdb"), "app"], cluster.env())
        return timed(lambda: run([inst.tool("pg_restore"), "-j", "2", "-d", "app", str(dump)], cluster.env()))


def bare_plain(factory: ClusterFactory, inst: pgbin.Installation, dump: Path) -> float:
    with factory.cluster(inst, 40 * dump.stat().st_size) as cluster:
        run([inst.tool("createdb"), "app"], cluster.env())

        def restore() -> None:
            gz = subprocess.Popen(["gzip", "-dc", str(dump)], stdout=subprocess.PIPE)
            psql = subprocess.run([inst.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "app"],
                                  stdin=gz.stdout, env=cluster.env(), capture_output=True, text=True)
            assert gz.stdout is not None
            gz.stdout.close()
            if gz.wait() != 0 or psql.returncode != 0:
                sys.exit(f"psql failed: {psql.stderr[-1000:]}")

        return timed(restore)


def _median_round(rounds: list[tuple[float, PytestRun, Peaks]]) -> tuple[float, PytestRun, Peaks]:
    """The median bare time, the run of median whole time (its restore and checks with it), the highest peaks."""
    bare = statistics.median(b for b, _, _ in rounds)
    ordered = sorted((r for _, r, _ in rounds), key=lambda r: r.seconds)
    run = ordered[(len(ordered) - 1) // 2]
    highest = SimpleNamespace(rss=max(p.rss for _, _, p in rounds), used=max(p.used for _, _, p in rounds))
    return bare, run, highest  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    args, target, label = dataset_args(parser, argv)
    inst = pgbin.pick(15)
    print(f"backupcheck benchmark at size, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, size {label}", flush=True)
    with RunDir() as disk:
        (disk / "tuned").mkdir(mode=0o711)
        factory = ClusterFactory(disk / "tuned", None)  # on disk, as a large database is restored
        folder, meta = DATA / f"app-{label}", DATA / f"app-{label}.json"
        data = reusable(folder, meta) or generate(factory, inst, folder, meta, target)
        t0 = time.monotonic()
        plain = plain_gz(data.dump, inst)
        print(f"dataset: database {mb(data.db_bytes)}, {data.rows:,} rows in {len(data.tables)} tables; custom dump "
              f"{mb(data.dump.stat().st_size)}, plain.sql.gz {mb(plain.stat().st_size)} "
              f"({time.monotonic() - t0:.0f} s to make it)", flush=True)
        runs: dict[str, list[tuple[float, PytestRun, Peaks]]] = {}
        for i in range(args.repeat):  # rounds: each way once a round, so a slow spell of the machine hits all ways
            for name, dump, bare in (("custom", data.dump, bare_custom), ("plain", plain, bare_plain)):
                print(f"{f'round {i + 1}/{args.repeat} ' if args.repeat > 1 else ''}{name}: bare", end="", flush=True)
                bare_s = bare(factory, inst, dump)
                factory.wait()  # the bare server's folder is removed in the background: gone before disk is measured
                # A plain dump both ways: read once by its restore (the default from 64 MB), and read whole first.
                for variant, config in ((name, ""),) + ((("plain x2", TWICE),) if name == "plain" else ()):
                    print(f" backupcheck{' (read whole first)' if config else ''}", end="", flush=True)
                    work = disk / f"work-{name}"
                    peaks = Peaks(os.getpid(), disk)
                    r = suite(dump.parent, disk, variant.replace(" ", "-"), work, ("--history", "off"), config)
                    peaks.stop()
                    print(f" ({r.code}: {r.summary})", flush=True)
                    runs.setdefault(variant, []).append((bare_s, r, peaks))
        factory.wait()
    rows = [(name, *_median_round(rounds)) for name, rounds in runs.items()]
    print(f"\n{'':8}{'bare s':>9}{'whole s':>9}{'ratio':>7}{'restore s':>11}{'checks s':>10}{'checks %':>10}"
          f"{'peak RSS':>12}{'peak disk':>13}" + (f"   (medians of {args.repeat} rounds; ranges below)"
                                                  if args.repeat > 1 else ""))
    for name, bare_s, r, peaks in rows:
        restore = r.restore or 0.0
        share = r.checks / restore if restore else 0.0
        print(f"{name:8}{bare_s:9.1f}{r.seconds:9.1f}{r.seconds / bare_s:7.2f}{restore:11.1f}{r.checks:10.1f}"
              f"{share:10.1%}{mb(peaks.rss):>12}{mb(peaks.used):>13}")
    if args.repeat > 1:
        for name, rounds in runs.items():
            bares, wholes = sorted(b for b, _, _ in rounds), sorted(r.seconds for _, r, _ in rounds)
            print(f"  {name:8} bare {bares[0]:.1f}-{bares[-1]:.1f} s, whole {wholes[0]:.1f}-{wholes[-1]:.1f} s")
    print("\nagainst the targets")
    for name, bare_s, r, _ in rows:
        for what, value in (("whole / bare", r.seconds / bare_s),
                            ("checks / restore", r.checks / r.restore if r.restore else float("nan"))):
            goal = TARGETS[what]
            print(f"  {name:7} {what:18}{value:7.2f}   target <= {goal:g}: {'MET' if value <= goal else 'NOT MET'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: servers stopped, work folders removed")
