"""The S3 engine over real HTTP: moto's threaded server on 127.0.0.1 holding real pg_dump output."""

from __future__ import annotations

import hashlib
import os

import pytest

from backupcheck.sources.s3 import (
    DownloadCache,
    ReadOnlyViolation,
    S3Error,
    S3Location,
    S3Options,
    list_objects,
    make_client,
)

from .conftest import FAKE_SECRET, free_port


@pytest.fixture
def reader(s3_endpoint: str, aws_env: None):  # type: ignore[no-untyped-def]
    return make_client(S3Options(endpoint_url=s3_endpoint, region="us-east-1", max_attempts=2))


def test_listing_follows_pagination(bucket, reader):
    name, writer = bucket
    for i in range(1100):  # more than one page of 1,000
        writer.put_object(Bucket=name, Key=f"database/many/obj_{i:05d}.json", Body=b"{}")
    writer.put_object(Bucket=name, Key="elsewhere/x.json", Body=b"{}")
    found = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    assert len(found) == 1100
    assert [o.key for o in found] == sorted(o.key for o in found)
    assert all(o.size == 2 and o.last_modified.tzinfo is not None for o in found)


@pytest.mark.parametrize("operation", [
    lambda c, b: c.put_object(Bucket=b, Key="database/new.sql", Body=b"x"),
    lambda c, b: c.delete_object(Bucket=b, Key="database/keep.sql"),
    lambda c, b: c.copy_object(Bucket=b, Key="database/copy.sql", CopySource={"Bucket": b, "Key": "database/keep.sql"}),
    lambda c, b: c.delete_bucket(Bucket=b),
], ids=["put", "delete", "copy", "delete-bucket"])
def test_the_client_refuses_every_write(bucket, reader, operation):
    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/keep.sql", Body=b"SELECT 1;\n")
    with pytest.raises(ReadOnlyViolation):
        operation(reader, name)
    keys = [o["Key"] for o in writer.list_objects_v2(Bucket=name).get("Contents", [])]
    assert keys == ["database/keep.sql"]
    assert writer.get_object(Bucket=name, Key="database/keep.sql")["Body"].read() == b"SELECT 1;\n"


def test_a_download_is_verified_cached_and_not_fetched_twice(bucket, reader, clean_dir, tmp_path):
    name, writer = bucket
    dump = sorted((clean_dir / "custom").glob("*.dump"))[-1]
    writer.put_object(Bucket=name, Key=f"database/{dump.name}", Body=dump.read_bytes())
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    cache = DownloadCache(tmp_path / "cache")
    seen: list[int] = []
    first = cache.fetch(reader, obj, progress=lambda done, total: seen.append(done))
    assert first.downloaded == obj.size == dump.stat().st_size
    assert first.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert first.path.read_bytes() == dump.read_bytes()
    assert seen and seen[-1] == obj.size
    second = cache.fetch(reader, obj)
    assert second.downloaded == 0 and second.path == first.path


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_entry_is_fetched_again(bucket, reader, tmp_path, damage):
    name, writer = bucket
    body = os.urandom(300_000)
    writer.put_object(Bucket=name, Key="database/blob.bin", Body=body)
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    cache = DownloadCache(tmp_path / "cache")
    path = cache.fetch(reader, obj).path
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[1000] ^= 0xFF
        path.write_bytes(bytes(data))
    again = cache.fetch(reader, obj)
    assert again.downloaded == obj.size
    assert again.path.read_bytes() == body


def test_an_object_deleted_after_listing_is_a_clear_error(bucket, reader, tmp_path):
    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/gone.sql", Body=b"SELECT 1;\n")
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    writer.delete_object(Bucket=name, Key="database/gone.sql")
    with pytest.raises(S3Error, match="deleted after it was listed|not found"):
        DownloadCache(tmp_path / "cache").fetch(reader, obj)


def test_an_object_replaced_after_listing_is_not_taken_for_the_listed_one(bucket, reader, tmp_path):
    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/x.sql", Body=b"SELECT 1;\n")
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    writer.put_object(Bucket=name, Key="database/x.sql", Body=b"SELECT 2; -- a different night\n")
    with pytest.raises(S3Error, match="changed after it was listed"):
        DownloadCache(tmp_path / "cache").fetch(reader, obj)


def test_a_missing_bucket_is_a_clear_error_without_secrets(reader):
    with pytest.raises(S3Error) as info:
        list_objects(reader, S3Location.parse("s3://no-such-bucket-here/database/"))
    assert "does not exist" in str(info.value)
    assert FAKE_SECRET not in str(info.value)


def test_an_unreachable_endpoint_is_a_clear_error(aws_env):
    client = make_client(S3Options(endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1", max_attempts=1))
    with pytest.raises(S3Error, match="cannot be reached"):
        list_objects(client, S3Location.parse("s3://any/database/"))


def test_missing_credentials_are_a_clear_error(s3_endpoint, monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = make_client(S3Options(endpoint_url=s3_endpoint, region="us-east-1", max_attempts=1))
    with pytest.raises(S3Error, match="no AWS credentials"):
        list_objects(client, S3Location.parse("s3://any/database/"))


def test_not_enough_disk_is_refused_before_downloading(bucket, reader, tmp_path):
    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/big.sql", Body=b"x" * 1000)
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    cache = DownloadCache(tmp_path / "cache", reserve=10**18)
    with pytest.raises(S3Error, match="bytes needed, only .* free in .*--cache-dir, config: cache_dir"):
        cache.fetch(reader, obj)


@pytest.mark.parametrize("url", ["s3://", "s3://key:secret@bucket/x", "https://bucket/x"])
def test_urls_with_credentials_or_no_bucket_are_refused(url):
    with pytest.raises(ValueError):
        S3Location.parse(url)


def test_third_party_endpoints_get_the_checksum_settings_they_need(aws_env):
    plain = make_client(S3Options(region="us-east-1"))
    relaxed = make_client(S3Options(region="us-east-1", checksum_when_required=True))
    assert relaxed.meta.config.request_checksum_calculation == "when_required"
    assert relaxed.meta.config.response_checksum_validation == "when_required"
    assert plain.meta.config.request_checksum_calculation != "when_required"


class Flaky:
    """A client whose first answer for each of some ranges is cut off midway (a connection lost)."""

    def __init__(self, client, cut: set[str]) -> None:  # type: ignore[no-untyped-def]
        self.client, self.cut, self.ranges = client, set(cut), []

    def get_object(self, **params):  # type: ignore[no-untyped-def]
        answer = self.client.get_object(**params)
        self.ranges.append(params.get("Range"))
        if params.get("Range") in self.cut:
            self.cut.discard(params["Range"])
            body = answer["Body"].read()
            answer["Body"] = __import__("io").BytesIO(body[: len(body) // 2])  # the rest never comes
        return answer


def test_a_large_object_downloads_in_ranges_hashed_in_order(bucket, reader, tmp_path):
    name, writer = bucket
    body = os.urandom(3_000_000 + 123)
    writer.put_object(Bucket=name, Key="database/big.dump", Body=body, Metadata={"sha256": "ab" * 32})
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    client = Flaky(reader, {"bytes=524288-786431"})
    cache = DownloadCache(tmp_path / "cache", parts_from=1_000_000, part_size=262_144, parts_at_once=4)
    seen: list[int] = []
    got = cache.fetch(client, obj, progress=lambda done, total: seen.append(done))
    assert got.path.read_bytes() == body and got.downloaded == len(body)
    assert got.sha256 == hashlib.sha256(body).hexdigest()
    assert got.declared == (("sha256", "ab" * 32),), "the object's metadata is read from its first range"
    assert len([r for r in client.ranges if r]) == 12 + 1, "12 ranges, the one cut off fetched again"
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == len(body), "progress in order, to the end"
    assert not list((tmp_path / "cache").rglob(".part-*"))
    assert cache.fetch(client, obj).downloaded == 0


def test_a_large_object_that_changes_while_it_downloads_is_refused(bucket, reader, tmp_path):
    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/big.dump", Body=os.urandom(2_000_000))
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))
    writer.put_object(Bucket=name, Key="database/big.dump", Body=os.urandom(2_000_000))
    cache = DownloadCache(tmp_path / "cache", parts_from=1_000_000, part_size=262_144)
    with pytest.raises(S3Error, match="changed after it was listed"):
        cache.fetch(reader, obj)
    assert not list((tmp_path / "cache").rglob(".part-*")), "no part file left"


def test_a_range_refused_while_another_is_still_coming_ends_the_download(bucket, reader, tmp_path):
    """The second range is refused at once while the first is still on its way: the download fails with the
    refusal (it does not wait for a range that gave up), and no part file stays."""
    import threading
    import time

    from botocore.exceptions import ClientError

    name, writer = bucket
    writer.put_object(Bucket=name, Key="database/big.dump", Body=os.urandom(600_000))
    [obj] = list_objects(reader, S3Location.parse(f"s3://{name}/database/"))

    class Refusing:
        def get_object(self, **params):  # type: ignore[no-untyped-def]
            if params["Range"] == "bytes=0-262143":
                time.sleep(0.5)
                return reader.get_object(**params)
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")

    cache = DownloadCache(tmp_path / "cache", parts_from=100_000, part_size=262_144)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            cache.fetch(Refusing(), obj)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    runner = threading.Thread(target=fetch, daemon=True)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the download waits for a range that gave up"
    assert outcome and isinstance(outcome[0], S3Error), outcome
    assert not list((tmp_path / "cache").rglob(".part-*"))
