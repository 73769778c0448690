"""A small shop database made on a disposable cluster, and real pg_dump output of it."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

from .servers.cluster import Cluster

SCHEMA = """
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);
CREATE TABLE products (
    id int PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2) NOT NULL CHECK (price >= 0)
);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    status text NOT NULL,
    note text,
    created_at timestamptz NOT NULL
);
CREATE INDEX orders_user_id_idx ON orders(user_id);
CREATE TABLE order_items (
    id bigint PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders(id),
    product_id int NOT NULL REFERENCES products(id),
    quantity int NOT NULL,
    price numeric(10,2) NOT NULL
);
CREATE INDEX order_items_order_id_idx ON order_items(order_id);
-- No foreign key on purpose: the relation is declared in the config instead.
CREATE TABLE audit_log (
    id bigint PRIMARY KEY,
    user_id bigint,
    action text NOT NULL,
    at timestamptz NOT NULL
);
"""


def populate(conn, scale: float = 1.0, start: int = 0, pad: int = 0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Add rows: ``scale`` 1.0 is 1,000 users, 5,000 orders, 15,000 items and 10,000 audit rows."""
    n_users = max(1, int(1000 * scale))
    n_orders = max(1, int(5000 * scale))
    n_items = max(1, int(15000 * scale))
    n_audit = max(1, int(10000 * scale))
    s = start
    # Hex digests rather than one repeated letter: text that compresses like real data (about 2:1).
    digests = " || ".join(f"md5((g * {k})::text)" for k in (1, 3, 7, 11, 13, 17, 19, 23))
    filler = f"substr(repeat({digests}, {max(1, -(-pad // 256))}), 1, {pad})" if pad else "''"
    conn.execute(
        f"insert into users select g, 'user' || g || '@example.com', now() - (g % 1000) * interval '1 hour' "
        f"from generate_series({s * 1000 + 1}, {s * 1000 + n_users}) g"
    )
    if start == 0:
        conn.execute("insert into products select g, 'product ' || g, (g % 97) + 0.99 from generate_series(1, 200) g")
    # Each batch refers only to rows of its own batch, so every key has its match.
    conn.execute(
        f"insert into orders select g, {s * 1000 + 1} + (g::bigint * 7919) % {n_users}, "
        f"(array['new','paid','shipped'])[1 + g % 3], 'order ' || g || {filler}, now() - (g % 500) * interval '1 hour' "
        f"from generate_series({s * 5000 + 1}, {s * 5000 + n_orders}) g"
    )
    conn.execute(
        f"insert into order_items select g, {s * 5000 + 1} + (g::bigint * 104729) % {n_orders}, 1 + g % 200, 1 + g % 5, "
        f"(g % 50) + 0.5 "
        f"from generate_series({s * 15000 + 1}, {s * 15000 + n_items}) g"
    )
    conn.execute(
        f"insert into audit_log select g, {s * 1000 + 1} + (g::bigint * 31) % {n_users}, (array['login','logout','buy'])[1 + g % 3], now() "
        f"from generate_series({s * 10000 + 1}, {s * 10000 + n_audit}) g"
    )
    return {"users": n_users, "orders": n_orders, "order_items": n_items, "audit_log": n_audit}


def create(cluster: Cluster, dbname: str = "shop", scale: float = 1.0, pad: int = 0) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(**cluster.conninfo("postgres"), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    with psycopg.connect(**cluster.conninfo(dbname), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(SCHEMA)
        populate(conn, scale, pad=pad)
        conn.execute("analyze")


def pg_dump(cluster: Cluster, dbname: str, target: Path, fmt: str = "custom", gzip_outer: bool = False,
            extra: tuple[str, ...] = (), tool: str | None = None) -> Path:
    """Dump with real pg_dump: fmt is custom, directory, tar, plain; ``gzip_outer`` gzips the file afterwards."""
    flag = {"custom": "-Fc", "directory": "-Fd", "tar": "-Ft", "plain": "-Fp"}[fmt]
    binary = tool or cluster.installation.tool("pg_dump")
    out = target.with_name(target.name + ".raw") if gzip_outer else target
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([binary, flag, "-f", str(out), *extra, dbname], env=cluster.env(), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump of {dbname} failed: {proc.stderr.strip()}")
    if gzip_outer:
        with open(out, "rb") as src, gzip.open(target, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.unlink()
    return target


def pg_dumpall(cluster: Cluster, target: Path, tool: str | None = None, exclude: tuple[str, ...] = ()) -> Path:
    binary = tool or cluster.installation.tool("pg_dumpall")
    target.parent.mkdir(parents=True, exist_ok=True)
    leave_out = [f"--exclude-database={name}" for name in exclude]
    proc = subprocess.run([binary, "-f", str(target), *leave_out], env=cluster.env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dumpall failed: {proc.stderr.strip()}")
    return target
