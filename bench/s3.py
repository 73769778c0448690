"""Benchmark S3 sources: listing and collecting 10,000 objects, peak memory verifying a 1 GB object, second-run bytes.

Runs moto's threaded server on 127.0.0.1 (the S3 API over real HTTP) and the suites
as a user runs them. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = (sys.executable, "-m", "pytest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def suites(config: Path, reports: Path, *args: str) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB of the pytest process, and pytest's last line."""
    t0 = time.monotonic()
    # GNU time reports this one process's peak RSS (getrusage of children would keep earlier peaks).
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *PYTEST, str(ROOT / "suites"),
                           "--backup-config", str(config), "--reports-dir", str(reports), "-p", "no:cacheprovider",
                           *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    peak = next((int(ln.split()[1]) for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB")), 0)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return seconds, peak // 1024, lines[-1] if lines else proc.stderr[-300:]


def plain_dump(target: Path, megabytes: int) -> None:
    """A gzipped plain SQL dump whose *object* is about ``megabytes`` MB (random text: gzip cannot shrink it much)."""
    row = b"%d\tuser%d@example.com\t%s\n"
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out:
        out.write(b"--\n-- PostgreSQL database dump\n--\n\n-- Dumped by pg_dump version 15.20\n\n"
                  b"CREATE TABLE public.big (id bigint, email text, note text);\n"
                  b"COPY public.big (id, email, note) FROM stdin;\n")
        i = 0
        while raw.tell() < megabytes * 1024**2:
            notes = os.urandom(48 * 10000).hex().encode()
            out.write(b"".join(row % (n, n, notes[k * 96:(k + 1) * 96]) for k, n in enumerate(range(i, i + 10000))))
            i += 10000
        out.write(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--big-mb", type=int, default=1024, help="Size of the big object (a gzipped plain dump)")
    args = parser.parse_args()
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            cache = work / "cache"

            def config(prefix: str) -> Path:
                path = work / f"{prefix}.toml"
                path.write_text(f'cache_dir = "{cache}"\nsources = [{{ url = "s3://bench/{prefix}/", '
                                f'endpoint_url = "{endpoint}", region = "us-east-1" }}]\n')
                return path

            s3.create_bucket(Bucket="bench")
            t0 = time.monotonic()
            per_series = 100
            for i in range(args.objects):
                series, night = divmod(i, per_series)
                day = 1 + night % 28
                month = 1 + night // 28
                s3.put_object(Bucket="bench", Key=f"many/app{series:03d}/app{series:03d}_2026{month:02d}{day:02d}_020000.json",
                              Body=b"{}")
            print(f"uploaded {args.objects:,} objects in {time.monotonic() - t0:.1f} s")
            seconds, peak, last = suites(config("many"), work / "r1", "--collect-only", "-q")
            print(f"list + collect {args.objects:,} objects: {seconds:.1f} s (target < 15 s); peak RSS {peak} MB; {last}")

            sizes = {}
            for mb in (100, args.big_mb):
                dump = work / f"big{mb}.sql.gz"
                plain_dump(dump, mb)
                s3.upload_file(str(dump), "bench", f"big{mb}/big_20261121_020000.sql.gz")
                sizes[mb] = dump.stat().st_size
                dump.unlink()
            for mb in (100, args.big_mb):
                seconds, peak, last = suites(config(f"big{mb}"), work / f"r{mb}", "-k", "complete_and_readable")
                print(f"verify a {sizes[mb] / 1024**2:,.0f} MB object (a gzipped plain dump): {seconds:.1f} s, "
                      f"peak RSS of pytest {peak} MB (target < 200 MB, independent of size); {last}")
            metas = {p: json.loads(p.read_text())["fetched_at"] for p in cache.glob("*/meta.json")}
            seconds, peak, last = suites(config(f"big{args.big_mb}"), work / "r2", "-k", "complete_and_readable")
            again = {p: json.loads(p.read_text())["fetched_at"] for p in cache.glob("*/meta.json")}
            fetched = sum(1 for p in again if metas.get(p) != again[p])
            print(f"second run: {seconds:.1f} s, objects fetched again: {fetched} (target 0); {last}")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
