"""A scale-to-zero endpoint at night, on the real node: the glue's smoke test and the
watchdog treat an inference component with 0 copies as asleep, not broken (issue 9, defect 5).

SageMaker itself cannot run here, so ``ZeroCopyComponent`` stands in for its runtime in
front of one inference component: with 0 copies it answers what the SageMaker runtime
answers then (HTTP 400, ``x-amzn-ErrorType: ValidationError``, the message AWS's
scale-to-zero announcement quotes); with copies it passes the call on to the real local
endpoint. Everything between (ml-commons, the connector, the glue) is the real thing.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3
from search_glue import handler, steps
from search_glue.handler import GlueFailure

from semsearch.local.stack import run_custom_resource
from tests.e2e.conftest import invocation_url

COMPONENT = "e2e-zero-model"
# The SageMaker runtime's words for an invocation of a component with no copies.
NO_CAPACITY_MESSAGE = ("Inference Component has no capacity to process this request. ApplicationAutoScaling may "
                       "be in-progress (if configured) or try to increase the capacity by invoking "
                       "UpdateInferenceComponentRuntimeConfig API.")


class ZeroCopyComponent:
    """Stands in for the SageMaker runtime in front of an inference component (see module doc)."""

    def __init__(self, target_url: str):
        self.target_url = target_url
        self.copies = 0
        self.seen_components: list[str | None] = []
        pool = urllib3.PoolManager(retries=False)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.seen_components.append(self.headers.get("X-Amzn-SageMaker-Inference-Component"))
                if outer.copies == 0:
                    payload = json.dumps({"message": NO_CAPACITY_MESSAGE}).encode()
                    self.send_response(400)
                    self.send_header("x-amzn-ErrorType", "ValidationError")
                    status_headers = {"Content-Type": "application/json"}
                else:
                    # The signature covers the Host header: pass the request on unchanged.
                    resp = pool.request("POST", outer.target_url, body=body, headers=dict(self.headers.items()))
                    payload = resp.data
                    self.send_response(resp.status)
                    status_headers = {"Content-Type": resp.headers.get("Content-Type", "application/json")}
                for key, value in status_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/endpoints/pytest/invocations"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def component(endpoint):
    standin = ZeroCopyComponent(invocation_url(endpoint))
    yield standin
    standin.stop()


def test_night_time_create_and_watchdog_treat_zero_copies_as_asleep(opensearch, make_props, component):
    props = make_props("e2e-zero", EndpointUrl=component.url, InferenceComponentName=COMPONENT)
    result = run_custom_resource("Create", props)  # the smoke test meets 0 copies
    pid, data = result["PhysicalResourceId"], result["Data"]
    try:
        assert component.seen_components and set(component.seen_components) == {COMPONENT}
        assert data["IndexName"] == "e2e-zero-docs" and data["ConcreteIndexName"] == pid
        _, mapping = opensearch.request("GET", f"/{pid}/_mapping")
        assert mapping[pid]["mappings"]["properties"]["embedding"]["dimension"] == 384  # from Dimension

        # What ml-commons makes of SageMaker's answer: the status kept, the body quoted.
        status, body = opensearch.request("POST", f"/_plugins/_ml/models/{data['ModelId']}/_predict",
                                          {"parameters": {"input": ["x"]}}, ok=(400,))
        assert status == 400 and steps.NO_CAPACITY in json.dumps(body)

        asleep = handler.watchdog(props)
        assert asleep == {"ModelId": data["ModelId"], "State": "DEPLOYED", "Action": "none", "Endpoint": "asleep"}

        component.copies = 1  # morning: the component scaled out
        awake = handler.watchdog(props)
        assert awake == {"ModelId": data["ModelId"], "State": "DEPLOYED", "Action": "none", "Endpoint": "answering"}
    finally:
        run_custom_resource("Delete", props, physical_id=pid)


def test_the_deferred_dimension_check_runs_when_the_component_wakes(make_props, component):
    props = make_props("e2e-zero-dim", EndpointUrl=component.url, InferenceComponentName=COMPONENT, Dimension=768)
    pid = run_custom_resource("Create", props)["PhysicalResourceId"]  # asleep: nothing to check against
    try:
        component.copies = 1
        with pytest.raises(steps.DimensionMismatch,
                           match="watchdog: dimension mismatch: expected 768 .Dimension., the endpoint returned 384"):
            handler.watchdog(props)
    finally:
        run_custom_resource("Delete", props, physical_id=pid)


def test_the_same_answer_fails_an_endpoint_without_a_component(make_props, component):
    # Only an inference component can be scaled to zero: for a plain endpoint it is a fault.
    props = make_props("e2e-zero-plain", EndpointUrl=component.url)
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props)
    message = str(info.value)
    assert message.startswith("predict: POST /_plugins/_ml/models/") and "HTTP 400" in message
    assert steps.NO_CAPACITY in message
