"""The Delete after a model change retires the old endpoint (search_glue.serving), on the real
node: the index metadata and the connectors are the ones the glue really leaves there.

Two local endpoints play two model versions (same weights, so the vectors stay comparable);
their names carry the stack's Name, as the stage's SageMaker endpoints do. SageMaker itself is
a real boto3 client behind botocore's Stubber (serving.make_client is replaced): each step
queues exactly the calls it expects, naming the old endpoint, so a call for any other
endpoint (or any call where none is expected) shows in the result.
"""

from __future__ import annotations

from typing import Any

import pytest
from search_glue import handler, serving

from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import REGION, cfn_strings, run_custom_resource
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, invocation_url, ml_objects
from tests.e2e.test_glue_reembed import alias_on, meta
from tests.runtime.test_glue_serving import SageMaker

NAME = "e2e-retire"
DOCS = 20


@pytest.fixture(scope="module")
def versions(model_dir):
    """Two endpoints, "<Name>-v1" and "<Name>-v2"."""
    from semsearch.serve import start_server

    handles = {v: start_server(model_dir, name=f"{NAME}-{v}", region=REGION, access_key=ACCESS_KEY,
                               secret_key=SECRET_KEY) for v in ("v1", "v2")}
    yield handles
    for handle in handles.values():
        handle.stop()


def delete(props: dict[str, Any], physical_id: str) -> dict[str, Any]:
    """CloudFormation's Delete: on_event's whole answer (is_complete says done at once)."""
    return handler.on_event({"RequestType": "Delete", "RequestId": "r", "StackId": "s",
                             "LogicalResourceId": "SearchGlue", "ResourceType": "Custom::SearchGlue",
                             "PhysicalResourceId": physical_id, "ResourceProperties": cfn_strings(props)})


def test_delete_after_a_flip_retires_the_old_endpoint_and_nothing_else(opensearch, make_props, dev_pairs, versions,
                                                                       monkeypatch):
    sagemaker = {"now": SageMaker()}
    regions: list[str] = []

    def make_client(region: str) -> Any:
        regions.append(region)
        return sagemaker["now"].client

    monkeypatch.setattr(serving, "make_client", make_client)

    def on(version: str, **overrides: Any) -> dict[str, Any]:
        endpoint = f"{NAME}-{version}"
        return make_props(NAME, EndpointUrl=invocation_url(versions[version], endpoint), EndpointName=endpoint,
                          **overrides)

    v1 = on("v1")
    alias = v1["IndexName"]
    p0 = run_custom_resource("Create", v1)["PhysicalResourceId"]
    report = bulk_ingest(opensearch, alias, [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:DOCS]])
    assert report.indexed == DOCS and not report.failed
    physical_ids = [p0]
    try:
        # HnswM alone: re-embedded under a new id, on the same endpoint, which its connector invokes.
        v1_hnsw = on("v1", HnswM=24)
        p1 = run_custom_resource("Update", v1_hnsw, physical_id=p0, old_props=v1, timeout_s=300)["PhysicalResourceId"]
        physical_ids.append(p1)
        assert alias_on(opensearch, alias) == [p1]
        assert delete(v1, p0)["Serving"] == {"Endpoint": f"{NAME}-v1", "InferenceComponent": "", "Action": "kept",
                                             "Detail": f"still invoked by connector(s) {p1}"}
        assert regions == []  # not a single SageMaker call

        # A new endpoint: the Delete of the old id retires the old endpoint. Its first try is
        # refused (an endpoint that is still updating, say): pending, for the watchdog.
        v2 = on("v2", HnswM=24)
        p2 = run_custom_resource("Update", v2, physical_id=p1, old_props=v1_hnsw, timeout_s=300)["PhysicalResourceId"]
        physical_ids.append(p2)
        refused = "Cannot delete an endpoint while it is Updating."
        sagemaker["now"] = SageMaker().endpoint(f"{NAME}-v1").fail("DeleteEndpoint", {"EndpointName": f"{NAME}-v1"},
                                                                   refused)
        answer = delete(v1_hnsw, p1)
        sagemaker["now"].done()
        assert answer["Serving"] == {"Endpoint": f"{NAME}-v1", "InferenceComponent": "", "Action": "pending",
                                     "Detail": f"DeleteEndpoint {NAME}-v1 failed (ValidationException: {refused})"}
        assert ml_objects(opensearch, p1) == {"connectors": 0, "model_groups": 0, "models": 0}
        assert alias_on(opensearch, f"{alias}-retired") == sorted([p0, p1])  # both kept; ids are hashes (order is not age)
        record = meta(opensearch, p1)["serving"]
        assert {k: record[k] for k in ("endpoint", "inference_component", "region", "state")} == {
            "endpoint": f"{NAME}-v1", "inference_component": "", "region": REGION, "state": "pending"}

        # The watchdog (the stack's current properties) finishes it, then has nothing left.
        sagemaker["now"] = SageMaker().endpoint(f"{NAME}-v1").expect("DeleteEndpoint", {"EndpointName": f"{NAME}-v1"})
        result = handler.watchdog(cfn_strings(v2))
        sagemaker["now"].done()
        assert result["RetiredEndpoints"] == {p1: {"Endpoint": f"{NAME}-v1", "InferenceComponent": "",
                                                   "Action": "retired", "Detail": f"endpoint {NAME}-v1 deleted"}}
        assert meta(opensearch, p1)["serving"]["state"] == "retired"
        sagemaker["now"] = SageMaker()
        assert "RetiredEndpoints" not in handler.watchdog(cfn_strings(v2))
        assert regions == [REGION, REGION]

        # A change that rolls back after its flip: the Delete of the newer id keeps its endpoint.
        v1_again = on("v1", HnswM=32)
        p3 = run_custom_resource("Update", v1_again, physical_id=p2, old_props=v2, timeout_s=300)["PhysicalResourceId"]
        physical_ids.append(p3)
        assert run_custom_resource("Update", v2, physical_id=p3, old_props=v1_again,
                                   timeout_s=300)["PhysicalResourceId"] == p2
        assert alias_on(opensearch, alias) == [p2]
        serving_answer = delete(v1_again, p3)["Serving"]
        assert serving_answer["Action"] == "kept" and serving_answer["Detail"].startswith("a rollback: ")

        # The stack deleted: the Delete hands the alias "back" to the newer index it came from
        # (reembed.retire_or_delete_index); still no re-embed flip, so the endpoint stays too.
        serving_answer = delete(v2, p2)["Serving"]
        assert alias_on(opensearch, alias) == [p3]
        assert serving_answer["Action"] == "kept" and "handed back" in serving_answer["Detail"]
        assert regions == [REGION, REGION]
    finally:
        for physical_id in physical_ids:
            opensearch.request("DELETE", f"/{physical_id}", ok=(404,))
