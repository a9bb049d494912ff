"""The local Bedrock stand-in (semsearch/local/bedrock.py) as botocore meets it: a signed
InvokeModel from boto3 is answered in the model's documented shape, and a bad signature, a
bad body or a model it does not serve is refused in the service's error shape (ClientError
with the error code and message). A fake 384-d embedder keeps the model out of these tests;
the e2e test drives the stand-in with the real one."""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
from bedrock_stand_in_fixture import KEY, REGION, SECRET, fake_embed, running_stand_in
from botocore.config import Config
from botocore.exceptions import ClientError

from semsearch import bedrock
from semsearch.local.bedrock import projection

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-multilingual-v3"


@pytest.fixture(scope="module")
def stand_in():
    yield from running_stand_in()


def client(stand_in, secret=SECRET):
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=stand_in.url, aws_access_key_id=KEY,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def test_titan_through_boto3_keeps_minilm_cosines(stand_in):
    texts = ["how do I mount a usb stick", "mounting removable drives", "apt pinning"]
    vectors = np.array(bedrock.embed_texts(TITAN, texts, input_type="search_document", client=client(stand_in)))
    assert vectors.shape == (3, 1024)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    source = fake_embed(texts)
    assert np.allclose(vectors @ vectors.T, source @ source.T, atol=1e-5)  # orthonormal columns
    got = stand_in.stand_in.requests[-1]
    assert got["model_id"] == TITAN and got["body"] == {"inputText": texts[-1], "dimensions": 1024, "normalize": True}


def test_titan_256_and_unnormalized(stand_in):
    (v,) = bedrock.embed_texts(TITAN, ["x" * 500], input_type="search_query", dimension=256, normalize=False,
                               client=client(stand_in))
    assert len(v) == 256 and np.linalg.norm(v) == pytest.approx(1.5, rel=1e-5)
    assert projection(256).shape == (256, 384)


def test_cohere_batches_and_answer_shape(stand_in):
    texts = [f"document {i}" for i in range(100)]
    vectors = bedrock.embed_texts(COHERE, texts, input_type="search_document", client=client(stand_in))
    assert len(vectors) == 100 and len(vectors[0]) == 1024
    bodies = [r["body"] for r in stand_in.stand_in.requests[-2:]]
    assert [len(b["texts"]) for b in bodies] == [96, 4]
    assert {b["input_type"] for b in bodies} == {"search_document"} and {b["truncate"] for b in bodies} == {"END"}


def test_cohere_embedding_types_answer(stand_in):
    answer = bedrock.invoke(client(stand_in), COHERE, {"texts": ["a"], "input_type": "search_query",
                                                       "embedding_types": ["float", "int8", "ubinary"]})
    assert answer["response_type"] == "embeddings_by_type"
    assert set(answer["embeddings"]) == {"float", "int8", "ubinary"}
    assert len(answer["embeddings"]["ubinary"][0]) == 128


def _error(call):
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"], error["Error"]["Message"]


def test_bad_signature_is_refused(stand_in):
    status, code, message = _error(lambda: bedrock.embed_texts(TITAN, ["x"], input_type="search_query",
                                                               client=client(stand_in, secret="wrong")))
    assert (status, code) == (403, "InvalidSignatureException") and "signature does not match" in message


def test_unsigned_request_is_refused(stand_in):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(stand_in.invoke_url(TITAN), data=b'{"inputText": "x"}', method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 403
    assert caught.value.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException:")
    assert json.loads(caught.value.read()) == {"message": "Missing Authentication Token"}


@pytest.mark.parametrize(("model_id", "body", "message"), [
    (TITAN, {"inputText": "x", "dimension": 256}, "extraneous key [dimension] is not permitted"),
    (TITAN, {"inputText": ""}, "#/inputText: expected minLength: 1, actual: 0"),
    (TITAN, {"inputText": "x", "dimensions": 384}, "#/dimensions: 384 is not a valid enum value"),
    (TITAN, {"inputText": "x", "normalize": "yes"}, "#/normalize: expected type: Boolean"),
    (TITAN, {"texts": ["x"]}, "extraneous key [texts]"),
    (COHERE, {"texts": ["x"]}, "required key [input_type] not found"),
    (COHERE, {"texts": ["x"] * 97, "input_type": "search_query"}, "expected maxItems: 96, actual: 97"),
    (COHERE, {"texts": ["x" * 2049], "input_type": "search_query"}, "#/texts/0: expected maxLength: 2048"),
    (COHERE, {"texts": ["x"], "input_type": "query"}, "#/input_type: 'query' is not a valid enum value"),
    (COHERE, {"texts": ["x"], "input_type": "search_query", "truncate": "LEFT"}, "#/truncate"),
    (COHERE, {"texts": ["w " * 600], "input_type": "search_query"}, "over the model's 512"),
])
def test_bad_body_is_a_validation_exception(stand_in, model_id, body, message):
    status, code, got = _error(lambda: bedrock.invoke(client(stand_in), model_id, body))
    assert (status, code) == (400, "ValidationException")
    assert message in got


def test_model_it_does_not_serve_and_bad_model_id(stand_in):
    status, code, _ = _error(lambda: bedrock.invoke(client(stand_in), "amazon.titan-embed-text-v1", {"inputText": "x"}))
    assert (status, code) == (404, "ResourceNotFoundException")
    status, code, message = _error(lambda: bedrock.invoke(client(stand_in), "no such model!", {"inputText": "x"}))
    assert (status, code) == (400, "ValidationException") and "Value 'no such model!' at 'modelId'" in message


def test_header_enums_come_from_botocore(stand_in):
    c = client(stand_in)
    status, code, message = _error(lambda: c.invoke_model(modelId=TITAN, body=b'{"inputText": "x"}',
                                                          contentType="text/plain"))
    assert (status, code) == (400, "ValidationException") and "application/json" in message
    op = stand_in.stand_in.operation
    assert op.headers["x-amzn-bedrock-trace"]["enum"] == ["ENABLED", "DISABLED", "ENABLED_FULL"]
