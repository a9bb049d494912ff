"""Delete against the real node's refusals: ml-commons answers 409 to a connector (or model
group) delete while its model index holds models it counts as users.

Two causes, both reproduced here on purpose: a model of ours that the name search did not
return (registered since, or missed), which the glue removes before it tries again; and a
model that is not ours, which it never touches. ml-commons 2.19 finds a connector's users
with a match query on connector_id, a text field: the id is split into words at each '-',
and a model on ANY connector whose id shares one word with ours counts. Auto-generated ids
share words by chance (their middle is the node's MAC and the time); here a connector whose
id contains ours as a word makes that happen every time.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from search_glue import steps
from search_glue.handler import GlueFailure

from semsearch.local.client import Connection
from semsearch.local.stack import run_custom_resource
from tests.e2e.conftest import exists, ml_objects

NOTHING = {"connectors": 0, "model_groups": 0, "models": 0}


def as_super_admin(conn: Connection, method: str, path: str, body: Any = None) -> Any:
    """One request with the demo configuration's admin certificate (kirk): the only identity
    that may write ml-commons' system indices."""
    config = Path(conn.ca_file).parent
    context = ssl.create_default_context(cafile=conn.ca_file)
    context.load_cert_chain(config / "kirk.pem", config / "kirk-key.pem")
    request = urllib.request.Request(conn.url + path, method=method, headers={"content-type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, context=context) as response:
        return json.loads(response.read())


def models_on(conn: Connection, connector_id: str) -> list[str]:
    """Ids of the models whose connector_id is exactly ``connector_id``."""
    _, body = conn.request("POST", "/_plugins/_ml/models/_search",
                           {"size": 100, "query": {"term": {"connector_id.keyword": connector_id}}})
    return [h["_id"] for h in body["hits"]["hits"]]


def register(conn: Connection, name: str, connector_id: str, group_id: str | None = None) -> str:
    body = {"name": name, "function_name": "remote", "connector_id": connector_id,
            **({"model_group_id": group_id} if group_id else {})}
    return str(conn.request("POST", "/_plugins/_ml/models/_register", body)[1]["model_id"])


def remove_model(conn: Connection, model_id: str) -> None:
    """A model these tests registered by hand, and the group ml-commons made for it."""
    status, model = conn.request("GET", f"/_plugins/_ml/models/{model_id}", ok=(404,))
    if status == 404:
        return
    conn.request("DELETE", f"/_plugins/_ml/models/{model_id}")
    conn.request("DELETE", f"/_plugins/_ml/model_groups/{model['model_group_id']}", ok=(404, 409))


def assert_only_the_connector_stays(conn: Connection, pid: str) -> None:
    assert ml_objects(conn, pid) == {"connectors": 1, "model_groups": 0, "models": 0}
    assert not exists(conn, f"/{pid}") and not exists(conn, f"/_ingest/pipeline/{pid}")
    assert not exists(conn, f"/_search/pipeline/{pid}-search-pipeline")


def test_our_models_the_name_search_misses_are_removed_before_the_connector(opensearch, make_props, monkeypatch):
    props = make_props("e2e-td-late")
    result = run_custom_resource("Create", props)
    pid, data = result["PhysicalResourceId"], result["Data"]
    # Another model of ours on the connector, registered just before the Delete, and a name
    # search that returns neither it nor the deployed one (what an index that has not
    # refreshed yet would answer): only the connector's 409 shows them.
    late = register(opensearch, pid, data["ConnectorId"], data["ModelGroupId"])
    name_search = steps.find_all
    monkeypatch.setattr(steps, "find_all", lambda client, step, kind, name:
                        [] if step == "delete_model" else name_search(client, step, kind, name))
    status, refusal = opensearch.request("DELETE", f"/_plugins/_ml/connectors/{data['ConnectorId']}", ok=(409,))
    assert status == 409 and sorted(models_on(opensearch, data["ConnectorId"])) == sorted([data["ModelId"], late])
    listed = steps.LISTED_MODELS.search(json.dumps(refusal))  # the 409 names them: "[id, id]"
    assert listed and {data["ModelId"], late} <= {i.strip() for i in listed.group(1).split(",")}

    run_custom_resource("Delete", props, physical_id=pid)
    assert ml_objects(opensearch, pid) == NOTHING
    assert models_on(opensearch, data["ConnectorId"]) == []
    assert not exists(opensearch, f"/{pid}") and not exists(opensearch, f"/_ingest/pipeline/{pid}")


def test_a_model_on_another_connector_that_ml_commons_counts_leaves_ours_empty_not_failed(opensearch, make_props):
    props = make_props("e2e-td-xmatch")
    result = run_custom_resource("Create", props)
    pid, connector_id = result["PhysicalResourceId"], result["Data"]["ConnectorId"]
    # A connector of someone else's whose id has ours as one of its words (a copy of ours
    # under that id: only the id matters), and a model of theirs on it.
    theirs = f"xmatch-{connector_id}"
    source = as_super_admin(opensearch, "GET", f"/.plugins-ml-connector/_doc/{connector_id}")["_source"]
    as_super_admin(opensearch, "PUT", f"/.plugins-ml-connector/_doc/{theirs}?refresh=true",
                   {**source, "name": "e2e-td-someone-else"})
    foreign = register(opensearch, "e2e-td-someone-else", theirs)
    try:
        # Nothing uses our connector really: the Delete succeeds and leaves it, empty.
        status, _ = opensearch.request("DELETE", f"/_plugins/_ml/connectors/{connector_id}", ok=(409,))
        assert status == 409  # ml-commons' own check counts their model
        run_custom_resource("Delete", props, physical_id=pid)
        assert_only_the_connector_stays(opensearch, pid)
        assert models_on(opensearch, connector_id) == []
        assert exists(opensearch, f"/_plugins/_ml/models/{foreign}")  # never touched
    finally:
        remove_model(opensearch, foreign)
        opensearch.request("DELETE", f"/_plugins/_ml/connectors/{theirs}", ok=(404,))
    # Their model gone, the same Delete again removes what was left.
    run_custom_resource("Delete", props, physical_id=pid)
    assert ml_objects(opensearch, pid) == NOTHING


def test_a_model_of_another_name_on_our_connector_is_never_deleted(opensearch, make_props):
    props = make_props("e2e-td-hand")
    result = run_custom_resource("Create", props)
    pid, connector_id = result["PhysicalResourceId"], result["Data"]["ConnectorId"]
    hand_made = register(opensearch, "e2e-td-hand-made", connector_id)
    try:
        with pytest.raises(GlueFailure) as info:
            run_custom_resource("Delete", props, physical_id=pid)
        assert (f"connector {connector_id} not deleted: ml-commons counts models as still using it: {hand_made} "
                f"(e2e-td-hand-made: not ours, never deleted here)") in str(info.value)
        assert_only_the_connector_stays(opensearch, pid)
        assert models_on(opensearch, connector_id) == [hand_made]
    finally:
        remove_model(opensearch, hand_made)
    run_custom_resource("Delete", props, physical_id=pid)
    assert ml_objects(opensearch, pid) == NOTHING
