"""semsearch.local.tei without TEI: where the router is found, and the SigV4-checking front
(before a stand-in that answers what TEI answers). The real router: tests/e2e/test_flavors.py."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from semsearch.errors import UsageError
from semsearch.local.tei import TeiNotFound, find_tei, stage_serving, start_front
from stacks.config import load_config
from stacks.containers import tei_container_environment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def router(tmp_path) -> Path:
    path = tmp_path / "text-embeddings-router"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_flags_then_environment_then_shared_folder(router, tmp_path):
    other = tmp_path / "elsewhere"
    env = {"SEMSEARCH_TEI_BIN": str(router), "SEMSEARCH_TEI_URL": "http://tei:8080/"}
    assert find_tei(tei_url="http://127.0.0.1:9/", environ=env).url == "http://127.0.0.1:9"
    assert find_tei(router, environ={}).origin == "--tei-bin"
    assert find_tei(environ=env, shared_router=other).origin == "$SEMSEARCH_TEI_BIN"
    found = find_tei(environ={"SEMSEARCH_TEI_URL": "http://tei:8080/"}, shared_router=router)
    assert (found.origin, found.url) == ("$SEMSEARCH_TEI_URL", "http://tei:8080")
    assert find_tei(environ={}, shared_router=router).bin == router


def test_none_found_names_all_three_ways(tmp_path):
    with pytest.raises(TeiNotFound) as info:
        find_tei(environ={}, shared_router=tmp_path / "absent")
    message = str(info.value)
    assert "--tei-bin PATH" in message and "$SEMSEARCH_TEI_BIN" in message and "--tei-url URL" in message
    assert "shared/tools/tei/text-embeddings-router" in message


def test_a_named_router_that_is_not_one_is_an_error_not_a_fallback(tmp_path, router):
    with pytest.raises(TeiNotFound, match="--tei-bin '/nonexistent' is not an executable"):
        find_tei("/nonexistent", environ={}, shared_router=router)
    with pytest.raises(TeiNotFound, match=r"\$SEMSEARCH_TEI_URL 'tei:8080' is not an http\(s\) URL"):
        find_tei(environ={"SEMSEARCH_TEI_URL": "tei:8080"}, shared_router=router)
    with pytest.raises(UsageError, match="not both"):
        find_tei(router, "http://x")


def test_limits_are_the_endpoint_environments():
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    first = next(iter(context["stages"]))
    env = tei_container_environment(load_config({**context, "stage": first}).stage(first).connector_endpoint)
    serving = stage_serving()
    assert (serving.stage, serving.max_client_batch_size, serving.max_batch_tokens, serving.auto_truncate) == (
        first, int(env["MAX_CLIENT_BATCH_SIZE"]), int(env["MAX_BATCH_TOKENS"]), env["AUTO_TRUNCATE"] == "true")


class _FakeTei(BaseHTTPRequestHandler):
    """Answers as TEI does: vectors, or 413 with its error body for more than 2 inputs."""

    seen: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, body))
        inputs = json.loads(body)["inputs"]
        status, answer = ((413, {"error": "batch size 3 > maximum allowed batch size 2", "error_type": "Validation"})
                          if len(inputs) > 2 else (200, [[0.5, 0.5]] * len(inputs)))
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def front():
    tei = HTTPServer(("127.0.0.1", 0), _FakeTei)
    threading.Thread(target=tei.serve_forever, daemon=True).start()
    handle = start_front(f"http://127.0.0.1:{tei.server_address[1]}", name="ep", region="us-east-1",
                         access_key="AKID", secret_key="secret")
    yield handle
    handle.stop()
    tei.shutdown()


def _post(url: str, body: bytes, secret: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if secret:
        signed = AWSRequest("POST", url, data=body, headers=headers)
        SigV4Auth(Credentials("AKID", secret), "sagemaker", "us-east-1").add_auth(signed)
        headers = dict(signed.headers.items())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_the_front_checks_sigv4_and_passes_tei_through(front):
    body = json.dumps({"inputs": ["a", "b"], "truncate": True}).encode()
    _FakeTei.seen.clear()
    assert _post(front.invocations_url, body, secret="secret") == (200, [[0.5, 0.5], [0.5, 0.5]])
    assert _FakeTei.seen == [("/invocations", body)]  # SageMaker's container path, the body as sent
    status, answer = _post(front.invocations_url, body, secret="wrong")
    assert status == 403 and "signature does not match" in answer["error"]
    # TEI's own refusals come back as TEI sent them.
    status, answer = _post(front.invocations_url, json.dumps({"inputs": ["a", "b", "c"]}).encode(), secret="secret")
    assert (status, answer) == (413, {"error": "batch size 3 > maximum allowed batch size 2",
                                      "error_type": "Validation"})
    assert _post(front.url + "/endpoints/other/invocations", body)[0] == 404


def test_the_ci_tei_service_has_the_endpoint_environments_limits():
    """CI's TEI (a service container: env only, no arguments) serves as a stage's endpoint does."""
    import yaml

    job = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["synth-and-test"]
    env, serving = job["services"]["tei"]["env"], stage_serving()
    assert job["services"]["tei"]["image"] == (
        f"ghcr.io/huggingface/text-embeddings-inference:cpu-{serving.tei_version}")
    assert (int(env["MAX_CLIENT_BATCH_SIZE"]), int(env["MAX_BATCH_TOKENS"]), env["AUTO_TRUNCATE"] == "true") == (
        serving.max_client_batch_size, serving.max_batch_tokens, serving.auto_truncate)
    assert job["env"]["SEMSEARCH_TEI_URL"] == "http://127.0.0.1:8080"


def test_a_router_we_start_reads_none_of_teis_argument_variables_from_our_environment():
    """TEI takes each argument from the variable of the same name too: a DEFAULT_PROMPT left in
    the caller's shell would prefix every text again (the connector adds the prefix itself)."""
    from semsearch.local.tei import ROUTER_ARGUMENT_VARIABLES, router_environment

    env = router_environment({"PATH": "/usr/bin", "DEFAULT_PROMPT": "query: ", "DEFAULT_PROMPT_NAME": "query",
                              "API_KEY": "x", "MAX_CLIENT_BATCH_SIZE": "1", "HF_HUB_OFFLINE": "0"})
    assert env == {"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1"}
    assert {"DEFAULT_PROMPT", "DEFAULT_PROMPT_NAME", "API_KEY", "AUTO_TRUNCATE"} <= set(ROUTER_ARGUMENT_VARIABLES)
