"""The fine-tune and batch-embed workflows as synthesized: integrations, the gate, IAM."""

from __future__ import annotations

import copy
import json

import pytest

from stacks.config import load_config
from stacks.containers import model_version
from stacks.names import promotion_parameter
from tests.infra.conftest import default_context, synth
from tests.infra.resolved import PROMOTION_TAG, only, stage_templates

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
    # prod: network isolation (the default config), so the base model is a channel, not a Hub id.
    assert args["EnableNetworkIsolation"] is (stage == "prod")
    if stage == "dev":
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
    assert choices[1] == {"Condition": "{% $gain >= 0.005 %}", "Next": "KeepModel"}
    assert states["TunedBeatsBase"]["Default"] == "NotPromoted"
    assert states["NotPromoted"]["Type"] == "Fail"


def test_promotion_records_the_tag_then_updates_the_model_search_and_ops_stacks_in_order(jobs):
    stage, template = jobs
    states = _definition(template, "fine-tune")["States"]
    endpoint = "cpu" if stage == "dev" else "gpu"
    # The tuned model leaves jobs/ (which expires) for its own key, named by the tag.
    keep = states["KeepModel"]
    assert keep["Resource"].endswith(":states:::aws-sdk:s3:copyObject")
    key = f"'models/semsearch-{stage}-' & $substringAfter($trainingJob, 'semsearch-{stage}-') & '/model.tar.gz'"
    assert keep["Arguments"]["Key"] == f"{{% {key} %}}"
    assert keep["Assign"] == {"tag": f"{{% $substringAfter($trainingJob, 'semsearch-{stage}-') %}}"}
    # The tag goes into the parameter of the endpoint's current model version.
    record = states[keep["Next"]]
    assert record["Resource"].endswith(":states:::aws-sdk:ssm:putParameter")
    version = model_version(load_config(default_context()).stage(stage).endpoints[endpoint])
    assert record["Arguments"] == {"Name": promotion_parameter(stage, endpoint, version), "Value": "{% $tag %}",
                                   "Overwrite": True}
    # Then each stack, in deploy order, with its current template; a Wait/Describe loop, no Lambda.
    updated, state = [], record
    while state["Next"] != "Promoted":
        update = states[state["Next"]]
        assert update["Resource"].endswith(":states:::aws-sdk:cloudformation:updateStack")
        args = update["Arguments"]
        assert args["UsePreviousTemplate"] is True and args["RoleARN"] == "<ref>"
        assert "CAPABILITY_NAMED_IAM" in args["Capabilities"]
        key = update["Next"].removeprefix("WaitFor")
        assert states[update["Next"]] == {"Type": "Wait", "Seconds": 60, "Next": f"Describe{key}"}
        describe = states[f"Describe{key}"]
        assert describe["Resource"].endswith(":states:::aws-sdk:cloudformation:describeStacks")
        assert describe["Arguments"] == {"StackName": args["StackName"]} and describe["Next"] == f"{key}Settled"
        updated.append(args["StackName"])
        state = states[f"{key}Updated"]
    assert updated == [f"semsearch-{stage}-{part}" for part in ("model", "search", "ops")]
    assert states["Promoted"]["Type"] == "Succeed"
    text = json.dumps(states)
    assert "Lambda" not in text and "aws-sdk:sagemaker" not in text  # no endpoint is touched directly


def test_every_failure_path_ends_in_a_fail_state_with_a_cause(jobs):
    _, template = jobs
    for name in ("fine-tune", "batch-embed"):
        states = _definition(template, name)["States"]
        for state_name, state in states.items():
            for catch in state.get("Catch", []):
                caught = states[catch["Next"]]
                # A Choice may let an expected error through (UpdateStack's "No updates are to
                # be performed"); anything else still fails.
                if caught["Type"] == "Choice":
                    caught = states[caught["Default"]]
                assert caught["Type"] == "Fail", (name, state_name)
            if state["Type"] == "Fail":
                assert state.get("Cause") and state.get("Error"), (name, state_name)


def test_batch_embed_sends_one_request_per_line_and_checks_every_document_is_indexed(jobs):
    stage, template = jobs
    states = _definition(template, "batch-embed")["States"]
    # What serves the fronted endpoint, read at run time: both names in one call.
    endpoint = "cpu" if stage == "dev" else "gpu"
    serving = states["ServingModel"]
    assert serving["Resource"].endswith(":states:::aws-sdk:ssm:getParameters")
    assert serving["Arguments"]["Names"] == [f"/semsearch-{stage}/{endpoint}/serving-model",
                                             f"/semsearch-{stage}/{endpoint}/serving-endpoint"]
    assert serving["Next"] == "Serving" and states["Serving"]["Default"] == "Prepare"
    # Requests as the ingest pipeline sends them: the flavor's body, at most max_client_batch_size texts.
    prepare = states["Prepare"]["Arguments"]["Payload"]
    assert (prepare["flavor"], prepare["prefix"], prepare["max_texts"]) == ("tei", "", 32)
    assert prepare["max_bytes"] == 2_000_000  # TEI's payload limit, under the job's 6 MB
    transform = states["Transform"]
    assert transform["Resource"] == "arn:<ref>:states:::sagemaker:createTransformJob.sync"
    args = transform["Arguments"]
    assert args["ModelName"] == "{% $modelName %}"
    assert args["BatchStrategy"] == "SingleRecord"
    assert args["MaxPayloadInMB"] == 6
    assert args["TransformInput"]["SplitType"] == "Line"
    assert args["TransformInput"]["ContentType"] == "application/json"
    assert args["TransformOutput"]["AssembleWith"] == "Line"
    assert args["DataProcessing"] == {"InputFilter": "$.request", "JoinSource": "Input",
                                      "OutputFilter": "$['ids','texts','SageMakerOutput']"}
    # The transform runs the serving model's image: a GPU image for prod's g5 endpoint (local NVMe: no volume key).
    assert args["TransformResources"] == ({"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1,
                                           "VolumeKmsKeyId": "<ref>"} if stage == "dev"
                                          else {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1})
    assert states["Transform"]["Next"] == "BulkLoad"
    assert states["BulkLoad"]["Arguments"]["Payload"]["endpoint_name"] == "{% $endpointName %}"
    check = states["AllDocumentsIndexed"]
    assert "documents_in = $states.input.documents_indexed" in check["Choices"][0]["Condition"]
    assert "$states.input.documents_in = $documents" in check["Choices"][0]["Condition"]
    assert states[check["Default"]]["Type"] == "Fail"


def test_an_upload_under_batch_input_starts_the_batch_workflow(jobs):
    _, template = jobs
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "batch/input/"}]


def test_sagemaker_role_reads_and_writes_only_its_prefixes(jobs, app):
    stage, template = jobs
    s3_statements = [s for p in template.find_resources("AWS::IAM::Policy").values()
                     for s in p["Properties"]["PolicyDocument"]["Statement"]
                     if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert s3_statements
    for statement in s3_statements:
        text = json.dumps(statement["Resource"])
        assert '"*"' not in text
        assert f"semsearch-{stage}-artifacts-" in text or "cdk-hnb659fds-assets" in text
    # Writes: job outputs under jobs/, and the promoted model under models/ by the fine-tune
    # workflow only; never the inputs (training/, batch/input/).
    resolved = stage_templates(app, stage)
    for logical_id, policy in resolved.resources(f"semsearch-{stage}-jobs", "AWS::IAM::Policy").items():
        document = resolved.resolve(f"semsearch-{stage}-jobs", policy["Properties"]["PolicyDocument"])
        for statement in document["Statement"]:
            if "s3:PutObject" not in ([statement["Action"]] if isinstance(statement["Action"], str)
                                      else statement["Action"]):
                continue
            resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
            bucket = f"arn:aws:s3:::semsearch-{stage}-artifacts-123456789012-us-east-1/"
            assert all(r.startswith(bucket) for r in resources), resources
            keys = [r.removeprefix(bucket) for r in resources]
            allowed = ("jobs/", "models/") if logical_id.startswith("FineTuneStateMachineRole") else ("jobs/",)
            assert all(k.startswith(allowed) for k in keys), (logical_id, keys)


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


def test_an_isolated_training_job_gets_its_code_and_base_model_as_channels(jobs):
    """With EnableNetworkIsolation the container reaches neither S3 nor the Hub: the source
    bundle arrives as the "source" channel (the toolkit unpacks sagemaker_submit_directory from
    there) and the base model as the "model" channel (train.py reads SM_CHANNEL_MODEL)."""
    stage, template = jobs
    if stage != "prod":
        pytest.skip("the default config isolates prod's training job only")
    args = _definition(template, "fine-tune")["States"]["Train"]["Arguments"]
    hps = args["HyperParameters"]
    assert "base-model" not in hps
    assert hps["sagemaker_submit_directory"].startswith("/opt/ml/input/data/source/")
    assert hps["sagemaker_submit_directory"].endswith(".gz")
    channels = args["InputDataConfig"]
    assert "{'ChannelName': 'source'" in channels and "cdk-hnb659fds-assets" not in channels.split("'source'")[0]
    assert "{'ChannelName': 'model'" in channels and "$states.input.base_model_s3_uri" in channels
    assert "/training/base-model/'" in channels
    # SageMaker lists an S3Prefix channel: the training role may list the bundle's own key, nothing
    # else (the compare job's role has its own bundle and listing).
    listings = [s for logical_id, p in template.find_resources("AWS::IAM::Policy").items()
                if logical_id.startswith("SageMakerRole")
                for s in p["Properties"]["PolicyDocument"]["Statement"]
                if s["Action"] == "s3:ListBucket" and "cdk-hnb659fds-assets" in json.dumps(s["Resource"])]
    (listing,) = listings
    assert listing["Condition"]["StringEquals"]["s3:prefix"] == hps["sagemaker_submit_directory"].rsplit("/", 1)[1]


def test_a_hard_negative_model_arrives_as_the_miner_channel_only_when_given(jobs):
    """hard_negative_model_s3_uri in the start input becomes the channel train.py mines with
    (SM_CHANNEL_MINER); without it the job mines with the base model, as before."""
    from tests.infra.specs.states import evaluate
    from training_code import contract

    _, template = jobs
    expression = _definition(template, "fine-tune")["States"]["Train"]["Arguments"]["InputDataConfig"]
    assert expression.startswith("{%") and expression.endswith("%}")

    def channels(start: dict) -> dict[str, str]:
        listed = evaluate(expression[2:-2], {"states": {"input": start}})
        return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in listed}

    earlier = "s3://bucket/jobs/training/semsearch-dev-ft-mivq2c1s/output/model.tar.gz"
    assert contract.MINER_CHANNEL not in channels({})
    given = channels({"hard_negative_model_s3_uri": earlier, "eval_s3_uri": "s3://bucket/training/eval/"})
    assert given[contract.MINER_CHANNEL] == earlier and given["eval"] == "s3://bucket/training/eval/"


@pytest.mark.parametrize("variant", ["default", "custom"])
def test_promoted_model_runs_in_the_flavor_and_environment_of_the_endpoint_model_it_replaces(variant_app, variant):
    """The promotion is the endpoint's own model resource with the promoted weights: the same
    image and environment (the custom container reads its batch limit, log level, workers and
    threads there), the weights from S3 without network; TEI reads them from the model mount."""
    app = variant_app(variant)
    before, after = (stage_templates(app, "dev", promotion_tag=tag) for tag in (None, PROMOTION_TAG))
    served, promoted = (only(t, "semsearch-dev-model", "AWS::SageMaker::Model") for t in (before, after))
    assert promoted["PrimaryContainer"]["ModelDataUrl"] == (
        f"s3://semsearch-dev-artifacts-123456789012-us-east-1/models/semsearch-dev-{PROMOTION_TAG}/model.tar.gz")
    assert promoted["EnableNetworkIsolation"] is True
    assert (promoted["PrimaryContainer"]["Image"], promoted["ExecutionRoleArn"]) == (
        served["PrimaryContainer"]["Image"], served["ExecutionRoleArn"])
    environment = served["PrimaryContainer"]["Environment"]
    if variant == "custom":
        assert "SEMSEARCH_MAX_BATCH" in environment  # the custom container, not TEI
        assert served["PrimaryContainer"]["ModelDataUrl"] == "s3://my-models-bucket/minilm/model.tar.gz"
        assert served["EnableNetworkIsolation"] is True
    else:
        assert environment["HF_MODEL_ID"] == "sentence-transformers/all-MiniLM-L6-v2"  # from the Hub
        assert "ModelDataUrl" not in served["PrimaryContainer"] and served["EnableNetworkIsolation"] is False
        environment = {**environment, "HF_MODEL_ID": "/opt/ml/model"}
    assert promoted["PrimaryContainer"]["Environment"] == environment
    # The workflow creates no model of its own.
    jobs_text = json.dumps(after.by_stack["semsearch-dev-jobs"])
    assert "createModel" not in jobs_text and "sagemaker:CreateModel" not in jobs_text
