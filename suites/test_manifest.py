"""Manifest: a backup is the database its manifest (backupcheck dump) describes, in bytes and once restored."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from backupcheck import manifest
from backupcheck.checks import manifest as checks
from backupcheck.model import Artifact, Finding
from backupcheck.plugins.verdict import judge
from backupcheck.restore.database import QueryFailed
from backupcheck.sniff import open_decompressed


@dataclass(frozen=True)
class Described:
    listed: Artifact  # as found in the source
    local: Artifact  # as read here (downloaded, for a remote object)
    manifest: manifest.Manifest | None
    problem: str  # why the manifest cannot be used


@pytest.fixture
def described(backup, evidence_store, series_settings) -> list[Described]:
    """The artifacts of the backup that have a manifest, each with it read and validated (or why it cannot be)."""
    if not any(a.manifest or a.manifest_url for a in backup.artifacts):
        if series_settings.require_manifest:
            return []  # the artifact check fails for it
        pytest.skip(f"{backup.key} has no manifest (PATH.manifest.json, written by backupcheck dump)")
    local = evidence_store.localize(backup) if any(a.is_remote for a in backup.artifacts) else backup
    seen = local.artifacts if len(local.artifacts) == len(backup.artifacts) else backup.artifacts
    out = []
    for listed, here in zip(backup.artifacts, seen, strict=True):
        path = here.manifest or listed.manifest
        if not (listed.manifest or listed.manifest_url):
            continue
        if path is None:
            out.append(Described(listed, here, None, f"{listed.manifest_url} could not be downloaded"))
            continue
        try:
            out.append(Described(listed, here, manifest.read(path), ""))
        except manifest.ManifestError as exc:
            out.append(Described(listed, here, None, str(exc)))
    return out


def test_artifact_matches_its_manifest(backup, described, attach, evidence_store):
    """Every artifact with a manifest has the size and sha256 its manifest recorded while the dump was written."""
    findings: list[Finding] = [] if described else [checks.missing(backup.key, backup.series)]
    for d in described:
        if d.manifest is None:
            findings.append(checks.unusable(backup.key, d.listed.name, d.problem))
            continue
        if d.manifest.doc["artifact"]["name"] != d.listed.name and d.local.compression:
            # Compressed after backupcheck dump wrote it: the manifest describes the dump inside.
            with open_decompressed(d.local.path, d.local.compression) as stream:
                inner = manifest.digest_stream(stream)
            got = {"bytes": inner.bytes, "sha256": inner.sha256, "files": None}
        elif d.listed.is_remote:  # hashed while it was downloaded
            try:
                local = evidence_store.settled(d.local)
            except Exception as exc:  # noqa: BLE001 (a download that failed while the restore read it)
                findings.append(checks.unusable(backup.key, d.listed.name, f"cannot be downloaded: {exc}"))
                continue
            got = {"bytes": local.path.stat().st_size, "sha256": local.sha256, "files": None}
        else:
            got = manifest.digest_path(d.listed.path)
        attach(f"manifest of {d.listed.name}", f"{d.manifest.path.name}: {d.manifest.doc['artifact']['bytes']:,} "
               f"bytes, sha256 {d.manifest.doc['artifact']['sha256']}; taken "
               f"{'in the dump' + chr(39) + 's snapshot' if d.manifest.in_snapshot else 'after the dump'} at "
               f"{d.manifest.doc['created']}{', signed' if d.manifest.signed else ''}")
        findings += checks.artifact_matches(backup.key, d.listed.name, d.manifest, got["bytes"], got["sha256"],
                                            got["files"])
    judge(findings)


@pytest.mark.needs_restore
def test_restore_matches_its_manifest(backup, restored, described, series_settings, attach):
    """The restored database holds exactly the tables, rows, definitions, sequences, extensions and (where recorded) content its manifest recorded."""
    usable = [d for d in described if d.manifest is not None]
    if not usable:
        pytest.skip(f"not judged: {backup.key} has no manifest that can be used "
                    f"(see test_artifact_matches_its_manifest[{backup.key}])")
    db = restored.require_data()
    d = usable[0]
    assert d.manifest is not None
    try:
        with db.connect_checks() as conn:
            figures = manifest.figures(conn, checksums=d.manifest.doc["checksums"] is not None)
    except (QueryFailed, psycopg.Error) as exc:
        pytest.fail(f"{backup.key}: reading the restored database for its manifest failed: {exc}", pytrace=False)
    findings, notes = checks.restore_matches(backup.key, d.manifest, figures, series_settings.manifest_tolerance)
    if len(usable) > 1:
        notes.append(f"{len(usable)} artifacts have a manifest: the restore is compared with {d.listed.name}'s")
    attach("manifest comparison", "\n".join(notes) or "every table, sequence and extension as recorded")
    judge(findings)
