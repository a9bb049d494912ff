"""semsearch/bedrock.py (and lambda/endpoint_request/bedrock.py, its definitions): the requests
pass botocore's bedrock-runtime model (Stubber validates every parameter), the bodies are each
model's documented body, the answers are parsed and checked, and bad input is refused by name."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from semsearch import bedrock

TITAN = "amazon.titan-embed-text-v2:0"
COHERE_EN = "cohere.embed-english-v3"
COHERE_ML = "cohere.embed-multilingual-v3"


def _client():
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                        aws_secret_access_key="secret")


def _answer(payload: dict) -> dict:
    raw = json.dumps(payload).encode()
    return {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"}


def _expect(stubber: Stubber, model_id: str, body: dict, answer: dict) -> None:
    stubber.add_response("invoke_model", _answer(answer), {
        "modelId": model_id, "body": json.dumps(body).encode(), "contentType": "application/json",
        "accept": "application/json"})


def test_titan_one_call_per_text_with_dimension_and_normalize():
    client = _client()
    with Stubber(client) as stubber:
        for i, text in enumerate(["first", "second"]):
            _expect(stubber, TITAN, {"inputText": text, "dimensions": 256, "normalize": True},
                    {"embedding": [float(i)] * 256, "inputTextTokenCount": 1})
        vectors = bedrock.embed_texts(TITAN, ["first", "second"], input_type="search_document", dimension=256,
                                      client=client)
        stubber.assert_no_pending_responses()
    assert [v[0] for v in vectors] == [0.0, 1.0] and all(len(v) == 256 for v in vectors)


def test_titan_normalize_false_is_sent():
    body = bedrock.request_body(TITAN, ["x"], input_type="search_query", normalize=False)
    assert body == {"inputText": "x", "dimensions": 1024, "normalize": False}


@pytest.mark.parametrize("model_id", [COHERE_EN, COHERE_ML])
def test_cohere_batches_of_96_with_input_type(model_id):
    texts = [f"text {i}" for i in range(100)]
    client = _client()
    with Stubber(client) as stubber:
        for chunk in (texts[:96], texts[96:]):
            _expect(stubber, model_id, {"texts": chunk, "input_type": "search_query", "truncate": "END"},
                    {"id": "x", "response_type": "embeddings_floats", "texts": chunk,
                     "embeddings": [[0.5] * 1024 for _ in chunk]})
        vectors = bedrock.embed_texts(model_id, texts, input_type="search_query", client=client)
        stubber.assert_no_pending_responses()
    assert len(vectors) == 100 and len(vectors[0]) == 1024


def test_over_long_texts_are_clipped_to_the_documented_limit():
    body = bedrock.request_body(COHERE_EN, ["é" * 3000], input_type="search_document")
    assert body["texts"] == ["é" * 2048]
    body = bedrock.request_body(TITAN, ["a" * 60_000], input_type="search_document")
    assert len(body["inputText"]) == 50_000


def test_cohere_embeddings_by_type_answer_is_read():
    vectors = bedrock.parse_response(COHERE_EN, {"embeddings": {"float": [[1.0] * 1024]},
                                                 "response_type": "embeddings_by_type"}, count=1, dimension=1024)
    assert vectors == [[1.0] * 1024]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bedrock.embed_texts("amazon.titan-embed-text-v1", ["x"], input_type="search_query"),
     "unknown Bedrock embedding model 'amazon.titan-embed-text-v1'"),
    (lambda: bedrock.embed_texts(TITAN, ["x"], input_type="search_query", dimension=384),
     "offers dimension(s) 1024, 512, 256, not 384"),
    (lambda: bedrock.embed_texts(COHERE_EN, ["x"], input_type="search_query", dimension=512),
     "offers dimension(s) 1024, not 512"),
    (lambda: bedrock.embed_texts(COHERE_EN, ["x"], input_type="query"), "unknown input_type 'query'"),
    (lambda: bedrock.embed_texts(COHERE_EN, ["x"], input_type="search_query", normalize=True),
     "has no normalize option"),
    (lambda: bedrock.request_body(TITAN, [""], input_type="search_query"), "cannot embed an empty text"),
    (lambda: bedrock.request_body(COHERE_EN, ["x"] * 97, input_type="search_query"), "at most 96"),
])
def test_bad_input_is_refused_by_name(call, message):
    with pytest.raises(bedrock.BedrockModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_wrong_answer_shape_is_an_error():
    with pytest.raises(bedrock.BedrockModelError, match="length 3, expected 1024"):
        bedrock.parse_response(TITAN, {"embedding": [1, 2, 3]}, count=1, dimension=1024)
    with pytest.raises(bedrock.BedrockModelError, match="no list of 2"):
        bedrock.parse_response(COHERE_EN, {"embeddings": [[0.0] * 1024]}, count=2, dimension=1024)


def test_no_texts_no_call():
    assert bedrock.embed_texts(TITAN, [], input_type="search_document", client=object()) == []
