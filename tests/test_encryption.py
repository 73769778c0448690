"""Encrypted backups: gpg files are decrypted with a passphrase from the environment; required encryption is checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backupcheck.gpg import stop_agent

PASSPHRASE = "correct horse battery staple"


def gpg_encrypt(source: Path, target: Path, passphrase: str, home: Path) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["gpg", "--batch", "--yes", "--quiet", "--homedir", str(home), "--pinentry-mode", "loopback",
                    "--passphrase-fd", "0", "--symmetric", "--cipher-algo", "AES256", "--output", str(target),
                    str(source)], input=passphrase.encode(), check=True, capture_output=True)
    stop_agent(home)


@pytest.fixture
def encrypted_dir(clean_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "encrypted"
    folder.mkdir()
    for dump in sorted((clean_dir / "custom").glob("*.dump")):
        gpg_encrypt(dump, folder / (dump.name + ".gpg"), PASSPHRASE, tmp_path / "gnupg")
    return folder


def test_gpg_backups_are_decrypted_verified_and_restored(run_suites, encrypted_dir, monkeypatch):
    monkeypatch.setenv("BACKUPCHECK_GPG_PASSPHRASE", PASSPHRASE)
    run = run_suites("--backups", str(encrypted_dir), config='[series.shop]\nencryption = "gpg"\n')
    assert run.failed() == set(), run.stdout[-3000:]
    assert any(k.startswith("test_restores_without_harmful_errors[shop-") and v == "passed"
               for k, v in run.outcomes.items())
    assert any(k.startswith("test_artifacts_are_encrypted_as_required[shop-") and v == "passed"
               for k, v in run.outcomes.items())
    leaks = [p for p in run.reports.rglob("*") if p.is_file() and PASSPHRASE in p.read_text(errors="replace")]
    assert leaks == [] and PASSPHRASE not in run.stdout


def test_a_wrong_passphrase_is_an_integrity_failure(run_suites, encrypted_dir, monkeypatch):
    monkeypatch.setenv("BACKUPCHECK_GPG_PASSPHRASE", "not the passphrase")
    run = run_suites("--backups", str(encrypted_dir))
    readable = {k: v for k, v in run.outcomes.items() if k.startswith("test_every_artifact_is_complete_and_readable[")}
    assert len(readable) == 4 and set(readable.values()) == {"failed"}
    message = run.messages[next(iter(readable))]
    assert "could not decrypt" in message and "BACKUPCHECK_GPG_PASSPHRASE" in message
    assert "not the passphrase" not in message
    restore = {k: v for k, v in run.outcomes.items() if k.startswith("test_restores_without_harmful_errors[")}
    assert set(restore.values()) == {"failed"}


def test_required_gpg_encryption_fails_on_plaintext(run_suites, clean_dir):
    run = run_suites("--backups", str(clean_dir / "custom"), config='[series.shop]\nencryption = "gpg"\n')
    failed = {k for k in run.failed()}
    assert failed and all(k.startswith("test_artifacts_are_encrypted_as_required[shop-") for k in failed)
    assert len(failed) == 4
    assert "is plaintext" in run.messages[next(iter(failed))]


def test_server_side_encryption_and_the_kms_key_are_checked_without_downloading(run_suites, bucket, s3_endpoint,
                                                                                clean_dir, tmp_path):
    name, writer = bucket
    dumps = sorted((clean_dir / "custom").glob("*.dump"))
    for i, dump in enumerate(dumps):
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1"}
        if i == 1:
            extra = {"ServerSideEncryption": "AES256"}
        if i == 2:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-2"}
        writer.put_object(Bucket=name, Key=f"database/{dump.name}", Body=dump.read_bytes(), **extra)
    cache = tmp_path / "cache"
    config = (f'cache_dir = "{cache}"\n'
              f'sources = [{{ url = "s3://{name}/database/", endpoint_url = "{s3_endpoint}", region = "us-east-1" }}]\n'
              '[series.shop]\nencryption = "aws:kms"\nkms_key_id = "key-1"\n')
    run = run_suites("-k", "encrypted", config=config)
    key = lambda p: "shop-" + p.name.split("_", 1)[1].split(".")[0].replace("_", "T") + "Z"  # noqa: E731
    assert run.failed() == {f"test_artifacts_are_encrypted_as_required[{key(dumps[1])}]",
                            f"test_artifacts_are_encrypted_as_required[{key(dumps[2])}]"}, run.stdout[-3000:]
    assert "AES256" in run.messages[f"test_artifacts_are_encrypted_as_required[{key(dumps[1])}]"]
    assert "key-2" in run.messages[f"test_artifacts_are_encrypted_as_required[{key(dumps[2])}]"]
    assert not list(cache.glob("*/meta.json")), "encryption is read with HeadObject: nothing downloaded"
