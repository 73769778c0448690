"""S3 failures moto cannot make: a download cut off midway and throttling, from a stub on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from backupcheck.sources.s3 import DownloadCache, S3Error, S3Location, S3Options, list_objects, make_client

BODY = b"SELECT 1;\n" * 5000
LISTING = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>database/</Prefix>
<KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>database/x_20250101_020000.sql</Key><LastModified>2025-01-01T02:00:00.000Z</LastModified>
<ETag>&quot;abc&quot;</ETag><Size>{len(BODY)}</Size><StorageClass>STANDARD</StorageClass></Contents>
</ListBucketResult>""".encode()


class Stub(http.server.BaseHTTPRequestHandler):
    mode = "cut"
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.mode == "throttle":
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if "list-type=2" in self.path:
            self.send_response(200)
            self.send_header("Content-Length", str(len(LISTING)))
            self.end_headers()
            self.wfile.write(LISTING)
            return
        # The object: the full length is promised, half is sent, then the connection drops.
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(BODY[: len(BODY) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def stub(aws_env: None) -> Iterator[tuple[str, type[Stub]]]:
    handler = type("StubHandler", (Stub,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_cut_off_midway_is_retried_then_fails(stub, tmp_path):
    endpoint, handler = stub
    client = make_client(S3Options(endpoint_url=endpoint, region="us-east-1", max_attempts=1))
    [obj] = list_objects(client, S3Location.parse("s3://b/database/"))
    cache = DownloadCache(tmp_path / "cache")
    with pytest.raises(S3Error, match="failed 3 times"):
        cache.fetch(client, obj, attempts=3)
    gets = [r for r in handler.requests if "x_20250101" in r]
    assert len(gets) == 3, "three attempts, then a clear failure"
    assert cache.cached(obj) is None, "a partial download is never kept as an entry"
    assert not list((tmp_path / "cache").rglob(".part-*"))


def test_throttling_is_retried_a_bounded_number_of_times(stub):
    endpoint, handler = stub
    handler.mode = "throttle"
    client = make_client(S3Options(endpoint_url=endpoint, region="us-east-1", max_attempts=3))
    started = datetime.now(UTC)
    with pytest.raises(S3Error, match="throttled"):
        list_objects(client, S3Location.parse("s3://b/database/"))
    assert len(handler.requests) == 3
    assert (datetime.now(UTC) - started).total_seconds() < 60
