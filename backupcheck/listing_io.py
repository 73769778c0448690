"""Write a listing once and read it in every worker, so all of them collect the same tests."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .model import Artifact, Backup, Listing, Series


def _artifact_json(a: Artifact) -> dict:
    return {
        "path": str(a.path), "size": a.size, "mtime": a.mtime.isoformat(), "format": a.format,
        "compression": list(a.compression), "role": a.role, "sidecars": [str(s) for s in a.sidecars], "note": a.note,
        "url": a.url, "etag": a.etag, "sidecar_urls": list(a.sidecar_urls), "encrypted": a.encrypted,
        "wal_archive": str(a.wal_archive) if a.wal_archive is not None else None, "wal_archive_url": a.wal_archive_url,
        "members": [[url, size, modified.isoformat(), etag] for url, size, modified, etag in a.members],
    }


def to_data(listing: Listing) -> dict:
    return {
        "problems": listing.problems,
        "series": [
            {"name": s.name, "backups": [
                {"series": b.series, "taken_at": b.taken_at.isoformat(), "time_source": b.time_source,
                 "artifacts": [_artifact_json(a) for a in b.artifacts]}
                for b in s.backups
            ]}
            for s in listing.series
        ],
    }


def dump(listing: Listing, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(to_data(listing), separators=(",", ":")))
    tmp.rename(path)


def load(path: Path) -> Listing:
    return from_data(json.loads(path.read_text()))


def from_data(data: dict) -> Listing:
    listing = Listing(problems=list(data["problems"]))
    for s in data["series"]:
        backups = []
        for b in s["backups"]:
            arts = tuple(
                Artifact(path=Path(a["path"]), size=a["size"], mtime=datetime.fromisoformat(a["mtime"]),
                         format=a["format"], compression=tuple(a["compression"]), role=a["role"],
                         sidecars=tuple(Path(x) for x in a["sidecars"]), note=a["note"], url=a["url"],
                         etag=a["etag"], sidecar_urls=tuple(a["sidecar_urls"]), encrypted=a["encrypted"],
                         wal_archive=Path(a["wal_archive"]) if a.get("wal_archive") else None,
                         wal_archive_url=a.get("wal_archive_url", ""),
                         members=tuple((m[0], m[1], datetime.fromisoformat(m[2]), m[3]) for m in a.get("members", [])))
                for a in b["artifacts"]
            )
            backups.append(Backup(series=b["series"], taken_at=datetime.fromisoformat(b["taken_at"]),
                                  artifacts=arts, time_source=b["time_source"]))
        listing.series.append(Series(name=s["name"], backups=tuple(backups)))
    return listing
