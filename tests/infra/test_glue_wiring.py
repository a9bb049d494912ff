"""The neural-search custom resource as synthesized: Provider, timeouts, IAM, and properties
that the glue's own validator accepts once CloudFormation has stringified them."""

from __future__ import annotations

import json

import pytest
from search_glue.properties import parse

from stacks.config import load_config
from stacks.containers import model_version
from stacks.names import versioned_endpoint_name
from tests.infra.conftest import default_context
from tests.infra.resolved import PROMOTION_TAG, stage_templates

STAGES = ["dev", "prod"]


def _custom_resource(template):
    (resource,) = template.find_resources("Custom::NeuralSearch").values()
    return resource


def _stringify(value, fake):
    """What CloudFormation sends: every scalar a string, intrinsics resolved (here: faked)."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref")):
        return fake
    if isinstance(value, dict):
        return {k: _stringify(v, fake) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify(v, fake) for v in value]
    return value if isinstance(value, str) else json.dumps(value)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("tag", [None, PROMOTION_TAG], ids=["deployed", "promoted"])
def test_properties_pass_the_glue_validator(app, stage, tag):
    """Resolved as CloudFormation does (the endpoint name read from SSM at deploy time), then
    stringified as it sends them."""
    resolved = stage_templates(app, stage, promotion_tag=tag)
    search_stack = f"semsearch-{stage}-search"
    (resource,) = resolved.resources(search_stack, "Custom::NeuralSearch").values()
    props = dict(resolved.resolve(search_stack, resource["Properties"]))
    props.pop("ServiceToken")
    parsed = parse({k: _stringify(v, "unresolved") for k, v in props.items()})
    assert parsed.dimension == 384
    assert parsed.flavor == "tei"
    endpoint = "cpu" if stage == "dev" else "gpu"
    version = model_version(load_config(default_context()).stage(stage).endpoints[endpoint])
    expected = versioned_endpoint_name(stage, endpoint, version) + (f"-{tag}" if tag else "")
    assert parsed.endpoint_name == expected
    assert parsed.knn_engine == "lucene"


@pytest.mark.parametrize("stage", STAGES)
def test_custom_resource_has_a_service_timeout_and_waits_for_the_endpoint(templates, stage):
    resource = _custom_resource(templates[(stage, "search")])
    assert resource["Properties"]["ServiceTimeout"] == "1200"  # never CloudFormation's one hour
    assert resource["Properties"]["AuthMode"] == "sigv4"


@pytest.mark.parametrize("stage", STAGES)
def test_provider_polls_is_complete_with_a_bounded_total(templates, stage):
    template = templates[(stage, "search")]
    handlers = {f["Properties"].get("Handler") for f in template.find_resources("AWS::Lambda::Function").values()}
    assert {"search_glue.handler.on_event", "search_glue.handler.is_complete",
            "search_glue.handler.watchdog"} <= handlers
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    assert len(machines) == 1  # the Provider's waiter
    definition = json.dumps(next(iter(machines.values()))["Properties"]["DefinitionString"])
    assert '\\"IntervalSeconds\\":5' in definition
    assert '\\"MaxAttempts\\":180' in definition  # 15 minutes / 5 s


@pytest.mark.parametrize("stage", STAGES)
def test_glue_functions_need_no_bundling_and_run_python_3_12(templates, stage):
    for fn in templates[(stage, "search")].find_resources("AWS::Lambda::Function").values():
        if fn["Properties"].get("Handler", "").startswith("search_glue."):
            assert fn["Properties"]["Runtime"] == "python3.12"
            assert fn["Properties"]["Timeout"] == 120


@pytest.mark.parametrize("stage", STAGES)
def test_watchdog_runs_on_a_schedule_with_the_same_properties(templates, stage):
    template = templates[(stage, "search")]
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(15 minutes)"
    target_input = json.dumps(rule["Properties"]["Targets"][0]["Input"])
    assert "ResourceProperties" in target_input and "IndexName" in target_input


@pytest.mark.parametrize("stage", STAGES)
def test_glue_maps_itself_and_the_loader_with_fgac(templates, stage):
    properties = _custom_resource(templates[(stage, "search")])["Properties"]
    mappings = json.dumps(properties["RoleMappings"])
    assert "all_access" in mappings and "ml_full_access" in mappings
    assert "GlueRole" in mappings
    # The loader gets the glue's least-privilege loader role, never all_access.
    assert "BulkLoaderRole" not in mappings and "BulkLoaderRole" in json.dumps(properties["LoaderBackendRoles"])


@pytest.mark.parametrize("stage", STAGES)
def test_template_carries_the_typed_properties_the_stack_set(app, templates, stage):
    """The construct serializes GlueProperties: the properties the stack set, in their order."""
    glue = app.node.find_child(stage).search.glue
    properties = dict(_custom_resource(templates[(stage, "search")])["Properties"])
    assert [properties.pop("ServiceToken"), properties.pop("ServiceTimeout")][1] == "1200"
    assert list(properties) == list(glue.properties.to_properties())
    # JSON-valued properties travel as JSON text the glue parses back.
    assert isinstance(properties["LoaderBackendRoles"], dict) and "Fn::Join" in properties["LoaderBackendRoles"]
    assert glue.properties.dimension == properties["Dimension"] == 384


@pytest.mark.parametrize("stage", STAGES)
def test_the_search_stacks_domain_is_called_domain(app, stage):
    from stacks.components.search_domain import SearchDomain

    search_stack = app.node.find_child(stage).search
    assert isinstance(search_stack.domain, SearchDomain)
    assert not hasattr(search_stack, "search")  # was search_stack.search.search elsewhere


def test_an_e5_stage_passes_the_catalog_prefixes_and_hybrid_search_to_the_glue(tmp_path):
    """The glue registers a query model from these; without them e5 gets no prompts at all."""
    from aws_cdk import assertions

    from stacks.catalog import MODELS
    from tests.infra.conftest import default_context, synth

    ctx = default_context()
    ctx.update({"stage": "dev", "dev.endpoints.cpu.model_id": "e5-base-v2", "dev.search.hybrid_search": "true",
                "dev.search.retired_index_hours": "24"})
    stage = synth(ctx, tmp_path / "cdk.out")[0].node.find_child("dev")
    template = assertions.Template.from_stack(stage.search)
    props = _custom_resource(template)["Properties"]
    e5 = MODELS["e5-base-v2"]
    assert (props["QueryPrefix"], props["PassagePrefix"]) == (e5.query_prefix, e5.passage_prefix) == (
        "query: ", "passage: ")
    assert props["HybridSearch"] is True and props["Dimension"] == 768
    assert props["RetiredIndexHours"] == 24  # how long a re-embed keeps the index it replaced
    assert "QueryModelId" in template.find_outputs("*")
