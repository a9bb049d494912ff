"""Stage resolution (semsearch/stage.py): the search stack's outputs through CloudFormation
``describe_stacks`` (botocore's Stubber checks every call and answer against the service
model), and SigV4 to the domain with the session's credentials (checked by semsearch.sigv4).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.stub import Stubber

from semsearch import stage
from semsearch.errors import UsageError
from semsearch.sigv4 import verify
from stacks.names import SearchOutputs

STACK = "semsearch-dev-search"
REGION = "eu-west-1"
DEFAULT_KEYS = ("AKIADEFAULTCHAIN000", "default-secret")
PROFILE_KEYS = ("AKIAPROFILEOTHER000", "profile-secret")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Credentials from the environment; a profile "other" in a config file of its own."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text(
        f"[other]\naws_access_key_id = {PROFILE_KEYS[0]}\naws_secret_access_key = {PROFILE_KEYS[1]}\n")
    (tmp_path / "config").write_text("[profile other]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DEFAULT_KEYS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DEFAULT_KEYS[1])


class Stubbed:
    """The real CloudFormation client of the session stage resolution makes, behind a Stubber."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stubbers: list[Stubber] = []
        self.responses: list[tuple[str, Any]] = []
        monkeypatch.setattr(stage, "cloudformation_client", self._client)

    def _client(self, session: Any) -> Any:
        client = session.client("cloudformation")
        stubber = Stubber(client)
        for kind, value in self.responses:
            if kind == "ok":
                stubber.add_response("describe_stacks", value, {"StackName": STACK})
            else:
                stubber.add_client_error("describe_stacks", service_error_code="ValidationError",
                                         service_message=value, http_status_code=400,
                                         expected_params={"StackName": STACK})
        stubber.activate()
        self.stubbers.append(stubber)
        return client

    def stack(self, outputs: dict[str, str], status: str = "CREATE_COMPLETE") -> None:
        self.responses.append(("ok", {"Stacks": [{
            "StackName": STACK, "StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/{STACK}/1",
            "CreationTime": "2025-01-01T00:00:00Z", "StackStatus": status,
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}))

    def absent(self) -> None:
        self.responses.append(("error", f"Stack with id {STACK} does not exist"))

    def all_called(self) -> None:
        for stubber in self.stubbers:
            stubber.assert_no_pending_responses()


@pytest.fixture
def cfn(monkeypatch) -> Stubbed:
    return Stubbed(monkeypatch)


def outputs(endpoint: str = "https://search-semsearch-dev-abc.eu-west-1.es.amazonaws.com") -> dict[str, str]:
    return {SearchOutputs.DOMAIN_ENDPOINT: endpoint, SearchOutputs.INDEX_NAME: "documents",
            SearchOutputs.MODEL_ID: "m-123", SearchOutputs.TEXT_FIELD: "body",
            SearchOutputs.EMBEDDING_FIELD: "vec", "GlueRoleArn": "arn:aws:iam::123456789012:role/glue"}


def test_a_deployed_stage_is_its_search_stack_outputs(cfn):
    cfn.stack(outputs())
    target = stage.stage_target("dev", region=REGION)
    cfn.all_called()
    assert (target.alias, target.model_id, target.text_field, target.embedding_field) == \
        ("documents", "m-123", "body", "vec")
    assert target.client.url == "https://search-semsearch-dev-abc.eu-west-1.es.amazonaws.com"
    assert (target.client.auth_mode, target.client.region) == ("sigv4", REGION)
    assert STACK in target.label and REGION in target.label


def test_a_missing_stack_names_the_stack_and_region(cfn):
    cfn.absent()
    with pytest.raises(UsageError, match=f"stack {STACK} not found in region {REGION}"):
        stage.stage_target("dev", region=REGION)
    cfn.all_called()


def test_a_missing_output_names_it_with_the_stack_region_and_status(cfn):
    partial = outputs()
    del partial[SearchOutputs.MODEL_ID]
    cfn.stack(partial, status="UPDATE_ROLLBACK_COMPLETE")
    with pytest.raises(UsageError) as raised:
        stage.stage_target("dev", region=REGION)
    message = str(raised.value)
    assert f"stack {STACK} in region {REGION} (UPDATE_ROLLBACK_COMPLETE) has no output ModelId" in message
    assert "IndexName" in message  # the outputs it does have


def test_no_region_is_a_clear_error(cfn):
    with pytest.raises(UsageError, match="no AWS region: pass --region"):
        stage.stage_target("dev")


def test_an_unknown_profile_is_named(cfn):
    with pytest.raises(UsageError, match="--profile nobody"):
        stage.stage_target("dev", region=REGION, profile="nobody")


def test_region_and_profile_do_not_apply_to_the_local_stack():
    args = argparse.Namespace(stage="local", region=REGION, profile=None)
    with pytest.raises(UsageError, match="not the local stack"):
        stage.resolve(args)


class SignedRequests:
    """An HTTP server that records each request's headers and SigV4 verdict (service es)."""

    def __init__(self, keys: dict[str, str], region: str) -> None:
        self.seen: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                key_id = headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
                try:
                    verify("GET", path, query, headers, b"", region=region, service="es", access_key=key_id,
                           secret_key=keys.get(key_id, "unknown"))
                    recorder.seen.append(key_id)
                    status, body = 200, b'{"count": 3}'
                except Exception as e:
                    recorder.seen.append(f"refused: {e}")
                    status, body = 403, b'{"message": "refused"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def domain() -> Iterator[SignedRequests]:
    server = SignedRequests(dict([DEFAULT_KEYS, PROFILE_KEYS]), "ap-south-1")
    yield server
    server.server.shutdown()


def test_the_profile_signs_the_domain_requests_in_its_region(cfn, domain):
    """--profile chooses the credentials for SigV4 too, not only for CloudFormation."""
    cfn.stack(outputs(domain.url))
    target = stage.stage_target("dev", profile="other")  # region: the profile's, ap-south-1
    assert target.client.request("GET", "/documents/_count")[1] == {"count": 3}
    assert domain.seen == [PROFILE_KEYS[0]]


def test_without_a_profile_the_default_chain_signs(cfn, domain):
    cfn.stack(outputs(domain.url))
    target = stage.stage_target("dev", region="ap-south-1")
    target.client.request("GET", "/documents/_count")
    assert domain.seen == [DEFAULT_KEYS[0]]
