"""Model changes that re-embed (search_glue.reembed), on the real node with the real model.

A change of endpoint is a change of model as far as the glue can tell (a new physical id):
the old stack serves the session's endpoint, the new one a second endpoint on the same
weights, so vectors stay comparable and every search must find something.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from search_glue import handler, reembed
from search_glue.client import OpenSearch
from search_glue.handler import GlueFailure
from search_glue.steps import Names

from semsearch.local.client import Connection
from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import REGION, cfn_strings, run_custom_resource
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, exists, invocation_url, ml_objects

DOCS = 300


@pytest.fixture(scope="module")
def endpoint_b(model_dir):
    """A second endpoint (same weights): the "new model" of a change."""
    from semsearch.serve import start_server

    handle = start_server(model_dir, name="pytest-b", region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


def populated(opensearch, make_props, dev_pairs, name: str, docs: int = DOCS) -> tuple[dict[str, Any], str]:
    props = make_props(name)
    pid = run_custom_resource("Create", props)["PhysicalResourceId"]
    report = bulk_ingest(opensearch, props["IndexName"], [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:docs]])
    assert report.indexed == docs and not report.failed
    return props, pid


def count(conn, index: str) -> int:
    conn.request("POST", f"/{index}/_refresh")
    return conn.request("GET", f"/{index}/_count")[1]["count"]


def alias_on(conn, alias: str) -> list[str]:
    status, body = conn.request("GET", f"/_alias/{alias}", ok=(404,))
    return sorted(body) if status == 200 else []


def meta(conn, index: str) -> dict[str, Any]:
    return conn.request("GET", f"/{index}/_mapping")[1][index]["mappings"].get("_meta", {}).get("semsearch", {})


def write_blocked(conn, index: str) -> bool:
    status, body = conn.request("PUT", f"/{index}/_doc/probe?pipeline=_none", {"text": "probe"}, ok=(403,))
    if status == 403:
        assert "cluster_block_exception" in str(body)
        return True
    conn.request("DELETE", f"/{index}/_doc/probe?refresh=true")
    return False


class Searches(threading.Thread):
    """Neural queries (no model id: the index's search pipeline names its query model) on the
    alias, one after another, recording which index answered and any failure or empty answer."""

    def __init__(self, conn: Connection, alias: str, queries: list[str], limit: int = 2000):
        super().__init__(daemon=True)
        self.conn, self.alias, self.queries, self.limit = Connection(**conn.as_dict()), alias, queries, limit
        self.stop = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.problems: list[str] = []

    def run(self) -> None:
        for i in range(self.limit):  # bounded, whatever happens to the stop signal
            if self.stop.is_set():
                return
            body = {"size": 3, "_source": False, "query": {"neural": {"embedding": {
                "query_text": self.queries[i % len(self.queries)], "k": 3}}}}
            try:
                _, result = self.conn.request("POST", f"/{self.alias}/_search", body)
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                self.problems.append(f"{time.monotonic():.2f}: {e}"[:500])
                continue
            hits = result["hits"]["hits"]
            if not hits:
                self.problems.append(f"{time.monotonic():.2f}: no hits for {self.queries[i % len(self.queries)]!r}")
                continue
            self.answers.append((time.monotonic(), hits[0]["_index"]))
            time.sleep(0.02)


def test_model_change_reembeds_with_searches_in_flight(opensearch, make_props, dev_pairs, endpoint_b):
    old, a = populated(opensearch, make_props, dev_pairs, "e2e-reemb")
    alias = old["IndexName"]
    new = {**old, "EndpointUrl": invocation_url(endpoint_b, "pytest-b"), "RetiredIndexHours": 1}
    searches = Searches(opensearch, alias, [p["query"] for p in dev_pairs[:50]])
    searches.start()
    time.sleep(1)  # a few answers from the old index first
    started = time.monotonic()
    b = run_custom_resource("Update", new, physical_id=a, old_props=old, timeout_s=600)["PhysicalResourceId"]
    finished = time.monotonic()
    time.sleep(1)
    searches.stop.set()
    searches.join(60)
    assert b != a
    assert searches.problems == []
    answered_by = [index for _, index in searches.answers]
    flip = answered_by.index(b)
    assert set(answered_by[:flip]) == {a} and set(answered_by[flip:]) == {b}  # one switch, never back
    assert alias_on(opensearch, alias) == [b]
    assert count(opensearch, a) == count(opensearch, b) == DOCS  # documents in == documents out
    # Every vector of the new index came from the new pipeline (the old ones were dropped).
    assert count(opensearch, b) == opensearch.request("POST", f"/{b}/_count", {
        "query": {"exists": {"field": "embedding"}}})[1]["count"]
    assert alias_on(opensearch, f"{alias}-retired") == [a] and write_blocked(opensearch, a)
    flipped = meta(opensearch, b)["flipped"]
    assert flipped["from"] == a and flipped["documents"] == DOCS and flipped["by"] == "reembed"
    on_old_s = searches.answers[flip - 1][0] - started
    print(f"\nre-embed: {DOCS} documents in {flipped['copy_s']:.2f} s through _reindex "
          f"({DOCS / flipped['copy_s']:.0f} docs/s); update took {finished - started:.1f} s; searches answered by "
          f"the old index for {on_old_s:.1f} s after the update began ({flip} answers), then by the new one "
          f"({len(answered_by) - flip}); 0 failures, 0 empty")

    # CloudFormation's follow-up Delete of the old physical id: models go, the index stays.
    run_custom_resource("Delete", old, physical_id=a)
    assert ml_objects(opensearch, a) == {"connectors": 0, "model_groups": 0, "models": 0}
    assert not exists(opensearch, f"/_ingest/pipeline/{a}")
    assert count(opensearch, a) == DOCS

    # The watchdog: within the period the retired index stays ...
    kept = handler.watchdog(cfn_strings(new))["RetiredIndices"]
    assert kept["Deleted"] == [] and kept["Kept"][a].startswith("retention: ")
    # ... after it (the stamp moved back two hours), never while it has more documents ...
    stamp = meta(opensearch, a)
    stamp["retired"]["at"] -= 2 * 3600
    opensearch.request("PUT", f"/{a}/_mapping", {"_meta": {"semsearch": stamp}})
    gone_id = dev_pairs[0]["id"]
    opensearch.request("DELETE", f"/{alias}/_doc/{gone_id}?refresh=true")
    kept = handler.watchdog(cfn_strings(new))["RetiredIndices"]
    assert kept["Deleted"] == [] and kept["Kept"][a] == f"{DOCS} documents, more than the live index's {DOCS - 1}"
    # ... and once the live index has them all, it is deleted.
    opensearch.request("PUT", f"/{alias}/_doc/{gone_id}?refresh=true", {"text": dev_pairs[0]["text"]})
    assert handler.watchdog(cfn_strings(new))["RetiredIndices"] == {"Deleted": [a], "Kept": {}}
    assert not exists(opensearch, f"/{a}") and count(opensearch, alias) == DOCS
    # The stack deleted: its index has documents, so it is kept (retired), not deleted.
    run_custom_resource("Delete", new, physical_id=b)
    assert not alias_on(opensearch, alias) and alias_on(opensearch, f"{alias}-retired") == [b]
    assert count(opensearch, b) == DOCS
    opensearch.request("DELETE", f"/{b}")


def drive_until(event: dict[str, Any], ready) -> dict[str, Any]:
    """on_event, then is_complete until ``ready()`` holds (the re-embed reached a point)."""
    event = {**event, **handler.on_event(event)}
    deadline = time.monotonic() + 300
    while not ready():
        assert handler.is_complete(event) == {"IsComplete": False}
        assert time.monotonic() < deadline, "the re-embed never reached the expected point"
        time.sleep(0.2)
    return event


def update_event(new: dict[str, Any], old: dict[str, Any], pid: str) -> dict[str, Any]:
    return {"RequestType": "Update", "RequestId": "r", "StackId": "s", "LogicalResourceId": "SearchGlue",
            "ResourceType": "Custom::SearchGlue", "PhysicalResourceId": pid,
            "ResourceProperties": cfn_strings(new), "OldResourceProperties": cfn_strings(old)}


def finish_with_failure(event: dict[str, Any]) -> str:
    deadline = time.monotonic() + 300
    with pytest.raises(GlueFailure) as info:
        while not handler.is_complete(event).get("IsComplete"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    return str(info.value)


def assert_old_serves(opensearch, alias: str, a: str, b: str, docs: int) -> None:
    assert alias_on(opensearch, alias) == [a] and count(opensearch, alias) == docs
    assert not write_blocked(opensearch, a)
    assert not exists(opensearch, f"/{b}") and not exists(opensearch, f"/_ingest/pipeline/{b}")
    assert ml_objects(opensearch, b) == {"connectors": 0, "model_groups": 0, "models": 0}
    _, result = opensearch.request("POST", f"/{alias}/_search", {"query": {"neural": {"embedding": {
        "query_text": "install a package", "k": 3}}}})
    assert result["hits"]["hits"]


def test_endpoint_down_during_the_copy_leaves_the_old_index_serving(opensearch, make_props, dev_pairs, model_dir):
    from semsearch.serve import start_server

    old, a = populated(opensearch, make_props, dev_pairs, "e2e-reemb-down")
    alias = old["IndexName"]
    doomed = start_server(model_dir, name="pytest-c", region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    invoke = doomed.server.service.invoke

    def slow_invoke(*args, **kwargs):  # enough time to stop it half-way through the copy
        time.sleep(0.3)
        return invoke(*args, **kwargs)

    doomed.server.service.invoke = slow_invoke
    new = {**old, "EndpointUrl": invocation_url(doomed, "pytest-c")}
    b = handler.parse(cfn_strings(new)).physical_id
    try:
        event = drive_until(update_event(new, old, a),
                            lambda: exists(opensearch, f"/{b}") and bool(meta(opensearch, b).get("reembed")))
        doomed.stop()  # the new model's endpoint goes down during the copy
        message = finish_with_failure(event)
    finally:
        doomed.stop()
    # Whichever notices first: the copy's failures, or the next poll's smoke test.
    if message.startswith("reembed: "):
        assert message.startswith(f"reembed: copy {a} -> {b} (task ") and f"of {DOCS} documents" in message
        assert f"the alias stays on {a}, which keeps serving" in message
    else:
        assert message.startswith("predict: ") and "is the endpoint up and answering?" in message
    assert "Connection refused" in message
    assert f"[cleaned up {b}: removed " in message and message.endswith("ingest_pipeline, index]")
    assert_old_serves(opensearch, alias, a, b, DOCS)
    run_custom_resource("Delete", old, physical_id=a)
    assert count(opensearch, a) == DOCS  # kept (documents): removed by hand
    opensearch.request("DELETE", f"/{a}")


def test_count_mismatch_leaves_the_old_index_serving(opensearch, make_props, dev_pairs, endpoint_b):
    old, a = populated(opensearch, make_props, dev_pairs, "e2e-reemb-count", docs=40)
    alias = old["IndexName"]
    new = {**old, "EndpointUrl": invocation_url(endpoint_b, "pytest-b")}
    b = handler.parse(cfn_strings(new)).physical_id
    event = drive_until(update_event(new, old, a), lambda: exists(opensearch, f"/{b}") and
                        meta(opensearch, b).get("reembed", {}).get("phase") == "catchup")
    assert write_blocked(opensearch, a)  # during the catch-up and check only
    opensearch.request("DELETE", f"/{b}/_doc/{dev_pairs[0]['id']}?refresh=true")  # one document lost on the way
    message = finish_with_failure(event)
    assert message.startswith(f"reembed: count check failed: 40 documents in {a}, 39 in {b}; "
                              f"the alias stays on {a}, which keeps serving")
    assert_old_serves(opensearch, alias, a, b, 40)
    run_custom_resource("Delete", old, physical_id=a)
    assert count(opensearch, a) == 40  # kept (documents): removed by hand
    opensearch.request("DELETE", f"/{a}")


def test_rollback_after_the_flip_returns_to_the_old_index_with_the_new_writes(opensearch, make_props, dev_pairs,
                                                                             endpoint_b):
    old, a = populated(opensearch, make_props, dev_pairs, "e2e-reemb-back", docs=50)
    alias = old["IndexName"]
    new = {**old, "EndpointUrl": invocation_url(endpoint_b, "pytest-b")}
    b = run_custom_resource("Update", new, physical_id=a, old_props=old)["PhysicalResourceId"]
    assert alias_on(opensearch, alias) == [b]
    # Written during the window, through the alias: into the new index only.
    late = dev_pairs[100:102]
    bulk_ingest(opensearch, alias, [{"id": p["id"], "text": p["text"]} for p in late])
    assert count(opensearch, b) == 52 and count(opensearch, a) == 50
    # The stack fails later and rolls back: an Update back to the old properties ...
    back = run_custom_resource("Update", old, physical_id=b, old_props=new)["PhysicalResourceId"]
    assert back == a and alias_on(opensearch, alias) == [a]
    assert count(opensearch, a) == 52  # the window's writes were re-embedded into the old index
    for p in late:
        doc = opensearch.request("GET", f"/{a}/_doc/{p['id']}")[1]["_source"]
        assert doc["text"] == p["text"] and len(doc["embedding"]) == 384
    assert not write_blocked(opensearch, a) and write_blocked(opensearch, b)
    assert alias_on(opensearch, f"{alias}-retired") == [b]
    # ... then the Delete of the new physical id: its models go, its index is kept (retired).
    run_custom_resource("Delete", new, physical_id=b)
    assert ml_objects(opensearch, b) == {"connectors": 0, "model_groups": 0, "models": 0}
    assert count(opensearch, b) == 52
    opensearch.request("DELETE", f"/{b}")  # first: a Delete of A would hand the alias back to it
    run_custom_resource("Delete", old, physical_id=a)  # with documents: kept (retired)
    assert not alias_on(opensearch, alias) and alias_on(opensearch, f"{alias}-retired") == [a]
    opensearch.request("DELETE", f"/{a}")


def test_delete_of_the_serving_index_hands_the_alias_back_and_keeps_its_writes(opensearch, make_props, dev_pairs,
                                                                              endpoint_b):
    old, a = populated(opensearch, make_props, dev_pairs, "e2e-reemb-del", docs=20)
    alias = old["IndexName"]
    new = {**old, "EndpointUrl": invocation_url(endpoint_b, "pytest-b")}
    b = run_custom_resource("Update", new, physical_id=a, old_props=old)["PhysicalResourceId"]
    opensearch.request("PUT", f"/{alias}/_doc/only-in-b?refresh=true", {"text": "written after the flip"})
    # A rollback that sends only the Delete of the new id, while it still serves.
    run_custom_resource("Delete", new, physical_id=b)
    assert alias_on(opensearch, alias) == [a] and alias_on(opensearch, f"{alias}-retired") == [b]
    assert count(opensearch, b) == 21 and meta(opensearch, b)["retired"]["unique_writes"] is True
    stamp = meta(opensearch, b)
    stamp["retired"]["at"] -= 10_000 * 3600
    opensearch.request("PUT", f"/{b}/_mapping", {"_meta": {"semsearch": stamp}})
    kept = handler.watchdog(cfn_strings(old))["RetiredIndices"]
    assert kept["Deleted"] == [] and kept["Kept"][b].startswith("received writes that exist nowhere else")
    assert exists(opensearch, f"/{b}/_doc/only-in-b")
    opensearch.request("DELETE", f"/{b}")  # first: a Delete of A would hand the alias back to it
    run_custom_resource("Delete", old, physical_id=a)  # with documents: kept (retired)
    assert not alias_on(opensearch, alias) and alias_on(opensearch, f"{alias}-retired") == [a]
    opensearch.request("DELETE", f"/{a}")


def assert_kept_by_delete(opensearch, alias: str, index: str, docs: int) -> None:
    """What a Delete leaves of an index with documents: the index, retired, for a person to delete."""
    assert exists(opensearch, f"/{index}") and count(opensearch, index) == docs
    assert index not in alias_on(opensearch, alias) and alias_on(opensearch, f"{alias}-retired") == [index]
    assert write_blocked(opensearch, index)
    stamp = meta(opensearch, index)["retired"]
    assert stamp["reason"] == "delete" and stamp["unique_writes"] is True
    # Its models, connector and pipelines are gone all the same.
    assert ml_objects(opensearch, index) == {"connectors": 0, "model_groups": 0, "models": 0}
    assert not exists(opensearch, f"/_ingest/pipeline/{index}")
    assert not exists(opensearch, f"/_search/pipeline/{index}-search-pipeline")


def test_index_name_change_keeps_the_old_index_and_its_documents(opensearch, make_props, dev_pairs):
    old, a = populated(opensearch, make_props, dev_pairs, "e2e-keep-rename", docs=20)
    new = {**old, "IndexName": "e2e-keep-rename-docs2"}
    b = run_custom_resource("Update", new, physical_id=a, old_props=old)["PhysicalResourceId"]
    assert b != a and alias_on(opensearch, "e2e-keep-rename-docs2") == [b] and count(opensearch, b) == 0
    # CloudFormation's follow-up Delete of the old id: nothing was re-embedded, so the old
    # index holds the only copy of its documents.
    run_custom_resource("Delete", old, physical_id=a)
    assert_kept_by_delete(opensearch, old["IndexName"], a, 20)
    # The watchdog never deletes it, whatever its age.
    client = OpenSearch.from_properties(handler.parse(cfn_strings(old)))
    swept = reembed.sweep_retired(client, handler.parse(cfn_strings(old)), Names(a, old["IndexName"]),
                                  now=time.time() + 10_000 * 3600)
    assert swept["Deleted"] == [] and a in swept["Kept"]
    opensearch.request("DELETE", f"/{a}")  # what a person does once the documents are elsewhere
    run_custom_resource("Delete", new, physical_id=b)  # empty: deleted
    assert not exists(opensearch, f"/{b}")


def test_delete_keeps_a_populated_index_and_deletes_an_empty_one(opensearch, make_props, dev_pairs):
    props, pid = populated(opensearch, make_props, dev_pairs, "e2e-keep-del", docs=20)
    alias = props["IndexName"]
    # A stack deletion that keeps the domain (retain_data): the documents stay.
    run_custom_resource("Delete", props, physical_id=pid)
    assert_kept_by_delete(opensearch, alias, pid, 20)
    # The stack deployed again on that domain adopts the kept index: it serves and takes writes.
    assert run_custom_resource("Create", props)["PhysicalResourceId"] == pid
    assert alias_on(opensearch, alias) == [pid] and alias_on(opensearch, f"{alias}-retired") == []
    assert not write_blocked(opensearch, pid) and meta(opensearch, pid)["retired"] == {}
    opensearch.request("PUT", f"/{alias}/_doc/after?refresh=true", {"text": "written after the redeploy"})
    assert len(opensearch.request("GET", f"/{pid}/_doc/after")[1]["_source"]["embedding"]) == 384
    _, result = opensearch.request("POST", f"/{alias}/_search", {"query": {"neural": {"embedding": {
        "query_text": "written after the redeploy", "k": 3}}}})
    assert result["hits"]["hits"]
    run_custom_resource("Delete", props, physical_id=pid)
    assert_kept_by_delete(opensearch, alias, pid, 21)
    opensearch.request("DELETE", f"/{pid}")
    # An index with no documents is deleted.
    empty = make_props("e2e-keep-empty")
    e = run_custom_resource("Create", empty)["PhysicalResourceId"]
    run_custom_resource("Delete", empty, physical_id=e)
    assert not exists(opensearch, f"/{e}") and not alias_on(opensearch, empty["IndexName"])
    assert not alias_on(opensearch, f"{empty['IndexName']}-retired")
