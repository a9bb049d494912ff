"""The glue's Bedrock connector (Flavor bedrock): its properties are checked by name, and the
connector ml-commons gets is built from lambda/endpoint_request/bedrock.py, the definitions
semsearch.bedrock's client sends too. The real ml-commons runs it in tests/e2e/test_bedrock.py."""

from __future__ import annotations

import pytest
from endpoint_request import bedrock
from search_glue import steps
from search_glue.properties import GlueProperties, PropertyError, parse

TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-multilingual-v3"
BASE = {"OpenSearchUrl": "https://search.example.com", "Region": "eu-west-1", "Name": "semsearch-dev",
        "Flavor": "bedrock", "ConnectorRoleArn": "arn:aws:iam::123456789012:role/connector", "IndexName": "documents",
        "SpaceType": "innerproduct"}


def props(**overrides) -> GlueProperties:
    return parse({**BASE, **overrides})


def test_titan_connector_is_the_models_template_signed_for_bedrock():
    p = props(BedrockModelId=TITAN, Dimension="512", BedrockNormalize="false")
    assert not p.asymmetric and steps.text_kinds(p) == ("passage",)
    body = steps.connector_body(p, "semsearch-dev-x")
    assert body["protocol"] == "aws_sigv4"
    assert body["parameters"] == {"region": "eu-west-1", "service_name": "bedrock", "model": TITAN,
                                  "dimensions": 512, "normalize": False}
    (action,) = body["actions"]
    assert action["url"] == f"https://bedrock-runtime.eu-west-1.amazonaws.com/model/{TITAN}/invoke"
    assert action["request_body"] == bedrock.BODY_TEMPLATES[bedrock.TITAN_V2]
    assert action["post_process_function"] == "connector.post_process.bedrock.embedding"
    assert "clip(params.text_docs[0], 50000)" in action["pre_process_function"]
    # What the template renders to is what the client sends.
    rendered = bedrock.render(action["request_body"], {**body["parameters"], "inputText": 'a "b"'})
    assert rendered == bedrock.request_body(TITAN, ['a "b"'], input_type="search_document", dimension=512,
                                            normalize=False)


def test_cohere_gets_a_query_model_with_search_query():
    p = props(BedrockModelId=COHERE, Dimension="1024", SpaceType="cosinesimil")
    assert p.asymmetric and steps.text_kinds(p) == ("passage", "query")
    passage, query = (steps.connector_body(p, "n", kind) for kind in ("passage", "query"))
    assert passage["parameters"]["input_type"] == "search_document"
    assert query["parameters"]["input_type"] == "search_query"
    assert passage["parameters"]["input_docs_processed_step_size"] == 96
    assert passage["actions"][0]["post_process_function"] == "connector.post_process.cohere.embedding"
    assert steps.predict_parameters(p, ["x"]) == {"texts": ["x"]}


def test_the_model_and_its_settings_define_the_objects():
    a = props(BedrockModelId=TITAN, Dimension="1024")
    assert a.physical_id != props(BedrockModelId=TITAN, Dimension="1024", BedrockNormalize="false").physical_id
    assert a.physical_id != props(BedrockModelId=TITAN, Dimension="512").physical_id
    # Cohere has no normalize option: the setting changes nothing.
    c = props(BedrockModelId=COHERE, Dimension="1024")
    assert c.physical_id == props(BedrockModelId=COHERE, Dimension="1024", BedrockNormalize="false").physical_id
    assert c.invocation_url.endswith(f"/model/{COHERE}/invoke")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"Dimension": "1024"}, "BedrockModelId: required with Flavor bedrock"),
    ({"BedrockModelId": "amazon.titan-embed-text-v1", "Dimension": "1536"}, "BedrockModelId: bad value"),
    ({"BedrockModelId": TITAN, "Dimension": "384"}, "Dimension: Bedrock model amazon.titan-embed-text-v2:0 offers "
                                                     "dimension(s) 1024, 512, 256, not 384"),
    ({"BedrockModelId": TITAN, "Dimension": "1024", "EndpointName": "ep"}, "EndpointName: not with Flavor bedrock"),
    ({"BedrockModelId": COHERE, "Dimension": "1024", "QueryPrefix": "q: "}, "QueryPrefix: not with Flavor bedrock"),
    ({"Flavor": "tei", "EndpointName": "ep", "Dimension": "384", "BedrockModelId": TITAN},
     "BedrockModelId: only with Flavor bedrock"),
])
def test_bad_bedrock_properties_are_named(overrides, message):
    with pytest.raises(PropertyError) as caught:
        props(**overrides)
    assert message in str(caught.value)
