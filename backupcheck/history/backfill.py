"""Row counts of earlier backups that no run restored, counted from their dumps and kept in the history.

The first run over a folder that already holds a month of nightly dumps judges trends as the month's last
nightly run would: the rows per table of each earlier backup are in its dump (the COPY blocks' lines, counted
as a stream, no server), and the history keeps them under the artifacts' identity, so each dump is read once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .. import manifest
from ..evidence import EvidenceStore
from ..model import Backup, Series
from ..sources.base import RemoteError


def identity(backup: Backup) -> str:
    """Which bytes a count is of: each artifact's name, size and modification time (or S3 ETag)."""
    return ";".join(f"{a.name}:{a.size}:{a.etag or a.mtime.isoformat()}" for a in sorted(backup.artifacts,
                                                                                        key=lambda a: a.name))


def backfill(store: Any, series: Series, backup: Backup, evidence: EvidenceStore, limit: int) -> list[str]:
    """Count the rows of the newest ``limit`` backups of ``series`` before ``backup`` that the history lacks;
    returns a note per backup counted (or not countable)."""
    notes = []
    for earlier in list(series.previous(backup))[-limit:]:
        if store.counted_by_a_run(earlier.key):
            continue
        ident = identity(earlier)
        if store.dump_rows_identity(earlier.key) == ident:
            continue
        exact = manifest_rows(earlier, evidence)
        if exact is not None:  # the figures of the backup's own moment: no dump to read
            store.record_dump_rows({"key": earlier.key, "series": earlier.series,
                                    "taken_at": earlier.taken_at.isoformat(), "format": earlier.format_summary(),
                                    "size": earlier.size}, ident, exact)
            notes.append(f"{earlier.key}: {len(exact)} table(s), {sum(exact.values()):,} rows, from its manifest")
            continue
        try:
            local = evidence.localize(earlier)
            scans = [evidence.inspect(a, full=True) for a in local.dumps]
        except Exception as exc:  # noqa: BLE001 (one unreadable earlier backup leaves a gap, said in the notes)
            notes.append(f"{earlier.key}: not counted ({type(exc).__name__}: {exc})")
            continue
        if not scans or any(ev.problems or ev.scan is None or not ev.data_read or ev.security for ev in scans):
            notes.append(f"{earlier.key}: not counted (its dump does not read whole; see its integrity check)")
            continue
        counts: dict[str, int] = {}
        for ev in scans:
            assert ev.scan is not None
            for table, n in ev.scan.row_counts.items():
                counts[table] = counts.get(table, 0) + n
        store.record_dump_rows({"key": earlier.key, "series": earlier.series, "taken_at": earlier.taken_at.isoformat(),
                                "format": earlier.format_summary(), "size": earlier.size}, ident, counts)
        notes.append(f"{earlier.key}: {len(counts)} table(s), {sum(counts.values()):,} rows, counted from its dump")
    return notes


def manifest_rows(backup: Backup, evidence: EvidenceStore) -> dict[str, int] | None:
    """Rows per table from the manifest of a one-dump backup taken in the dump's snapshot (None: no usable one).
    A remote manifest is fetched alone, not the dump it describes."""
    dumps = [a for a in backup.artifacts if a.manifest or a.manifest_url]
    if len(dumps) != 1 or len(backup.artifacts) != 1:
        return None
    a = dumps[0]
    path = a.manifest
    if path is None and evidence.remote is not None:
        path = evidence.rundir / "manifests" / f"{hashlib.sha1(a.manifest_url.encode()).hexdigest()[:16]}{manifest.SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            evidence.remote.fetch_small(a.manifest_url, path, manifest.MAX_BYTES + 1)
        except RemoteError:
            return None
    if path is None:
        return None
    try:
        m = manifest.read(path)
    except manifest.ManifestError:
        return None  # its own check says why; the dump is counted instead
    if not m.in_snapshot:
        return None
    return {t: e["rows"] for t, e in m.doc["tables"].items() if e["dumped"] and e["data"] and e["rows"] is not None}
