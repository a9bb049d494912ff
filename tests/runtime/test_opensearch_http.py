"""The one OpenSearch HTTP client (lambda/opensearch_http) and the layers on top of it: the
glue's named steps, the bulk loader's settings, the CLI's Connection.

The HTTP server here answers fixed statuses and bodies: it stands in for nothing but "an
HTTP server"; the client against a real node is tests/e2e (every fixture talks through it).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bulk_loader import handler as loader
from bulk_loader.bulk import LoadError, vector_dimension
from opensearch_http import (
    ClientConfigError,
    CredentialsError,
    HTTPStatusError,
    OpenSearchClient,
    Unreachable,
)
from search_glue.client import HINTS_403, OpenSearch, StepError

from semsearch.local.client import Connection, OpenSearchError


class Answering:
    """Answers every request with ``status`` and ``body``; records method, path, headers and body."""

    def __init__(self, status: int, body: object):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": self.rfile.read(length).decode()})
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering():
    servers = []

    def start(status, body):
        servers.append(Answering(status, body))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_one_client_class_under_the_glue_the_loader_and_the_cli(monkeypatch):
    assert issubclass(OpenSearch, OpenSearchClient)
    assert issubclass(Connection, OpenSearchClient)
    monkeypatch.setenv("OPENSEARCH_URL", "https://search-x.eu-west-1.es.amazonaws.com")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AUTH_MODE", raising=False)
    client = loader.client_from_env()
    assert type(client) is OpenSearchClient and (client.auth_mode, client.region) == ("sigv4", "eu-west-1")


def test_bad_configuration_is_named():
    with pytest.raises(ClientConfigError, match="auth mode 'iam': expected one of sigv4, basic, none"):
        OpenSearchClient("http://x", auth_mode="iam")
    with pytest.raises(ClientConfigError, match="SigV4 needs the domain's region"):
        OpenSearchClient("https://x", auth_mode="sigv4")


def test_request_raises_on_status_outside_2xx_and_ok(answering):
    server = answering(404, {"error": "no such index"})
    client = OpenSearchClient(server.url, auth_mode="none")
    assert client.request("GET", "/docs", ok=(404,)) == (404, {"error": "no such index"})
    assert client.send("GET", "/docs") == (404, {"error": "no such index"})
    with pytest.raises(HTTPStatusError) as info:
        client.request("GET", "/docs")
    assert (info.value.status, info.value.body) == (404, {"error": "no such index"})
    assert str(info.value) == 'GET /docs -> HTTP 404: {"error": "no such index"}'


def test_bodies_basic_auth_and_ndjson(answering):
    server = answering(200, "plain text")
    client = Connection(server.url + "/", "admin", "pw")
    assert client.request("PUT", "/x", {"a": 1}) == (200, "plain text")
    client.request("POST", "/_bulk", ndjson='{"index": {}}\n{}\n')
    (put, bulk) = server.requests
    assert put["headers"]["content-type"] == "application/json" and json.loads(put["body"]) == {"a": 1}
    assert put["headers"]["authorization"] == "Basic YWRtaW46cHc="  # admin:pw
    assert bulk["headers"]["content-type"] == "application/x-ndjson" and bulk["body"] == '{"index": {}}\n{}\n'
    anonymous = Connection(server.url)
    anonymous.request("GET", "/")
    assert "authorization" not in server.requests[-1]["headers"]
    assert anonymous.as_dict() == {"url": server.url, "username": None, "password": None, "ca_file": None}
    assert "pw" not in repr(client)


def test_unreachable_names_the_url():
    url = closed_port_url()
    with pytest.raises(Unreachable, match=f"cannot reach {url}"):
        OpenSearchClient(url, auth_mode="none").send("GET", "/")


def test_no_credentials_for_sigv4(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    url = closed_port_url()
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        OpenSearchClient(url, region="eu-west-1").send("GET", "/")
    with pytest.raises(StepError, match="^auth: no AWS credentials"):
        OpenSearch(url, region="eu-west-1").call("index", "GET", "/")
    with pytest.raises(LoadError, match="no AWS credentials"):
        vector_dimension(OpenSearchClient(url, region="eu-west-1"), "docs", "embedding")


def test_glue_steps_name_themselves_and_hint_on_403(answering):
    server = answering(403, {"error": "no permissions"})
    with pytest.raises(StepError) as info:
        OpenSearch(server.url, auth_mode="none").call("connector", "POST", "/_plugins/_ml/connectors/_create", {})
    assert (info.value.step, info.value.status, info.value.body) == ("connector", 403, {"error": "no permissions"})
    assert str(info.value) == ('connector: POST /_plugins/_ml/connectors/_create -> HTTP 403: '
                               f'{{"error": "no permissions"}} (hint: {HINTS_403["connector"]})')
    url = closed_port_url()
    with pytest.raises(StepError, match=f"^index: HEAD /docs -> cannot reach {url}") as info:
        OpenSearch(url, auth_mode="none").call("index", "HEAD", "/docs")
    assert info.value.status == 0


def test_cli_error_is_the_shared_one(answering):
    server = answering(500, {"error": "boom"})
    with pytest.raises(OpenSearchError, match=r'POST /x -> HTTP 500: \{"error": "boom"\}'):
        Connection(server.url).request("POST", "/x", {})
