"""Every custom-resource failure mode that can happen against a real node, on a real node.

Each test provisions its own small stack (its own Name) so none depends on another's
leftovers; the session node and endpoint are shared.
"""

from __future__ import annotations

import pytest
from search_glue import handler
from search_glue.handler import GlueFailure
from search_glue.properties import PropertyError

from semsearch.local.stack import run_custom_resource
from tests.conftest import free_port
from tests.e2e.conftest import exists, ml_objects

NOTHING = {"connectors": 0, "model_groups": 0, "models": 0}


def assert_gone(conn, pid: str) -> None:
    assert ml_objects(conn, pid) == NOTHING
    assert ml_objects(conn, f"{pid}-query") == NOTHING
    assert not exists(conn, f"/{pid}")
    assert not exists(conn, f"/_ingest/pipeline/{pid}")
    assert not exists(conn, f"/_search/pipeline/{pid}-search-pipeline")


def cleaned_up(message: str) -> str:
    """The physical id named in a failure's cleanup note."""
    return message.split("[cleaned up ")[1].split(":")[0]


def test_duplicate_create_adopts(opensearch, make_props):
    props = make_props("e2e-dup")
    first = run_custom_resource("Create", props)
    second = run_custom_resource("Create", props)
    pid = first["PhysicalResourceId"]
    assert second == first
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    # A repeated Create that fails (here: the index behind the alias is gone and cannot be
    # rebuilt because the alias name is now a plain index) removes only what it created:
    # the adopted connector, group and model stay.
    opensearch.request("DELETE", f"/{pid}")
    opensearch.request("PUT", f"/{props['IndexName']}", {"settings": {"number_of_replicas": 0}})
    try:
        with pytest.raises(GlueFailure) as info:
            run_custom_resource("Create", props)
        assert str(info.value).endswith(f"[cleaned up {pid}: removed index]")
        assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
        assert exists(opensearch, f"/_ingest/pipeline/{pid}") and not exists(opensearch, f"/{pid}")
    finally:
        opensearch.request("DELETE", f"/{props['IndexName']}")
    run_custom_resource("Delete", props, physical_id=pid)
    assert_gone(opensearch, pid)


def test_delete_of_a_deployed_model_and_when_already_gone(opensearch, make_props):
    props = make_props("e2e-del")
    result = run_custom_resource("Create", props)
    pid, data = result["PhysicalResourceId"], result["Data"]
    assert opensearch.request("GET", f"/_plugins/_ml/models/{data['ModelId']}")[1]["model_state"] == "DEPLOYED"
    # Someone removed the index by hand: Delete still removes the rest.
    opensearch.request("DELETE", f"/{pid}")
    run_custom_resource("Delete", props, physical_id=pid)
    assert_gone(opensearch, pid)
    # And a Delete with nothing left succeeds too.
    assert run_custom_resource("Delete", props, physical_id=pid)["PhysicalResourceId"] == pid


def test_dimension_mismatch_fails_and_creates_no_index(opensearch, make_props):
    props = make_props("e2e-dim", Dimension=768)
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props)
    message = str(info.value)
    assert "predict: dimension mismatch: expected 768 (Dimension), the endpoint returned 384" in message
    assert message.endswith(": removed connector, model_group, model]")
    pid = cleaned_up(message)
    assert_gone(opensearch, pid)
    assert not exists(opensearch, "/_alias/e2e-dim-docs")


def test_failure_half_way_cleans_up(opensearch, make_props):
    # The alias name is taken by a real index: the failure comes after the connector,
    # model, pipelines and index were all created, and all of them must go.
    opensearch.request("PUT", "/e2e-half-docs", {"settings": {"number_of_replicas": 0}})
    try:
        props = make_props("e2e-half")
        with pytest.raises(GlueFailure) as info:
            run_custom_resource("Create", props)
        message = str(info.value)
        assert message.startswith("alias: POST /_aliases -> HTTP 400")
        assert "e2e-half-docs" in message
        assert message.endswith(": removed connector, model_group, model, ingest_pipeline, search_pipeline, index]")
        pid = cleaned_up(message)
        assert_gone(opensearch, pid)
        assert exists(opensearch, "/e2e-half-docs")  # not ours: untouched
    finally:
        opensearch.request("DELETE", "/e2e-half-docs")


def test_endpoint_down_names_the_connector(opensearch, make_props):
    url = f"http://127.0.0.1:{free_port()}/endpoints/pytest/invocations"  # nothing listens there
    props = make_props("e2e-down", EndpointUrl=url)
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props, timeout_s=120)
    message = str(info.value)
    assert message.startswith("predict: POST /_plugins/_ml/models/")
    assert "HTTP " in message and "through connector e2e-down-" in message and url in message
    assert "is the endpoint up" in message
    pid = cleaned_up(message)
    assert_gone(opensearch, pid)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"Dimension": "three-eighty-four"}, "Dimension: expected an integer"),
    ({"HybridSearch": "maybe"}, "HybridSearch: expected true or false"),
    ({"ReadTimeoutSeconds": "90"}, "ReadTimeoutSeconds: 90 is out of range"),
    ({"KnnEngine": "faiss"}, "KnnEngine: 'faiss' needs the k-NN native libraries"),
    ({"RoleMappings": "{oops"}, "RoleMappings: not valid JSON"),
    ({"Flavor": None}, "Flavor: required"),
])
def test_malformed_properties_fail_before_any_call(opensearch, make_props, overrides, field):
    props = {k: v for k, v in {**make_props("e2e-bad"), **overrides}.items() if v is not None}
    with pytest.raises(PropertyError, match=field):
        run_custom_resource("Create", props)
    assert ml_objects(opensearch, "e2e-bad") == NOTHING
    assert not exists(opensearch, "/_alias/e2e-bad-docs")


def test_update_of_client_config_only_keeps_the_physical_id(opensearch, make_props):
    old = make_props("e2e-upd")
    created = run_custom_resource("Create", old)
    pid = created["PhysicalResourceId"]
    new = {**old, "EndpointInstanceCount": 3, "ReadTimeoutSeconds": 20, "MaxRetryTimes": 5}
    updated = run_custom_resource("Update", new, physical_id=pid, old_props=old)
    assert updated["PhysicalResourceId"] == pid
    assert updated["Data"]["ModelId"] == created["Data"]["ModelId"]
    _, connector = opensearch.request("GET", f"/_plugins/_ml/connectors/{created['Data']['ConnectorId']}")
    cfg = connector["client_config"]
    assert (cfg["max_connection"], cfg["read_timeout"], cfg["max_retry_times"]) == (48, 20, 5)
    model_id = created["Data"]["ModelId"]
    assert opensearch.request("GET", f"/_plugins/_ml/models/{model_id}")[1]["model_state"] == "DEPLOYED"
    _, out = opensearch.request("POST", f"/_plugins/_ml/models/{model_id}/_predict", {"parameters": {"input": ["x"]}})
    assert len(out["inference_results"][0]["output"][0]["data"]) == 384
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    run_custom_resource("Delete", new, physical_id=pid)
    assert_gone(opensearch, pid)


def test_replacement_moves_the_alias_and_rollback_hands_it_back(opensearch, make_props):
    old = make_props("e2e-repl")
    a = run_custom_resource("Create", old)["PhysicalResourceId"]
    alias = old["IndexName"]
    opensearch.request("PUT", f"/{alias}/_doc/kept?refresh=true&pipeline=_none", {"text": "written before the change"})
    new = {**old, "HnswM": 8}
    b = run_custom_resource("Update", new, physical_id=a, old_props=old)["PhysicalResourceId"]
    assert b != a
    assert list(opensearch.request("GET", f"/_alias/{alias}")[1]) == [b]
    assert opensearch.request("GET", f"/{b}/_doc/kept")[1]["found"]  # re-embedded (search_glue.reembed)
    # The stack failed later and rolls back: CloudFormation deletes the new resource. Its
    # objects go and the alias goes back; its index is kept, retired (it may hold writes).
    run_custom_resource("Delete", new, physical_id=b)
    assert ml_objects(opensearch, b) == NOTHING and not exists(opensearch, f"/_ingest/pipeline/{b}")
    assert list(opensearch.request("GET", f"/_alias/{alias}")[1]) == [a]
    assert list(opensearch.request("GET", f"/_alias/{alias}-retired")[1]) == [b]
    assert opensearch.request("GET", f"/{alias}/_doc/kept")[1]["found"]
    # A successful replacement instead: the follow-up Delete removes the old objects and
    # retires the old index (the watchdog deletes it after RetiredIndexHours).
    c = run_custom_resource("Update", new, physical_id=a, old_props=old)["PhysicalResourceId"]
    run_custom_resource("Delete", old, physical_id=a)
    assert ml_objects(opensearch, a) == NOTHING and not exists(opensearch, f"/_ingest/pipeline/{a}")
    assert list(opensearch.request("GET", f"/_alias/{alias}")[1]) == [c]
    assert list(opensearch.request("GET", f"/_alias/{alias}-retired")[1]) == [a]
    opensearch.request("DELETE", f"/{a}")  # what the watchdog does after the period
    # The stack deleted: its objects go, its index holds a document, so it is kept (retired).
    run_custom_resource("Delete", new, physical_id=c)
    assert ml_objects(opensearch, c) == NOTHING and not exists(opensearch, f"/_ingest/pipeline/{c}")
    assert opensearch.request("GET", f"/{c}/_doc/kept")[1]["found"]
    assert not exists(opensearch, f"/_alias/{alias}")
    assert list(opensearch.request("GET", f"/_alias/{alias}-retired")[1]) == [c]
    opensearch.request("DELETE", f"/{c}")


def test_watchdog_redeploys_an_undeployed_model(opensearch, make_props):
    props = make_props("e2e-watch")
    result = run_custom_resource("Create", props)
    model_id = result["Data"]["ModelId"]
    assert handler.watchdog({"ResourceProperties": props}) == {"ModelId": model_id, "State": "DEPLOYED", "Action": "none",
                                                               "Endpoint": "answering"}
    opensearch.request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
    outcome = handler.watchdog(props)  # a scheduled rule's constant input: the properties themselves
    assert outcome["Action"] == "redeployed" and outcome["State"] == "DEPLOYED"
    assert opensearch.request("GET", f"/_plugins/_ml/models/{model_id}")[1]["model_state"] == "DEPLOYED"
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


# ---------------------------------------------------------------------------------------
# Fine-grained access control (the node runs the security plugin)


@pytest.fixture(scope="module")
def limited_user(opensearch):
    """An internal user with no role at all: every privileged call answers 403."""
    password = "Limited-user-pw-9!"
    opensearch.request("PUT", "/_plugins/_security/api/internalusers/e2e-limited", {"password": password})
    yield "e2e-limited", password
    opensearch.request("DELETE", "/_plugins/_security/api/internalusers/e2e-limited")


def test_role_mapping_403_names_the_missing_grant(opensearch, make_props, limited_user):
    user, password = limited_user
    props = make_props("e2e-fgac", Username=user, Password=password,
                       RoleMappings={"ml_full_access": ["arn:aws:iam::123456789012:role/x"]})
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props)
    message = str(info.value)
    assert message.startswith("role_mapping: GET /_plugins/_security/api/rolesmapping/ml_full_access -> HTTP 403")
    assert "FORBIDDEN" in message and "No permission to access REST API" in message  # the body, verbatim
    assert "hint: the glue role may not edit FGAC role mappings: make it the domain's master user" in message


def test_connector_403_names_the_missing_grant(opensearch, make_props, limited_user):
    user, password = limited_user
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", make_props("e2e-fgac-conn", Username=user, Password=password))
    message = str(info.value)
    assert message.startswith("connector: ") and "HTTP 403" in message
    assert "iam:PassRole" in message and "ml_full_access" in message


def test_role_mappings_merge_never_replace(opensearch, make_props):
    role = "ml_read_access"
    opensearch.request("PUT", f"/_plugins/_security/api/rolesmapping/{role}",
                       {"backend_roles": ["existing-a"], "users": ["someone"]})
    try:
        props = make_props("e2e-map", RoleMappings={role: ["existing-a", "new-b", "new-c"]})
        result = run_custom_resource("Create", props)
        run_custom_resource("Create", props)  # again: nothing duplicated
        _, body = opensearch.request("GET", f"/_plugins/_security/api/rolesmapping/{role}")
        assert body[role]["backend_roles"] == ["existing-a", "new-b", "new-c"]
        assert body[role]["users"] == ["someone"]
        run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
    finally:
        opensearch.request("DELETE", f"/_plugins/_security/api/rolesmapping/{role}", ok=(404,))
