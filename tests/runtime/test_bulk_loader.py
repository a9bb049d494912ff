"""The bulk loader's parts without an OpenSearch node (tests/e2e/test_bulk_loader.py runs it
against a real one).

- Line parsing and S3 reading: S3 is botocore's Stubber (the one stand-in used here), fed
  the exact response shapes of ListObjectsV2 / GetObject.
- Retry behaviour a single local node cannot be made to show on demand (429 and 503
  answers) runs against a small HTTP server that answers with the documented ``_bulk``
  response shape; it is marked CONTRACT below.
"""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from bulk_loader import handler as handler_mod
from bulk_loader.bulk import BulkWriter, LoadError, Report
from bulk_loader.source import BadLine, Doc, expand, parse_line, read_lines
from opensearch_http import OpenSearchClient as OpenSearch


def test_plain_and_joined_lines():
    plain = parse_line('{"id": "a", "embedding": [0.5, -1, 2e-3]}', "f line 1", 3)
    assert plain == Doc("a", [0.5, -1, 2e-3], None, "f line 1")
    joined = parse_line(json.dumps({"id": 7, "text_inputs": "some text",
                                    "SageMakerOutput": {"id": 7, "embedding": [1.0, 0.0]}}), "f line 2", 2)
    assert (joined.id, joined.vector, joined.text) == ("7", [1.0, 0.0], "some text")
    # The output may omit the id when the input carries it; a one-item text list is a text.
    bare = parse_line(json.dumps({"id": "b", "text_inputs": ["t"], "SageMakerOutput": {"embedding": [1]}}), "x", None)
    assert (bare.id, bare.text) == ("b", "t")


@pytest.mark.parametrize(("line", "reason"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"embedding": [1, 2, 3]}', "missing 'id'"),
    ('{"id": "", "embedding": [1, 2, 3]}', "missing 'id'"),
    ('{"id": "a"}', "id 'a': missing 'embedding'"),
    ('{"id": "a", "embedding": []}', "missing 'embedding'"),
    ('{"id": "a", "embedding": [1, "2", 3]}', "other than finite numbers"),
    ('{"id": "a", "embedding": [1, NaN, 3]}', "other than finite numbers"),
    ('{"id": "a", "embedding": [1, 2]}', "embedding has 2 dimensions, the index expects 3"),
    ('{"id": "a", "SageMakerOutput": "oops"}', "SageMakerOutput must be an object"),
])
def test_bad_lines_say_where_and_why(line, reason):
    with pytest.raises(BadLine) as info:
        parse_line(line, "s3://b/k.out line 9", 3)
    assert str(info.value).startswith("s3://b/k.out line 9: ")
    assert reason in str(info.value)


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_s3_prefix_is_listed_and_objects_streamed_line_by_line():
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AK", aws_secret_access_key="SK")
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2",
                          {"Contents": [{"Key": "out/b.jsonl.out"}, {"Key": "out/_SUCCESS"}], "IsTruncated": True,
                           "NextContinuationToken": "t1"},
                          {"Bucket": "bkt", "Prefix": "out/"})
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "out/a.jsonl.out"}], "IsTruncated": False},
                          {"Bucket": "bkt", "Prefix": "out/", "ContinuationToken": "t1"})
        uris = expand(["s3://bkt/out/", "s3://other/one.out"], suffix=".out", s3_client=s3)
        assert uris == ["s3://bkt/out/a.jsonl.out", "s3://bkt/out/b.jsonl.out", "s3://other/one.out"]

        # Chunk boundaries fall inside lines; blank lines keep their numbers.
        data = b'{"id": "x"}\n\n' + b'{"id": "' + b"y" * 3000 + b'"}\n{"id": "z"}'
        stub.add_response("get_object", {"Body": _body(data)}, {"Bucket": "bkt", "Key": "out/a.jsonl.out"})
        lines = list(read_lines("s3://bkt/out/a.jsonl.out", s3_client=s3))
        assert [n for n, _ in lines] == [1, 3, 4]
        assert [json.loads(raw)["id"][:1] for _, raw in lines] == ["x", "y", "z"]

        stub.add_response("list_objects_v2", {"KeyCount": 0, "IsTruncated": False}, {"Bucket": "bkt", "Prefix": "none/"})
        with pytest.raises(FileNotFoundError, match=re.escape("s3://bkt/none/: no objects ending in '.out'")):
            expand(["s3://bkt/none/"], suffix=".out", s3_client=s3)
        stub.assert_no_pending_responses()


def test_file_uris_are_for_local_runs_only(tmp_path, monkeypatch):
    f = tmp_path / "out.jsonl"
    f.write_text('{"id": 1}\n')
    assert [n for n, _ in read_lines(f.as_uri())] == [1]
    with pytest.raises(ValueError, match="expected an s3:// URI"):
        expand([str(f)])
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "loader")
    with pytest.raises(ValueError, match="in Lambda give s3:// URIs"):
        list(read_lines(f.as_uri()))


def test_event_and_environment_errors(monkeypatch):
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    with pytest.raises(LoadError, match="OPENSEARCH_URL is not set"):
        handler_mod.handler({"input": "s3://b/k"}, None)
    client = OpenSearch("http://127.0.0.1:9", auth_mode="none")  # the discard port: never reached
    with pytest.raises(LoadError, match="no input"):
        handler_mod.load({"index": "docs"}, client=client)
    with pytest.raises(LoadError, match="'input' must be"):
        handler_mod.load({"index": "docs", "input": [""]}, client=client)
    monkeypatch.delenv("INDEX_NAME", raising=False)
    with pytest.raises(LoadError, match="'index' missing: give it in the event or set INDEX_NAME"):
        handler_mod.load({"input": "s3://b/k"}, client=client)
    monkeypatch.setenv("OPENSEARCH_URL", "http://x")
    monkeypatch.setenv("AUTH_MODE", "iam")
    with pytest.raises(LoadError, match="auth mode 'iam'"):
        handler_mod.client_from_env()


# ------------------------------------------------------------------ CONTRACT: _bulk answers


class BulkServer:
    """CONTRACT stand-in for retry paths only: answers ``_bulk`` the way OpenSearch documents
    it (``{"errors", "items": [{"index": {"_id", "status", "error"?}}]}``), with statuses
    scripted per attempt, and records every request."""

    def __init__(self, script):
        self.script = script  # (attempt number, ids in the request) -> (HTTP status, {id: item status})
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                lines = [json.loads(x) for x in body.splitlines()]
                ids = [a["index"]["_id"] for a in lines[0::2]]
                outer.requests.append({"path": self.path, "ids": ids, "docs": lines[1::2],
                                       "headers": dict(self.headers)})
                status, items = outer.script(len(outer.requests), ids)
                payload = {"errors": any(s >= 300 for s in items.values()), "items": [
                    {"index": {"_id": i, "status": items.get(i, 201),
                               **({"error": {"type": "es_rejected_execution_exception" if items[i] == 429
                                             else "mapper_parsing_exception", "reason": "scripted"}}
                                  if items.get(i, 201) >= 300 else {})}} for i in ids]}
                data = json.dumps(payload if status == 200 else {"error": "scripted", "status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bulk_server():
    servers = []

    def start(script):
        servers.append(BulkServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def docs(n: int, dim: int = 4) -> list[Doc]:
    return [Doc(f"d{i}", [float(i)] * dim, f"text {i}" if i % 2 else None, f"f line {i + 1}") for i in range(n)]


def write_all(url: str, items: list[Doc], **kwargs) -> tuple[Report, list[float]]:
    report, slept = Report(documents_in=len(items)), []
    writer = BulkWriter(OpenSearch(url, auth_mode="none"), "docs", report, sleep=slept.append, **kwargs)
    for d in items:
        writer.add(d)
    writer.flush()
    return report, slept


def test_contract_throttled_items_are_resent_until_indexed(bulk_server):
    # First attempt: two items throttled (429) and one 503; the resend of those three succeeds.
    server = bulk_server(lambda n, ids: (200, {"d1": 429, "d3": 429, "d4": 503} if n == 1 else {}))
    report, slept = write_all(server.url, docs(6))
    assert report.complete and report.documents_indexed == 6
    assert report.retried == 3 and len(slept) == 1
    assert [r["ids"] for r in server.requests] == [[f"d{i}" for i in range(6)], ["d1", "d3", "d4"]]
    first = server.requests[0]
    # Vectors are written as given, the text only when present, and no pipeline runs.
    assert first["path"] == "/docs/_bulk?pipeline=_none"
    assert first["headers"]["Content-Type"] == "application/x-ndjson"
    assert first["docs"][0] == {"embedding": [0.0] * 4} and first["docs"][1] == {"embedding": [1.0] * 4,
                                                                                 "text": "text 1"}


def test_contract_whole_request_outage_is_retried_with_growing_backoff(bulk_server):
    server = bulk_server(lambda n, ids: (503 if n <= 3 else 200, {}))
    report, slept = write_all(server.url, docs(3), backoff_s=1.0, max_backoff_s=100)
    assert report.complete and report.requests == 4
    # Full jitter: each wait is at most base * 2**attempt.
    assert all(0 <= s <= 2 ** (i + 1) for i, s in enumerate(slept)) and len(slept) == 3


def test_contract_what_never_succeeds_is_surfaced_with_its_reason(bulk_server):
    server = bulk_server(lambda n, ids: (200, {"d2": 429, "d4": 400}))
    report, _ = write_all(server.url, docs(5), attempts=3)
    assert not report.complete
    assert report.documents_indexed == 3
    assert report.failed == {
        "d4": "HTTP 400 mapper_parsing_exception: scripted",
        "d2": "HTTP 429 es_rejected_execution_exception: scripted (after 3 attempts)",
    }
    assert [r["ids"] for r in server.requests] == [["d0", "d1", "d2", "d3", "d4"], ["d2"], ["d2"]]
    assert report.summary().startswith("2 of 5 document(s) not indexed (3 indexed): ")


def test_contract_access_denied_stops_at_once(bulk_server):
    server = bulk_server(lambda n, ids: (403, {}))
    with pytest.raises(LoadError, match=r"HTTP 403.*map the loader's role in FGAC"):
        write_all(server.url, docs(2))
    assert len(server.requests) == 1


def test_contract_requests_are_cut_by_count_and_by_bytes(bulk_server):
    server = bulk_server(lambda n, ids: (200, {}))
    report, _ = write_all(server.url, docs(7), max_docs=3)
    assert [len(r["ids"]) for r in server.requests] == [3, 3, 1] and report.complete
    server.requests.clear()
    one_doc = len(json.dumps({"index": {"_id": "d0"}})) + len(json.dumps({"embedding": [0.0] * 64})) + 2
    write_all(server.url, [Doc(d.id, [0.0] * 64, None, d.origin) for d in docs(5)], max_bytes=2 * one_doc + 5)
    assert [len(r["ids"]) for r in server.requests] == [2, 2, 1]


def test_contract_sigv4_signs_for_the_es_service(bulk_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOADERTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = bulk_server(lambda n, ids: (200, {}))
    report = Report(documents_in=1)
    writer = BulkWriter(OpenSearch(server.url, auth_mode="sigv4", region="eu-west-1"), "docs", report)
    writer.add(docs(1)[0])
    writer.flush()
    auth = server.requests[0]["headers"]["Authorization"]
    assert re.match(r"AWS4-HMAC-SHA256 Credential=AKIDLOADERTEST/\d{8}/eu-west-1/es/aws4_request, "
                    r"SignedHeaders=\S*host\S*, Signature=[0-9a-f]{64}$", auth)
    assert report.complete
