"""`semsearch ingest|search|status --stage` as a user runs them against a deployed stage.

The stage is this session's real node, provisioned by the glue, behind a SigV4-checking
front (``IamAuthFront``) where Amazon OpenSearch Service's IAM authentication would be; the
search stack's outputs come from CloudFormation ``describe_stacks`` through botocore's
Stubber (calls and answers checked against the service model). The same commands then
run against the same index as the local stack (no --stage).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
from botocore.stub import Stubber

from semsearch import stage
from semsearch.cli import main
from semsearch.local.client import Connection
from semsearch.local.stack import REGION, LocalStack, run_custom_resource
from semsearch.sigv4 import SigV4Error, verify
from stacks.names import SearchOutputs, stack_name

STAGE = "e2e"
ACCESS_KEY, SECRET_KEY = "AKIASTAGECLI0000000", "stage-cli-secret"
GOOD_DOCS = 40


class IamAuthFront:
    """Stands in for Amazon OpenSearch Service's IAM authentication in front of a domain.

    Every request must carry a valid SigV4 signature (service ``es``, this region, a known
    key: semsearch.sigv4.verify); a refused one gets 403 as the service answers it. An
    accepted one goes to the node as its admin (basic auth), the way a principal mapped to
    all_access is served.
    """

    def __init__(self, node: Connection, keys: dict[str, str], region: str) -> None:
        self.refused: list[str] = []
        front = self
        auth = urllib3.make_headers(basic_auth=f"{node.username}:{node.password}")

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                key_id = headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
                try:
                    verify(self.command, path, query, headers, body, region=region, service="es",
                           access_key=key_id, secret_key=keys.get(key_id, ""))
                except SigV4Error as e:
                    front.refused.append(str(e))
                    self._answer(403, json.dumps({"message": f"The request signature is not valid: {e}"}).encode())
                    return
                forwarded = {**auth, "Content-Type": headers.get("content-type", "application/json")}
                resp = node.pool.request(self.command, node.url + self.path, body=body or None, headers=forwarded)
                self._answer(resp.status, resp.data)

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def deployed(opensearch, make_props) -> Iterator[dict[str, Any]]:
    """A stage of its own: the glue's objects on the node, its index empty, behind the front."""
    props = make_props("e2e-stage-cli")
    result = run_custom_resource("Create", props)
    front = IamAuthFront(opensearch, {ACCESS_KEY: SECRET_KEY}, REGION)
    data = result["Data"]
    yield {"data": data, "front": front, "props": props, "outputs": {
        SearchOutputs.DOMAIN_ENDPOINT: front.url, SearchOutputs.INDEX_NAME: data["IndexName"],
        SearchOutputs.MODEL_ID: data["ModelId"], SearchOutputs.QUERY_MODEL_ID: data["QueryModelId"],
        SearchOutputs.TEXT_FIELD: props["TextField"], SearchOutputs.EMBEDDING_FIELD: props["EmbeddingField"]}}
    front.server.shutdown()
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


@pytest.fixture
def aws(monkeypatch, tmp_path, deployed) -> list[Stubber]:
    """The user's credentials and CloudFormation answering describe_stacks for the stage."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    name = stack_name(STAGE, "search")
    stubbers = []

    def client(session: Any) -> Any:
        cfn = session.client("cloudformation")
        stubber = Stubber(cfn)
        stubber.add_response("describe_stacks", {"Stacks": [{
            "StackName": name, "StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/{name}/1",
            "CreationTime": "2025-01-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in deployed["outputs"].items()]}]},
            {"StackName": name})
        stubber.activate()
        stubbers.append(stubber)
        return cfn

    monkeypatch.setattr(stage, "cloudformation_client", client)
    return stubbers


def write_docs(path: Path, dev_pairs: list[dict]) -> list[dict]:
    """GOOD_DOCS documents, and between them each kind of line that is not one."""
    good = [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:GOOD_DOCS]]
    lines = [json.dumps(d) for d in good[:10]]
    lines += [json.dumps({"id": "no-text"}),                        # line 11
              '{"id": "broken", "text": "unterminated',             # line 12
              json.dumps({"id": "blank-text", "text": "   "}),      # line 13
              json.dumps({"id": good[0]["id"], "text": "a second document under the first one's id"}),  # 14
              json.dumps({"text": "a document with no id"}),         # line 15
              ""]                                                    # blank: not a document
    lines += [json.dumps(d) for d in good[10:]]
    path.write_text("\n".join(lines) + "\n")
    return good


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_search_status_on_a_stage_and_locally(aws, deployed, opensearch, dev_pairs, tmp_path, capsys,
                                                      monkeypatch):
    docs = tmp_path / "docs.jsonl"
    good = write_docs(docs, dev_pairs)
    alias = deployed["data"]["IndexName"]

    code, out, err = run_cli(capsys, "ingest", "--stage", STAGE, str(docs))
    assert code == 1, err
    summary = json.loads(out)
    assert summary["documents_in"] == GOOD_DOCS + 5
    assert summary["documents_indexed"] == GOOD_DOCS and summary["documents_failed"] == 5
    assert [(f["line"], f["id"]) for f in summary["failures"]] == [
        (11, "no-text"), (12, None), (13, "blank-text"), (14, good[0]["id"]), (15, None)]
    errors = [f["error"] for f in summary["failures"]]
    assert errors[0].startswith('no "text"') and errors[1].startswith("not JSON")
    assert errors[3] == "duplicate id: line 1 has it too" and errors[4].startswith('no "id"')
    assert "5 of 45 document(s) not indexed" in err
    assert deployed["front"].refused == []

    # Every good document once, embedded by the pipeline; the duplicate line did not overwrite line 1.
    assert opensearch.request("GET", f"/{alias}/_count")[1]["count"] == GOOD_DOCS
    _, first = opensearch.request("GET", f"/{alias}/_doc/{good[0]['id']}")
    assert first["_source"]["text"] == good[0]["text"] and len(first["_source"]["embedding"]) == 384
    assert opensearch.request("GET", f"/{alias}/_doc/no-text", ok=(404,))[0] == 404

    # Again: the same documents overwrite themselves, nothing is indexed twice.
    code, out, _ = run_cli(capsys, "ingest", "--stage", STAGE, str(docs))
    assert code == 1 and json.loads(out)["documents_indexed"] == GOOD_DOCS
    assert opensearch.request("GET", f"/{alias}/_count")[1]["count"] == GOOD_DOCS

    # Search: the document each query was written for comes first, with its text.
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query": p["query"]}) + "\n" for p in dev_pairs[:10]))
    code, out, err = run_cli(capsys, "search", "--stage", STAGE, "--queries-file", str(queries), "-k", "3", "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    text_of = {d["id"]: d["text"] for d in good}
    for line in results:
        assert [h["text"] for h in line["hits"]] == [text_of[h["id"]] for h in line["hits"]]
    firsts = [line["hits"][0]["id"] == pair["id"] for pair, line in zip(dev_pairs[:10], results, strict=True)]
    assert sum(firsts) >= 8, firsts
    code, out, _ = run_cli(capsys, "search", "--stage", STAGE, dev_pairs[0]["query"], "-k", "1")
    assert code == 0 and dev_pairs[0]["id"] in out.splitlines()[1]

    # Status: the index behind the alias, its models, the document count.
    code, out, err = run_cli(capsys, "status", "--stage", STAGE, "--json")
    assert code == 0, err
    status = json.loads(out)
    concrete = deployed["data"]["ConcreteIndexName"]
    assert status["alias"] == alias and status["indices"] == [concrete] and status["documents"] == GOOD_DOCS
    (index,) = status["index_details"]
    assert index["ingest_model_ids"] == [deployed["data"]["ModelId"]]
    assert index["query_model_ids"] == [deployed["data"]["QueryModelId"]]
    assert {m["model_id"]: m["state"] for m in status["models"]} == {deployed["data"]["ModelId"]: "DEPLOYED"}
    assert status["stack"] == stack_name(STAGE, "search") and status["region"] == REGION
    assert status["not_readable"] == []
    for stubber in aws:
        stubber.assert_no_pending_responses()  # one describe_stacks per command

    # The local stack answers the same commands (a state file naming this node and index).
    monkeypatch.setenv("SEMSEARCH_LOCAL_STACK", f"pytest-stage-cli-{tmp_path.name}")
    local = LocalStack()
    local.save({"opensearch_url": opensearch.url, "ca_file": opensearch.ca_file, "index": alias,
                "auth": {"username": opensearch.username, "password": opensearch.password},
                "model_id": deployed["data"]["ModelId"], "embedding_field": "embedding", "text_field": "text"})
    try:
        code, out, _ = run_cli(capsys, "status", "--json")
        assert code == 0 and json.loads(out)["documents"] == GOOD_DOCS
        code, out, _ = run_cli(capsys, "search", "--queries-file", str(queries), "-k", "3", "--json")
        assert code == 0 and [json.loads(line) for line in out.splitlines()] == results
        clean = tmp_path / "clean.jsonl"
        clean.write_text("".join(json.dumps(d) + "\n" for d in good[:5]))
        code, out, _ = run_cli(capsys, "ingest", str(clean), "--no-progress")
        assert code == 0 and json.loads(out) == {"documents_in": 5, "documents_indexed": 5, "documents_failed": 0,
                                                 "failures": []}
    finally:
        local.down(purge=True)


def test_a_wrong_signature_is_refused_and_nothing_is_indexed(aws, deployed, opensearch, monkeypatch, tmp_path,
                                                            capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "refused-1", "text": "never indexed"}) + "\n")
    code, out, err = run_cli(capsys, "ingest", "--stage", STAGE, str(docs))
    assert code == 2 and out == ""
    assert f"stage {STAGE} (stack {stack_name(STAGE, 'search')}, {REGION})" in err
    assert "HTTP 403" in err and "signature does not match" in err
    assert deployed["front"].refused
    alias = deployed["data"]["IndexName"]
    assert opensearch.request("GET", f"/{alias}/_doc/refused-1", ok=(404,))[0] == 404
