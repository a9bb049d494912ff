"""Asymmetric models through the real ml-commons: passages and queries reach the endpoint
each with its own prompt, and an index answers neural queries that name no model.

The model version here is e5-like (QueryPrefix "query: ", PassagePrefix "passage: ") on
all-MiniLM-L6-v2's weights, the model that ships offline. A recording front between
ml-commons and the endpoint keeps every request body as the endpoint received it.

- TEI flavor: the session endpoint speaks TEI's ``{"inputs": [...]}`` and, like TEI for a
  model whose files define no prompts, embeds the inputs as given: the prefix must be in
  the request, put there by the connector's pre_process script.
- custom flavor: the connector names the kind (``prompt_name``) and our handler adds the
  prefix its model folder declares (semsearch.json, as ``semsearch package`` writes it).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import run_custom_resource
from tests.e2e.conftest import ACCESS_KEY, ENDPOINT_NAME, SECRET_KEY, ml_objects

log = logging.getLogger(__name__)
E5_PREFIXES = {"QueryPrefix": "query: ", "PassagePrefix": "passage: "}
K = 3
# The custom-flavor stack embeds only this many documents: the TEI stack covers the dev set.
CUSTOM_DOCS = 20


class RecordingFront:
    """Stands in for nothing: a pass-through HTTP hop that records each JSON body it forwards.

    Headers (Host and the SigV4 ones included) and the body go on unchanged, so the
    endpoint behind it checks the same signature ml-commons made.
    """

    def __init__(self, target_port: int):
        self.bodies: list[Any] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as the endpoint: ml-commons reuses pooled connections.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    front.bodies.append(json.loads(body))
                except ValueError:
                    front.bodies.append(body.decode(errors="replace"))
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                conn.request("POST", self.path, body, dict(self.headers.items()))
                answer = conn.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                conn.close()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/endpoints/{ENDPOINT_NAME}/invocations"

    def take(self) -> list[Any]:
        bodies, self.bodies = self.bodies, []
        return bodies

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tei_front(endpoint) -> Iterator[RecordingFront]:
    front = RecordingFront(endpoint.port)
    yield front
    front.stop()


@pytest.fixture(scope="module")
def tei_stack(make_props, tei_front) -> Iterator[dict[str, Any]]:
    props = make_props("e2e-e5tei", Flavor="tei", EndpointUrl=tei_front.url(), **E5_PREFIXES)
    result = run_custom_resource("Create", props)
    tei_front.take()  # the smoke tests' (they pass their texts as they are)
    yield {"props": props, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


@pytest.fixture(scope="module")
def tei_ingested(opensearch, tei_stack, tei_front, dev_pairs) -> list[Any]:
    """The dev documents through the TEI stack's ingest pipeline; what the endpoint received."""
    bulk_ingest(opensearch, tei_stack["Data"]["IndexName"], [{"id": p["id"], "text": p["text"]} for p in dev_pairs])
    return tei_front.take()


def neural(query: str, model_id: str | None = None) -> dict[str, Any]:
    clause: dict[str, Any] = {"query_text": query, "k": 10}
    if model_id:
        clause["model_id"] = model_id
    return {"size": K, "_source": False, "query": {"neural": {"embedding": clause}}}


def recall_at_k(conn, index: str, pairs: list[dict], model_id: str | None = None) -> float:
    found = 0
    for pair in pairs:
        _, result = conn.request("POST", f"/{index}/_search", neural(pair["query"], model_id))
        found += pair["id"] in [hit["_id"] for hit in result["hits"]["hits"]]
    return found / len(pairs)


def test_an_asymmetric_version_gets_a_query_model_and_binds_it_to_the_index(opensearch, tei_stack):
    data, pid = tei_stack["Data"], tei_stack["PhysicalResourceId"]
    assert data["QueryModelId"] != data["ModelId"]
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    assert ml_objects(opensearch, f"{pid}-query") == {"connectors": 1, "model_groups": 0, "models": 1}
    _, settings = opensearch.request("GET", f"/{pid}/_settings")
    assert settings[pid]["settings"]["index"]["search"]["default_pipeline"] == data["SearchPipelineName"]
    _, pipeline = opensearch.request("GET", f"/_search/pipeline/{data['SearchPipelineName']}")
    assert pipeline[data["SearchPipelineName"]]["request_processors"] == [
        {"neural_query_enricher": {"default_model_id": data["QueryModelId"]}}]
    _, ingest = opensearch.request("GET", f"/_ingest/pipeline/{pid}")
    assert ingest[pid]["processors"][0]["text_embedding"]["model_id"] == data["ModelId"]


def test_tei_gets_passage_prefix_on_every_ingested_text(tei_ingested, dev_pairs):
    texts = [t for body in tei_ingested for t in body["inputs"]]
    assert all(body.get("truncate") is True for body in tei_ingested)
    # Every text once at least (a bulk item the loader retried is embedded again), each prefixed.
    assert set(texts) == {"passage: " + p["text"] for p in dev_pairs} and len(texts) >= len(dev_pairs)


def test_tei_gets_query_prefix_on_a_neural_query_without_model_id(opensearch, tei_stack, tei_ingested, tei_front,
                                                                  dev_pairs):
    pair = dev_pairs[0]
    _, result = opensearch.request("POST", f"/{tei_stack['Data']['IndexName']}/_search", neural(pair["query"]))
    assert tei_front.take() == [{"inputs": ["query: " + pair["query"]], "truncate": True}]
    assert result["hits"]["hits"], "a neural query without model_id found nothing"


def test_right_prefixes_retrieve_at_least_as_well_as_the_wrong_ones(opensearch, tei_stack, tei_ingested, tei_front,
                                                                    dev_pairs):
    """Right: "query: " on queries (the index's query model, named by no one). Wrong: queries
    embedded as passages (what every query got from the custom handler before: an explicit
    model_id of the passage model). all-MiniLM was not trained with prefixes, so the gap
    is small; the figures go to the report, the assert only says right is not worse."""
    index = tei_stack["Data"]["IndexName"]
    right = recall_at_k(opensearch, index, dev_pairs)
    queries = [t for body in tei_front.take() for t in body["inputs"]]
    assert queries == ["query: " + p["query"] for p in dev_pairs]
    wrong = recall_at_k(opensearch, index, dev_pairs, model_id=tei_stack["Data"]["ModelId"])
    queries = [t for body in tei_front.take() for t in body["inputs"]]
    assert queries == ["passage: " + p["query"] for p in dev_pairs]
    print(f"\nrecall@{K} on {len(dev_pairs)} dev pairs: right prefixes {right:.3f}, "
          f"queries as passages {wrong:.3f}")
    assert right >= wrong - 0.01


# ---------------------------------------------------------------------------------------
# custom flavor: the kind in the request, the prefix from the model folder


@pytest.fixture(scope="module")
def e5_like_model_dir(model_dir, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2's files plus the manifest `semsearch package` writes for an e5-style entry."""
    folder = tmp_path_factory.mktemp("e5-like-minilm")
    for entry in Path(model_dir).iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "semsearch.json").write_text(json.dumps({"query_prefix": "query: ", "passage_prefix": "passage: "}))
    return folder


@pytest.fixture(scope="module")
def custom_front(e5_like_model_dir) -> Iterator[RecordingFront]:
    from semsearch.serve import start_server

    handle = start_server(e5_like_model_dir, name=ENDPOINT_NAME, region="us-east-1", access_key=ACCESS_KEY,
                          secret_key=SECRET_KEY)
    front = RecordingFront(handle.port)
    yield front
    front.stop()
    handle.stop()


def test_custom_handler_is_told_the_kind_and_embeds_with_its_prefix(opensearch, make_props, custom_front, tei_stack,
                                                                   tei_ingested, dev_pairs):
    props = make_props("e2e-e5custom", EndpointUrl=custom_front.url(), **E5_PREFIXES)
    result = run_custom_resource("Create", props)
    try:
        data = result["Data"]
        custom_front.take()
        docs = dev_pairs[:CUSTOM_DOCS]
        bulk_ingest(opensearch, data["IndexName"], [{"id": p["id"], "text": p["text"]} for p in docs])
        received = custom_front.take()
        assert {body["prompt_name"] for body in received} == {"passage"}
        assert {t for body in received for t in body["inputs"]} == {p["text"] for p in docs}
        # The handler prefixed them: the same vectors as TEI's "passage: " + text.
        for pair in docs[:5]:
            _, mine = opensearch.request("GET", f"/{data['IndexName']}/_doc/{pair['id']}")
            _, tei = opensearch.request("GET", f"/{tei_stack['Data']['IndexName']}/_doc/{pair['id']}")
            np.testing.assert_allclose(mine["_source"]["embedding"], tei["_source"]["embedding"], atol=1e-5)
        _, found = opensearch.request("POST", f"/{data['IndexName']}/_search", neural(docs[0]["query"]))
        assert custom_front.take() == [{"inputs": [docs[0]["query"]], "prompt_name": "query"}]
        assert found["hits"]["hits"]
    finally:
        run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
