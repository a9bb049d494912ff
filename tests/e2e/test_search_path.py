"""The happy path on the real node: provision, ingest 500 dev documents, neural search."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from semsearch.cli import main
from semsearch.local.stack import LocalStack
from semsearch.search import search
from tests.e2e.conftest import ml_objects

K = 3


def test_outputs_and_objects(opensearch, main_stack):
    data = main_stack["Data"]
    pid = main_stack["PhysicalResourceId"]
    assert pid.startswith("e2e-main-")
    assert data["IndexName"] == "e2e-main-docs" and data["ConcreteIndexName"] == pid
    assert data["PipelineName"] == pid and data["SearchPipelineName"] == f"{pid}-search-pipeline"
    assert data["QueryModelId"] == data["ModelId"]  # all-MiniLM is symmetric: one model
    assert data["Dimension"] == "384"
    assert ml_objects(opensearch, pid) == {"connectors": 1, "model_groups": 1, "models": 1}
    _, model = opensearch.request("GET", f"/_plugins/_ml/models/{data['ModelId']}")
    assert model["model_state"] == "DEPLOYED" and model["connector_id"] == data["ConnectorId"]
    _, mapping = opensearch.request("GET", f"/{pid}/_mapping")
    vector = mapping[pid]["mappings"]["properties"]["embedding"]
    assert vector["dimension"] == 384 and vector["method"]["engine"] == "lucene"
    assert vector["method"]["space_type"] == "innerproduct"
    _, settings = opensearch.request("GET", f"/{pid}/_settings")
    assert settings[pid]["settings"]["index"]["default_pipeline"] == pid
    _, alias = opensearch.request("GET", f"/_alias/{data['IndexName']}")
    assert list(alias) == [pid]
    _, cluster = opensearch.request("GET", "/_cluster/settings?flat_settings=true")
    assert cluster["persistent"]["plugins.ml_commons.model_auto_redeploy.enable"] == "true"
    _, mapping = opensearch.request("GET", "/_plugins/_security/api/rolesmapping/ml_full_access")
    assert "arn:aws:iam::123456789012:role/e2e-glue" in mapping["ml_full_access"]["backend_roles"]


def test_ingest_embeds_every_document(opensearch, main_stack, ingested, dev_pairs):
    index = main_stack["Data"]["IndexName"]
    assert ingested.indexed == len(dev_pairs) == 500 and not ingested.failed
    assert opensearch.request("GET", f"/{index}/_count")[1]["count"] == 500
    _, doc = opensearch.request("GET", f"/{index}/_doc/{dev_pairs[0]['id']}")
    assert doc["_source"]["text"] == dev_pairs[0]["text"]
    assert len(doc["_source"]["embedding"]) == 384


def test_neural_recall_matches_brute_force(opensearch, main_stack, ingested, dev_pairs, model_dir):
    from sentence_transformers import SentenceTransformer

    data = main_stack["Data"]

    def neural(pair: dict) -> list[str]:
        return [h["id"] for h in search(opensearch, data["IndexName"], pair["query"], field="embedding",
                                        model_id=data["ModelId"], k=K)]

    # A few queries in flight at once, as users would send them; each is still one neural query.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(neural, dev_pairs))
    assert all(len(ids) == K for ids in results)
    neural_hits = sum(pair["id"] in ids for pair, ids in zip(dev_pairs, results, strict=True))

    model = SentenceTransformer(str(model_dir), device="cpu")
    docs = model.encode([p["text"] for p in dev_pairs], normalize_embeddings=True, batch_size=64)
    queries = model.encode([p["query"] for p in dev_pairs], normalize_embeddings=True, batch_size=64)
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :K]
    brute_hits = sum(i in row for i, row in enumerate(top))

    neural, brute = neural_hits / len(dev_pairs), brute_hits / len(dev_pairs)
    print(f"recall@{K}: neural {neural:.3f}, brute force {brute:.3f}")
    assert brute > 0.5  # the model does find these documents: the comparison means something
    assert abs(neural - brute) <= 0.01


def test_hybrid_search_pipeline(opensearch, main_stack, ingested, dev_pairs):
    data = main_stack["Data"]
    pair = dev_pairs[7]
    body = {"size": 5, "_source": False, "query": {"hybrid": {"queries": [
        {"match": {"text": pair["query"]}},
        {"neural": {"embedding": {"query_text": pair["query"], "model_id": data["ModelId"], "k": 5}}},
    ]}}}
    _, result = opensearch.request("POST", f"/{data['IndexName']}/_search?search_pipeline={data['SearchPipelineName']}",
                                   body)
    scores = [h["_score"] for h in result["hits"]["hits"]]
    assert scores and all(0 <= s <= 1 for s in scores)  # min-max normalized, weighted mean


@pytest.fixture
def cli_stack(monkeypatch, opensearch, main_stack, tmp_path):
    """A local-stack state file pointing `semsearch search` at the session node."""
    name = f"pytest-search-{tmp_path.name}"
    monkeypatch.setenv("SEMSEARCH_LOCAL_STACK", name)
    stack = LocalStack()
    data = main_stack["Data"]
    stack.save({"opensearch_url": opensearch.url, "ca_file": opensearch.ca_file, "index": data["IndexName"],
                "auth": {"username": opensearch.username, "password": opensearch.password},
                "model_id": data["ModelId"], "embedding_field": "embedding"})
    yield stack
    stack.down(purge=True)


def test_search_cli_json(cli_stack, ingested, dev_pairs, tmp_path, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query": p["query"]}) + "\n" for p in dev_pairs[:5]))
    assert main(["search", "--queries-file", str(queries), "-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == [p["query"] for p in dev_pairs[:5]]
    for line in lines:
        assert len(line["hits"]) == 3 and set(line["hits"][0]) == {"id", "score", "text"}
    assert sum(p["id"] in [h["id"] for h in line["hits"]] for p, line in zip(dev_pairs[:5], lines, strict=True)) >= 3


def test_search_cli_text_and_usage_errors(cli_stack, ingested, dev_pairs, capsys):
    assert main(["search", dev_pairs[0]["query"], "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(dev_pairs[0]["query"]) and len(out) == 3
    assert main(["search"]) == 2
    assert "give a QUERY or --queries-file" in capsys.readouterr().err
    assert main(["search", "x", "--queries-file", "/nonexistent"]) == 2
    assert main(["search", "--queries-file", "/nonexistent"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_search_without_a_stack_says_so(monkeypatch, capsys):
    monkeypatch.setenv("SEMSEARCH_LOCAL_STACK", "pytest-never-created")
    assert main(["search", "anything"]) == 2
    assert "semsearch local up" in capsys.readouterr().err

