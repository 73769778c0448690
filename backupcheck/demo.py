"""The built-in demo: a week of nightly backups of a sample shop, one of them broken on purpose."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import dump, sampledb
from .servers import pgbin
from .servers.cluster import ClusterFactory

DEMO_CONFIG = """\
# The demo's expectations, as a user would write them in backupcheck.toml.
[series.shop]
rpo = "26h"
critical_tables = { "public.users" = 100, "public.orders" = 1 }
relations = ["audit_log.user_id -> users.id"]
severity = "critical"
"""


def nightly_times(now: datetime, nights: int = 7) -> list[datetime]:
    last = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if last > now:
        last -= timedelta(days=1)
    return [last - timedelta(days=i) for i in reversed(range(nights))]


def build(target: Path, factory: ClusterFactory, tools: pgbin.Tools = pgbin.ANY_TOOLS, now: datetime | None = None) -> Path:
    """Write the demo backups into ``target``; return the folder to verify."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    now = now or datetime.now(UTC)
    folder = target / "demo-backups"
    folder.mkdir(parents=True)
    (target / "backupcheck.toml").write_text(DEMO_CONFIG)
    inst = tools.pick(None)
    with factory.cluster(inst) as cluster:
        sampledb.create(cluster, "shop", scale=0.5)
        times = nightly_times(now)
        for night, when in enumerate(times):
            if night:
                with psycopg.connect(**cluster.conninfo("shop"), autocommit=True) as conn:  # type: ignore[arg-type]
                    sampledb.populate(conn, scale=0.02, start=night * 10)
            path = folder / f"shop_{when:%Y%m%d_%H%M%S}.dump"
            # As `backupcheck dump` writes them: each with its manifest, taken in the dump's snapshot.
            dump.dump(make_conninfo(**{k: str(v) for k, v in cluster.conninfo("shop").items()}), path, "custom",
                      pg_bin=(str(inst.bindir),))
            if night == 3:
                # The deliberately broken one: cut off in the middle, as a full disk would leave it.
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            stamp = when.timestamp()
            os.utime(path, (stamp, stamp))
    return folder
