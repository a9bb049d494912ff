"""The bulk loader against the real node: vectors in as given, the default pipeline bypassed,
every line accounted for.

The index's default pipeline embeds with a model id that does not exist: a document that
went through it would fail (HTTP 500), so a clean load proves ``pipeline=_none`` works.
The cosine space rejects zero vectors, a real per-document failure the loader must
surface. S3 is botocore's Stubber in one test (the Lambda path from S3 to the node).
"""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from bulk_loader.handler import BulkLoadError, load
from opensearch_http import OpenSearchClient as OpenSearch

DIM = 16


@pytest.fixture(scope="module")
def make_index(opensearch):
    """Fresh k-NN indices whose default pipeline must never run (no _delete_by_query here:
    the integ-test distribution has no reindex module, so each test gets its own index)."""
    opensearch.request("PUT", "/_ingest/pipeline/bulk-loader-trap", {"processors": [
        {"text_embedding": {"model_id": "no-such-model", "field_map": {"text": "embedding"}}}]})
    made = []

    def make(name: str) -> str:
        opensearch.request("PUT", f"/{name}", {
            "settings": {"index.knn": True, "default_pipeline": "bulk-loader-trap", "number_of_replicas": 0},
            "mappings": {"properties": {"text": {"type": "text"}, "embedding": {
                "type": "knn_vector", "dimension": DIM, "space_type": "cosinesimil",
                "method": {"name": "hnsw", "engine": "lucene"}}}}})
        made.append(name)
        return name

    yield make
    for name in made:
        opensearch.request("DELETE", f"/{name}", ok=(404,))
    opensearch.request("DELETE", "/_ingest/pipeline/bulk-loader-trap", ok=(404,))


@pytest.fixture
def client(opensearch):
    return OpenSearch(opensearch.url, auth_mode="basic", username=opensearch.username,
                      password=opensearch.password, ca_file=opensearch.ca_file or "")


def joined_lines(ids: list[str], dev_pairs) -> tuple[list[str], np.ndarray]:
    """Transform output joined with its input, as SageMaker writes it with JoinSource=Input."""
    vectors = np.random.default_rng(3).normal(size=(len(ids), DIM)).astype(np.float32)
    lines = [json.dumps({"id": i, "text_inputs": p["text"], "SageMakerOutput": {"id": i, "embedding": v.tolist()}})
             for i, p, v in zip(ids, dev_pairs, vectors, strict=False)]
    return lines, vectors


def count(opensearch, index: str) -> int:
    opensearch.request("POST", f"/{index}/_refresh")
    return opensearch.request("GET", f"/{index}/_count")[1]["count"]


def test_vectors_are_indexed_as_given(opensearch, make_index, client, dev_pairs, tmp_path, monkeypatch):
    loader_index = make_index("bulk-loader-e2e-main")
    ids = [p["id"] for p in dev_pairs[:250]]
    lines, vectors = joined_lines(ids, dev_pairs)
    path = tmp_path / "part-0.jsonl.out"
    path.write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    monkeypatch.setenv("BULK_DOCS", "100")
    report = load({"input": path.as_uri(), "index": loader_index}, client=client)
    assert (report["documents_in"], report["documents_indexed"], report["documents_failed"]) == (250, 250, 0)
    assert report["complete"] and report["requests"] == 3 and report["retried"] == 0
    assert count(opensearch, loader_index) == 250

    doc = opensearch.request("GET", f"/{loader_index}/_doc/{ids[17]}")[1]["_source"]
    assert doc["text"] == dev_pairs[17]["text"]
    assert np.allclose(doc["embedding"], vectors[17])
    # The stored vector is the one searched: its own vector finds it first.
    hits = opensearch.request("POST", f"/{loader_index}/_search", {
        "size": 3, "_source": False,
        "query": {"knn": {"embedding": {"vector": vectors[17].tolist(), "k": 3}}}})[1]["hits"]["hits"]
    assert hits[0]["_id"] == ids[17]

    # Loading the same output again overwrites by id: still 250 documents.
    load({"input": path.as_uri(), "index": loader_index}, client=client)
    assert count(opensearch, loader_index) == 250


def test_rejected_and_unreadable_lines_are_surfaced(opensearch, make_index, client, dev_pairs, tmp_path):
    loader_index = make_index("bulk-loader-e2e-bad")
    ids = [f"bad-case-{i}" for i in range(20)]
    lines, _ = joined_lines(ids, dev_pairs)
    lines.insert(5, json.dumps({"id": "zero", "embedding": [0.0] * DIM}))  # the node refuses it (cosine)
    lines.insert(9, json.dumps({"id": "short", "embedding": [1.0] * (DIM - 1)}))
    lines.insert(12, '{"id": "broken", "embedding": [1.0,')
    path = tmp_path / "part-1.jsonl.out"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BulkLoadError) as info:
        load({"input": path.as_uri(), "index": loader_index}, client=client)
    message = str(info.value)
    assert message.startswith("3 of 23 document(s) not indexed (20 indexed): ")
    assert "zero: HTTP 400 mapper_parsing_exception" in message
    assert f"{path.as_uri()} line 10: id 'short': embedding has {DIM - 1} dimensions, the index expects {DIM}" in message
    assert f"{path.as_uri()} line 13: not valid JSON" in message
    assert count(opensearch, loader_index) == 20


def test_from_s3_through_the_lambda_path(opensearch, make_index, client, dev_pairs):
    loader_index = make_index("bulk-loader-e2e-s3")
    lines, _ = joined_lines([f"s3-{i}" for i in range(30)], dev_pairs)
    data = ("\n".join(lines) + "\n").encode()
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AK", aws_secret_access_key="SK")
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "out/in.jsonl.out"}], "IsTruncated": False},
                          {"Bucket": "bkt", "Prefix": "out/"})
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(data), len(data))},
                          {"Bucket": "bkt", "Key": "out/in.jsonl.out"})
        # The batch-embed workflow's event: the transform job's output prefix.
        report = load({"bucket": "bkt", "prefix": "out", "suffix": ".out", "index": loader_index}, client=client,
                      s3_client=s3)
    assert report["objects"] == ["s3://bkt/out/in.jsonl.out"]
    assert report["documents_in"] == report["documents_indexed"] == 30
    assert count(opensearch, loader_index) == 30


def test_an_index_without_the_vector_field_is_refused_before_writing(opensearch, make_index, client, tmp_path):
    loader_index = make_index("bulk-loader-e2e-field")
    path = tmp_path / "x.out"
    path.write_text(json.dumps({"id": "a", "embedding": [1.0] * DIM}) + "\n")
    from bulk_loader.bulk import LoadError

    with pytest.raises(LoadError, match="has no knn_vector field 'vector'"):
        load({"input": path.as_uri(), "index": loader_index, "vector_field": "vector"}, client=client)
    with pytest.raises(LoadError, match="HTTP 404"):
        load({"input": path.as_uri(), "index": "no-such-index"}, client=client)
