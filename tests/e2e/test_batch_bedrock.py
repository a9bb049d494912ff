"""Batch embedding on a stage on Amazon Bedrock, on the real node: documents → request lines
(bulk_loader.prepare, flavor bedrock) → bulk_loader.embed_bedrock through the local Bedrock
stand-in (semsearch/local/bedrock.py: SigV4 for service bedrock, botocore's InvokeModel model,
each model's documented body) → the loader, into the index whose ingest pipeline's connector
(the real ml-commons) calls the same stand-in for the same model.

Per model (Titan v2 at 512 dimensions, Cohere v3 English): the bodies the batch path sends are
those the connector sent on ingest for the same texts (same fixed fields, same clipped texts),
every batch vector equals the pipeline's for the same document, and vectors said to come from
another model, or from the same model with other parameters, are refused before any write.
The workflow's values (what Prepare, Embed and BulkLoad are given) come from
stacks.batch_transform, as the synthesized workflow's do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from bulk_loader.embed_bedrock import embed
from bulk_loader.handler import load
from bulk_loader.prepare import prepare
from bulk_loader.serving import VersionMismatch
from opensearch_http import OpenSearchClient

from semsearch.local.bedrock import StandInHandle, start_stand_in
from semsearch.local.ingest import bulk_ingest
from semsearch.local.stack import REGION, run_custom_resource
from stacks.batch_transform import OUTPUT_SUFFIX, bedrock_parameters, bedrock_requests
from stacks.config import BedrockConfig
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, count, vectors

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
DOCS = 40
# Over both models' character limits (Cohere 2,048; Titan's 50,000 is not reached): clipped alike.
LONG = 'He said "mount it" \\ then é ü → done.\n' * 120
CASES = {
    "titan": {"config": BedrockConfig(model_id=TITAN, dimension=512), "SpaceType": "innerproduct", "other": COHERE},
    "cohere": {"config": BedrockConfig(model_id=COHERE), "SpaceType": "cosinesimil", "other": TITAN},
}


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInHandle]:
    handle = start_stand_in(region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


def loader_client(opensearch) -> OpenSearchClient:
    return OpenSearchClient(opensearch.url, auth_mode="basic", username=opensearch.username or "",
                            password=opensearch.password or "", ca_file=opensearch.ca_file or "")


@pytest.fixture(scope="module", params=sorted(CASES))
def stack(request, make_props, stand_in, opensearch, dev_pairs) -> Iterator[dict[str, Any]]:
    """A Bedrock stack with DOCS dev documents and one long one ingested through its pipeline."""
    case = CASES[request.param]
    config: BedrockConfig = case["config"]
    props = make_props(f"e2e-batch-bedrock-{request.param}", Flavor="bedrock", BedrockModelId=config.model_id,
                       EndpointUrl=stand_in.invoke_url(config.model_id), Dimension=config.embedding_dimension,
                       SpaceType=case["SpaceType"], IngestBatchSize=32)
    result = run_custom_resource("Create", props)
    docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:DOCS]] + [{"id": "long", "text": LONG}]
    stand_in.stand_in.requests.clear()
    bulk_ingest(opensearch, props["IndexName"], docs)
    ingested = list(stand_in.stand_in.requests)
    yield {"case": case, "config": config, "props": props, "docs": docs, "ingested": ingested, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
    opensearch.request("DELETE", f"/{result['PhysicalResourceId']}", ok=(404,))  # kept by the Delete: documents


def batch_embed(tmp_path: Path, stand_in: StandInHandle, config: BedrockConfig, docs: list[dict]) -> list[str]:
    """prepare → embed, with what the workflow gives them; the output objects (file:// URIs)."""
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"batch-{d['id']}", "text": d["text"]}) + "\n" for d in docs))
    requests = bedrock_requests(config)
    prepared = prepare({"input": source.as_uri(), "output": (tmp_path / "requests").as_uri() + "/",
                        "flavor": "bedrock", **requests})
    assert prepared["documents"] == len(docs)
    runtime = boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=stand_in.url,
                           aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                           config=Config(retries={"total_max_attempts": 1}))
    result = embed({"input": prepared["objects"], "output": (tmp_path / "output").as_uri() + "/",
                    "suffix": OUTPUT_SUFFIX, "model_id": requests["model_id"], "dimension": requests["dimension"]},
                   client=runtime)
    assert result["complete"] and result["records"] == prepared["requests"] == -(-len(docs) // requests["max_texts"])
    return sorted(p.as_uri() for p in (tmp_path / "output").glob(f"*{OUTPUT_SUFFIX}"))


def sent(requests: list[dict[str, Any]]) -> tuple[set[str], list[str]]:
    """(the bodies' fixed fields, the texts) of what reached the stand-in."""
    fixed = {json.dumps({k: v for k, v in r["body"].items() if k not in ("texts", "inputText")}, sort_keys=True)
             for r in requests}
    texts = sorted(t for r in requests for t in (r["body"].get("texts") or [r["body"]["inputText"]]))
    return fixed, texts


def test_batch_vectors_equal_the_ingest_pipelines_with_the_connectors_body(opensearch, stack, stand_in, tmp_path):
    config, alias, docs = stack["config"], stack["props"]["IndexName"], stack["docs"]
    stand_in.stand_in.requests.clear()
    output = batch_embed(tmp_path, stand_in, config, docs)
    batch_requests = list(stand_in.stand_in.requests)
    assert {r["model_id"] for r in batch_requests} == {r["model_id"] for r in stack["ingested"]} == {config.model_id}
    # The same body as the connector's: the same fixed fields and the same (clipped) texts.
    assert sent(batch_requests) == sent(stack["ingested"])
    if config.model_id == COHERE:
        assert json.loads(next(iter(sent(batch_requests)[0]))) == {"input_type": "search_document", "truncate": "END"}
        assert LONG[:2048] in sent(batch_requests)[1] and LONG not in sent(batch_requests)[1]
    else:
        assert json.loads(next(iter(sent(batch_requests)[0]))) == {"dimensions": 512, "normalize": True}

    report = load({"input": output, "index": alias, "bedrock_model_id": config.model_id,
                   "bedrock_parameters": bedrock_parameters(config)}, client=loader_client(opensearch))
    assert (report["documents_in"], report["documents_indexed"], report["documents_failed"]) == \
        (len(docs), len(docs), 0)
    assert report["written_to"] == stack["PhysicalResourceId"]  # the concrete index the check found
    assert count(opensearch, alias) == 2 * len(docs)
    ids = [d["id"] for d in docs]
    batch = vectors(opensearch, alias, [f"batch-{i}" for i in ids])
    assert batch.shape == (len(docs), config.embedding_dimension)
    np.testing.assert_allclose(batch, vectors(opensearch, alias, ids), atol=1e-5)
    _, doc = opensearch.request("GET", f"/{alias}/_doc/batch-long")
    assert doc["_source"]["text"] == LONG  # the text as given; only what the model read was clipped


def test_vectors_of_another_model_or_vector_space_are_refused_and_nothing_is_written(opensearch, stack, stand_in,
                                                                                     tmp_path):
    config, alias = stack["config"], stack["props"]["IndexName"]
    output = batch_embed(tmp_path, stand_in, config, stack["docs"][:3])
    before = count(opensearch, alias)
    other = stack["case"]["other"]
    with pytest.raises(VersionMismatch) as info:
        load({"input": output, "index": alias, "bedrock_model_id": other,
              "bedrock_parameters": bedrock_parameters(BedrockConfig(model_id=other))},
             client=loader_client(opensearch))
    assert (f"embeds with model {stack['Data']['ModelId']} on Bedrock model {config.model_id}, but these vectors "
            f"come from Bedrock model {other}") in str(info.value)
    if config.model_id == TITAN:  # the same model asked for another dimension: another vector space
        with pytest.raises(VersionMismatch, match=r"dimensions '512' \(these vectors: 256\)"):
            load({"input": output, "index": alias, "bedrock_model_id": TITAN,
                  "bedrock_parameters": bedrock_parameters(BedrockConfig(model_id=TITAN, dimension=256))},
                 client=loader_client(opensearch))
    assert count(opensearch, alias) == before
