"""Integrity: every artifact is recognised, non-empty, fully readable, matches its checksum and is safe."""

from __future__ import annotations

from ..evidence import ArtifactEvidence
from ..model import Backup, Finding
from ..schema import Setting, parse_bool, parse_choice

ENCRYPTIONS = ("gpg", "sse", "AES256", "aws:kms")
SETTINGS = (
    Setting("encryption", "integrity", parse_choice(*ENCRYPTIONS),
            "required of every artifact: gpg (the file), sse / AES256 / aws:kms (the S3 object)"),
    Setting("kms_key_id", "integrity", lambda v, key: str(v), "the KMS key every S3 object must be encrypted with "
            "(implies encryption = \"aws:kms\")", apply=lambda s, v: {"kms_key_id": v, "encryption": s.encryption or "aws:kms"}),
    Setting("schema_only", "integrity", parse_bool, "the backups hold the schema alone, on purpose (no \"holds no "
            "data\" failure)", "false"),
)


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


def holds_data(backup: Backup, evidence: list[ArtifactEvidence], schema_only: bool) -> list[Finding]:
    """A backup whose dumps define tables but carry no data section at all (``pg_dump --schema-only``) cannot
    bring back a row: a finding, unless the series says its backups are schema-only on purpose."""
    dumps = [ev for ev in evidence if ev.format in ("plain", "dumpall", "custom", "tar", "directory")]
    if schema_only or not dumps or any(ev.scan is None or ev.problems for ev in dumps):
        return []  # a dump that does not read whole is the readability check's finding, not this one's
    scans = [ev.scan for ev in dumps if ev.scan is not None]
    if any(s.data_sections != 0 for s in scans):
        return []
    tables = [t for s in scans for t in s.tables]
    if not tables:
        return []
    return [Finding(CHECK, backup.key, "the backup holds no data: a schema-only dump",
                    f"the rows of its {len(tables)} table(s) (COPY or INSERT blocks, TABLE DATA entries)",
                    "table definitions only, not one data section", where=", ".join(a.name for a in backup.dumps),
                    hint=f"drop --schema-only (-s) from the backup job's pg_dump, or set schema_only = true for "
                         f"series {backup.series} if it is meant to hold the schema alone")]


def configured_series(configured: list[str], found: list[str], sources: list[str]) -> list[Finding]:
    """A ``[series.NAME]`` block whose series has no backup in the sources: the checks configured there never ran."""
    shown = ", ".join(found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "") or "none"
    return [Finding(CHECK, name, f"series {name} is configured but has no backup",
                    f"backups of series {name} (its [series.{name}] settings apply to them)",
                    f"no backup of that series in {', '.join(sources) or 'the sources'}; the series found: {shown}",
                    hint=f"rename [series.{name}] to the series name the test ids show (the file name without its "
                         "time), or add the source that holds its backups")
            for name in configured if name not in found]


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


def encryption(backup: Backup, evidence: list[tuple[str, str, dict[str, str]]], required: str,
               kms_key_id: str) -> list[Finding]:
    """Every artifact is encrypted as the series requires: gpg at rest, or server-side in S3 (and with that key)."""
    findings = []
    for name, at_rest, sse in evidence:
        if required == "gpg":
            if at_rest != "gpg":
                findings.append(Finding(CHECK, backup.key, "an artifact is not encrypted with gpg",
                                        "a gpg-encrypted file", f"{name} is plaintext",
                                        hint="encrypt backups (gpg --symmetric --cipher-algo AES256) before they leave the host"))
            continue
        if "error" in sse:
            findings.append(Finding(CHECK, backup.key, "the encryption of an object cannot be read",
                                    "its server-side encryption, from HeadObject", sse["error"], where=name))
            continue
        if not sse:
            findings.append(Finding(CHECK, backup.key, "a file is not in S3, so it has no server-side encryption",
                                    f"an S3 object encrypted with {required}", f"{name} is a local file"))
            continue
        found = sse.get("sse") or "none"
        wanted = {"sse": ("AES256", "aws:kms", "aws:kms:dsse"), "AES256": ("AES256",),
                  "aws:kms": ("aws:kms", "aws:kms:dsse")}[required]
        if found not in wanted:
            findings.append(Finding(CHECK, backup.key, "an object is not encrypted as required",
                                    f"server-side encryption {' or '.join(wanted)}", f"{name}: {found}",
                                    hint="set default encryption on the bucket or prefix"))
        elif kms_key_id and kms_key_id not in (sse.get("kms_key_id") or ""):
            findings.append(Finding(CHECK, backup.key, "an object is encrypted with another KMS key",
                                    f"KMS key {kms_key_id}", f"{name}: {sse.get('kms_key_id') or 'no key id'}"))
    return findings


def planned(key: str, drift: list[str]) -> list[Finding]:
    """The backup's files as the plan listed them (with --plan): what changed since is a finding."""
    return [Finding("integrity", key, "the backup is not what the plan listed", "the files as planned", change,
                    hint="make a new plan (--plan-out) after the backups have settled; a plan is for one night")
            for change in drift]
