"""Benchmark of a physical recovery: a pgbench database (``--size``), one plain base backup taken with
``pg_basebackup -X fetch``, then ``--wal-seconds`` of pgbench writes archived by archive_command; recovered to the
end of the archive two ways, in one run:

  bare          cp -a of the base backup, recovery.signal, restore_command = cp from the archive, the server
                started and waited for until promoted (what a person does by hand)
  backupcheck   the engine's recovery of the same backup (unpack, WAL staged from the archive, the backup's
                settings replaced, replay, promotion, the cluster's databases listed)

It prints both times, the ratio (whole / bare), the WAL replayed and backupcheck's phases. Never asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from backupcheck.discovery import discover  # noqa: E402
from backupcheck.evidence import EvidenceStore  # noqa: E402
from backupcheck.restore.database import RestoreCache  # noqa: E402
from backupcheck.restore.providers import LocalProvider  # noqa: E402
from backupcheck.servers import pgbin  # noqa: E402
from backupcheck.servers.cluster import ClusterFactory, RunDir, server_user  # noqa: E402

SCALES = {"30mb": 2, "100mb": 7, "1gb": 68}


def as_server(args: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    user = server_user()
    return subprocess.run(args, capture_output=True, text=True, check=True, user=user[0] if user else None,
                          group=user[1] if user else None, extra_groups=[] if user else None, **kw)


def start(inst: pgbin.Installation, data: Path, log: Path) -> subprocess.Popen[bytes]:
    user = server_user()
    with open(log, "wb") as out:
        return subprocess.Popen([inst.tool("postgres"), "-D", str(data)], stdout=out, stderr=subprocess.STDOUT,
                                user=user[0] if user else None, group=user[1] if user else None,
                                extra_groups=[] if user else None, start_new_session=True)


def wait_up(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 7200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            with psycopg.connect(host=str(sock), user="postgres", dbname="postgres", connect_timeout=5) as conn:
                if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.05)
    raise RuntimeError("not up in time")


def stop(proc: subprocess.Popen[bytes], keep: bool = True) -> None:
    """``keep``: a fast shutdown (SIGINT: its shutdown checkpoint, the archive complete); else an immediate one
    (SIGQUIT: a recovery timed to the moment it is up and thrown away). SIGTERM, a smart shutdown, waits for
    what the server is doing to end: a bare recovery stopped so once outlived its 60 s here."""
    proc.send_signal(signal.SIGINT if keep else signal.SIGQUIT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def prepare(inst: pgbin.Installation, home: Path, scale: int, wal_seconds: float) -> tuple[Path, Path]:
    """The primary, its base backup and its archive; (backups folder, archive)."""
    user = server_user()
    backups, archive = home / "backups", home / "backups" / "wal"
    for p in (home, backups, archive, backups / "db"):
        p.mkdir(parents=True, exist_ok=True)
        if user:
            os.chown(p, *user)
    data = home / "primary"
    as_server([inst.tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-k", "--no-sync"])
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"listen_addresses = ''\nunix_socket_directories = '{home}'\nwal_level = replica\n"
                   f"archive_mode = on\narchive_command = 'cp %p {archive}/%f'\nmax_wal_size = '4GB'\n"
                   "shared_buffers = '256MB'\nsynchronous_commit = off\n")
    proc = start(inst, data, home / "primary.log")
    try:
        wait_up(home, proc)
        bench = [inst.tool("pgbench"), "-h", str(home), "-U", "postgres"]
        t0 = time.monotonic()
        as_server([*bench, "-i", "-q", "-s", str(scale), "postgres"])
        print(f"database: pgbench scale {scale} in {time.monotonic() - t0:.1f} s")
        as_server([inst.tool("pg_basebackup"), "-h", str(home), "-U", "postgres", "-D", str(backups / "db" / "base"),
                   "-X", "fetch", "-c", "fast"])
        as_server([*bench, "-c", "2", "-j", "2", "-T", str(int(wal_seconds)), "-N", "postgres"])
        with psycopg.connect(host=str(home), user="postgres", dbname="postgres", autocommit=True) as conn:
            name = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0]
        for _ in range(600):
            if (archive / name).exists():
                break
            time.sleep(0.1)
    finally:
        stop(proc)
    return backups, archive


def bare(inst: pgbin.Installation, base: Path, archive: Path, home: Path) -> float:
    user = server_user()
    t0 = time.monotonic()
    data, sock = home / "data", home / "sock"
    home.mkdir()
    subprocess.run(["cp", "-a", str(base), str(data)], check=True)
    sock.mkdir()
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = 'cp {archive}/%f %p'\nunix_socket_directories = '{sock}'\n"
                   "archive_mode = off\nfsync = off\n")
    (data / "recovery.signal").write_text("")
    if user:
        subprocess.run(["chown", "-R", f"{user[0]}:{user[1]}", str(home)], check=True)
    proc = start(inst, data, home / "log")
    try:
        wait_up(sock, proc)
        return time.monotonic() - t0
    finally:
        stop(proc, keep=False)
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(SCALES), default="100mb")
    parser.add_argument("--wal-seconds", type=float, default=30.0, help="seconds of pgbench writes after the backup")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, the order of the two ways alternating")
    args = parser.parse_args(argv)
    inst = pgbin.pick(None)
    with RunDir() as rundir:
        backups, archive = prepare(inst, rundir / "bench", SCALES[args.size], args.wal_seconds)
        base = backups / "db" / "base"
        wal = sum(f.stat().st_size for f in archive.iterdir())
        print(f"base backup {sum(f.stat().st_size for f in base.rglob('*') if f.is_file()) / 1e6:,.0f} MB, "
              f"WAL archived after it {wal / 1e6:,.0f} MB ({len(list(archive.iterdir()))} files)")
        factory = ClusterFactory(rundir)
        backup = discover([backups]).series[0].newest
        bare_times: list[float] = []
        ours: list[float] = []

        def engine(i: int) -> None:
            cache = RestoreCache(LocalProvider(factory), EvidenceStore(rundir / f"ev{i}"), 2)
            t0 = time.monotonic()
            db = cache.get(backup)
            ours.append(time.monotonic() - t0)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in db.phase_times().items())
            print(f"  backupcheck recovery {ours[-1]:.1f} s (errors: {db.result.report()}); phases: {phases}")
            cache.close(last=True)
            factory.wait()

        for i in range(args.repeat):
            steps = [lambda i=i: bare_times.append(bare(inst, base, archive, rundir / f"bare{i}")),
                     lambda i=i: engine(i)]
            for step in steps if i % 2 == 0 else reversed(steps):
                step()
            print(f"round {i + 1}: bare recovery {bare_times[-1]:.1f} s, backupcheck recovery {ours[-1]:.1f} s")
        bare_s, whole = statistics.median(bare_times), statistics.median(ours)
        print(f"bare recovery {bare_s:.1f} s; backupcheck recovery {whole:.1f} s (medians of {args.repeat})")
        print(f"whole / bare {whole / bare_s:.2f}")


if __name__ == "__main__":
    main()
