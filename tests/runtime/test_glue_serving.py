"""Retiring an old model version's SageMaker endpoint (search_glue.serving).

SageMaker is a real boto3 client behind botocore's Stubber, which checks every request
against botocore's service model. The index metadata is written in the shapes reembed.py
writes it; the same decisions on a real node: tests/e2e/test_glue_retire_endpoint.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.stub import Stubber
from search_glue import handler, serving
from search_glue.client import StepError
from search_glue.properties import parse
from search_glue.serving import Target
from search_glue.steps import Names, connector_body

from tests.infra.specs import botocore_api
from tests.runtime.test_glue_properties import AWS

OLD = "semsearch-dev-cpu-0a1b2c3d"
NEW = "semsearch-dev-cpu-4e5f6a7b"
COMPONENT = f"{OLD}-model"
WHEN = datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC)
ARN = "arn:aws:sagemaker:us-east-1:123456789012"


class SageMaker:
    """A real SageMaker client whose answers are queued, in order, with the exact requests."""

    def __init__(self) -> None:
        self.client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="testing",
                                   aws_secret_access_key="testing")  # never leaves the Stubber
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    def expect(self, operation: str, params: dict[str, Any], answer: dict[str, Any] | None = None) -> SageMaker:
        assert operation in serving.OPERATIONS, f"{operation} is not declared in serving.OPERATIONS"
        assert botocore_api.validate("sagemaker", operation, params) == []  # patterns and bounds too
        self.stubber.add_response(xform_name(operation), answer or {}, params)
        return self

    def fail(self, operation: str, params: dict[str, Any], message: str) -> SageMaker:
        assert operation in serving.OPERATIONS
        assert botocore_api.validate("sagemaker", operation, params) == []
        self.stubber.add_client_error(xform_name(operation), "ValidationException", message, 400,
                                      expected_params=params)
        return self

    def endpoint(self, name: str, status: str = "InService") -> SageMaker:
        return self.expect("DescribeEndpoint", {"EndpointName": name}, {
            "EndpointName": name, "EndpointArn": f"{ARN}:endpoint/{name}", "EndpointStatus": status,
            "CreationTime": WHEN, "LastModifiedTime": WHEN})

    def no_endpoint(self, name: str) -> SageMaker:
        return self.fail("DescribeEndpoint", {"EndpointName": name},
                         f'Could not find endpoint "{ARN}:endpoint/{name}".')

    def component(self, name: str, status: str) -> SageMaker:
        return self.expect("DescribeInferenceComponent", {"InferenceComponentName": name}, {
            "InferenceComponentName": name, "InferenceComponentArn": f"{ARN}:inference-component/{name}",
            "EndpointName": OLD, "EndpointArn": f"{ARN}:endpoint/{OLD}", "InferenceComponentStatus": status,
            "CreationTime": WHEN, "LastModifiedTime": WHEN})

    def no_component(self, name: str) -> SageMaker:
        return self.fail("DescribeInferenceComponent", {"InferenceComponentName": name},
                         f'Could not find inference component "{ARN}:inference-component/{name}".')

    def done(self) -> None:
        self.stubber.assert_no_pending_responses()


class Clock:
    """time.monotonic and time.sleep for delete_serving's wait, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------------
# When: the index's _meta.semsearch as reembed.py leaves it

FLIPPED_AT = 1767614400.0


def stamp_after_flip(successor: str = "semsearch-dev-bbbbbbbbbb") -> dict[str, Any]:
    """reembed._check_and_flip: the index the alias left."""
    return {"at": FLIPPED_AT, "replaced_by": successor, "unique_writes": False}


def successor_after_flip(source: str = "semsearch-dev-aaaaaaaaaa", *, reinstating: bool = False) -> dict[str, Any]:
    """reembed._check_and_flip: the index the alias went to."""
    return {"retired": {}, "reembed": {"source": source, "phase": "done", "task": "n:1", "reinstating": reinstating,
                                       "documents": 300},
            "flipped": {"from": source, "at": FLIPPED_AT, "seq_no": {"0": 299}, "documents": 300, "copy_s": 1.5,
                        "catchup_s": 0.2}}


def test_a_re_embed_flip_to_a_newer_index_retires():
    assert serving.flip_verdict("semsearch-dev-aaaaaaaaaa", stamp_after_flip(), successor_after_flip()) is None


def test_not_after_a_stack_deletion_or_an_index_name_change():
    """reembed.retire_or_delete_index kept the index with documents: the endpoint is the stack's own."""
    stamp = {"at": FLIPPED_AT, "reason": "delete", "unique_writes": True}
    reason = serving.flip_verdict("semsearch-dev-aaaaaaaaaa", stamp, None)
    assert reason is not None and "retired by a Delete" in reason
    # An empty index is deleted outright, an index that still serves has no stamp.
    assert "not retired by a re-embed flip" in str(serving.flip_verdict("semsearch-dev-aaaaaaaaaa", {}, None))


def test_not_after_a_rollback_by_re_embed():
    """The rollback's Update re-embeds back into the older index (reinstating); then the
    Delete of the newer physical id comes, whose index now reads replaced_by the older one."""
    newer, older = "semsearch-dev-bbbbbbbbbb", "semsearch-dev-aaaaaaaaaa"
    reason = serving.flip_verdict(newer, stamp_after_flip(older), successor_after_flip(newer, reinstating=True))
    assert reason is not None and reason.startswith("a rollback")


def test_not_after_a_hand_back_by_a_delete():
    """reembed.retire_or_delete_index hands the alias back (a rollback's Delete, or a stack
    deletion within the retention): the flipped it writes has no documents."""
    newer, older = "semsearch-dev-bbbbbbbbbb", "semsearch-dev-aaaaaaaaaa"
    stamp = {"at": FLIPPED_AT, "replaced_by": older, "unique_writes": False}
    # The older index's reembed still tells of its own, earlier re-embed.
    successor = {"retired": {}, "reembed": {"source": "semsearch-dev-0000000000", "phase": "done"},
                 "flipped": {"from": newer, "at": FLIPPED_AT, "seq_no": {"0": 12}}}
    assert "handed back" in str(serving.flip_verdict(newer, stamp, successor))
    assert "is gone" in str(serving.flip_verdict(newer, stamp, None))


@pytest.mark.parametrize(("by", "verdict"), [("reembed", None), ("rollback", "a rollback"),
                                            ("handback", "handed back")])
def test_the_flip_s_own_marker_decides(by, verdict):
    """reembed writes flipped.by (what moved the alias); it decides over the older heuristic
    ("documents" only after a re-embed), which stays for indices flipped before the marker."""
    successor = successor_after_flip()
    successor["flipped"]["by"] = by  # documents present in every case
    reason = serving.flip_verdict("semsearch-dev-aaaaaaaaaa", stamp_after_flip(), successor)
    assert reason is None if verdict is None else reason is not None and verdict in reason


def test_only_the_stage_names():
    assert serving.name_verdict(Target(OLD, COMPONENT, "us-east-1"), "semsearch-dev") is None
    assert "not named semsearch-dev-*" in str(serving.name_verdict(Target("semsearch-prod-cpu-0a1b2c3d", "",
                                                                             "us-east-1"), "semsearch-dev"))
    # The prefix ends at a dash: semsearch-devx is another stage.
    assert serving.name_verdict(Target("semsearch-devx-cpu", "", "us-east-1"), "semsearch-dev") is not None
    assert serving.name_verdict(Target(OLD, "other-model", "us-east-1"), "semsearch-dev") is not None


def test_not_while_another_connector_invokes_the_endpoint():
    """A change of HnswM alone re-embeds under a new physical id on the same endpoint: the
    new version's connector (as steps.connector_body builds it) still invokes it."""
    old = parse({**AWS, "EndpointName": OLD, "InferenceComponentName": COMPONENT})
    target = serving.target_of(old)
    assert target == Target(OLD, COMPONENT, "us-east-1")
    same_endpoint = parse({**AWS, "EndpointName": OLD, "InferenceComponentName": COMPONENT, "HnswM": "24"})
    assert same_endpoint.physical_id != old.physical_id
    other = parse({**AWS, "EndpointName": NEW, "InferenceComponentName": f"{NEW}-model"})
    assert serving.connector_users([connector_body(other, "semsearch-dev-new")], target) == []
    assert serving.connector_users([connector_body(other, "semsearch-dev-new"),
                                    connector_body(same_endpoint, "semsearch-dev-hnsw")], target) == [
        "semsearch-dev-hnsw"]
    # Only the component's header, or a URL with ${parameters.*}: users too.
    header_only = {"name": "by-header", "actions": [{"url": "https://example.com/x", "headers": {
        "X-Amzn-SageMaker-Inference-Component": COMPONENT}}]}
    templated = {"name": "templated", "parameters": {"endpoint": OLD, "region": "us-east-1"}, "actions": [{
        "url": "https://runtime.sagemaker.${parameters.region}.amazonaws.com/endpoints/${parameters.endpoint}"
               "/invocations"}]}
    assert serving.connector_users([header_only, templated], target) == ["by-header", "templated"]


def test_only_an_endpoint_invoked_by_its_name():
    assert serving.target_of(parse(AWS)) == Target("semsearch-dev-minilm", "", "us-east-1")
    local = parse({**AWS, "EndpointUrl": "http://127.0.0.1:8080/endpoints/local/invocations"})
    assert serving.target_of(local) is None  # the connectors invoked the local endpoint
    same = parse({**AWS, "EndpointUrl": "http://127.0.0.1:8080/endpoints/semsearch-dev-minilm/invocations"})
    assert serving.target_of(same) == Target("semsearch-dev-minilm", "", "us-east-1")


# ---------------------------------------------------------------------------------------
# What: the component, then the endpoint


def test_endpoint_without_a_component():
    sagemaker = SageMaker().endpoint(OLD).expect("DeleteEndpoint", {"EndpointName": OLD})
    assert serving.delete_serving(sagemaker.client, Target(OLD, "", "us-east-1")) == (
        "retired", f"endpoint {OLD} deleted")
    sagemaker.done()


def test_endpoint_already_gone_counts_as_done():
    sagemaker = SageMaker().no_endpoint(OLD)
    assert serving.delete_serving(sagemaker.client, Target(OLD, "", "us-east-1")) == (
        "retired", f"endpoint {OLD} already gone")
    sagemaker.done()
    # ... also when it goes between the Describe and the Delete, or is deleting already.
    sagemaker = SageMaker().endpoint(OLD).fail("DeleteEndpoint", {"EndpointName": OLD},
                                               f'Could not find endpoint "{ARN}:endpoint/{OLD}".')
    assert serving.delete_serving(sagemaker.client, Target(OLD, "", "us-east-1"))[0] == "retired"
    sagemaker = SageMaker().endpoint(OLD, "Deleting")
    assert serving.delete_serving(sagemaker.client, Target(OLD, "", "us-east-1")) == (
        "retired", f"endpoint {OLD} deleting")
    sagemaker.done()


def test_component_then_endpoint_waiting_for_the_asynchronous_delete():
    sagemaker = (SageMaker().component(COMPONENT, "InService")
                 .expect("DeleteInferenceComponent", {"InferenceComponentName": COMPONENT})
                 .component(COMPONENT, "Deleting").no_component(COMPONENT)
                 .endpoint(OLD).expect("DeleteEndpoint", {"EndpointName": OLD}))
    clock = Clock()
    state, detail = serving.delete_serving(sagemaker.client, Target(OLD, COMPONENT, "us-east-1"), wait_s=20,
                                           sleep=clock.sleep, clock=clock)
    assert (state, detail) == ("retired", f"inference component {COMPONENT} deleted; endpoint {OLD} deleted")
    assert clock.now == 2 * serving.POLL_S
    sagemaker.done()


def test_a_component_still_deleting_leaves_the_endpoint_to_the_watchdog():
    """DeleteEndpoint fails while the endpoint hosts a component: it is not even tried
    before the component is gone; the watchdog's next run (no wait) finishes."""
    target = Target(OLD, COMPONENT, "us-east-1")
    sagemaker = (SageMaker().component(COMPONENT, "InService")
                 .expect("DeleteInferenceComponent", {"InferenceComponentName": COMPONENT})
                 .component(COMPONENT, "Deleting").component(COMPONENT, "Deleting"))
    clock = Clock()
    state, detail = serving.delete_serving(sagemaker.client, target, wait_s=10, sleep=clock.sleep, clock=clock)
    assert state == "pending" and detail.startswith(f"inference component {COMPONENT} is Deleting")
    sagemaker.done()
    # The watchdog: still deleting -> still pending, nothing else tried ...
    sagemaker = SageMaker().component(COMPONENT, "Deleting")
    assert serving.delete_serving(sagemaker.client, target)[0] == "pending"
    sagemaker.done()
    # ... gone -> the endpoint goes.
    sagemaker = SageMaker().no_component(COMPONENT).endpoint(OLD).expect("DeleteEndpoint", {"EndpointName": OLD})
    assert serving.delete_serving(sagemaker.client, target) == (
        "retired", f"inference component {COMPONENT} already gone; endpoint {OLD} deleted")
    sagemaker.done()


def test_a_delete_already_running_and_a_refused_endpoint_delete():
    target = Target(OLD, COMPONENT, "us-east-1")
    sagemaker = (SageMaker().component(COMPONENT, "InService")
                 .fail("DeleteInferenceComponent", {"InferenceComponentName": COMPONENT},
                       f"Inference component {COMPONENT} is in DELETE_IN_PROGRESS state.")
                 .no_component(COMPONENT).endpoint(OLD)
                 .fail("DeleteEndpoint", {"EndpointName": OLD},
                       "Cannot delete endpoint: it has inference components attached."))
    clock = Clock()
    state, detail = serving.delete_serving(sagemaker.client, target, wait_s=10, sleep=clock.sleep, clock=clock)
    assert state == "pending"
    assert detail == (f"DeleteEndpoint {OLD} failed (ValidationException: Cannot delete endpoint: it has inference "
                      f"components attached.); inference component {COMPONENT} deleted")
    sagemaker.done()


# ---------------------------------------------------------------------------------------
# Never failing the Delete


class Unreachable:
    """A domain that answers nothing (the flip already happened: the Delete must still succeed)."""

    def call(self, step: str, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> Any:
        raise StepError(step, f"{method} {path} -> connection refused")


def test_a_failure_is_returned_never_raised():
    props = parse({**AWS, "EndpointName": OLD})
    names = Names(props.physical_id, props.index_name)
    result = serving.retire_endpoint(Unreachable(), props, names, sagemaker=SageMaker().client)
    assert result["Action"] == "failed" and "connection refused" in result["Detail"]
    assert serving.finish_pending(Unreachable(), props, names)["Error"].startswith(
        "could not look for pending retirements")
    # Outside the stage: decided before any call.
    other = parse({**AWS, "EndpointName": "semsearch-prod-cpu-0a1b2c3d"})
    assert serving.retire_endpoint(Unreachable(), other, names)["Action"] == "kept"


def test_the_handler_reports_what_became_of_the_endpoint(monkeypatch):
    props = parse({**AWS, "EndpointName": OLD})
    calls = []

    def retire(client: Any, p: Any, names: Names) -> dict[str, Any]:
        calls.append((p.endpoint_name, names.physical_id))
        return {"Endpoint": p.endpoint_name, "Action": "retired"}

    monkeypatch.setattr(handler.reembed, "retire_or_delete_index", lambda client, names: "kept")
    monkeypatch.setattr(handler.steps, "teardown", lambda client, names, only: None)
    monkeypatch.setattr(handler.serving, "retire_endpoint", retire)
    answer = handler.on_event({"RequestType": "Delete", "PhysicalResourceId": props.physical_id,
                               "ResourceProperties": {**AWS, "EndpointName": OLD}})
    assert answer == {"PhysicalResourceId": props.physical_id, "Serving": {"Endpoint": OLD, "Action": "retired"}}
    assert calls == [(OLD, props.physical_id)]


@pytest.mark.parametrize("operation", serving.OPERATIONS)
def test_declared_operations_are_botocore_operations(operation):
    assert operation in boto3.client("sagemaker", region_name="us-east-1").meta.service_model.operation_names
