"""Batch embedding without a node: the request lines (bulk_loader.prepare), the loader pairing
ids, texts and vectors of the transform's output (bulk_loader.source), and the model-version
check before any write (bulk_loader.serving). tests/e2e/test_batch_embed.py runs the whole
path on the real node and the real endpoint.

S3 is botocore's Stubber (it checks each request against the service model). The version
check reads four OpenSearch answers; ``Answers`` serves their documented shapes (CONTRACT).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from bulk_loader import handler as handler_mod
from bulk_loader import prepare as prepare_mod
from bulk_loader.bulk import LoadError
from bulk_loader.prepare import PrepareError, prepare
from bulk_loader.serving import VersionMismatch, check_version
from bulk_loader.source import BadLine, Doc, parse_documents
from endpoint_request import CUSTOM_BODY, TEI_BODY, body_template, request_body
from search_glue import steps
from search_glue.properties import parse

from semsearch.local import transform
from stacks.batch_transform import DATA_PROCESSING, TEI_PAYLOAD_LIMIT, request_limits
from stacks.config import EndpointConfig, JobsConfig

E5 = {"QueryPrefix": "query: ", "PassagePrefix": "passage: "}
GLUE = {"OpenSearchUrl": "https://search.example.com", "AuthMode": "sigv4", "Region": "us-east-1",
        "Name": "semsearch-dev", "EndpointName": "semsearch-dev-cpu-1a2b3c4d", "Dimension": "768",
        "ConnectorRoleArn": "arn:aws:iam::123456789012:role/connector", "IndexName": "documents",
        "SpaceType": "innerproduct"}


def write_docs(path: Path, docs: list[dict]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path.as_uri()


def request_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for part in sorted(folder.glob("*.jsonl")) for line in part.read_text().splitlines()]


# ---------------------------------------------------------------- one body for both paths


@pytest.mark.parametrize("flavor", ["tei", "custom"])
def test_request_lines_carry_exactly_the_connectors_body(flavor):
    """The connector's request_body and pre_process (what ingest sends), rendered for these
    texts, is the request a line carries: one definition (endpoint_request) for both."""
    props = parse({**GLUE, "Flavor": flavor, **E5})
    action = steps.predict_action(props, "passage")
    assert action["request_body"] == body_template(flavor, "passage") == (TEI_BODY if flavor == "tei"
                                                                          else CUSTOM_BODY % "passage")
    texts = ['a "quoted" text', "ünïcode ✓", "back\\slash"]
    body = request_body(flavor, "passage", texts, props.passage_prefix)
    if flavor == "tei":  # TEI embeds inputs as given: the prefix is in the request (pre_process adds it)
        assert body == {"inputs": ["passage: " + t for t in texts], "truncate": True}
        assert "passage: " in action["pre_process_function"]
    else:  # our handler is told the kind and adds the model's own prefix
        assert body == {"inputs": texts, "prompt_name": "passage"}
        assert action["pre_process_function"] == steps.PRE_PROCESS


def test_limits_follow_the_endpoint_and_the_job():
    jobs = JobsConfig(transform_max_payload_mb=6)
    tei = EndpointConfig(model_id="e5-base-v2", max_client_batch_size=16)
    custom = EndpointConfig(model_id="e5-base-v2", flavor="custom", model_data_s3_uri="s3://b/m.tar.gz")
    assert request_limits(tei, jobs) == {"max_texts": 16, "max_bytes": TEI_PAYLOAD_LIMIT}
    assert request_limits(custom, jobs) == {"max_texts": 32, "max_bytes": 6 * 1024 * 1024}
    assert request_limits(tei, JobsConfig(transform_max_payload_mb=1))["max_bytes"] == 1024 * 1024


# ---------------------------------------------------------------- prepare


def test_documents_become_request_lines_of_at_most_max_texts(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_mod, "PART_LINES", 3)
    docs = [{"id": f"d{i}", "text": f"text number {i}"} for i in range(23)] + [{"id": 7, "text_inputs": "legacy"}]
    source = write_docs(tmp_path / "docs.jsonl", docs)
    result = prepare({"input": source, "output": (tmp_path / "req").as_uri() + "/", "flavor": "tei",
                      "prefix": "passage: ", "max_texts": 5, "max_bytes": 100_000})
    assert (result["documents"], result["requests"]) == (24, 5)
    assert [Path(o).name for o in result["objects"]] == ["part-00000.jsonl", "part-00001.jsonl"]
    lines = request_lines(tmp_path / "req")
    assert [len(line["ids"]) for line in lines] == [5, 5, 5, 5, 4]
    assert [i for line in lines for i in line["ids"]] == [d["id"] for d in docs]  # order kept, ids as given
    assert lines[-1]["texts"][-1] == "legacy"
    assert lines[0]["request"] == {"inputs": [f"passage: text number {i}" for i in range(5)], "truncate": True}


def test_a_line_never_exceeds_max_bytes(tmp_path):
    docs = [{"id": f"d{i}", "text": "x" * (20 + 7 * i) + ' "é" '} for i in range(40)]
    source = write_docs(tmp_path / "docs.jsonl", docs)
    max_bytes = 1500
    result = prepare({"input": source, "output": (tmp_path / "req").as_uri() + "/", "flavor": "custom",
                      "max_texts": 32, "max_bytes": max_bytes})
    raw = [line for part in sorted((tmp_path / "req").glob("*.jsonl")) for line in part.read_bytes().splitlines()]
    assert all(len(line) + 1 <= max_bytes for line in raw)
    assert result["requests"] == len(raw) > 4  # bytes, not the text count, cut these
    lines = [json.loads(line) for line in raw]
    assert [i for line in lines for i in line["ids"]] == [d["id"] for d in docs]
    assert all(line["request"] == {"inputs": line["texts"], "prompt_name": "passage"} for line in lines)


def test_lines_that_are_not_documents_fail_the_preparation_naming_each(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\nnot json\n{"text": "no id"}\n{"id": "n", "text": 3}\n'
                    + json.dumps({"id": "big", "text": "y" * 5000}) + "\n")
    with pytest.raises(PrepareError) as info:
        prepare({"input": path.as_uri(), "output": (tmp_path / "req").as_uri() + "/", "flavor": "tei",
                 "max_bytes": 2000})
    message = str(info.value)
    assert message.startswith("4 line(s) of the input are not documents that fit a request: ")
    for number, reason in ((2, "not valid JSON"), (3, "missing 'id'"), (4, "id 'n': missing 'text'"),
                           (5, "id 'big': the document is about")):
        assert f"{path.as_uri()} line {number}: {reason}" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PrepareError, match="no documents in"):
        prepare({"input": empty.as_uri(), "output": (tmp_path / "r2").as_uri() + "/", "flavor": "tei"})
    with pytest.raises(PrepareError, match="'flavor' must be one of tei, custom"):
        prepare({"input": empty.as_uri(), "output": (tmp_path / "r3").as_uri() + "/", "flavor": "onnx"})
    with pytest.raises(PrepareError, match="prefix ending in '/'"):
        prepare({"input": empty.as_uri(), "output": "s3://b/jobs/batch/x", "flavor": "tei"})


def test_from_and_to_s3_as_the_workflow_runs_it():
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AK", aws_secret_access_key="SK")
    data = b"".join(json.dumps({"id": f"s{i}", "text": f"doc {i}"}).encode() + b"\n" for i in range(3))
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "batch/input/docs.jsonl"}], "IsTruncated": False},
                          {"Bucket": "bkt", "Prefix": "batch/input/"})
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(data), len(data))},
                          {"Bucket": "bkt", "Key": "batch/input/docs.jsonl"})
        expected = (json.dumps({"ids": ["s0", "s1", "s2"], "texts": ["doc 0", "doc 1", "doc 2"],
                                "request": {"inputs": ["doc 0", "doc 1", "doc 2"], "truncate": True}}) + "\n").encode()
        stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": "jobs/batch/job-1/requests/part-00000.jsonl",
                                             "Body": expected, "ContentType": "application/jsonlines"})
        result = prepare({"input": "s3://bkt/batch/input/", "output": "s3://bkt/jobs/batch/job-1/requests/",
                          "flavor": "tei", "prefix": ""}, s3_client=s3)
    assert result == {"documents": 3, "requests": 1, "inputs": ["s3://bkt/batch/input/docs.jsonl"],
                      "objects": ["s3://bkt/jobs/batch/job-1/requests/part-00000.jsonl"]}


# ---------------------------------------------------------------- the loader pairs them


def fake_vector(text: str) -> list[float]:
    """A vector that says which text it was made from."""
    return [float(len(text)), float(sum(map(ord, text)) % 997), 1.0]


def test_prepare_transform_and_parse_pair_every_id_with_its_own_vector(tmp_path, monkeypatch):
    """prepare → the transform's record handling (semsearch.local.transform, by the job's
    settings) → the loader's parsing: every id gets the vector of its own text."""
    docs = [{"id": f"p{i}", "text": f"passage {'z' * i}"} for i in range(11)]
    prepare({"input": write_docs(tmp_path / "d.jsonl", docs), "output": (tmp_path / "req").as_uri() + "/",
             "flavor": "tei", "prefix": "passage: ", "max_texts": 4, "max_bytes": 10_000})
    seen = []

    class FakeEndpoint:
        def __init__(self, url, timeout_s):
            pass

        def invoke(self, body):
            request = json.loads(body)
            seen.append(request)
            return [fake_vector(t) for t in request["inputs"]]

        def close(self):
            pass

    monkeypatch.setattr(transform, "Endpoint", FakeEndpoint)
    report = transform.run(tmp_path / "req", tmp_path / "out", "http://127.0.0.1:9/endpoints/x/invocations")
    assert report.records == 3 and [Path(o).name for o in report.objects] == ["part-00000.jsonl.out"]
    assert all(set(r) == {"inputs", "truncate"} for r in seen)  # the InputFilter: the request alone
    out_lines = (tmp_path / "out" / "part-00000.jsonl.out").read_text().splitlines()
    assert set(json.loads(out_lines[0])) == {"ids", "texts", "SageMakerOutput"}  # the OutputFilter
    parsed = [d for n, line in enumerate(out_lines, 1) for d in parse_documents(line, f"o line {n}", 3)]
    assert [d.id for d in parsed] == [d["id"] for d in docs]
    for doc, original in zip(parsed, docs, strict=True):
        assert isinstance(doc, Doc)
        assert doc.text == original["text"]
        assert doc.vector == fake_vector("passage: " + original["text"])
    assert DATA_PROCESSING["JoinSource"] == "Input"


def test_output_lines_that_do_not_pair_fail_each_of_their_documents():
    good = {"ids": ["a", "b"], "texts": ["ta", "tb"], "SageMakerOutput": [[1.0, 2.0], [3.0, 4.0]]}
    docs = parse_documents(json.dumps(good), "o line 1", 2)
    assert docs == [Doc("a", [1.0, 2.0], "ta", "o line 1"), Doc("b", [3.0, 4.0], "tb", "o line 1")]

    short = parse_documents(json.dumps({**good, "SageMakerOutput": [[1.0, 2.0]]}), "o line 2", 2)
    assert [(e.key, str(e)) for e in short] == [(i, "o line 2: the endpoint answered 1 vectors for 2 ids")
                                                for i in ("a", "b")]
    one_bad = parse_documents(json.dumps({**good, "SageMakerOutput": [[1.0, 2.0], [3.0]]}), "o line 3", 2)
    assert isinstance(one_bad[0], Doc) and isinstance(one_bad[1], BadLine)
    assert (one_bad[1].key, str(one_bad[1])) == ("b", "o line 3: id 'b': embedding has 1 dimensions, the index "
                                                      "expects 2")
    unjoined = parse_documents(json.dumps({"ids": ["a"], "texts": ["t"], "request": {}}), "o line 4", 2)
    assert "no 'SageMakerOutput' list of vectors" in str(unjoined[0])
    bad_ids = parse_documents(json.dumps({**good, "ids": ["a", ""]}), "o line 5", 2)
    assert [e.key for e in bad_ids] == ["o line 5"]


def test_the_handler_accounts_for_every_document_of_a_line(tmp_path, monkeypatch):
    lines = [{"ids": ["a", "b", "c"], "texts": ["1", "2", "3"], "SageMakerOutput": [[1.0, 0.0], [0.0, 1.0], [1.0]]},
             {"ids": ["d"], "texts": ["4"], "SageMakerOutput": [[1.0, 1.0]]}]
    path = tmp_path / "part-00000.jsonl.out"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    written = []
    monkeypatch.setattr(handler_mod, "vector_dimension", lambda client, index, field: 2)
    monkeypatch.setattr(handler_mod.BulkWriter, "add", lambda self, doc: written.append(doc.id))
    monkeypatch.setattr(handler_mod.BulkWriter, "flush", lambda self: None)
    with pytest.raises(handler_mod.BulkLoadError) as info:
        handler_mod.load({"input": path.as_uri(), "index": "docs"}, client=None)  # type: ignore[arg-type]
    assert written == ["a", "b", "d"]
    assert str(info.value).startswith("1 of 4 document(s) not indexed (0 indexed): c: ")


# ---------------------------------------------------------------- one model version per index


class Answers:
    """CONTRACT: what OpenSearch answers the version check's four GETs, in the shapes the REST
    API documents (GET <index>/_settings/<name> keyed by concrete index; GET _ingest/pipeline/<id>
    keyed by id; ml-commons' model and connector documents). Records every request."""

    def __init__(self, *, url: str, indices: tuple[str, ...] = ("semsearch-dev-aaaaaaaaaa",)) -> None:
        self.requests: list[tuple[str, str]] = []
        self.routes = {
            "/documents/_settings/index.default_pipeline": {
                i: {"settings": {"index": {"default_pipeline": i}}} for i in indices},
            f"/_ingest/pipeline/{indices[0]}": {indices[0]: {"processors": [
                {"text_embedding": {"model_id": "m1", "field_map": {"text": "embedding"}}}]}},
            "/_plugins/_ml/models/m1": {"name": indices[0], "algorithm": "REMOTE", "connector_id": "c1",
                                        "model_state": "DEPLOYED"},
            "/_plugins/_ml/connectors/c1": {"name": indices[0], "protocol": "aws_sigv4", "actions": [
                {"action_type": "PREDICT", "method": "POST", "url": url}]},
        }

    def send(self, method, path, body=None, content_type=None):
        self.requests.append((method, path))
        if path in self.routes:
            return 200, self.routes[path]
        return 404, {"error": "not in the contract"}


SAGEMAKER_URL = "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/semsearch-dev-cpu-1a2b3c4d/invocations"


def test_the_index_of_the_same_endpoint_version_is_written_by_its_concrete_name():
    answers = Answers(url=SAGEMAKER_URL)
    assert check_version(answers, "documents", "semsearch-dev-cpu-1a2b3c4d") == "semsearch-dev-aaaaaaaaaa"
    assert all(method == "GET" for method, _ in answers.requests)


def test_another_version_is_refused_before_any_write(tmp_path, monkeypatch):
    answers = Answers(url=SAGEMAKER_URL)
    with pytest.raises(VersionMismatch) as info:
        check_version(answers, "documents", "semsearch-dev-cpu-9f8e7d6c-ftmivq2c1s")
    assert ("index semsearch-dev-aaaaaaaaaa (behind 'documents') embeds with model m1 on endpoint "
            "semsearch-dev-cpu-1a2b3c4d, but these vectors come from endpoint semsearch-dev-cpu-9f8e7d6c-ftmivq2c1s"
            in str(info.value))
    assert "Nothing was written" in str(info.value)

    path = tmp_path / "o.out"
    path.write_text(json.dumps({"ids": ["a"], "texts": ["t"], "SageMakerOutput": [[1.0, 0.0]]}) + "\n")
    monkeypatch.setattr(handler_mod, "vector_dimension", lambda client, index, field: 2)
    with pytest.raises(VersionMismatch):
        handler_mod.load({"input": path.as_uri(), "index": "documents", "endpoint_name": "semsearch-dev-cpu-other"},
                         client=answers)  # type: ignore[arg-type]
    assert {method for method, _ in answers.requests} == {"GET"}  # no _bulk went out


def test_an_alias_on_two_indices_or_a_connector_elsewhere_is_refused():
    with pytest.raises(LoadError, match="stands for 2 indices"):
        check_version(Answers(url=SAGEMAKER_URL, indices=("a-1", "a-2")), "documents", "x")
    with pytest.raises(VersionMismatch, match="not a SageMaker endpoint's invocation URL"):
        check_version(Answers(url="https://api.openai.com/v1/embeddings"), "documents", "x")
    with pytest.raises(LoadError, match="'endpoint_name' must be"):
        handler_mod.load({"input": "s3://b/k", "index": "documents", "endpoint_name": ""},
                         client=Answers(url=SAGEMAKER_URL))  # type: ignore[arg-type]
