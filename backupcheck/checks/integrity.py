"""Integrity: every artifact is recognised, non-empty, fully readable, matches its checksum and is safe."""

from __future__ import annotations

from ..evidence import ArtifactEvidence
from ..model import Backup, Finding

CHECK = "integrity"


def readable(backup: Backup, evidence: list[ArtifactEvidence], restore_problems: list[str] | None = None) -> list[Finding]:
    """Findings for artifacts that are empty, unrecognised, truncated or corrupt.

    ``restore_problems`` carries what the restore found while it read an archive's
    data blocks, when the restore (rather than a separate read) is the full read.
    """
    findings = []
    if not backup.artifacts:
        findings.append(Finding(CHECK, backup.key, "the backup has no artifacts", "at least one file", "none"))
    for ev in evidence:
        for problem in ev.problems:
            findings.append(Finding(
                CHECK, backup.key, "an artifact is not intact", "every byte readable and complete",
                problem, hint="take a new backup; this file cannot be trusted for a restore", where=ev.path,
            ))
    for problem in restore_problems or []:
        findings.append(Finding(
            CHECK, backup.key, "an archive's data blocks could not all be read", "every data block readable",
            problem, hint="take a new backup; this archive is damaged",
        ))
    return findings


def checksums(backup: Backup, evidence: list[ArtifactEvidence]) -> list[Finding]:
    return [
        Finding(CHECK, backup.key, "a sidecar checksum does not match", "the checksum the backup job wrote",
                mismatch, hint="the file changed after it was written: re-copy it or take a new backup", where=ev.path)
        for ev in evidence for mismatch in ev.checksums
    ]


def safety(backup: Backup, evidence: list[ArtifactEvidence]) -> list[Finding]:
    return [
        Finding(CHECK, backup.key, "SECURITY: the dump carries commands for the checking host",
                "only SQL and the meta-commands pg_dump writes (\\connect, \\restrict, \\unrestrict)",
                item, hint="do not restore this file with psql; find out who wrote it", where=ev.path)
        for ev in evidence for item in ev.security
    ]
