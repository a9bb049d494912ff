"""search_glue without a node: property validation, physical ids, request shapes, signing.

The handler calls here either fail validation before any request, or touch no network
(Delete of an id that is not ours); nothing is mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import search_glue
from search_glue import handler, steps
from search_glue.client import OpenSearch
from search_glue.properties import GlueProperties, PropertyError, contract, parse

from semsearch.errors import UsageError
from semsearch.local.client import Connection
from semsearch.local.stack import catalog_model, cfn_strings, glue_properties
from stacks.catalog import MODELS
from stacks.config import SearchConfig

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
                         ("IndexName", "docs2"), ("Flavor", "custom"), ("HnswM", "32"),
                         ("QueryPrefix", "query: "), ("PassagePrefix", "passage: ")]:
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
    assert custom["actions"][0]["request_body"] == '{"inputs": ${parameters.input}, "prompt_name": "passage"}'
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


# ---------------------------------------------------------------------------------------
# One definition: GlueProperties is what the construct and `local up` send and what the
# parser reads; its metadata renders the package docstring.

EVERY_FIELD_SET = GlueProperties(
    opensearch_url="https://search-demo-abc.us-east-1.es.amazonaws.com", auth_mode="basic", region="eu-west-1",
    username="u", password="p", ca_file="/ca.pem", role_mappings={"ml_full_access": ["arn:aws:iam::123456789012:role/g"]},
    loader_backend_roles=("arn:aws:iam::123456789012:role/l",), search_backend_roles=("arn:aws:iam::123456789012:role/s",),
    cluster_settings={"plugins.ml_commons.only_run_on_ml_node": "false"}, name="every", flavor="custom",
    endpoint_name="ep", endpoint_url="https://example.com/invocations", dimension=768, connector_role_arn="",
    connector_access_key="AK", connector_secret_key="SK", endpoint_instance_count=3, read_timeout_s=20,
    connection_timeout_s=4, max_retry_times=2, retry_backoff_policy="constant", retry_backoff_millis=300,
    index_name="docs", text_field="body", embedding_field="vector", knn_engine="lucene", hnsw_m=24,
    hnsw_ef_construction=256, space_type="l2", number_of_shards=2, number_of_replicas=0, ingest_batch_size=8,
    hybrid_search=True, query_prefix="query: ", passage_prefix="passage: ", inference_component="ep-model",
    retired_index_retention_hours=24)


def test_every_field_is_one_property_with_its_own_name():
    names = [spec.name for _, spec in contract()]
    assert len(names) == len(set(names))
    assert {f.name for f, _ in contract()} == {f.name for f in fields(GlueProperties) if f.init}
    # Every optional field differs from its default above, so the round trip below covers it
    # (but: a role ARN excludes the key pair, a self-managed node has only lucene, and the
    # Bedrock fields go with Flavor bedrock only: tests/runtime/test_bedrock_glue.py).
    at_default = [f.name for f, spec in contract()
                  if f.default is not MISSING and getattr(EVERY_FIELD_SET, f.name) == spec.default]
    assert at_default == ["bedrock_model_id", "bedrock_normalize", "connector_role_arn", "knn_engine"]


def test_what_is_sent_is_what_the_parser_reads_back():
    sent = EVERY_FIELD_SET.to_properties()
    assert parse(cfn_strings(sent)) == EVERY_FIELD_SET  # as CloudFormation delivers them
    assert parse({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in sent.items()}) == EVERY_FIELD_SET


def test_only_what_the_caller_set_is_sent_in_declaration_order():
    props = GlueProperties(opensearch_url="https://d", region="us-east-1", name="n", flavor="tei", dimension=384,
                           index_name="i", space_type="l2", hnsw_m=16, endpoint_name="", search_backend_roles=())
    # HnswM equals its default but was set, so it is sent; empty values are the same as absent.
    assert list(props.to_properties()) == ["OpenSearchUrl", "Region", "Name", "Flavor", "Dimension", "IndexName",
                                           "HnswM", "SpaceType"]
    assert props.read_timeout_s == 30 and props.role_mappings == {} and props.hybrid_search is False


def test_defaults_come_from_the_definition():
    parsed = parse(LOCAL)
    for f, spec in contract():
        if f.default is not MISSING and spec.name not in LOCAL:
            assert getattr(parsed, f.name) == spec.default, spec.name


def test_docstring_table_is_rendered_from_the_definition():
    doc = search_glue.__doc__ or ""
    for f, spec in contract():
        default = "required" if f.default is MISSING else json.dumps(spec.default)
        assert any(line.split()[:1] == [spec.name] and default in line for line in doc.splitlines()), spec.name
    # The construct's numbers (timeouts, polling) are stated once, in the construct.
    assert "total_timeout" not in doc and "10 min" not in doc


def test_the_definition_imports_without_boto3_or_cdk():
    code = ("import sys\n"
            "for blocked in ('boto3', 'botocore', 'urllib3', 'aws_cdk', 'constructs'):\n"
            "    sys.modules[blocked] = None\n"
            "from stacks.glue_properties import GlueProperties, parse\n")
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True)


def _local_props(**overrides):
    return glue_properties(connection=Connection("http://127.0.0.1:9"), endpoint_url="http://127.0.0.1:9/e",
                           access_key="AK", secret_key="SK", dimension=384, space_type="innerproduct", **overrides)


def test_local_up_sends_the_config_defaults_and_passes_the_parser():
    parsed = parse(cfn_strings(_local_props()))
    defaults = SearchConfig(endpoint="local")
    assert (parsed.index_name, parsed.text_field, parsed.embedding_field, parsed.knn_engine, parsed.hnsw_m,
            parsed.hnsw_ef_construction) == (defaults.index_name, defaults.text_field, defaults.embedding_field,
                                             defaults.knn_engine, defaults.hnsw_m, defaults.hnsw_ef_construction)
    assert parsed.auth_mode == "none" and parsed.number_of_replicas == 0
    assert _local_props(MaxRetryTimes=0)["MaxRetryTimes"] == 0  # tests inject raw values


def test_local_up_takes_the_shape_from_the_catalog(model_dir):
    spec = catalog_model("all-MiniLM-L6-v2", model_dir)
    assert spec is MODELS["all-MiniLM-L6-v2"] and (spec.dimension, spec.space_type) == (384, "innerproduct")
    with pytest.raises(UsageError, match="384-dimension.*catalog model bge-base-en-v1.5 is 768-dimension.*--model"):
        catalog_model("bge-base-en-v1.5", model_dir)
    with pytest.raises(UsageError, match="--model 'minilm' is not in the catalog"):
        catalog_model("minilm", model_dir)
