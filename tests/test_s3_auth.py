"""Wrong credentials and access denied, from a moto server that enforces IAM (its own process, on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from .conftest import free_port

SETUP_CALLS = 6  # bucket, two objects, user, access key, policy: then every request must authenticate


@pytest.fixture
def iam_endpoint(aws_env: None, clean_dir) -> Iterator[tuple[str, dict[str, str]]]:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        dump = sorted((clean_dir / "custom").glob("*.dump"))[-1]
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key=f"database/{dump.name}", Body=dump.read_bytes())
        s3.put_object(Bucket="locked", Key="database/notes_20250101_020000.json", Body=b"{}")
        iam.create_user(UserName="lister")
        key = iam.create_access_key(UserName="lister")["AccessKey"]
        iam.put_user_policy(UserName="lister", PolicyName="list-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            # AWS authorises ListObjectsV2 as s3:ListBucket; recent moto servers ask for the call's own name
            # (s3:ListObjectsV2, no action AWS knows): allowing both lists with either, and grants nothing more.
            "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListObjectsV2"],
                           "Resource": "arn:aws:s3:::locked"}],
        }))
        yield endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def config(endpoint: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    return (f'cache_dir = "{tmp_path / "cache"}"\n'
            f'sources = [{{ url = "s3://locked/database/", endpoint_url = "{endpoint}", region = "us-east-1" }}]\n'
            "[s3]\nmax_attempts = 1\n")


def test_wrong_credentials_fail_one_check_naming_the_cause(run_suites, iam_endpoint, tmp_path):
    endpoint, _ = iam_endpoint
    run = run_suites(config=config(endpoint, tmp_path))  # the fixture's fake key is unknown to this endpoint
    assert run.failed() == {"test_every_source_holds_readable_backups"}
    message = run.messages["test_every_source_holds_readable_backups"]
    assert "access key is not known" in message or "access denied" in message, message


def test_access_denied_on_objects_fails_integrity_and_the_rest_goes_on(run_suites, iam_endpoint, tmp_path, monkeypatch):
    endpoint, keys = iam_endpoint
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    run = run_suites(config=config(endpoint, tmp_path))
    listed = [k for k in run.outcomes if k.startswith("test_every_artifact_is_complete_and_readable[")]
    assert len(listed) == 2, "listing is allowed: both backups are there"
    assert all(run.outcomes[k] == "failed" for k in listed)
    assert all("access denied" in run.messages[k] for k in listed)
    assert run.outcomes["test_every_source_holds_readable_backups"] == "passed"
    assert any(k.startswith("test_backup_meets_minimum_size[") and v == "passed" for k, v in run.outcomes.items())
