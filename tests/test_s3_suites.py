"""The suites on a bucket: listing once, downloads cached and verified, checks without bytes never download."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .conftest import FAKE_SECRET


def upload_folder(writer, bucket: str, folder: Path, prefix: str) -> None:  # type: ignore[no-untyped-def]
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            writer.put_object(Bucket=bucket, Key=f"{prefix}{path.relative_to(folder)}", Body=path.read_bytes())


def s3_config(bucket: str, endpoint: str, cache: Path, prefix: str = "database/") -> str:
    return (f'cache_dir = "{cache}"\n'
            f'sources = [{{ url = "s3://{bucket}/{prefix}", endpoint_url = "{endpoint}", region = "us-east-1" }}]\n')


def fetch_times(cache: Path) -> dict[str, str]:
    return {str(p.parent.name): json.loads(p.read_text())["fetched_at"] for p in cache.glob("*/meta.json")}


def test_a_clean_bucket_passes_and_a_second_run_downloads_nothing(run_suites, bucket, s3_endpoint, clean_dir, tmp_path):
    name, writer = bucket
    upload_folder(writer, name, clean_dir / "custom", "database/shop/")
    upload_folder(writer, name, clean_dir / "pairs", "database/pairs/")
    upload_folder(writer, name, clean_dir / "folders", "database/folders/")
    cache = tmp_path / "cache"
    config = s3_config(name, s3_endpoint, cache)
    first = run_suites(config=config)
    assert first.failed() == set(), first.stdout[-3000:]
    assert any(k.startswith("test_restores_without_harmful_errors[shop-") and v == "passed"
               for k, v in first.outcomes.items())
    assert any(k.startswith("test_sidecar_checksums_match[shop-") and v == "passed" for k, v in first.outcomes.items())
    assert any(k.startswith("test_restores_without_harmful_errors[backup-") and v == "passed"
               for k, v in first.outcomes.items()), "a timestamped folder in S3 is one backup"
    assert any(k.startswith("test_restores_without_harmful_errors[pairs-") and v == "passed"
               for k, v in first.outcomes.items()), "schema_ and data_ objects of one moment restore together"
    fetched = fetch_times(cache)
    assert len(fetched) == 20, "each object of the 12 backups is downloaded once"
    second = run_suites("-k", "restore", config=config)
    assert second.failed() == set()
    assert fetch_times(cache) == fetched, "the second run fetched nothing"


def test_checks_that_need_no_bytes_never_download(run_suites, bucket, s3_endpoint, clean_dir, tmp_path):
    name, writer = bucket
    upload_folder(writer, name, clean_dir / "custom", "database/")
    cache = tmp_path / "cache"
    run = run_suites("-m", "freshness or size", config=s3_config(name, s3_endpoint, cache))
    assert run.failed() == set() and run.outcomes
    assert not list(cache.glob("*/meta.json"))


def test_faults_in_a_bucket_fail_their_checks(run_suites, bucket, s3_endpoint, clean_dir, tmp_path):
    name, writer = bucket
    upload_folder(writer, name, clean_dir / "custom", "database/")
    dumps = sorted((clean_dir / "custom").glob("*.dump"))
    # bit rot in an older object, and a sidecar that no longer matches another
    rotten = bytearray(dumps[1].read_bytes())
    rotten[len(rotten) // 2] ^= 0xFF
    writer.put_object(Bucket=name, Key=f"database/{dumps[1].name}", Body=bytes(rotten))
    writer.put_object(Bucket=name, Key=f"database/{dumps[0].name}.sha256", Body=b"0" * 64 + b"  x\n")
    run = run_suites(config=s3_config(name, s3_endpoint, tmp_path / "cache"))
    key = lambda p: "shop-" + p.name.split("_", 1)[1].split(".")[0].replace("_", "T") + "Z"  # noqa: E731
    assert run.failed() == {f"test_sidecar_checksums_match[{key(dumps[0])}]", f"test_sidecar_checksums_match[{key(dumps[1])}]",
                            f"test_every_artifact_is_complete_and_readable[{key(dumps[1])}]"}, run.stdout[-3000:]


def test_a_missing_bucket_is_one_failed_check_and_the_rest_goes_on(run_suites, s3_endpoint, aws_env, clean_dir, tmp_path):
    config = f'cache_dir = "{tmp_path / "cache"}"\n[s3]\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\n'
    run = run_suites("--backups", str(clean_dir / "custom"), "--backups", "s3://no-such-bucket/database/",
                     config=config)
    assert run.failed() == {"test_every_source_holds_readable_backups"}
    assert "does not exist" in run.messages["test_every_source_holds_readable_backups"]
    assert any(k.startswith("test_restores_without_harmful_errors[shop-") for k in run.outcomes)


def test_no_secret_reaches_any_report_or_log(run_suites, bucket, s3_endpoint, clean_dir, tmp_path, monkeypatch):
    name, writer = bucket
    upload_folder(writer, name, clean_dir / "custom", "database/")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "fake-session-token-abcdef")
    monkeypatch.setenv("PGPASSWORD", "fake-pg-password-xyz")
    run = run_suites("-n", "2", config=s3_config(name, s3_endpoint, tmp_path / "cache"))
    assert run.outcomes
    secrets = [FAKE_SECRET, "fake-session-token-abcdef", "fake-pg-password-xyz"]
    leaks = [(str(p), s) for p in run.reports.rglob("*") if p.is_file()
             for s in secrets if s in p.read_text(errors="replace")]
    assert leaks == []
    assert not any(s in run.stdout for s in secrets)


def test_a_checksum_in_object_metadata_is_verified(run_suites, bucket, s3_endpoint, clean_dir, tmp_path):
    import hashlib

    name, writer = bucket
    dumps = sorted((clean_dir / "custom").glob("*.dump"))[:2]
    good = hashlib.sha256(dumps[0].read_bytes()).hexdigest()
    writer.put_object(Bucket=name, Key=f"database/{dumps[0].name}", Body=dumps[0].read_bytes(),
                      Metadata={"sha256": good})
    writer.put_object(Bucket=name, Key=f"database/{dumps[1].name}", Body=dumps[1].read_bytes(),
                      Metadata={"sha256": good})  # the other night's checksum: wrong for this object
    run = run_suites("-k", "sidecar", config=s3_config(name, s3_endpoint, tmp_path / "cache"))
    key = lambda p: "shop-" + p.name.split("_", 1)[1].split(".")[0].replace("_", "T") + "Z"  # noqa: E731
    assert run.outcomes[f"test_sidecar_checksums_match[{key(dumps[0])}]"] == "passed"
    assert run.outcomes[f"test_sidecar_checksums_match[{key(dumps[1])}]"] == "failed"
    assert "metadata.sha256" in run.messages[f"test_sidecar_checksums_match[{key(dumps[1])}]"]


def test_long_downloads_show_progress_like_restores(run_suites, bucket, s3_endpoint, tmp_path, monkeypatch):
    import os

    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/big_20250101_020000.bin", Body=os.urandom(70 * 1024**2))
    monkeypatch.setenv("BACKUPCHECK_PROGRESS_SECONDS", "0.01")  # a line at every block: moto serves fast
    run = run_suites("-k", "complete_and_readable", config=s3_config(name, s3_endpoint, tmp_path / "cache"))
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("downloading s3://")]
    assert len(lines) >= 3, run.stdout[-3000:]  # in ranges of 16 MiB: a line as each one is hashed
    assert re.match(rf"downloading s3://{name}/database/big_20250101_020000.bin: [\d.]+ MiB of 70.0 MiB "
                    r"\(\d+%\), \d+s", lines[-1]), lines[-3:]
    quiet = run_suites("-k", "complete_and_readable", "-q",
                       config=s3_config(name, s3_endpoint, tmp_path / "cache2"))
    assert "downloading s3://" not in quiet.stdout


def test_a_bucket_of_config_files_has_nothing_to_restore_and_fails_nothing(run_suites, bucket, s3_endpoint,
                                                                          clean_dir, tmp_path):
    name, writer = bucket
    for path in sorted((clean_dir / "configs").glob("settings_*.json")):
        writer.put_object(Bucket=name, Key=f"database/{path.name}", Body=path.read_bytes())
    run = run_suites(config=s3_config(name, s3_endpoint, tmp_path / "cache"))
    assert run.failed() == set(), run.stdout[-2000:]
    restore = {k: v for k, v in run.outcomes.items() if k.startswith("test_restores_without_harmful_errors[")}
    assert restore and set(restore.values()) == {"skipped"}
    assert "nothing to restore" in run.messages[next(iter(restore))]


def test_the_next_backup_downloads_while_this_one_is_restored(run_suites, bucket, s3_endpoint, clean_dir, tmp_path):
    """One process checks the backups in order: once the first one's bytes are fetched, the second's download
    runs beside its restore; every object is still fetched once, and the report says which came ahead."""
    name, writer = bucket
    newest = sorted((clean_dir / "custom").glob("*.dump"))[-1]
    stamp = newest.name.split("_", 1)[1]
    for series in ("alpha", "beta", "gamma"):
        writer.put_object(Bucket=name, Key=f"database/{series}_{stamp}", Body=newest.read_bytes())
    cache = tmp_path / "cache"
    run = run_suites("-m", "integrity or restore", config=s3_config(name, s3_endpoint, cache))
    assert run.failed() == set(), run.stdout[-3000:]
    assert len(fetch_times(cache)) == 3, "each object downloaded once"
    backups = {b["series"]: b for b in json.loads((run.reports / "results.json").read_text())["backups"]}
    phases = {s: (b["restore"] or {}).get("phases", {}) for s, b in backups.items()}
    assert "download" in phases["alpha"] and "download ahead" not in phases["alpha"], phases
    for series in ("beta", "gamma"):
        assert "download ahead" in phases[series] and "download" not in phases[series], phases
    spread = run_suites("-m", "integrity or restore", "-n", "2", config=s3_config(name, s3_endpoint, tmp_path / "c2"))
    assert spread.failed() == set(), spread.stdout[-3000:]
    assert not any("download ahead" in ((b["restore"] or {}).get("phases") or {}) for b in
                   json.loads((spread.reports / "results.json").read_text())["backups"]), "a worker downloads nothing ahead"
