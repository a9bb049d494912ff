"""Both serving flavors a stage deploys, end to end through the real ml-commons.

``custom``: our handler (`semsearch serve`). ``tei``: TEI's own router (v1.8.2, the version
the stacks deploy) behind the same SigV4-checking front, with the TEI connector body
``{"inputs": ..., "truncate": true}``. Each flavor: provision, ingest the 500 dev documents
through the pipeline, neural recall@3 equal to brute force within a point, the dimension
smoke test, an endpoint that is down. TEI alone: TEI's limits (a bulk over its
``max_client_batch_size``, a document over its token limit) and a query prefix reaching it.

Without a TEI router the ``tei`` cases are skipped with the reason (conftest ``tei``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from search_glue.handler import GlueFailure

from semsearch.local.ingest import IngestReport, bulk_ingest
from semsearch.local.stack import REGION, run_custom_resource
from semsearch.local.tei import stage_serving, start_front
from semsearch.search import search
from tests.conftest import free_port
from tests.e2e.conftest import ACCESS_KEY, ENDPOINT_NAME, SECRET_KEY, ml_objects
from tests.e2e.test_query_passage_models import RecordingFront

K = 3
E5_PREFIXES = {"QueryPrefix": "query: ", "PassagePrefix": "passage: "}


@pytest.fixture(scope="module")
def flavor_stack(flavor, make_props, request) -> Iterator[dict[str, Any]]:
    name, url = flavor
    # The pipeline sends as many texts per call as the endpoint takes, as a stage's does.
    batch = request.getfixturevalue("tei").info["max_client_batch_size"] if name == "tei" else 32
    props = make_props(f"e2e-fl-{name}", Flavor=name, EndpointUrl=url, IngestBatchSize=batch)
    result = run_custom_resource("Create", props)
    yield {"flavor": name, "props": props, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


@pytest.fixture(scope="module")
def flavor_ingested(opensearch, flavor_stack, dev_pairs) -> IngestReport:
    docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs]
    return bulk_ingest(opensearch, flavor_stack["Data"]["IndexName"], docs)


@pytest.fixture(scope="session")
def brute_force_top(model_dir, dev_pairs) -> np.ndarray:
    """Each dev query's top-K documents by exact cosine with sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    docs = model.encode([p["text"] for p in dev_pairs], normalize_embeddings=True, batch_size=64)
    queries = model.encode([p["query"] for p in dev_pairs], normalize_embeddings=True, batch_size=64)
    return np.argsort(-(queries @ docs.T), axis=1)[:, :K]


def test_provision_creates_the_flavors_connector(opensearch, flavor_stack):
    data, pid = flavor_stack["Data"], flavor_stack["PhysicalResourceId"]
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    _, model = opensearch.request("GET", f"/_plugins/_ml/models/{data['ModelId']}")
    assert model["model_state"] == "DEPLOYED"
    _, connector = opensearch.request("GET", f"/_plugins/_ml/connectors/{data['ConnectorId']}")
    body = connector["actions"][0]["request_body"]
    if flavor_stack["flavor"] == "tei":
        assert body == '{"inputs": ${parameters.input}, "truncate": true}'
    else:
        assert body == '{"inputs": ${parameters.input}, "prompt_name": "passage"}'
    assert data["Dimension"] == "384"


def test_ingest_embeds_every_document(opensearch, flavor_stack, flavor_ingested, dev_pairs):
    index = flavor_stack["Data"]["IndexName"]
    assert flavor_ingested.indexed == len(dev_pairs) == 500 and not flavor_ingested.failed
    assert opensearch.request("GET", f"/{index}/_count")[1]["count"] == 500
    _, doc = opensearch.request("GET", f"/{index}/_doc/{dev_pairs[0]['id']}")
    assert len(doc["_source"]["embedding"]) == 384
    print(f"\n{flavor_stack['flavor']}: ingest {flavor_ingested.docs_per_s:.1f} docs/s")


def test_neural_recall_matches_brute_force(opensearch, flavor_stack, flavor_ingested, dev_pairs, brute_force_top):
    data = flavor_stack["Data"]

    def neural(pair: dict) -> list[str]:
        return [h["id"] for h in search(opensearch, data["IndexName"], pair["query"], field="embedding",
                                        model_id=data["ModelId"], k=K)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(neural, dev_pairs))
    neural_recall = sum(p["id"] in ids for p, ids in zip(dev_pairs, results, strict=True)) / len(dev_pairs)
    brute = sum(i in row for i, row in enumerate(brute_force_top)) / len(dev_pairs)
    print(f"\n{flavor_stack['flavor']}: recall@{K} neural {neural_recall:.3f}, brute force {brute:.3f}")
    assert brute > 0.5
    assert abs(neural_recall - brute) <= 0.01


def test_dimension_smoke_test_fails_the_create(opensearch, flavor, make_props):
    name, url = flavor
    props = make_props(f"e2e-fl-dim-{name}", Flavor=name, EndpointUrl=url, Dimension=768)
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props)
    assert "predict: dimension mismatch: expected 768 (Dimension), the endpoint returned 384" in str(info.value)
    assert opensearch.request("GET", f"/_alias/e2e-fl-dim-{name}-docs", ok=(404,))[0] == 404


def test_endpoint_down_names_the_connector(flavor, make_props):
    name, _ = flavor
    url = f"http://127.0.0.1:{free_port()}/endpoints/{ENDPOINT_NAME}/invocations"  # nothing listens there
    props = make_props(f"e2e-fl-down-{name}", Flavor=name, EndpointUrl=url)
    with pytest.raises(GlueFailure) as info:
        run_custom_resource("Create", props, timeout_s=120)
    message = str(info.value)
    assert f"through connector e2e-fl-down-{name}-" in message and url in message and "is the endpoint up" in message


# ---------------------------------------------------------------------------------------
# TEI alone


def test_tei_is_the_version_the_stacks_deploy(tei):
    assert tei.info["version"] == stage_serving().tei_version


def tei_embed(tei, texts: list[str], **options: Any) -> tuple[int, Any]:
    """TEI's own answer, straight from the router (no front, no ml-commons)."""
    request = urllib.request.Request(f"{tei.tei_url}/embed", json.dumps({"inputs": texts, **options}).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def predict(opensearch, model_id: str, text: str) -> np.ndarray:
    """The model's vector for ``text`` as neural search gets it: text_docs go through the
    connector's pre_process script (``parameters.input`` would skip it)."""
    _, body = opensearch.request("POST", f"/_plugins/_ml/_predict/text_embedding/{model_id}", {"text_docs": [text]})
    return np.array(body["inference_results"][0]["output"][0]["data"])


@pytest.fixture(scope="module")
def tei_recorded(tei, make_props) -> Iterator[tuple[dict[str, Any], RecordingFront]]:
    """A tei stack with e5-style prompts, ml-commons -> recording hop -> SigV4 front -> TEI;
    its ingest pipeline batches as a stage's does (IngestBatchSize = max_client_batch_size)."""
    front = RecordingFront(tei.front.port)
    props = make_props("e2e-fl-teirec", Flavor="tei", EndpointUrl=front.url(), **E5_PREFIXES,
                       IngestBatchSize=tei.info["max_client_batch_size"])
    result = run_custom_resource("Create", props)
    front.take()  # the smoke tests'
    yield {"props": props, **result}, front
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
    front.stop()


def test_a_bulk_over_max_client_batch_size_arrives_in_sub_batches(opensearch, tei, tei_recorded, dev_pairs):
    stack, front = tei_recorded
    limit = tei.info["max_client_batch_size"]
    docs = [{"id": f"sub-{p['id']}", "text": p["text"]} for p in dev_pairs[:3 * limit + 5]]
    # TEI takes no more than `limit` inputs in one request...
    status, answer = tei_embed(tei, [d["text"] for d in docs], truncate=True)
    assert status == 413 and answer["error"] == f"batch size {len(docs)} > maximum allowed batch size {limit}"
    # ...yet one bulk of all of them goes in whole: the pipeline sends sub-batches.
    report = bulk_ingest(opensearch, stack["Data"]["IndexName"], docs, bulk_docs=len(docs))
    assert report.indexed == len(docs) and report.retried == 0 and not report.failed
    sizes = [len(body["inputs"]) for body in front.take()]
    assert max(sizes) <= limit and len(sizes) >= 4 and sum(sizes) == len(docs), sizes


def test_an_over_long_document_is_truncated_not_rejected(opensearch, tei, tei_recorded):
    stack, front = tei_recorded
    text = " ".join(["the debian package manager keeps a journal of every configuration change"] * 60)
    status, answer = tei_embed(tei, ["passage: " + text], truncate=False)
    assert status == 413 and "must have less than" in answer["error"], answer  # over TEI's token limit
    report = bulk_ingest(opensearch, stack["Data"]["IndexName"], [{"id": "long-1", "text": text}])
    assert report.indexed == 1 and report.retried == 0 and not report.failed
    assert front.take() == [{"inputs": ["passage: " + text], "truncate": True}]
    _, doc = opensearch.request("GET", f"/{stack['Data']['IndexName']}/_doc/long-1")
    stored = np.array(doc["_source"]["embedding"])
    status, truncated = tei_embed(tei, ["passage: " + text], truncate=True)
    assert status == 200 and float(stored @ np.array(truncated[0])) > 0.9999


def test_a_query_prefix_reaches_tei_and_changes_the_vector(opensearch, tei, tei_recorded, dev_pairs):
    stack, front = tei_recorded
    data, query = stack["Data"], dev_pairs[3]["query"]
    _, result = opensearch.request("POST", f"/{data['IndexName']}/_search",
                                   {"size": K, "query": {"neural": {"embedding": {"query_text": query, "k": 10}}}})
    assert result["hits"]["hits"]
    assert front.take() == [{"inputs": ["query: " + query], "truncate": True}]  # as the glue's connector sends it
    as_query, as_passage = predict(opensearch, data["QueryModelId"], query), predict(opensearch, data["ModelId"], query)
    assert [body["inputs"] for body in front.take()] == [["query: " + query], ["passage: " + query]]
    status, direct = tei_embed(tei, ["query: " + query])
    assert status == 200 and float(as_query @ np.array(direct[0])) > 0.9999  # TEI embedded the prefixed text
    assert float(as_query @ as_passage) < 0.999  # and the prefix moved the vector


def test_the_front_answers_502_when_tei_behind_it_is_down(make_props):
    dead = start_front(f"http://127.0.0.1:{free_port()}", name=ENDPOINT_NAME, region=REGION, access_key=ACCESS_KEY,
                       secret_key=SECRET_KEY)
    try:
        props = make_props("e2e-fl-teidown", Flavor="tei", EndpointUrl=dead.invocations_url)
        with pytest.raises(GlueFailure) as info:
            run_custom_resource("Create", props, timeout_s=120)
    finally:
        dead.stop()
    message = str(info.value)
    assert "502" in message and "did not answer" in message and "through connector e2e-fl-teidown-" in message
