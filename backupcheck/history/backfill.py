"""Row counts of earlier backups that no run restored, counted from their dumps and kept in the history.

The first run over a folder that already holds a month of nightly dumps judges trends as the month's last
nightly run would: the rows per table of each earlier backup are in its dump (the COPY blocks' lines, counted
as a stream, no server), and the history keeps them under the artifacts' identity, so each dump is read once.
"""

from __future__ import annotations

from typing import Any

from ..evidence import EvidenceStore
from ..model import Backup, Series


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
