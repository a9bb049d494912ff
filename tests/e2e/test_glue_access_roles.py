"""The least-privilege FGAC roles the glue makes, on the real node (security on): the
search role runs neural queries and nothing more (issue 9, defect 8), the loader role does
the bulk loader's real requests and nothing more (defect 14).

Each user here is an internal user of the node whose only backend role is the one the
stack maps (on AWS the backend role is the caller's IAM role ARN, from SigV4; here basic
auth carries it), so what it may do is exactly what the glue's role grants.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bulk_loader.handler import load
from opensearch_http import OpenSearchClient as LoaderClient

from semsearch.local.client import Connection
from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import run_custom_resource
from tests.e2e.conftest import ENDPOINT_NAME

SEARCH_ARN = "arn:aws:iam::123456789012:role/e2e-searcher"
LOADER_ARN = "arn:aws:iam::123456789012:role/e2e-loader"
PASSWORD = "E2e-Least-Privilege-9!"
DOCS = [
    {"id": "apt", "text": "apt-get install fetches a package and its dependencies from the archive"},
    {"id": "grub", "text": "GRUB is the boot loader that starts the Linux kernel"},
    {"id": "ssh", "text": "OpenSSH server lets you log in to the machine remotely"},
]


def as_user(admin: Connection, name: str, backend_role: str) -> Connection:
    admin.request("PUT", f"/_plugins/_security/api/internalusers/{name}",
                  {"password": PASSWORD, "backend_roles": [backend_role]})
    return Connection(admin.url, name, PASSWORD, admin.ca_file)


def status_of(conn: Connection, method: str, path: str, body=None, **kwargs) -> int:
    status, _ = conn.request(method, path, body, ok=tuple(range(400, 600)), **kwargs)
    return status


def bulk_statuses(conn: Connection, index: str) -> list[int]:
    """Each item's status of a one-document _bulk (the request itself answers 200)."""
    ndjson = json.dumps({"index": {"_index": index, "_id": "via-bulk"}}) + "\n" + json.dumps({"text": "x"}) + "\n"
    _, body = conn.request("POST", "/_bulk", ndjson=ndjson)
    return [item["index"]["status"] for item in body["items"]]


@pytest.fixture(scope="module")
def fgac_stack(opensearch, make_props):
    props = make_props("e2e-lp", SearchBackendRoles=[SEARCH_ARN], LoaderBackendRoles=[LOADER_ARN])
    result = run_custom_resource("Create", props)
    opensearch.request("PUT", "/e2e-lp-other", {"settings": {"number_of_replicas": 0}})
    opensearch.request("PUT", "/e2e-lp-other/_doc/1?refresh=true", {"text": "not yours"})
    bulk_ingest(opensearch, result["Data"]["IndexName"], DOCS)
    yield {"props": props, **result}
    opensearch.request("DELETE", "/e2e-lp-other", ok=(404,))
    for user in ("e2e-searcher", "e2e-loader"):
        opensearch.request("DELETE", f"/_plugins/_security/api/internalusers/{user}", ok=(404,))
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
    opensearch.request("DELETE", f"/{result['PhysicalResourceId']}")  # kept by the Delete: it has documents


def test_roles_are_made_and_mapped_to_exactly_the_given_backend_roles(opensearch, fgac_stack):
    pid, data = fgac_stack["PhysicalResourceId"], fgac_stack["Data"]
    assert (data["SearchRoleName"], data["LoaderRoleName"]) == (f"{pid}-search", f"{pid}-loader")
    _, role = opensearch.request("GET", f"/_plugins/_security/api/roles/{pid}-search")
    assert role[f"{pid}-search"]["cluster_permissions"] == ["cluster:admin/opensearch/ml/predict"]
    _, mapping = opensearch.request("GET", f"/_plugins/_security/api/rolesmapping/{pid}-loader")
    assert mapping[f"{pid}-loader"]["backend_roles"] == [LOADER_ARN]


def test_search_role_runs_a_neural_query_and_nothing_more(opensearch, fgac_stack):
    searcher = as_user(opensearch, "e2e-searcher", SEARCH_ARN)
    alias, model_id = fgac_stack["Data"]["IndexName"], fgac_stack["Data"]["ModelId"]
    query = {"size": 1, "_source": ["text"], "query": {"neural": {"embedding": {
        "query_text": "which program boots the kernel", "model_id": model_id, "k": 3}}}}
    _, found = searcher.request("POST", f"/{alias}/_search", query)
    assert found["hits"]["hits"][0]["_id"] == "grub"
    concrete = fgac_stack["Data"]["ConcreteIndexName"]
    assert searcher.request("POST", f"/{concrete}/_search", {"query": {"match_all": {}}})[1]["hits"]["total"]["value"] == 3

    assert status_of(searcher, "PUT", f"/{alias}/_doc/x", {"text": "written"}) == 403
    assert bulk_statuses(searcher, alias) == [403]
    assert status_of(searcher, "DELETE", f"/{alias}/_doc/grub") == 403
    assert status_of(searcher, "POST", "/e2e-lp-other/_search", {"query": {"match_all": {}}}) == 403
    assert status_of(searcher, "GET", "/e2e-lp-other/_doc/1") == 403
    assert status_of(searcher, "POST", "/_plugins/_ml/models/_search", {"query": {"match_all": {}}}) == 403
    assert status_of(searcher, "GET", "/_plugins/_security/api/roles") == 403


def test_loader_role_does_the_loaders_real_requests_and_nothing_more(opensearch, fgac_stack, tmp_path):
    loader = as_user(opensearch, "e2e-loader", LOADER_ARN)
    alias, concrete = fgac_stack["Data"]["IndexName"], fgac_stack["Data"]["ConcreteIndexName"]
    vectors = np.random.default_rng(9).normal(size=(40, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # innerproduct space: unit vectors
    path = tmp_path / "part-0.jsonl.out"
    path.write_text("".join(json.dumps({"id": f"bulk-{i}", "text_inputs": f"document {i}",
                                        "SageMakerOutput": {"embedding": v.tolist()}}) + "\n"
                            for i, v in enumerate(vectors)))
    client = LoaderClient(loader.url, auth_mode="basic", username=loader.username or "", password=PASSWORD,
                          ca_file=loader.ca_file or "")
    # With the model-version check (bulk_loader.serving): reads the index's chain to its endpoint first.
    report = load({"input": path.as_uri(), "index": alias, "endpoint_name": ENDPOINT_NAME}, client=client)
    assert report["complete"] and report["documents_indexed"] == 40 and report["documents_failed"] == 0
    opensearch.request("POST", f"/{alias}/_refresh")
    assert opensearch.request("GET", f"/{alias}/_count")[1]["count"] == 3 + 40

    assert status_of(loader, "DELETE", f"/{alias}") in (403, 400)  # an alias cannot be deleted as an index
    assert status_of(loader, "DELETE", f"/{concrete}") == 403
    assert status_of(loader, "PUT", f"/{concrete}/_settings", {"index": {"number_of_replicas": 1}}) == 403
    assert status_of(loader, "POST", "/_aliases", {"actions": [{"remove": {"index": concrete, "alias": alias}}]}) == 403
    assert status_of(loader, "PUT", "/e2e-lp-other/_doc/2", {"text": "x"}) == 403
    assert bulk_statuses(loader, "e2e-lp-other") == [403]
    assert status_of(loader, "POST", "/e2e-lp-other/_search", {"query": {"match_all": {}}}) == 403
    assert status_of(loader, "GET", "/_plugins/_security/api/roles") == 403
    assert status_of(loader, "PUT", "/_plugins/_security/api/internalusers/e2e-loader",
                     {"password": PASSWORD, "backend_roles": ["all_access"]}) == 403
    assert status_of(loader, "PUT", "/_cluster/settings", {"persistent": {"action.auto_create_index": False}}) == 403


def test_update_without_backend_roles_removes_the_roles(opensearch, make_props):
    props = make_props("e2e-lp-upd", SearchBackendRoles=[SEARCH_ARN])
    pid = run_custom_resource("Create", props)["PhysicalResourceId"]
    try:
        assert opensearch.request("GET", f"/_plugins/_security/api/roles/{pid}-search", ok=(404,))[0] == 200
        plain = {k: v for k, v in props.items() if k != "SearchBackendRoles"}
        assert run_custom_resource("Update", plain, physical_id=pid, old_props=props)["PhysicalResourceId"] == pid
        assert opensearch.request("GET", f"/_plugins/_security/api/roles/{pid}-search", ok=(404,))[0] == 404
        assert opensearch.request("GET", f"/_plugins/_security/api/rolesmapping/{pid}-search", ok=(404,))[0] == 404
    finally:
        run_custom_resource("Delete", props, physical_id=pid)
    assert opensearch.request("GET", f"/_plugins/_security/api/roles/{pid}-search", ok=(404,))[0] == 404


def test_update_takes_back_only_what_the_old_properties_mapped(opensearch, make_props):
    # The upgrade path of a deployed stack: the loader's ARN leaves a broad built-in role.
    role, manual = "ml_read_access", "arn:aws:iam::123456789012:role/someone-by-hand"
    opensearch.request("PUT", f"/_plugins/_security/api/rolesmapping/{role}", {"backend_roles": [manual]})
    old = make_props("e2e-lp-map", RoleMappings={role: [LOADER_ARN, SEARCH_ARN]})
    new = make_props("e2e-lp-map", RoleMappings={role: [SEARCH_ARN]}, LoaderBackendRoles=[LOADER_ARN])
    pid = run_custom_resource("Create", old)["PhysicalResourceId"]
    try:
        assert run_custom_resource("Update", new, physical_id=pid, old_props=old)["PhysicalResourceId"] == pid
        _, body = opensearch.request("GET", f"/_plugins/_security/api/rolesmapping/{role}")
        assert body[role]["backend_roles"] == [manual, SEARCH_ARN]
        _, body = opensearch.request("GET", f"/_plugins/_security/api/rolesmapping/{pid}-loader")
        assert body[f"{pid}-loader"]["backend_roles"] == [LOADER_ARN]
    finally:
        run_custom_resource("Delete", new, physical_id=pid)
        opensearch.request("DELETE", f"/_plugins/_security/api/rolesmapping/{role}", ok=(404,))
