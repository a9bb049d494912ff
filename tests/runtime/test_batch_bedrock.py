"""Batch embedding on a stage on Amazon Bedrock, without a node: request lines carry the
connector's InvokeModel body (bulk_loader.prepare, flavor bedrock), bulk_loader.embed_bedrock
sends them to the local Bedrock stand-in (SigV4, botocore's InvokeModel model, each model's
documented body) and writes the transform's output shape, which the loader pairs unchanged;
throttled calls are retried (botocore's Stubber); the loader's check accepts only an index
whose connector invokes the same model with the same parameters. tests/e2e/test_batch_bedrock.py
runs the whole path on the real node through the real ml-commons.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from bedrock_stand_in_fixture import KEY, REGION, SECRET, running_stand_in
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber
from bulk_loader import handler as handler_mod
from bulk_loader import prepare as prepare_mod
from bulk_loader.embed_bedrock import EmbedError, embed
from bulk_loader.prepare import PrepareError, prepare
from bulk_loader.serving import VersionMismatch, check_bedrock_model
from bulk_loader.source import Doc, parse_documents
from endpoint_request import bedrock
from search_glue import steps
from search_glue.properties import parse

from semsearch.bedrock import embed_texts

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
GLUE = {"OpenSearchUrl": "https://search.example.com", "Region": REGION, "Name": "semsearch-dev",
        "Flavor": "bedrock", "ConnectorRoleArn": "arn:aws:iam::123456789012:role/connector", "IndexName": "documents"}
TITAN_PARAMETERS = {"dimensions": 512, "normalize": True}


@pytest.fixture(scope="module")
def stand_in():
    yield from running_stand_in()


def runtime(stand_in):
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=stand_in.url, aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, config=Config(retries={"total_max_attempts": 1}))


def write_docs(path: Path, docs: list[dict]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path.as_uri()


def request_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for part in sorted(folder.glob("*.jsonl")) for line in part.read_text().splitlines()]


def prepare_bedrock(tmp_path: Path, docs: list[dict], model_id: str, **extra) -> dict:
    spec = bedrock.model(model_id)
    return prepare({"input": write_docs(tmp_path / "docs.jsonl", docs), "output": (tmp_path / "req").as_uri() + "/",
                    "flavor": "bedrock", "model_id": model_id, "max_texts": spec.max_texts,
                    "max_bytes": 6 * 1024 * 1024, **extra})


# 75,000 characters (over both models' limits) in 1,500 words (under Titan's 8,192 tokens).
LONG = ('a"ünïcode\\' + "z" * 39 + " ") * 1500


# ---------------------------------------------------------------- prepare: the connector's body


def test_titan_lines_are_one_text_each_with_the_connectors_body(tmp_path):
    docs = [{"id": "a", "text": "first passage"}, {"id": 7, "text": LONG}, {"id": "c", "text": "third"}]
    result = prepare_bedrock(tmp_path, docs, TITAN, dimension=512, normalize=True)
    assert (result["documents"], result["requests"]) == (3, 3)
    lines = request_lines(tmp_path / "req")
    assert [line["ids"] for line in lines] == [["a"], [7], ["c"]]
    assert lines[1]["texts"] == [LONG]  # the loader stores the text as given
    # The request is what the connector's template renders for the (clipped) text.
    props = parse({**GLUE, "BedrockModelId": TITAN, "Dimension": "512", "SpaceType": "innerproduct"})
    connector = steps.connector_body(props, "semsearch-dev-x")
    for line, doc in zip(lines, docs, strict=True):
        clipped = doc["text"][:bedrock.model(TITAN).max_chars]
        assert line["request"] == bedrock.render(connector["actions"][0]["request_body"],
                                                 {**connector["parameters"], "inputText": clipped})
    assert lines[1]["request"] == {"inputText": LONG[:50_000], "dimensions": 512, "normalize": True}


def test_cohere_lines_hold_up_to_96_passages_as_search_document(tmp_path):
    docs = [{"id": f"d{i}", "text": f"passage {i}"} for i in range(100)] + [{"id": "long", "text": LONG}]
    result = prepare_bedrock(tmp_path, docs, COHERE)
    assert (result["documents"], result["requests"]) == (101, 2)
    lines = request_lines(tmp_path / "req")
    assert [len(line["ids"]) for line in lines] == [96, 5]
    props = parse({**GLUE, "BedrockModelId": COHERE, "Dimension": "1024", "SpaceType": "cosinesimil"})
    connector = steps.connector_body(props, "semsearch-dev-x", "passage")
    for line in lines:
        clipped = [t[:2048] for t in line["texts"]]
        assert line["request"] == bedrock.render(connector["actions"][0]["request_body"],
                                                 {**connector["parameters"], "texts": clipped})
        assert (line["request"]["input_type"], line["request"]["truncate"]) == ("search_document", "END")
    assert lines[1]["request"]["texts"][-1] == LONG[:2048]


def test_what_the_model_refuses_is_named_before_any_call(tmp_path):
    with pytest.raises(PrepareError, match=r"docs.jsonl line 2: id 'e': amazon.titan-embed-text-v2:0 cannot embed "
                                           "an empty text"):
        prepare_bedrock(tmp_path, [{"id": "a", "text": "x"}, {"id": "e", "text": ""}], TITAN)
    with pytest.raises(PrepareError, match="'max_texts' 2: amazon.titan-embed-text-v2:0 takes at most 1"):
        prepare({"input": write_docs(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}]), "flavor": "bedrock",
                 "output": (tmp_path / "r").as_uri() + "/", "model_id": TITAN, "max_texts": 2})
    with pytest.raises(PrepareError, match="offers dimension.s. 1024, 512, 256, not 384"):
        prepare_bedrock(tmp_path, [{"id": "a", "text": "x"}], TITAN, dimension=384)
    with pytest.raises(PrepareError, match="unknown Bedrock embedding model 'amazon.titan-embed-text-v1'"):
        prepare({"input": write_docs(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}]), "flavor": "bedrock",
                 "output": (tmp_path / "r").as_uri() + "/", "model_id": "amazon.titan-embed-text-v1"})
    with pytest.raises(PrepareError, match="cohere.embed-english-v3 has no normalize option"):
        prepare_bedrock(tmp_path, [{"id": "a", "text": "x"}], COHERE, normalize=True)


# ---------------------------------------------------------------- embed: the stand-in


@pytest.mark.parametrize(("model_id", "dimension"), [(TITAN, 512), (COHERE, 1024)])
def test_embedded_lines_are_the_transforms_shape_with_the_clients_vectors(stand_in, tmp_path, model_id, dimension,
                                                                          monkeypatch):
    monkeypatch.setattr(prepare_mod, "PART_LINES", 3)  # several objects
    docs = [{"id": f"p{i}", "text": f"passage number {i} {'z' * i}"} for i in range(8)] + [{"id": "L", "text": LONG}]
    extra = {"dimension": dimension, "normalize": True} if model_id == TITAN else {}
    prepared = prepare_bedrock(tmp_path, docs, model_id, **extra)
    stand_in.stand_in.requests.clear()
    result = embed({"input": prepared["objects"], "output": (tmp_path / "out").as_uri() + "/", "suffix": ".out",
                    "model_id": model_id, "dimension": dimension}, client=runtime(stand_in))
    assert result["complete"] and result["next"] is None
    assert (result["records"], result["retried"]) == (prepared["requests"], 0)
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [Path(o).name + ".out" for o in prepared["objects"]]
    # What reached the model is each line's request, nothing else.
    sent = sorted(json.dumps(r["body"], sort_keys=True) for r in stand_in.stand_in.requests)
    assert sent == sorted(json.dumps(line["request"], sort_keys=True) for line in request_lines(tmp_path / "req"))
    out_lines = [line for p in outputs for line in p.read_text().splitlines()]
    assert all(set(json.loads(line)) == {"ids", "texts", "SageMakerOutput"} for line in out_lines)
    parsed = [d for n, line in enumerate(out_lines, 1) for d in parse_documents(line, f"o line {n}", dimension)]
    assert all(isinstance(d, Doc) for d in parsed) and [d.id for d in parsed] == [d["id"] for d in docs]
    expected = embed_texts(model_id, [d["text"] for d in docs], input_type="search_document", dimension=dimension,
                           client=runtime(stand_in))
    np.testing.assert_allclose([d.vector for d in parsed if isinstance(d, Doc)], expected, atol=1e-6)
    assert [d.text for d in parsed if isinstance(d, Doc)] == [d["text"] for d in docs]


def test_out_of_time_returns_where_to_go_on_and_a_second_run_completes(stand_in, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_mod, "PART_LINES", 2)
    docs = [{"id": f"p{i}", "text": f"text {i}"} for i in range(6)]
    prepared = prepare_bedrock(tmp_path, docs, TITAN, dimension=256)
    event = {"input": prepared["objects"], "output": (tmp_path / "out").as_uri() + "/", "model_id": TITAN,
             "dimension": 256}
    clock = iter([900_000, 900_000, 1_000])  # time for one object's two calls, then none
    monkeypatch.setenv("CONCURRENCY", "1")
    first = embed(event, client=runtime(stand_in), remaining_ms=lambda: next(clock, 1_000))
    assert (first["complete"], first["next"], first["embedded"]) == (False, 1, 1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.jsonl.out"]
    second = embed({**event, "start_at": first["next"]}, client=runtime(stand_in), remaining_ms=lambda: 900_000)
    assert (second["complete"], second["embedded"]) == (True, 2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"part-0000{i}.jsonl.out" for i in range(3)]
    with pytest.raises(EmbedError, match="not embedded within one invocation"):
        embed({**event, "start_at": 0}, client=runtime(stand_in), remaining_ms=lambda: 1_000)


def _answer(payload: dict) -> dict:
    raw = json.dumps(payload).encode()
    return {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"}


def test_throttled_calls_are_retried_with_backoff_and_other_errors_fail_naming_the_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCURRENCY", "1")
    prepared = prepare_bedrock(tmp_path, [{"id": "a", "text": "alpha"}], TITAN, dimension=256)
    body = request_lines(tmp_path / "req")[0]["request"]
    expected_params = {"modelId": TITAN, "body": json.dumps(body).encode(), "contentType": "application/json",
                       "accept": "application/json"}
    client = boto3.client("bedrock-runtime", region_name=REGION, aws_access_key_id="AK", aws_secret_access_key="SK")
    event = {"input": prepared["objects"], "output": (tmp_path / "out").as_uri() + "/", "model_id": TITAN,
             "dimension": 256}
    slept: list[float] = []
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("invoke_model", "ThrottlingException", "Too many requests, please wait",
                                  http_status_code=429, expected_params=expected_params)
        stub.add_response("invoke_model", _answer({"embedding": [0.5] * 256, "inputTextTokenCount": 1}),
                          expected_params)
        result = embed(event, client=client, sleep=slept.append)
        stub.assert_no_pending_responses()
    assert (result["records"], result["retried"], result["complete"]) == (1, 2, True)
    assert len(slept) == 2 and 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0  # full jitter under 0.5 * 2^n
    with Stubber(client) as stub:
        stub.add_client_error("invoke_model", "ValidationException", "Malformed input request",
                              http_status_code=400, expected_params=expected_params)
        with pytest.raises(EmbedError, match=r"part-00000.jsonl line 1: InvokeModel amazon.titan-embed-text-v2:0: "
                                             "ValidationException: Malformed input request"):
            embed(event, client=client, sleep=slept.append)
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_client_error("invoke_model", "ThrottlingException", "slow down", http_status_code=429,
                                  expected_params=expected_params)
        with pytest.raises(EmbedError, match="after 3 attempts: ThrottlingException: slow down"):
            embed(event, client=client, sleep=slept.append)
    with Stubber(client) as stub:  # an answer of another dimension is not written
        stub.add_response("invoke_model", _answer({"embedding": [0.5] * 512, "inputTextTokenCount": 1}),
                          expected_params)
        with pytest.raises(EmbedError, match="answered an embedding of length 512, expected 256"):
            embed({**event, "output": (tmp_path / "out2").as_uri() + "/"}, client=client)
    assert not (tmp_path / "out2").exists()


def test_bad_events_are_named(tmp_path):
    base = {"input": "s3://b/jobs/batch/j/requests/", "output": "s3://b/jobs/batch/j/output/", "model_id": TITAN,
            "dimension": 512}
    for event, message in [({**base, "dimension": 384}, "offers dimension"),
                           ({**base, "model_id": ""}, "'model_id' missing"),
                           ({**base, "output": "s3://b/out"}, "prefix ending in '/'"),
                           ({**base, "start_at": -1}, "'start_at' must be")]:
        with pytest.raises(EmbedError, match=message):
            embed(event, client=object())


# ---------------------------------------------------------------- the loader's check


class Answers:
    """What OpenSearch answers the check's four GETs (the shapes of test_batch_requests.Answers),
    for an index whose connector the glue made for a Bedrock model (parameters as strings, as
    ml-commons keeps them)."""

    def __init__(self, url: str, parameters: dict[str, str]) -> None:
        self.requests: list[tuple[str, str]] = []
        self.routes = {
            "/documents/_settings/index.default_pipeline": {
                "semsearch-dev-aaaaaaaaaa": {"settings": {"index": {"default_pipeline": "p1"}}}},
            "/_ingest/pipeline/p1": {"p1": {"processors": [{"text_embedding": {"model_id": "m1"}}]}},
            "/_plugins/_ml/models/m1": {"name": "n", "algorithm": "REMOTE", "connector_id": "c1"},
            "/_plugins/_ml/connectors/c1": {"name": "n", "protocol": "aws_sigv4", "parameters": parameters,
                                            "actions": [{"action_type": "PREDICT", "method": "POST", "url": url}]},
        }

    def send(self, method, path, body=None, content_type=None):
        self.requests.append((method, path))
        return (200, self.routes[path]) if path in self.routes else (404, {"error": "not in the contract"})


TITAN_URL = bedrock.invoke_url(TITAN, REGION)
STORED = {"region": REGION, "service_name": "bedrock", "model": TITAN, "dimensions": "512", "normalize": "true"}


def test_the_same_bedrock_model_and_parameters_are_accepted():
    answers = Answers(TITAN_URL, STORED)
    assert check_bedrock_model(answers, "documents", TITAN, TITAN_PARAMETERS) == "semsearch-dev-aaaaaaaaaa"
    assert {m for m, _ in answers.requests} == {"GET"}
    cohere = Answers(bedrock.invoke_url(COHERE, REGION), {"input_type": "search_document", "truncate": "END"})
    assert check_bedrock_model(cohere, "documents", COHERE, {"input_type": "search_document", "truncate": "END"})


@pytest.mark.parametrize(("url", "model_id", "parameters", "message"), [
    (TITAN_URL, COHERE, {}, "embeds with model m1 on Bedrock model amazon.titan-embed-text-v2:0, but these vectors "
                            "come from Bedrock model cohere.embed-english-v3"),
    (TITAN_URL, TITAN, {"dimensions": 256, "normalize": True}, "with dimensions '512' (these vectors: 256)"),
    (TITAN_URL, TITAN, {"dimensions": 512, "normalize": False}, "normalize 'true' (these vectors: False)"),
    ("https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/semsearch-dev-cpu-1a2b3c4d/invocations", TITAN,
     TITAN_PARAMETERS, "not a Bedrock model, but these vectors come from Bedrock model amazon.titan-embed-text-v2:0"),
])
def test_another_model_or_vector_space_is_refused_and_nothing_is_written(tmp_path, monkeypatch, url, model_id,
                                                                         parameters, message):
    answers = Answers(url, STORED)
    path = tmp_path / "part-00000.jsonl.out"
    path.write_text(json.dumps({"ids": ["a"], "texts": ["t"], "SageMakerOutput": [[1.0, 0.0]]}) + "\n")
    monkeypatch.setattr(handler_mod, "vector_dimension", lambda client, index, field: 2)
    with pytest.raises(VersionMismatch) as info:
        handler_mod.load({"input": path.as_uri(), "index": "documents", "bedrock_model_id": model_id,
                          "bedrock_parameters": parameters}, client=answers)  # type: ignore[arg-type]
    assert message in str(info.value) and "Nothing was written" in str(info.value)
    assert {m for m, _ in answers.requests} == {"GET"}  # no _bulk went out


def test_the_loader_takes_one_source_of_vectors():
    with pytest.raises(handler_mod.LoadError, match="not both"):
        handler_mod.load({"input": "s3://b/k", "index": "documents", "endpoint_name": "e", "bedrock_model_id": TITAN},
                         client=Answers(TITAN_URL, STORED))  # type: ignore[arg-type]
    with pytest.raises(handler_mod.LoadError, match="'bedrock_parameters' must be an object"):
        handler_mod.load({"input": "s3://b/k", "index": "documents", "bedrock_model_id": TITAN,
                          "bedrock_parameters": "512"}, client=Answers(TITAN_URL, STORED))  # type: ignore[arg-type]
