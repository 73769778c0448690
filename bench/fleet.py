"""Benchmark: a fleet of 100 small application databases (about 5-20 MB each, ten shapes), one newest backup per
series, every family. Times in one run:

  a' pytest --backups DIR -n 2, into a reports folder new to the run (a CI runner's clean workspace)
  a  the same again into that folder, which now holds the run before's results (a nightly run on one host)
  b  the minimum by hand on 2 parallel lanes: a tuned server per lane, pg_restore, one COUNT(*) per table, drop
  c  --plan-out, then three shard processes (--shard K/3, -n 2, each into a new reports folder, as the runners of a
     CI matrix) one after another, then backupcheck merge
  d  pytest -n 2 over one empty test in an empty folder: what pytest-xdist costs a process before any backup

and prints backups per minute, a/b (target <= 1.35), the CPU per backup that a spends beyond b (target <= 80 ms:
every process of each, servers and pg_restore included, from getrusage), each shard's time, and the fixed cost
per shard beyond d (target <= 0.5 s): three shards do a's work plus three process starts where a' has one, so
(c - planning - merging - a') / 2 is one shard's fixed cost, less d. a and a' differ in the Allure results: a
rewrites the last run's files, a' makes 2,300 new ones, which costs this machine's filesystem ten times more.
Never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, Queue

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupcheck import sampledb  # noqa: E402
from backupcheck.servers import pgbin
from backupcheck.servers.cluster import ClusterFactory, RunDir, fast_base  # noqa: E402
from bench.run import DATA, PYTEST, REUSE_FOR, ROOT, run, run_child  # noqa: E402

SERIES, SHAPES = 100, 10
TARGETS = {"a / b": 1.35, "CPU per backup beyond b (ms)": 80.0, "shard fixed cost beyond d (s)": 0.5}


def dataset(factory: ClusterFactory, inst: pgbin.Installation, regenerate: bool) -> tuple[Path, dict]:
    """Ten shapes (scale and filler vary, 5 to 20 MB databases), each dumped once by real pg_dump and copied to
    ten series; reused while younger than the freshness window."""
    folder, meta_path = DATA / "fleet", DATA / "fleet.json"
    if not regenerate and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        made = datetime.fromisoformat(meta["made"])
        if datetime.now(UTC) - made < REUSE_FOR and len(list(folder.glob("*.dump"))) == SERIES:
            return folder, meta
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    when = datetime.now(UTC).replace(microsecond=0)
    shapes = []
    with factory.cluster(inst, 200 * 1024**2) as cluster:
        for i in range(SHAPES):
            scale, pad = 0.4 + 0.35 * i, (0, 60, 120)[i % 3]
            db = f"shape{i}"
            sampledb.create(cluster, db, scale=scale, pad=pad)
            with psycopg.connect(**cluster.conninfo(db)) as conn:  # type: ignore[arg-type]
                size = conn.execute("select pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            dump = folder / f"shape{i}.tmp"
            sampledb.pg_dump(cluster, db, dump, "custom")
            shapes.append({"scale": scale, "pad": pad, "db_bytes": size, "dump_bytes": dump.stat().st_size})
    for n in range(SERIES):
        src = folder / f"shape{n % SHAPES}.tmp"
        shutil.copyfile(src, folder / f"tenant{n:03d}_{when:%Y%m%d_%H%M%S}.dump")
    for tmp in folder.glob("*.tmp"):
        tmp.unlink()
    meta = {"made": when.isoformat(), "shapes": shapes}
    meta_path.write_text(json.dumps(meta))
    return folder, meta


def bare(factory: ClusterFactory, inst: pgbin.Installation, dumps: list[Path], lanes: int = 2) -> float:
    """The minimum by hand: per lane one tuned server; per dump createdb, pg_restore, COUNT(*) per table, dropdb."""
    work: Queue[Path] = Queue()
    for d in dumps:
        work.put(d)
    errors: list[str] = []

    def lane() -> None:
        with factory.cluster(inst, 400 * 1024**2) as cluster:
            env = cluster.env()
            while True:
                try:
                    dump = work.get_nowait()
                except Empty:
                    return
                try:
                    run([inst.tool("createdb"), "app"], env)
                    run([inst.tool("pg_restore"), "-d", "app", str(dump)], env)
                    with psycopg.connect(**cluster.conninfo("app")) as conn:  # type: ignore[arg-type]
                        for (table,) in conn.execute("select format('%I.%I', schemaname, tablename) from pg_tables "
                                                     "where schemaname not in ('pg_catalog', 'information_schema')"):
                            conn.execute(f"select count(*) from {table}").fetchone()
                    run([inst.tool("dropdb"), "app"], env)
                except Exception as exc:  # noqa: BLE001 (reported below)
                    errors.append(f"{dump.name}: {exc}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("the bare loop failed: " + "; ".join(errors[:3]))
    return time.monotonic() - t0


def cpu(who: int) -> float:
    use = resource.getrusage(who)
    return use.ru_utime + use.ru_stime


def pytest_run(args: list[str], scratch: Path) -> tuple[float, str]:
    # Local clusters, as the bare loop: with a Docker engine up, auto would restore in containers
    cmd = [*PYTEST, "suites", "--backup-config", str(scratch / "empty.toml"), "--history", "off", "--pg-provider",
           "local", *args]
    t0 = time.monotonic()
    code, out = run_child(cmd, ROOT)
    seconds = time.monotonic() - t0
    tail = next((ln.strip("= ") for ln in reversed(out.splitlines()) if " in " in ln and "=" in ln), out[-300:])
    return seconds, f"exit {code}: {tail}"


def xdist_floor(scratch: Path) -> float:
    """pytest -n 2 over one empty test, in a folder of its own (the plugin inert): a shard's process start,
    worker start and teardown with nothing of backupcheck's in it."""
    folder = scratch / "floor"
    folder.mkdir(exist_ok=True)
    (folder / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    t0 = time.monotonic()
    code, out = run_child([*PYTEST, "-q", "-n", "2", "-p", "no:cacheprovider", str(folder)], folder)
    if code != 0:
        sys.exit(f"pytest -n 2 over one empty test failed (exit {code}):\n{out[-1000:]}")
    return time.monotonic() - t0


def slowest_restore(results: Path) -> str:
    """The restore that took longest in a results.json, with its phases, and the run's own span."""
    try:
        doc = json.loads(results.read_text())
    except (OSError, ValueError) as exc:
        return f"no results ({exc})"
    restored = [b for b in doc["backups"] if b.get("restore")]
    run = doc.get("run", {})
    span = f"run {run.get('started', '?')} to {run.get('finished', '?')}"
    if not restored:
        return f"{span}; nothing restored"
    b = max(restored, key=lambda x: x["restore"]["seconds"])
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in b["restore"].get("phases", {}).items())
    return f"{span}; slowest restore {b['key']} {b['restore']['seconds']:.1f} s ({phases})"


def sharded(folder: Path, scratch: Path, parts: dict[str, list[float]], round_no: int) -> tuple[float, list[str]]:
    """Plan, three shards one after another, merge; the planning and the merging are also kept in ``parts``. Each
    round's shards write into new reports folders."""
    said = []
    t0 = time.monotonic()
    work = scratch / f"c-{round_no}"
    work.mkdir()
    plan = work / "plan.json"
    seconds, line = pytest_run(["--backups", str(folder), "--plan-out", str(plan)], scratch)
    parts["plan"].append(seconds)
    said.append(f"plan: {line}")
    results: list[str] = []
    ended: list[str] = []
    for k in (1, 2, 3):
        reports = work / f"shard-{k}"
        seconds, line = pytest_run(["--plan", str(plan), "--shard", f"{k}/3", "-n", "2", "--reports-dir",
                                    str(reports)], scratch)
        parts[f"shard {k}"].append(seconds)
        said.append(f"shard {k}/3: {seconds:.1f} s, {line}")
        results.append(str(reports / "results.json"))
        ended.append(f"{datetime.now(UTC):%H:%M:%S}")
    shards = [parts[f"shard {k}"][-1] for k in (1, 2, 3)]
    for k, seconds in enumerate(shards, 1):
        if seconds > 2 * statistics.median(shards):  # one shard far slower than its peers: say where it waited
            said.append(f"shard {k}/3 took over twice the others (its process ended {ended[k - 1]} UTC): "
                        f"{slowest_restore(Path(results[k - 1]))}")
    t_merge = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "backupcheck", "merge", *results, "--plan", str(plan), "-o",
                           str(work / "merged")], capture_output=True, text=True, cwd=ROOT)
    parts["merge"].append(time.monotonic() - t_merge)
    said.append(f"merge: exit {proc.returncode}: {proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else proc.stderr[-200:]}")
    return time.monotonic() - t0, said


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="Time each way N times and report the median.")
    parser.add_argument("--regenerate", action="store_true", help="Make the dumps anew even if recent ones exist.")
    args = parser.parse_args(argv)
    print(f"backupcheck fleet benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {SERIES} series", flush=True)
    inst = pgbin.pick(None)
    times: dict[str, list[float]] = {"a'": [], "a": [], "b": [], "c": [], "d": []}
    parts: dict[str, list[float]] = {"plan": [], "merge": [], "shard 1": [], "shard 2": [], "shard 3": [],
                                     "cpu a": [], "cpu b": []}
    with RunDir() as rundir, RunDir(fast_base()) as fast, RunDir() as scratch:
        factory = ClusterFactory(rundir, fast)
        folder, meta = dataset(factory, inst, args.regenerate)
        dumps = sorted(folder.glob("*.dump"))
        (scratch / "empty.toml").touch()
        sizes = [s["db_bytes"] / 1024**2 for s in meta["shapes"]]
        print(f"dataset: {len(dumps)} dumps in {folder.relative_to(ROOT)}, databases {min(sizes):.1f} to "
              f"{max(sizes):.1f} MB, dumps {sum(d.stat().st_size for d in dumps) / 1024**2:.0f} MB in all", flush=True)
        for i in range(args.repeat):
            reports = ["--backups", str(folder), "-n", "2", "--reports-dir", str(scratch / f"a-{i + 1}")]
            a_new, _said = pytest_run(reports, scratch)
            first = scratch / f"a-{i + 1}-first.json"  # a' results, before a writes its own over them
            with contextlib.suppress(OSError):
                shutil.copyfile(scratch / f"a-{i + 1}" / "results.json", first)
            before = cpu(resource.RUSAGE_CHILDREN)
            a, said_a = pytest_run(reports, scratch)
            parts["cpu a"].append(cpu(resource.RUSAGE_CHILDREN) - before)
            before = cpu(resource.RUSAGE_CHILDREN) + cpu(resource.RUSAGE_SELF)
            b = bare(factory, inst, dumps)
            parts["cpu b"].append(cpu(resource.RUSAGE_CHILDREN) + cpu(resource.RUSAGE_SELF) - before)
            c, said_c = sharded(folder, scratch, parts, i + 1)
            d = xdist_floor(scratch)
            if max(a, a_new) > 1.6 * min(a, a_new):  # one far slower than the other: say where it waited
                which, doc = ("a'", first) if a_new > a else ("a", scratch / f"a-{i + 1}" / "results.json")
                print(f"  {which} took {max(a, a_new):.1f} s against {min(a, a_new):.1f} s: {slowest_restore(doc)}",
                      flush=True)
            times["a'"].append(a_new)
            times["a"].append(a)
            times["b"].append(b)
            times["c"].append(c)
            times["d"].append(d)
            print(f"round {i + 1}: a' {a_new:.1f} s, a {a:.1f} s ({said_a}), CPU {parts['cpu a'][-1]:.1f} s; b {b:.1f} s, CPU "
                  f"{parts['cpu b'][-1]:.1f} s; c {c:.1f} s; d {d:.1f} s", flush=True)
            for line in said_c:
                print(f"  c {line}")
        factory.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'':3}{'what':64}{'median s':>10}{'backups/min':>13}")
    labels = {"a'": "pytest --backups DIR -n 2, every family, new reports folder",
              "a": "the same, the reports folder of the run before", "b": "bare loop, 2 lanes: pg_restore, COUNT(*), drop",
              "c": "plan + 3 shards one after another (-n 2 each) + merge"}
    for k, label in labels.items():
        print(f"{k:3}{label:64}{med[k]:10.1f}{SERIES / med[k] * 60:13.1f}")
    plan_s, merge_s = statistics.median(parts["plan"]), statistics.median(parts["merge"])
    print(f"{'d':3}{'pytest -n 2 over one empty test (no backups)':64}{med['d']:10.1f}")
    shards = [statistics.median(parts[f"shard {k}"]) for k in (1, 2, 3)]
    print(f"   of c: planning {plan_s:.2f} s, merging {merge_s:.2f} s, shards {' / '.join(f'{x:.1f}' for x in shards)} s")
    cpu_a, cpu_b = statistics.median(parts["cpu a"]), statistics.median(parts["cpu b"])
    print(f"   CPU (every process, servers included): a {cpu_a:.1f} s, b {cpu_b:.1f} s")
    shard_fixed = (med["c"] - plan_s - merge_s - med["a'"]) / 2
    print("\nagainst the targets")
    a_new = med["a'"]
    print(f"  a' / b{'':26}{a_new / med['b']:8.2f}   (a reports folder new to the run)")
    for name, value in (("a / b", med["a"] / med["b"]),
                        ("CPU per backup beyond b (ms)", (cpu_a - cpu_b) / SERIES * 1000),
                        ("shard fixed cost beyond d (s)", shard_fixed - med["d"])):
        goal = TARGETS[name]
        print(f"  {name:32}{value:8.2f}   target <= {goal:g}: {'MET' if value <= goal else 'NOT MET'}")
    print(f"  (one shard's fixed cost: (c - planning - merging - a') / 2 = {shard_fixed:.2f} s; d {med['d']:.2f} s)")


if __name__ == "__main__":
    main()
