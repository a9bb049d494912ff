"""Asymmetric models through the real ml-commons: passages and queries reach the endpoint
each with its own prompt, and an index answers neural queries that name no model.

The model version here is e5-like (QueryPrefix "query: ", PassagePrefix "passage: ") on
all-MiniLM-L6-v2's weights, the model that ships offline. A recording front between
ml-commons and the endpoint keeps every request body as the endpoint received it.

- TEI flavor, each test twice: against TEI's own router (v1.8.2, the version the stacks
  deploy) and against the session endpoint speaking TEI's ``{"inputs": [...]}`` (a stand-in
  that runs where no router is found). TEI embeds its inputs as given unless a request names
  a prompt or it was started with a default one: the prefix must be in the request, put
  there by the connector's pre_process script, exactly once. The router serves a model
  folder that declares e5's prompts and a ``default_prompt_name`` in its
  ``config_sentence_transformers.json`` (as e5/bge-style models ship them), started with
  ``DEFAULT_PROMPT_NAME`` in our environment: neither may add a second prefix. Without a
  router the ``tei`` cases are skipped with the reason (conftest ``tei_source``).
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
from semsearch.local.tei import RunningTei, prompt_chars
from tests.e2e.conftest import ACCESS_KEY, ENDPOINT_NAME, SECRET_KEY, ml_objects, start_test_tei

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
        self.backend = ""  # what serves behind it, for the test's own bookkeeping
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
def prompted_model_dir(model_dir, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2's files and ONNX graph (what TEI's CPU backend serves), its
    config_sentence_transformers.json declaring e5's prompts and a default prompt name."""
    from inference_code.model_info import read_model_info
    from inference_code.onnx_export import FILES, ONNX_SUBDIR, onnx_path

    folder = tmp_path_factory.mktemp("prompted-minilm")
    for entry in Path(model_dir).iterdir():
        if entry.name != "config_sentence_transformers.json":
            (folder / entry.name).symlink_to(entry)
    config = json.loads((Path(model_dir) / "config_sentence_transformers.json").read_text())
    config.update(prompts={"query": E5_PREFIXES["QueryPrefix"], "passage": E5_PREFIXES["PassagePrefix"]},
                  default_prompt_name="query")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    (folder / ONNX_SUBDIR).mkdir()
    (folder / ONNX_SUBDIR / FILES["exact"]).symlink_to(onnx_path(read_model_info(Path(model_dir)), "exact"))
    return folder


@pytest.fixture(scope="module")
def prompted_tei(prompted_model_dir, tmp_path_factory) -> Iterator[RunningTei]:
    """TEI's router on the prompted folder, started while our environment holds a stray
    DEFAULT_PROMPT_NAME (TEI would read it as --default-prompt-name)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DEFAULT_PROMPT_NAME", "passage")
        running = start_test_tei(prompted_model_dir, tmp_path_factory.mktemp("tei-prompted"))
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["tei", "stand-in"])
def tei_front(request, endpoint) -> Iterator[RecordingFront]:
    """The tei flavor's endpoint (TEI's router, or our handler in TEI's shape) behind a recording hop."""
    front = RecordingFront(request.getfixturevalue("prompted_tei").front.port if request.param == "tei"
                           else endpoint.port)
    front.backend = request.param
    yield front
    front.stop()


@pytest.fixture(scope="module")
def tei_stack(make_props, tei_front) -> Iterator[dict[str, Any]]:
    # A name per backend: the glue's Delete keeps an index (documents), the next stack must not find it.
    name = "e2e-e5tei" if tei_front.backend == "stand-in" else "e2e-e5tei-router"
    props = make_props(name, Flavor="tei", EndpointUrl=tei_front.url(), **E5_PREFIXES)
    result = run_custom_resource("Create", props)
    tei_front.take()  # the smoke tests' (they pass their texts as they are)
    yield {"props": props, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


@pytest.fixture(scope="module")
def tei_ingested(opensearch, tei_stack, tei_front, dev_pairs) -> list[Any]:
    """The dev documents through the TEI stack's ingest pipeline; what the endpoint received."""
    bulk_ingest(opensearch, tei_stack["Data"]["IndexName"], [{"id": p["id"], "text": p["text"]} for p in dev_pairs])
    return tei_front.take()


def handler_embed(endpoint, texts: list[str]) -> np.ndarray:
    """Our handler's vectors for ``texts`` exactly as given (the session endpoint: no prompts)."""
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=60)
    try:
        conn.request("POST", f"/endpoints/{ENDPOINT_NAME}/invocations", json.dumps({"inputs": texts}),
                     {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        return np.array(json.load(answer))
    finally:
        conn.close()


def predict(opensearch, model_id: str, text: str) -> np.ndarray:
    """The vector ``model_id`` gives ``text`` through its connector (text_docs: the pre_process
    script that adds the prefix runs, as for neural search)."""
    _, body = opensearch.request("POST", f"/_plugins/_ml/_predict/text_embedding/{model_id}", {"text_docs": [text]})
    return np.array(body["inference_results"][0]["output"][0]["data"])


def neural(query: str, model_id: str | None = None) -> dict[str, Any]:
    clause: dict[str, Any] = {"query_text": query, "k": 10}
    if model_id:
        clause["model_id"] = model_id
    return {"size": K, "_source": False, "query": {"neural": {"embedding": clause}}}


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


def neural_hits(conn, index: str, pairs: list[dict], model_id: str | None = None) -> list[dict[str, float]]:
    """Each pair's query's top K through a neural query: {doc id: score}."""
    return [{hit["_id"]: hit["_score"] for hit in conn.request(
        "POST", f"/{index}/_search", neural(pair["query"], model_id))[1]["hits"]["hits"]} for pair in pairs]


def innerproduct_score(dot: float) -> float:
    """The k-NN plugin's score for an innerproduct space: 1 + dot, or 1 / (1 - dot) below zero."""
    return 1 + dot if dot >= 0 else 1 / (1 - dot)


def test_queries_and_passages_are_embedded_with_their_own_prefixes(opensearch, tei_stack, tei_ingested, tei_front,
                                                                   endpoint, dev_pairs):
    """Right: "query: " on queries (the index's query model, named by no one). Wrong: queries
    embedded as passages (what every query got from the custom handler before: an explicit
    model_id of the passage model). Every hit's score is the one our handler's vectors of
    "<query prefix>query" and "passage: text" give (HNSW may miss a neighbour; it cannot change
    a score): the prefixes sit where they belong, once. all-MiniLM was not trained with
    prefixes, so recall right vs wrong is printed for the report only."""
    index = tei_stack["Data"]["IndexName"]
    q, p = E5_PREFIXES["QueryPrefix"], E5_PREFIXES["PassagePrefix"]

    def embed(texts: list[str]) -> np.ndarray:
        return np.concatenate([handler_embed(endpoint, texts[i:i + 32]) for i in range(0, len(texts), 32)])

    docs = dict(zip([pair["id"] for pair in dev_pairs], embed([p + pair["text"] for pair in dev_pairs]), strict=True))
    report = []
    for label, prefix, model_id in (("right prefixes", q, None), ("queries as passages", p,
                                                                  tei_stack["Data"]["ModelId"])):
        hits = neural_hits(opensearch, index, dev_pairs, model_id)
        queries = [t for body in tei_front.take() for t in body["inputs"]]
        assert queries == [prefix + pair["query"] for pair in dev_pairs]
        vectors = embed(queries)
        for pair, vector, found in zip(dev_pairs, vectors, hits, strict=True):
            assert len(found) == K
            for doc_id, score in found.items():
                assert score == pytest.approx(innerproduct_score(float(vector @ docs[doc_id])), abs=1e-3), \
                    (label, pair["id"], doc_id)
        exact = np.argsort(-(vectors @ np.stack(list(docs.values())).T), axis=1)[:, :K]
        recall = np.mean([pair["id"] in found for pair, found in zip(dev_pairs, hits, strict=True)])
        exact_recall = np.mean([i in row for i, row in enumerate(exact)])
        report.append(f"{label} {recall:.3f} (exact search {exact_recall:.3f})")
    print(f"\n{tei_front.backend}: recall@{K} on {len(dev_pairs)} dev pairs: {', '.join(report)}")


def test_tei_applies_the_prefix_exactly_once(opensearch, tei_stack, tei_ingested, tei_front, endpoint, dev_pairs):
    """Through the glue's connectors the vectors are our handler's for "<prefix><text>", not for
    a text prefixed twice (TEI's default prompt on top of the connector's prefix)."""
    query, doc = dev_pairs[5]["query"], dev_pairs[5]
    q, p = E5_PREFIXES["QueryPrefix"], E5_PREFIXES["PassagePrefix"]
    got_query = predict(opensearch, tei_stack["Data"]["QueryModelId"], query)
    _, stored = opensearch.request("GET", f"/{tei_stack['Data']['IndexName']}/_doc/{doc['id']}")
    got_passage = np.array(stored["_source"]["embedding"])
    # Once; twice by the model folder's default_prompt_name ("query") or by DEFAULT_PROMPT_NAME ("passage").
    once_q, twice_qq, twice_pq, once_p, twice_qp, twice_pp = handler_embed(endpoint, [
        q + query, q + q + query, p + q + query, p + doc["text"], q + p + doc["text"], p + p + doc["text"]])
    print(f"\n{tei_front.backend}: cosine to once {got_query @ once_q:.6f} (query), {got_passage @ once_p:.6f} "
          f"(passage); to twice {max(got_query @ twice_qq, got_query @ twice_pq):.6f}, "
          f"{max(got_passage @ twice_qp, got_passage @ twice_pp):.6f}")
    assert float(got_query @ once_q) >= 0.9999 and float(got_passage @ once_p) >= 0.9999
    for got, twice in ((got_query, twice_qq), (got_query, twice_pq), (got_passage, twice_qp),
                       (got_passage, twice_pp)):
        assert float(got @ twice) < 0.9999


def test_tei_reads_the_folders_prompts_and_applies_none_unasked(prompted_tei):
    """The router loaded the prompts of config_sentence_transformers.json (a request naming one
    gets it), yet a request naming none, as the connector's, gets no prompt: not the file's
    default_prompt_name (TEI v1.8.2 reads only ``prompts`` from that file), not the
    DEFAULT_PROMPT_NAME our environment held when it started (start_tei keeps it from the router)."""
    if prompted_tei.source.bin is None:
        pytest.skip(f"TEI at {prompted_tei.tei_url} serves a model folder of its own, not the prompted one")
    assert prompt_chars(prompted_tei.tei_url, "query") == len(E5_PREFIXES["QueryPrefix"])
    assert prompt_chars(prompted_tei.tei_url, "passage") == len(E5_PREFIXES["PassagePrefix"])
    assert prompt_chars(prompted_tei.tei_url) == 0


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


def test_custom_handler_is_told_the_kind_and_embeds_with_its_prefix(opensearch, make_props, custom_front, endpoint,
                                                                   dev_pairs):
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
        # The handler prefixed them: the vectors of "passage: " + text (what the tei flavor's connector sends).
        _, mine = opensearch.request("POST", f"/{data['IndexName']}/_mget", {"ids": [p["id"] for p in docs[:5]]})
        np.testing.assert_allclose([d["_source"]["embedding"] for d in mine["docs"]],
                                   handler_embed(endpoint, ["passage: " + p["text"] for p in docs[:5]]), atol=1e-5)
        _, found = opensearch.request("POST", f"/{data['IndexName']}/_search", neural(docs[0]["query"]))
        assert custom_front.take() == [{"inputs": [docs[0]["query"]], "prompt_name": "query"}]
        assert found["hits"]["hits"]
    finally:
        run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
