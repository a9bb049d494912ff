"""A scale-to-zero endpoint hosts its model as an inference component: the connector must
name it on every call, and only such endpoints get a different physical id."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from search_glue import handler, steps
from search_glue.client import OpenSearch, StepError
from search_glue.properties import parse

from tests.runtime.test_glue_properties import AWS


def test_connector_sends_the_inference_component_header():
    props = parse({**AWS, "InferenceComponentName": "semsearch-dev-cpu-model"})
    headers = steps.connector_body(props, "c")["actions"][0]["headers"]
    assert headers["X-Amzn-SageMaker-Inference-Component"] == "semsearch-dev-cpu-model"


def test_no_header_and_unchanged_physical_id_without_a_component():
    plain = parse(AWS)
    assert "X-Amzn-SageMaker-Inference-Component" not in steps.connector_body(plain, "c")["actions"][0]["headers"]
    with_component = parse({**AWS, "InferenceComponentName": "semsearch-dev-cpu-model"})
    assert plain.identity() == {k: v for k, v in with_component.identity().items() if k != "inference_component"}


def test_bad_component_name_is_named():
    from search_glue.properties import PropertyError

    with pytest.raises(PropertyError, match="InferenceComponentName: bad value 'has spaces'"):
        parse({**AWS, "InferenceComponentName": "has spaces"})



# ---------------------------------------------------------------------------------------
# Scale to zero: 0 copies is asleep, not broken (issue 9, defect 5)

# SageMaker's answer for a component with no copies (HTTP 400 ValidationError; the words
# AWS's scale-to-zero launch post quotes) as OpenSearch 2.19's ml-commons returns it from
# _predict: recorded on the real node by tests/e2e/test_glue_scale_to_zero.py.
NO_CAPACITY_MESSAGE = ("Inference Component has no capacity to process this request. ApplicationAutoScaling may "
                       "be in-progress (if configured) or try to increase the capacity by invoking "
                       "UpdateInferenceComponentRuntimeConfig API.")
REASON = "Error from remote service: " + json.dumps({"message": NO_CAPACITY_MESSAGE})
RECORDED_NO_CAPACITY = {"error": {"root_cause": [{"type": "status_exception", "reason": REASON}],
                                  "type": "status_exception", "reason": REASON}, "status": 400}
# Another ValidationError of the same API, for contrast: a real fault, never "asleep".
NOT_FOUND_REASON = "Error from remote service: " + json.dumps(
    {"message": "Endpoint semsearch-dev-cpu of account 123456789012 not found."})
RECORDED_NOT_FOUND = {"error": {"root_cause": [{"type": "status_exception", "reason": NOT_FOUND_REASON}],
                                "type": "status_exception", "reason": NOT_FOUND_REASON}, "status": 400}
COMPONENT = {**AWS, "InferenceComponentName": "semsearch-dev-cpu-model"}


def test_no_capacity_is_recognized_only_for_an_inference_component():
    error = StepError("predict", "HTTP 400", 400, RECORDED_NO_CAPACITY)
    assert steps.scaled_to_zero(parse(COMPONENT), error)
    assert not steps.scaled_to_zero(parse(AWS), error)  # a plain endpoint cannot be scaled to zero
    assert not steps.scaled_to_zero(parse(COMPONENT), StepError("predict", "HTTP 400", 400, RECORDED_NOT_FOUND))
    assert not steps.scaled_to_zero(parse(COMPONENT), StepError("predict", "HTTP 500", 500, RECORDED_NO_CAPACITY))


class PredictAnswer:
    """Stands in for the node's _predict route only: answers every POST with one recorded
    (status, body). The glue's own HTTP client reads it, as it reads the real node."""

    def __init__(self, status: int, body: dict):
        payload = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = OpenSearch(f"http://127.0.0.1:{self.server.server_address[1]}", auth_mode="none")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def asleep_node():
    node = PredictAnswer(400, RECORDED_NO_CAPACITY)
    yield node.client
    node.close()


def test_smoke_test_is_skipped_while_the_component_has_no_copies(asleep_node, caplog):
    caplog.set_level(logging.WARNING, "search_glue")
    assert steps.smoke_test(asleep_node, parse(COMPONENT), "model-1", connector_hint="c") is False
    assert "smoke test skipped: inference component semsearch-dev-cpu-model has 0 copies" in caplog.text
    assert "the watchdog checks it once the component has a copy" in caplog.text


def test_smoke_test_still_fails_a_plain_endpoint_that_answers_so(asleep_node):
    with pytest.raises(StepError, match="HTTP 400") as info:
        steps.smoke_test(asleep_node, parse(AWS), "model-1", connector_hint="c")
    assert not isinstance(info.value, steps.EndpointAsleep)


def test_watchdog_probe_reports_asleep(asleep_node):
    assert handler._probe(asleep_node, parse(COMPONENT), "model-1", hint="c") == "asleep"


def test_watchdog_probe_checks_the_dimension_once_awake():
    vectors = {"inference_results": [{"output": [{"name": "sentence_embedding", "data": [0.1] * 768}]}]}
    node = PredictAnswer(200, vectors)
    try:
        with pytest.raises(steps.DimensionMismatch, match="expected 384 .Dimension., the endpoint returned 768"):
            handler._probe(node.client, parse(COMPONENT), "model-1", hint="c")
        assert handler._probe(node.client, parse({**COMPONENT, "Dimension": "768"}), "model-1", hint="c") == "answering"
    finally:
        node.close()
