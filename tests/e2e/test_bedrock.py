"""Bedrock as the embedding provider, through the real ml-commons on the real node: the glue
registers the Bedrock connector (Flavor bedrock), and ingest and neural search call the local
stand-in for the Bedrock runtime (semsearch/local/bedrock.py: SigV4 for service bedrock,
botocore's InvokeModel model, each model's documented body; vectors from the real MiniLM).

Per model: what reaches the stand-in is that model's body (Titan v2: one inputText a call,
dimensions, normalize; Cohere v3: texts, input_type search_document on ingest and
search_query on queries, truncate END), over-long texts arrive clipped to the documented
limit by the connector's script, and every stored vector equals what semsearch.bedrock's
client gets for the same text (one definition, two callers). Neural queries without a model
id are embedded by the index's query model and find what brute force over the same vectors
finds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest

from semsearch import bedrock
from semsearch.local.bedrock import StandInHandle, start_stand_in
from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import REGION, run_custom_resource
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, ml_objects

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
DOCS = 60
K = 3
# Quotes, a backslash, non-ASCII and a newline: the connector's script clips JSON-escaped text.
LONG = 'He said "mount it" \\ then é ü → done.\n' * 120


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInHandle]:
    handle = start_stand_in(region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(stand_in):
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=stand_in.url,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


CASES = {
    "titan": {"model": TITAN, "Dimension": 512, "SpaceType": "innerproduct"},
    "cohere": {"model": COHERE, "Dimension": 1024, "SpaceType": "cosinesimil"},
}


@pytest.fixture(scope="module", params=sorted(CASES))
def stack(request, make_props, stand_in, opensearch, dev_pairs) -> Iterator[dict[str, Any]]:
    """A Bedrock stack, the first DOCS dev documents and one long one ingested; what the stand-in got."""
    case = CASES[request.param]
    name = f"e2e-bedrock-{request.param}"
    props = make_props(name, Flavor="bedrock", BedrockModelId=case["model"], EndpointUrl=stand_in.invoke_url(
        case["model"]), Dimension=case["Dimension"], SpaceType=case["SpaceType"], IngestBatchSize=32)
    stand_in.stand_in.requests.clear()  # the previous case's last test leaves its queries here
    result = run_custom_resource("Create", props)
    smoke = list(stand_in.stand_in.requests)
    stand_in.stand_in.requests.clear()
    docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:DOCS]] + [{"id": "long", "text": LONG}]
    bulk_ingest(opensearch, result["Data"]["IndexName"], docs)
    ingested = list(stand_in.stand_in.requests)
    stand_in.stand_in.requests.clear()
    yield {"case": case, "props": props, "docs": docs, "smoke": smoke, "ingested": ingested, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


def _texts(requests: list[dict[str, Any]]) -> list[str]:
    return [t for r in requests for t in (r["body"].get("texts") or [r["body"].get("inputText")])]


def test_connector_and_models(opensearch, stack):
    model_id, data, pid = stack["case"]["model"], stack["Data"], stack["PhysicalResourceId"]
    cohere = model_id == COHERE
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    assert ml_objects(opensearch, f"{pid}-query")["models"] == (1 if cohere else 0)
    assert (data["QueryModelId"] != data["ModelId"]) is cohere
    _, found = opensearch.request("POST", "/_plugins/_ml/connectors/_search",
                                  {"query": {"term": {"name.keyword": pid}}})
    connector = found["hits"]["hits"][0]["_source"]
    assert connector["protocol"] == "aws_sigv4"
    assert connector["parameters"]["service_name"] == "bedrock" and connector["parameters"]["model"] == model_id
    # The smoke test went through _predict with the template's own parameter.
    assert [r["model_id"] for r in stack["smoke"]] and {r["model_id"] for r in stack["smoke"]} == {model_id}


def test_ingest_sends_the_models_documented_body(stack):
    model_id, dimension = stack["case"]["model"], stack["case"]["Dimension"]
    requests = stack["ingested"]
    assert {r["model_id"] for r in requests} == {model_id}
    if model_id == TITAN:
        assert all(set(r["body"]) == {"inputText", "dimensions", "normalize"} for r in requests)
        assert {(r["body"]["dimensions"], r["body"]["normalize"]) for r in requests} == {(dimension, True)}
    else:
        assert all(set(r["body"]) == {"texts", "input_type", "truncate"} for r in requests)
        assert {(r["body"]["input_type"], r["body"]["truncate"]) for r in requests} == {("search_document", "END")}
        assert max(len(r["body"]["texts"]) for r in requests) <= 32  # IngestBatchSize, under Cohere's 96
    # Every document reached the model (a retried bulk item may come twice), the long one clipped.
    limit = bedrock.model(model_id).max_chars
    expected = {d["text"][:limit] for d in stack["docs"]}
    assert set(_texts(requests)) == expected
    if model_id == COHERE:
        assert LONG[:2048] in _texts(requests) and len(LONG) > 2048


def test_stored_vectors_equal_the_clients(opensearch, stack, client):
    model_id, dimension = stack["case"]["model"], stack["case"]["Dimension"]
    index = stack["Data"]["IndexName"]
    docs = stack["docs"][:5] + [stack["docs"][-1]]
    expected = bedrock.embed_texts(model_id, [d["text"] for d in docs], input_type="search_document",
                                   dimension=dimension, client=client)
    for doc, vector in zip(docs, expected, strict=True):
        _, got = opensearch.request("GET", f"/{index}/_doc/{doc['id']}")
        assert np.allclose(got["_source"]["embedding"], vector, atol=1e-5), doc["id"]


def test_neural_query_uses_the_query_side_and_finds_what_brute_force_finds(opensearch, stack, stand_in, client,
                                                                          dev_pairs):
    model_id, dimension = stack["case"]["model"], stack["case"]["Dimension"]
    index = stack["Data"]["IndexName"]
    pairs = dev_pairs[:20]
    stand_in.stand_in.requests.clear()
    hits = []
    for pair in pairs:
        _, result = opensearch.request("POST", f"/{index}/_search", {
            "size": K, "_source": False, "query": {"neural": {"embedding": {"query_text": pair["query"], "k": 10}}}})
        hits.append([h["_id"] for h in result["hits"]["hits"]])
    requests = list(stand_in.stand_in.requests)
    assert _texts(requests) == [p["query"] for p in pairs]
    if model_id == COHERE:
        assert {r["body"]["input_type"] for r in requests} == {"search_query"}
    # Brute force over the same vectors, from the client.
    docs = stack["docs"]
    doc_vectors = np.array(bedrock.embed_texts(model_id, [d["text"] for d in docs], input_type="search_document",
                                               dimension=dimension, client=client))
    query_vectors = np.array(bedrock.embed_texts(model_id, [p["query"] for p in pairs], input_type="search_query",
                                                 dimension=dimension, client=client))
    if stack["case"]["SpaceType"] == "cosinesimil":
        doc_vectors /= np.linalg.norm(doc_vectors, axis=1, keepdims=True)
    best = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :K]
    brute = [p["id"] in {docs[i]["id"] for i in row} for p, row in zip(pairs, best, strict=True)]
    neural = [p["id"] in got for p, got in zip(pairs, hits, strict=True)]
    print(f"\n{model_id}: recall@{K} on {len(pairs)} queries over {len(docs)} docs: neural {np.mean(neural):.2f}, "
          f"brute force {np.mean(brute):.2f}")
    assert abs(np.mean(neural) - np.mean(brute)) <= 0.05
    assert np.mean(neural) >= 0.5
