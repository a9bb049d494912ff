"""Batch embedding on the real node with the real model: documents → request lines
(bulk_loader.prepare) → the local endpoint, record by record as the transform job sends them
(semsearch.local.transform, by the job's settings) → the loader, into the index of the
model version that made them.

The vectors must equal what the index's ingest pipeline writes for the same text: the same
request body and the same prefix, whichever path. The model version here is e5-like
("passage: " on passages) on all-MiniLM-L6-v2's weights, for both flavors:

- TEI: the session endpoint, which like TEI embeds inputs as given: the prefix must be in
  the request line, as the connector's pre_process puts it in the ingest request;
- custom: our handler over a model folder that declares the prefix; the request names the kind.

Each path writes ids of its own (``batch-<id>``) next to the pipeline's, so both vectors
are read back from the same index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bulk_loader.handler import load
from bulk_loader.prepare import prepare
from bulk_loader.serving import VersionMismatch
from opensearch_http import OpenSearchClient

from semsearch.local import transform
from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import REGION, run_custom_resource
from stacks.batch_transform import request_limits
from stacks.config import EndpointConfig, JobsConfig
from tests.e2e.conftest import ACCESS_KEY, ENDPOINT_NAME, SECRET_KEY, count, invocation_url, vectors

E5 = {"QueryPrefix": "query: ", "PassagePrefix": "passage: "}
DOCS = 60
CUSTOM_ENDPOINT = "pytest-e5custom"


def loader_client(opensearch) -> OpenSearchClient:
    return OpenSearchClient(opensearch.url, auth_mode="basic", username=opensearch.username or "",
                            password=opensearch.password or "", ca_file=opensearch.ca_file or "")


def batch_embed(tmp_path: Path, docs: list[dict], *, flavor: str, url: str) -> list[str]:
    """prepare → transform; the output objects the loader reads (file:// URIs)."""
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"batch-{d['id']}", "text": d["text"]}) + "\n" for d in docs))
    limits = request_limits(EndpointConfig(model_id="e5-base-v2", flavor=flavor, model_data_s3_uri="s3://b/m"),
                            JobsConfig())
    prepared = prepare({"input": source.as_uri(), "output": (tmp_path / "requests").as_uri() + "/",
                        "flavor": flavor, "prefix": E5["PassagePrefix"], **limits})
    assert prepared["documents"] == len(docs)
    report = transform.run(tmp_path / "requests", tmp_path / "output", url)
    assert report.records == prepared["requests"] == -(-len(docs) // limits["max_texts"])
    return [Path(o).as_uri() for o in report.objects]


@pytest.fixture(scope="module")
def tei_stack(opensearch, make_props, endpoint, dev_pairs) -> Iterator[dict[str, Any]]:
    props = make_props("e2e-batch-tei", Flavor="tei", **E5)
    result = run_custom_resource("Create", props)
    docs = dev_pairs[:DOCS]
    bulk_ingest(opensearch, props["IndexName"], [{"id": p["id"], "text": p["text"]} for p in docs])
    yield {"props": props, "docs": docs, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
    opensearch.request("DELETE", f"/{result['PhysicalResourceId']}", ok=(404,))  # kept by the Delete: documents


def test_tei_batch_vectors_equal_the_ingest_pipelines(opensearch, tei_stack, endpoint, tmp_path):
    alias, docs = tei_stack["props"]["IndexName"], tei_stack["docs"]
    output = batch_embed(tmp_path, docs, flavor="tei", url=invocation_url(endpoint))
    first = json.loads((tmp_path / "output" / "part-00000.jsonl.out").read_text().splitlines()[0])
    assert set(first) == {"ids", "texts", "SageMakerOutput"} and len(first["SageMakerOutput"][0]) == 384

    report = load({"input": output, "index": alias, "endpoint_name": ENDPOINT_NAME},
                  client=loader_client(opensearch))
    assert (report["documents_in"], report["documents_indexed"], report["documents_failed"]) == (DOCS, DOCS, 0)
    assert report["written_to"] == tei_stack["PhysicalResourceId"]  # the concrete index the check found
    assert count(opensearch, alias) == 2 * DOCS
    ids = [d["id"] for d in docs]
    np.testing.assert_allclose(vectors(opensearch, alias, [f"batch-{i}" for i in ids]),
                               vectors(opensearch, alias, ids), atol=1e-5)
    _, doc = opensearch.request("GET", f"/{alias}/_doc/batch-{ids[3]}")
    assert doc["_source"]["text"] == docs[3]["text"]  # the text as given, without the prefix


def test_vectors_of_another_endpoint_version_are_refused_and_nothing_is_written(opensearch, tei_stack, endpoint,
                                                                                 tmp_path):
    alias = tei_stack["props"]["IndexName"]
    output = batch_embed(tmp_path, tei_stack["docs"][:5], flavor="tei", url=invocation_url(endpoint))
    before = count(opensearch, alias)
    other = f"{ENDPOINT_NAME}-9f8e7d6c-ftmivq2c1s"  # what a promotion would serve next
    with pytest.raises(VersionMismatch) as info:
        load({"input": output, "index": alias, "endpoint_name": other}, client=loader_client(opensearch))
    assert f"embeds with model {tei_stack['Data']['ModelId']} on endpoint {ENDPOINT_NAME}, but these vectors come " \
           f"from endpoint {other}" in str(info.value)
    assert count(opensearch, alias) == before


@pytest.fixture(scope="module")
def e5_custom_endpoint(model_dir, tmp_path_factory) -> Iterator[Any]:
    """Our handler over all-MiniLM-L6-v2's files plus the manifest `semsearch package` writes
    for an e5-style entry: it adds "passage: " itself."""
    from semsearch.serve import start_server

    folder = tmp_path_factory.mktemp("e5-like-minilm")
    for entry in Path(model_dir).iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "semsearch.json").write_text(json.dumps({"query_prefix": "query: ", "passage_prefix": "passage: "}))
    handle = start_server(folder, name=CUSTOM_ENDPOINT, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


def test_custom_batch_vectors_equal_the_ingest_pipelines_and_teis(opensearch, make_props, e5_custom_endpoint,
                                                                  tei_stack, tmp_path):
    props = make_props("e2e-batch-custom", EndpointUrl=invocation_url(e5_custom_endpoint, CUSTOM_ENDPOINT), **E5)
    result = run_custom_resource("Create", props)
    try:
        alias, docs = props["IndexName"], tei_stack["docs"][:20]
        bulk_ingest(opensearch, alias, [{"id": p["id"], "text": p["text"]} for p in docs])
        output = batch_embed(tmp_path, docs, flavor="custom",
                             url=invocation_url(e5_custom_endpoint, CUSTOM_ENDPOINT))
        requests = [json.loads(line)["request"] for line in (tmp_path / "requests" / "part-00000.jsonl").open()]
        assert requests == [{"inputs": [d["text"] for d in docs], "prompt_name": "passage"}]  # the handler prefixes
        load({"input": output, "index": alias, "endpoint_name": CUSTOM_ENDPOINT},
             client=loader_client(opensearch))
        ids = [d["id"] for d in docs]
        batch = vectors(opensearch, alias, [f"batch-{i}" for i in ids])
        np.testing.assert_allclose(batch, vectors(opensearch, alias, ids), atol=1e-5)
        # The same "passage: " texts as TEI's: the same vectors.
        np.testing.assert_allclose(batch, vectors(opensearch, tei_stack["props"]["IndexName"], ids), atol=1e-5)
        # This stack's vectors do not belong in the TEI stack's index (another endpoint).
        with pytest.raises(VersionMismatch):
            load({"input": output, "index": tei_stack["props"]["IndexName"],
                  "endpoint_name": CUSTOM_ENDPOINT}, client=loader_client(opensearch))
    finally:
        run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
        opensearch.request("DELETE", f"/{result['PhysicalResourceId']}", ok=(404,))
