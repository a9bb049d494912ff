"""Config validation: one error naming every bad field, its bad value and what is allowed."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys

import pytest

from stacks.catalog import MODELS
from stacks.config import ConfigError, EndpointConfig, load_config
from tests.infra.conftest import REPO_ROOT, default_context


def _errors(context) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(context)
    return raised.value.problems


def test_default_config_has_a_g5_and_a_c6i_endpoint():
    config = load_config(default_context())
    types = {ep.instance_type for stage in config.stages for ep in stage.endpoints.values()}
    assert types == {"ml.c6i.xlarge", "ml.g5.xlarge"}
    assert [s.name for s in config.stages] == ["dev", "prod"]


def test_catalog_has_the_promised_models_with_e5_prefixes():
    for model_id in ("all-MiniLM-L6-v2", "bge-small-en-v1.5", "bge-base-en-v1.5", "bge-large-en-v1.5", "gte-base",
                     "gte-large", "e5-base-v2", "e5-large-v2", "multilingual-e5-base", "multilingual-e5-large",
                     "snowflake-arctic-embed-m"):
        assert model_id in MODELS
    for model_id in ("e5-base-v2", "e5-large-v2", "multilingual-e5-base", "multilingual-e5-large"):
        assert (MODELS[model_id].query_prefix, MODELS[model_id].passage_prefix) == ("query: ", "passage: ")
    assert MODELS["all-MiniLM-L6-v2"].dimension == 384


def test_every_bad_field_is_named_in_one_error():
    ctx = default_context()
    ctx["dev.endpoints.cpu.model_id"] = "no-such-model"
    ctx["prod.endpoints.gpu.image"] = "huggingface-tei-cpu"  # CPU image on a GPU instance
    ctx["prod.endpoints.gpu.min_capacity"] = "9"  # above max_capacity 6, arrives as a string
    ctx["dev.search.data_node_type"] = "m5.huge.search"
    problems = _errors(ctx)
    joined = "\n".join(problems)
    assert "stages.dev.endpoints.cpu.model_id: unknown model 'no-such-model'; allowed: all-MiniLM-L6-v2" in joined
    assert "stages.prod.endpoints.gpu.image: huggingface-tei-cpu does not run on the GPU instance ml.g5.xlarge" in joined
    assert "stages.prod.endpoints.gpu.min_capacity: 9 is above max_capacity 6" in joined
    assert "stages.dev.search.data_node_type: unknown instance type 'm5.huge.search'" in joined
    assert len(problems) >= 4


def test_gpu_image_on_cpu_instance_is_rejected():
    ctx = default_context()
    ctx["dev.endpoints.cpu.image"] = "huggingface-tei"
    assert any("huggingface-tei does not run on the CPU instance ml.c6i.xlarge; allowed: auto, huggingface-tei-cpu"
               in p for p in _errors(ctx))


def test_transform_instance_must_run_the_fronted_endpoints_image():
    """Batch transform runs the serving model, image and all: a GPU image needs a GPU instance."""
    ctx = default_context()
    ctx["prod.jobs.transform_instance_type"] = "ml.c6i.xlarge"  # prod fronts a g5 endpoint
    ctx["dev.jobs.transform_instance_type"] = "ml.g4dn.xlarge"  # dev fronts a c6i endpoint
    problems = _errors(ctx)
    assert any(p.startswith("stages.prod.jobs.transform_instance_type: ml.c6i.xlarge is a CPU instance, but batch "
                            "transform runs the model of stages.prod.endpoints.gpu (search.endpoint), whose "
                            "instance_type ml.g5.xlarge takes the GPU image; allowed: a GPU instance type (")
               for p in problems), problems
    assert any(p.startswith("stages.dev.jobs.transform_instance_type: ml.g4dn.xlarge is a GPU instance") and
               "allowed: a CPU instance type (ml.c6i.2xlarge" in p for p in problems), problems
    assert len(problems) == 2


def test_dimension_that_disagrees_with_the_catalog_is_rejected():
    ctx = default_context()
    ctx["dev.endpoints.cpu.dimension"] = "768"
    assert _errors(ctx) == ["stages.dev.endpoints.cpu.dimension: 768 disagrees with the catalog's 384 for "
                            "all-MiniLM-L6-v2; allowed: 384 (or omit it)"]


def test_dimension_is_the_catalogs_and_a_config_may_only_repeat_it():
    assert "dimension" not in {f.name for f in dataclasses.fields(EndpointConfig)}  # one source: the catalog
    ctx = default_context()
    ctx["dev.endpoints.cpu.dimension"] = "384"
    assert load_config(ctx).stage("dev").endpoints["cpu"].model.dimension == 384
    ctx["dev.endpoints.cpu.dimension"] = "wide"
    assert _errors(ctx) == ["stages.dev.endpoints.cpu.dimension: bad value 'wide'; allowed: an integer"]


def test_unknown_stage_is_rejected():
    ctx = default_context()
    ctx["stage"] = "staging"
    assert _errors(ctx) == ["stage: unknown stage 'staging'; allowed: all, dev, prod"]


def test_unknown_and_mistyped_fields_are_named():
    ctx = default_context()
    ctx["dev.endpoints.cpu.instance_typo"] = "ml.c6i.xlarge"
    ctx["dev.search.volume_size_gib"] = "big"
    problems = _errors(ctx)
    assert any(p.startswith("stages.dev.endpoints.cpu.instance_typo: unknown field; allowed:") for p in problems)
    assert "stages.dev.search.volume_size_gib: bad value 'big'; allowed: an integer" in problems


def test_custom_flavor_needs_model_data():
    ctx = default_context()
    ctx["dev.endpoints.cpu.flavor"] = "custom"
    assert any("model_data_s3_uri: required for the custom flavor" in p for p in _errors(ctx))


def test_config_file_and_stage_selection(tmp_path):
    override = tmp_path / "override.json"
    override.write_text(json.dumps({"stages": {"prod": {"endpoints": {"gpu": {"max_capacity": 8}}}}}))
    ctx = default_context()
    ctx["config"] = str(override)
    ctx["stage"] = "prod"
    config = load_config(ctx)
    assert [s.name for s in config.stages] == ["prod"]
    assert config.stage("prod").endpoints["gpu"].max_capacity == 8


def test_missing_config_file_is_named():
    ctx = default_context()
    ctx["config"] = "/nonexistent/semsearch.json"
    assert _errors(ctx) == ["config: file '/nonexistent/semsearch.json' not found"]


def test_custom_flavor_synthesizes_the_pytorch_container(tmp_path):
    """The custom flavor wires our handler: PyTorch inference image + model data in S3."""
    from aws_cdk import assertions

    from tests.infra.conftest import synth

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx["dev.endpoints.cpu.flavor"] = "custom"
    ctx["dev.endpoints.cpu.model_data_s3_uri"] = "s3://my-models-bucket/minilm/model.tar.gz"
    app, _ = synth(ctx, tmp_path)
    template = assertions.Template.from_stack(app.node.find_child("dev").model)
    (model,) = template.find_resources("AWS::SageMaker::Model").values()
    container = model["Properties"]["PrimaryContainer"]
    # The configured model, unless the fine-tune workflow promoted one (read at deploy time).
    condition, _promoted, configured = container["ModelDataUrl"]["Fn::If"]
    assert condition.startswith("PromotioncpuPromoted")
    assert configured == "s3://my-models-bucket/minilm/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"
    assert container["Environment"]["SEMSEARCH_THREADS"] == "4"  # ml.c6i.xlarge
    assert container["Image"]["Fn::FindInMap"][0].startswith("ImagePytorchInference")
    assert model["Properties"]["EnableNetworkIsolation"]["Fn::If"][1:] == [True, True]
    mapping = template.to_json()["Mappings"][container["Image"]["Fn::FindInMap"][0]]
    assert "pytorch-inference:2.6.0-cpu-py312" in mapping["us-east-1"]["uri"]


def test_vpc_config_places_endpoints_and_domain(tmp_path):
    from aws_cdk import assertions

    from tests.infra.conftest import synth

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx["dev.vpc"] = json.dumps({"vpc_id": "vpc-0123456789abcdef0", "availability_zones": ["us-east-1a"],
                                 "subnet_ids": ["subnet-0123456789abcdef0"],
                                 "security_group_ids": ["sg-0123456789abcdef0"]})
    app, _ = synth(ctx, tmp_path)
    stage = app.node.find_child("dev")
    model = assertions.Template.from_stack(stage.model)
    model.has_resource_properties("AWS::SageMaker::Model", {"VpcConfig": {
        "Subnets": ["subnet-0123456789abcdef0"], "SecurityGroupIds": ["sg-0123456789abcdef0"]}})
    search = assertions.Template.from_stack(stage.search)
    search.has_resource_properties("AWS::OpenSearchService::Domain", {"VPCOptions": {
        "SubnetIds": ["subnet-0123456789abcdef0"], "SecurityGroupIds": ["sg-0123456789abcdef0"]}})


def test_cdk_synth_with_bad_config_fails_fast_with_one_message():
    """The real entry point (python app.py, as `cdk synth` runs it) exits 1 listing every problem."""
    result = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={"CDK_CONTEXT_JSON": json.dumps({**default_context(),
                                                                 "dev.endpoints.cpu.model_id": "nope",
                                                                 "prod.endpoints.gpu.min_capacity": 99}),
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "invalid semsearch configuration:" in result.stderr
    assert "stages.dev.endpoints.cpu.model_id: unknown model 'nope'" in result.stderr
    assert "stages.prod.endpoints.gpu.min_capacity: 99 is above max_capacity 6" in result.stderr
    assert "Traceback" not in result.stderr


def test_retired_index_hours_are_bounded():
    ctx = default_context()
    ctx["dev.search.retired_index_hours"] = "-1"
    ctx["prod.search.retired_index_hours"] = "9000"
    assert _errors(ctx) == [
        "stages.dev.search.retired_index_hours: bad value -1; allowed: 0..8760 (hours; 0 deletes a retired index "
        "at the watchdog's next run)",
        "stages.prod.search.retired_index_hours: bad value 9000; allowed: 0..8760 (hours; 0 deletes a retired index "
        "at the watchdog's next run)"]
