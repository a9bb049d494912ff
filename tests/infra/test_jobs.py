"""The fine-tune and batch-embed workflows as synthesized: integrations, the gate, IAM."""

from __future__ import annotations

import copy
import json

import pytest

from tests.infra.conftest import default_context, synth

STAGES = ["dev", "prod"]


def _flatten(value) -> str:
    """A DefinitionString (Fn::Join of literals and intrinsics) as text, intrinsics as <ref>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flatten(p) for p in parts)
    return "<ref>"


def _definition(template, name_part: str) -> dict:
    machines = template.find_resources("AWS::StepFunctions::StateMachine")
    (machine,) = [m for m in machines.values() if name_part in m["Properties"]["StateMachineName"]]
    return json.loads(_flatten(machine["Properties"]["DefinitionString"]))


@pytest.fixture(params=STAGES)
def jobs(request, app):
    from aws_cdk import assertions

    return request.param, assertions.Template.from_stack(app.node.find_child(request.param).jobs)


def test_fine_tune_trains_with_sync_and_scrapes_the_gate_metric(jobs):
    stage, template = jobs
    states = _definition(template, "fine-tune")["States"]
    train = states["Train"]
    assert train["Resource"] == "arn:<ref>:states:::sagemaker:createTrainingJob.sync"
    args = train["Arguments"]
    metric_names = {m["Name"] for m in args["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"eval:base:ndcg@10", "eval:tuned:ndcg@10", "eval:gain:ndcg@10", "train:loss"} <= metric_names
    assert args["HyperParameters"]["sagemaker_program"] == "train.py"
    assert args["HyperParameters"]["base-model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert args["HyperParameters"]["max-seq-length"] == "256"  # the catalog's max tokens
    assert args["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert "eval:gain:ndcg@10" in train["Assign"]["gain"]
    assert train["Catch"][0]["Next"] == "TrainingFailed"


def test_gate_promotes_only_on_the_configured_gain(jobs):
    _, template = jobs
    states = _definition(template, "fine-tune")["States"]
    choices = states["TunedBeatsBase"]["Choices"]
    assert choices[0] == {"Condition": "{% $gain = null %}", "Next": "MetricsMissing"}
    assert choices[1] == {"Condition": "{% $gain >= 0.005 %}", "Next": "CreateModel"}
    assert states["TunedBeatsBase"]["Default"] == "NotPromoted"
    assert states["NotPromoted"]["Type"] == "Fail"


def test_promotion_is_blue_green_with_rollback_on_the_endpoint_alarms(jobs):
    stage, template = jobs
    states = _definition(template, "fine-tune")["States"]
    update = states["BlueGreenUpdate"]
    assert update["Resource"].endswith(":states:::aws-sdk:sagemaker:updateEndpoint")
    config = update["Arguments"]["DeploymentConfig"]
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert len(config["AutoRollbackConfiguration"]["Alarms"]) == 2
    assert update["Arguments"]["EndpointName"] == f"semsearch-{stage}-{'cpu' if stage == 'dev' else 'gpu'}"
    # Wait/Describe loop, no polling Lambda; a rollback is a failure with a reason.
    assert states["WaitForDeployment"]["Next"] == "DescribeEndpoint"
    deployed = {c["Next"] for c in states["Deployed"]["Choices"]}
    assert {"RecordPromotedModel", "RolledBack", "DeployFailed"} <= deployed
    assert "Lambda" not in json.dumps(states)


def test_every_failure_path_ends_in_a_fail_state_with_a_cause(jobs):
    _, template = jobs
    for name in ("fine-tune", "batch-embed"):
        states = _definition(template, name)["States"]
        for state_name, state in states.items():
            for catch in state.get("Catch", []):
                assert states[catch["Next"]]["Type"] == "Fail", (name, state_name)
            if state["Type"] == "Fail":
                assert state.get("Cause") and state.get("Error"), (name, state_name)


def test_batch_embed_transforms_lines_and_checks_every_document_is_indexed(jobs):
    _, template = jobs
    states = _definition(template, "batch-embed")["States"]
    transform = states["Transform"]
    assert transform["Resource"] == "arn:<ref>:states:::sagemaker:createTransformJob.sync"
    args = transform["Arguments"]
    assert args["BatchStrategy"] == "MultiRecord"
    assert args["MaxPayloadInMB"] == 6
    assert args["TransformInput"]["SplitType"] == "Line"
    assert args["TransformInput"]["ContentType"] == "application/jsonlines"
    assert args["TransformOutput"]["AssembleWith"] == "Line"
    assert args["TransformResources"] == {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1,
                                          "VolumeKmsKeyId": "<ref>"}
    assert states["Transform"]["Next"] == "BulkLoad"
    check = states["AllDocumentsIndexed"]
    assert "documents_in = $states.input.documents_indexed" in check["Choices"][0]["Condition"]
    assert states[check["Default"]]["Type"] == "Fail"


def test_an_upload_under_batch_input_starts_the_batch_workflow(jobs):
    _, template = jobs
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "batch/input/"}]


def test_sagemaker_role_reads_and_writes_only_its_prefixes(jobs):
    stage, template = jobs
    s3_statements = [s for p in template.find_resources("AWS::IAM::Policy").values()
                     for s in p["Properties"]["PolicyDocument"]["Statement"]
                     if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert s3_statements
    for statement in s3_statements:
        text = json.dumps(statement["Resource"])
        assert '"*"' not in text
        assert f"semsearch-{stage}-artifacts-" in text or "cdk-hnb659fds-assets" in text
        if statement["Action"] in ("s3:PutObject", ["s3:PutObject", "s3:AbortMultipartUpload"]):
            assert "/jobs/*" in text and "training/" not in text


def test_spot_training_with_checkpoints_when_configured(tmp_path):
    from aws_cdk import assertions

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx["dev.jobs.training_use_spot"] = "true"
    ctx["dev.jobs.training_instance_type"] = "ml.c6i.2xlarge"
    app, _ = synth(ctx, tmp_path)
    template = assertions.Template.from_stack(app.node.find_child("dev").jobs)
    args = _definition(template, "fine-tune")["States"]["Train"]["Arguments"]
    assert args["EnableManagedSpotTraining"] is True
    assert args["StoppingCondition"]["MaxWaitTimeInSeconds"] > args["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert "VolumeKmsKeyId" in args["ResourceConfig"]  # c6i has EBS: encrypt it


def test_promoted_model_runs_with_the_environment_of_the_endpoint_model_it_replaces(variant_app):
    """The custom container reads its batch limit, log level, workers and threads from the
    environment: a promoted model must get exactly what the endpoint's own model got."""
    from aws_cdk import assertions

    stage = variant_app("custom").node.find_child("dev")
    (model,) = assertions.Template.from_stack(stage.model).find_resources("AWS::SageMaker::Model").values()
    endpoint_environment = model["Properties"]["PrimaryContainer"]["Environment"]
    assert "SEMSEARCH_MAX_BATCH" in endpoint_environment  # the custom container, not TEI
    create_model = _definition(assertions.Template.from_stack(stage.jobs), "fine-tune")["States"]["CreateModel"]
    assert create_model["Arguments"]["PrimaryContainer"]["Environment"] == endpoint_environment
