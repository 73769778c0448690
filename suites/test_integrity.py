"""Integrity: every backup is there, recognised, complete, matches its checksums and is safe to restore."""

from __future__ import annotations

import pytest

from backupcheck.checks import integrity
from backupcheck.model import Finding
from backupcheck.plugins.verdict import judge


def test_every_source_holds_readable_backups(listing, settings):
    """Every configured source can be read and holds at least one backup, and every configured series has backups."""
    findings = [Finding("integrity", "sources", "a source cannot be read", "a readable folder or file", p,
                        hint="correct --backups or sources in backupcheck.toml") for p in listing.problems]
    if not listing.backups():
        findings.append(Finding("integrity", "sources", "no backup was found", "at least one backup",
                                f"nothing in {', '.join(settings.sources)}"))
    elif settings.shard is None:  # a shard holds part of the series: the plan's listing judged them all
        wanted = [n for n in sorted(settings.series) if not settings.only_series or n in settings.only_series]
        findings += integrity.configured_series(wanted, [s.name for s in listing.series], list(settings.sources))
    judge(findings)


def test_every_artifact_is_complete_and_readable(backup, artifact_evidence, archive_data_problems, plan_drift, attach):
    """Every artifact is recognised, non-empty and reads to its end: compression CRCs, archive TOC and data blocks, trailer, JSON, tar, bundle."""
    attach("artifacts", "\n".join(f"{a.path}  {a.describe()}  {a.size:,} bytes" for a in backup.artifacts))
    findings = integrity.planned(backup.key, plan_drift) + integrity.readable(backup, artifact_evidence,
                                                                              archive_data_problems)
    judge(findings)


def test_backup_holds_data(backup, artifact_evidence, series_settings):
    """The backup carries its tables' rows, not the schema alone (unless the series is schema_only)."""
    findings = integrity.holds_data(backup, artifact_evidence, series_settings.schema_only)
    judge(findings)


def test_sidecar_checksums_match(backup, artifact_evidence):
    """Every sidecar checksum (.sha256, .md5) matches the file it describes."""
    findings = integrity.checksums(backup, artifact_evidence)
    judge(findings)


def test_dump_carries_no_commands_for_the_host(backup, artifact_evidence):
    """A dump holds no psql meta-command or server-side escape (COPY PROGRAM, untrusted code) that could act on the checking host."""
    findings = integrity.safety(backup, artifact_evidence)
    judge(findings)


@pytest.mark.when_configured("encryption")
def test_artifacts_are_encrypted_as_required(backup, encryption_evidence, series_settings):
    """Every artifact is encrypted as the series requires: with gpg, or server-side in S3 (with the expected KMS key)."""
    findings = integrity.encryption(backup, encryption_evidence, series_settings.encryption or "",
                                    series_settings.kms_key_id)
    judge(findings)
