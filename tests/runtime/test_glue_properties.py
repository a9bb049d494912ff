"""search_glue without a node: property validation, physical ids, request shapes, signing.

The handler calls here either fail validation before any request, or touch no network
(Delete of an id that is not ours); nothing is mocked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lambda"))

from search_glue import handler, steps  # noqa: E402
from search_glue.client import OpenSearch  # noqa: E402
from search_glue.properties import PropertyError, parse  # noqa: E402

# As CloudFormation delivers them: every value a string. 127.0.0.1:9 is the discard port:
# nothing answers there, so a test that reached the network would fail loudly.
AWS = {
    "OpenSearchUrl": "https://search-demo-abc.us-east-1.es.amazonaws.com",
    "Region": "us-east-1",
    "Name": "semsearch-dev",
    "Flavor": "tei",
    "EndpointName": "semsearch-dev-minilm",
    "Dimension": "384",
    "ConnectorRoleArn": "arn:aws:iam::123456789012:role/semsearch-connector",
    "IndexName": "documents",
    "SpaceType": "innerproduct",
    "KnnEngine": "faiss",
    "EndpointInstanceCount": "2",
    "HybridSearch": "true",
    "RoleMappings": json.dumps({"ml_full_access": ["arn:aws:iam::123456789012:role/glue"]}),
}
LOCAL = {
    "OpenSearchUrl": "http://127.0.0.1:9",
    "AuthMode": "none",
    "Region": "us-east-1",
    "Name": "local",
    "Flavor": "custom",
    "EndpointUrl": "http://127.0.0.1:9/endpoints/local/invocations",
    "Dimension": "384",
    "ConnectorAccessKey": "AK",
    "ConnectorSecretKey": "SK",
    "IndexName": "documents",
    "SpaceType": "innerproduct",
}


def problems(raw: dict) -> list[str]:
    with pytest.raises(PropertyError) as info:
        parse(raw)
    return info.value.problems


def test_strings_are_coerced_to_their_types():
    props = parse(AWS)
    assert props.dimension == 384
    assert props.endpoint_instance_count == 2
    assert props.hybrid_search is True
    assert props.role_mappings == {"ml_full_access": ["arn:aws:iam::123456789012:role/glue"]}
    assert props.auth_mode == "sigv4"  # the default
    assert props.knn_engine == "faiss"
    assert props.number_of_replicas == 1 and props.read_timeout_s == 30


def test_native_types_are_accepted_too():
    native = {**AWS, "Dimension": 384, "EndpointInstanceCount": 2, "HybridSearch": True,
              "RoleMappings": {"ml_full_access": ["arn:aws:iam::123456789012:role/glue"]}}
    assert parse(native) == parse(AWS)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("Dimension", "abc", "Dimension: expected an integer, got 'abc'"),
    ("Dimension", "0", "Dimension: 0 is out of range"),
    ("Dimension", "", "Dimension: required"),
    ("Flavor", "onnx", "Flavor: bad value 'onnx'; allowed: tei, custom"),
    ("ReadTimeoutSeconds", "60", "ReadTimeoutSeconds: 60 is out of range [1, 59]"),
    ("HybridSearch", "yes", "HybridSearch: expected true or false, got 'yes'"),
    ("RoleMappings", "{not json", "RoleMappings: not valid JSON"),
    ("RoleMappings", '{"all_access": "arn"}', "RoleMappings.all_access: expected a list"),
    ("RoleMappings", "[1]", "RoleMappings: expected a JSON object, got list"),
    ("Name", "Semsearch_Dev", "Name: bad value 'Semsearch_Dev'"),
    ("OpenSearchUrl", "https://domain/some/path", "OpenSearchUrl: bad value"),
    ("OpenSearchUrl", "http://domain", "OpenSearchUrl: SigV4 (AuthMode sigv4) needs an https://"),
    ("SpaceType", "hamming", "SpaceType: bad value 'hamming'"),
    ("AuthMode", "iam", "AuthMode: bad value 'iam'; allowed: sigv4, basic, none"),
    ("Region", "useast1", "Region: bad value 'useast1'"),
    ("ConnectorRoleArn", "my-role", "ConnectorRoleArn: bad value 'my-role'"),
    ("Dimension", ["384"], "Dimension: expected an integer, got list"),
])
def test_each_bad_field_is_named(field, value, expected):
    found = problems({**AWS, field: value})
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems({"OpenSearchUrl": "https://d", "Dimension": "x", "Flavor": "y"})
    names = {p.split(":")[0].split(".")[0] for p in found}
    assert {"Region", "Name", "Flavor", "EndpointName", "Dimension", "ConnectorRoleArn", "IndexName",
            "SpaceType"} <= names


def test_misspelt_property_is_named_and_cloudformation_keys_pass():
    assert problems({**AWS, "Dimensoin": "384"}) == ["Dimensoin: unknown property"]
    assert parse({**AWS, "ServiceToken": "arn:aws:lambda:...", "ServiceTimeout": "1200"}) == parse(AWS)


def test_not_an_object():
    assert problems("Dimension=384") == ["ResourceProperties: expected an object, got str"]  # type: ignore[arg-type]


def test_self_managed_node_refuses_native_engines():
    for engine in ("faiss", "nmslib"):
        found = problems({**LOCAL, "KnnEngine": engine})
        assert any(f"KnnEngine: '{engine}' needs the k-NN native libraries" in p for p in found)
    assert parse({**LOCAL, "KnnEngine": "lucene"}).knn_engine == "lucene"


def test_connector_credentials_one_kind_only():
    assert any("not both" in p for p in problems({**AWS, "ConnectorAccessKey": "a", "ConnectorSecretKey": "b"}))
    no_creds = {k: v for k, v in AWS.items() if k != "ConnectorRoleArn"}
    assert any(p.startswith("ConnectorRoleArn: required") for p in problems(no_creds))
    assert any(p.startswith("Username: required") for p in problems({**LOCAL, "AuthMode": "basic"}))


def test_physical_id_is_deterministic_and_tracks_what_defines_the_objects():
    base = parse(AWS).physical_id
    assert base.startswith("semsearch-dev-") and len(base) == len("semsearch-dev-") + 10
    # Updated in place: same id.
    for field, value in [("EndpointInstanceCount", "4"), ("MaxRetryTimes", "5"), ("ReadTimeoutSeconds", "20"),
                         ("NumberOfReplicas", "2"), ("HybridSearch", "false"), ("RoleMappings", "{}"),
                         ("ConnectorRoleArn", "arn:aws:iam::123456789012:role/other"), ("IngestBatchSize", "8")]:
        assert parse({**AWS, field: value}).physical_id == base, field
    # New objects: new id.
    for field, value in [("Dimension", "768"), ("EndpointName", "other-endpoint"), ("SpaceType", "l2"),
                         ("IndexName", "docs2"), ("Flavor", "custom"), ("HnswM", "32")]:
        assert parse({**AWS, field: value}).physical_id != base, field


def test_client_config_is_sized_from_the_instance_count():
    cfg = parse(AWS).client_config()
    assert cfg == {"max_connection": 32, "connection_timeout": 5, "read_timeout": 30, "max_retry_times": 3,
                   "retry_backoff_policy": "exponential_full_jitter", "retry_backoff_millis": 200}
    assert parse({**AWS, "EndpointInstanceCount": "100"}).client_config()["max_connection"] == 256


def test_connector_body_per_flavor():
    tei = steps.connector_body(parse(AWS), "c")
    action = tei["actions"][0]
    assert action["url"] == "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/semsearch-dev-minilm/invocations"
    assert action["request_body"] == '{"inputs": ${parameters.input}, "truncate": true}'
    assert action["pre_process_function"] == "connector.pre_process.default.embedding"
    assert action["post_process_function"] == "connector.post_process.default.embedding"
    assert tei["protocol"] == "aws_sigv4"
    assert tei["parameters"] == {"region": "us-east-1", "service_name": "sagemaker"}
    assert tei["credential"] == {"roleArn": "arn:aws:iam::123456789012:role/semsearch-connector"}
    custom = steps.connector_body(parse(LOCAL), "c")
    assert custom["actions"][0]["request_body"] == "${parameters.input}"
    assert custom["actions"][0]["url"] == LOCAL["EndpointUrl"]
    assert custom["credential"] == {"access_key": "AK", "secret_key": "SK"}


def test_index_body_carries_dimension_method_and_pipeline():
    props = parse(AWS)
    names = steps.Names(props.physical_id, props.index_name)
    body = steps.index_body(props, names)
    vector = body["mappings"]["properties"]["embedding"]
    assert vector["dimension"] == 384
    assert vector["method"] == {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                                "parameters": {"m": 16, "ef_construction": 128}}
    assert body["settings"]["index"]["default_pipeline"] == names.ingest_pipeline == props.physical_id
    assert body["settings"]["index"]["knn"] is True


def test_bad_properties_fail_before_any_request():
    event = {"RequestType": "Create", "ResourceProperties": {**LOCAL, "Dimension": "three hundred"}}
    with pytest.raises(PropertyError, match="Dimension: expected an integer"):
        handler.on_event(event)
    with pytest.raises(PropertyError, match="Flavor"):
        handler.is_complete({**event, "ResourceProperties": {**LOCAL, "Flavor": ""}})


def test_delete_of_an_id_that_is_not_ours_succeeds_without_a_request():
    # What the Provider framework sends after a Create that failed before returning an id.
    event = {"RequestType": "Delete", "PhysicalResourceId": "AWSCDK::CustomResourceProviderFramework::CREATE_FAILED",
             "ResourceProperties": {}}
    assert handler.on_event(event) == {"PhysicalResourceId": event["PhysicalResourceId"]}
    assert handler.is_complete(event) == {"IsComplete": True}


def test_sigv4_signs_for_the_es_service(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    client = OpenSearch(AWS["OpenSearchUrl"], auth_mode="sigv4", region="eu-west-1")
    headers = client._headers("GET", AWS["OpenSearchUrl"] + "/_cluster/health", None)
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/es/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers


def test_basic_auth_header():
    headers = OpenSearch("https://127.0.0.1:9", auth_mode="basic", username="u", password="p")._headers("GET", "x", None)
    assert headers["authorization"] == "Basic dTpw"
