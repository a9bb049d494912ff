"""Which way the workflows' JSONata Choices go on the inputs they will see.

test_aws_specs walks every branch of every state machine (scopes, requests, roles) but does not
say which branch an input takes. Here the synthesized expressions are evaluated with a JSONata
implementation (jsonata-python, tests/infra/specs/states.py) on realistic inputs:

- fine-tune: the Train state's Assign on a DescribeTrainingJob result (what
  createTrainingJob.sync returns), then the TunedBeatsBase gate;
- fine-tune: a promotion (KeepModel, RecordPromotion) fed back into the templates as the
  promotion parameter's value, and each stack's update on UpdateStack errors and
  DescribeStacks results;
- batch-embed: the ServingModel state's Assign on an SSM GetParameters result holding what
  serves the fronted endpoint (or missing parameters), then Serving;
- batch-embed: the BulkLoad state's Output on a Lambda Invoke result whose Payload is what the
  bulk loader returns (its own Report.as_dict), then AllDocumentsIndexed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from bulk_loader.bulk import Report

from stacks.config import load_config
from tests.infra.conftest import default_context
from tests.infra.resolved import only, stage_templates, state_machine
from tests.infra.specs import states
from tests.infra.specs.intrinsics import Templates

GAIN = "eval:gain:ndcg@10"
STAGES = ("dev", "prod")


@pytest.fixture(scope="module")
def resolved(app) -> Templates:
    return stage_templates(app, *STAGES)


def _machine(templates: Templates, stage: str, suffix: str) -> dict[str, Any]:
    return state_machine(templates, f"semsearch-{stage}-{suffix}")


def _evaluate(template: str, *, state_input: Any = None, result: Any = None, variables: dict[str, Any] | None = None
              ) -> Any:
    """One ``{% ... %}`` field as Step Functions evaluates it ($states.input / .result, variables)."""
    expression = re.fullmatch(r"\{%(.*)%\}", template, re.DOTALL)
    assert expression, template
    bindings = {**(variables or {}), "states": {"input": state_input, "result": result, "context": {}}}
    return states.evaluate(expression.group(1).strip(), bindings)


def _assign(state: dict[str, Any], *, state_input: Any, result: Any) -> dict[str, Any]:
    return {name: _evaluate(value, state_input=state_input, result=result) for name, value in state["Assign"].items()}


# -- fine-tune: TunedBeatsBase -----------------------------------------------------------------

def _training_job(metrics: dict[str, float] | None) -> dict[str, Any]:
    """A DescribeTrainingJob response of a completed job (the fields the Train state reads)."""
    job: dict[str, Any] = {
        "TrainingJobName": "semsearch-dev-ft-1767614400000", "TrainingJobStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://semsearch-dev-artifacts/jobs/training/"
                                               "semsearch-dev-ft-1767614400000/output/model.tar.gz"}}
    if metrics is not None:
        job["FinalMetricDataList"] = [{"MetricName": name, "Value": value, "Timestamp": "2026-01-05T13:00:00Z"}
                                      for name, value in metrics.items()]
    return job


def _gate(definition: dict[str, Any], job: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    variables = _assign(definition["States"]["Train"], state_input={}, result=job)
    return states.choose(definition, "TunedBeatsBase", {}, variables), variables


@pytest.mark.parametrize("stage", STAGES)
def test_gate_promotes_a_gain_at_or_above_the_configured_minimum(resolved, stage):
    minimum = load_config(default_context()).stage(stage).jobs.min_ndcg_gain
    definition = _machine(resolved, stage, "fine-tune")
    for gain in (minimum, minimum + 0.05, 0.3):
        metrics = {"eval:base:ndcg@10": 0.61, "eval:tuned:ndcg@10": 0.61 + gain, GAIN: gain, "train:loss": 0.42}
        target, variables = _gate(definition, _training_job(metrics))
        assert (target, variables["gain"]) == ("KeepModel", gain)


@pytest.mark.parametrize("stage", STAGES)
def test_gate_rejects_a_gain_below_the_minimum_and_says_by_how_much(resolved, stage):
    minimum = load_config(default_context()).stage(stage).jobs.min_ndcg_gain
    definition = _machine(resolved, stage, "fine-tune")
    for gain in (minimum - 0.001, 0, -0.02):
        target, variables = _gate(definition, _training_job({"eval:base:ndcg@10": 0.6, GAIN: gain}))
        assert target == "NotPromoted", gain
        cause = _evaluate(definition["States"]["NotPromoted"]["Cause"], variables=variables)
        assert cause.startswith(f"tuned model gained {gain:g} ndcg@10 over the base model"), cause
        assert cause.endswith(f"promotion needs {minimum}"), cause


@pytest.mark.parametrize("metrics", [None, {}, {"train:loss": 0.4, "eval:base:ndcg@10": 0.6}],
                         ids=["no FinalMetricDataList", "empty list", "no gain metric"])
def test_gate_fails_as_metrics_missing_when_the_job_reported_no_gain(resolved, metrics):
    definition = _machine(resolved, "dev", "fine-tune")
    target, variables = _gate(definition, _training_job(metrics))
    assert (target, variables["gain"]) == ("MetricsMissing", None)
    assert definition["States"]["MetricsMissing"]["Type"] == "Fail"


# -- fine-tune: the promotion -------------------------------------------------------------------

BUCKET = "semsearch-dev-artifacts-123456789012-us-east-1"  # the artifact bucket, resolved
EXEC_ROLE = "arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-us-east-1"


def _arguments(state: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    return {k: _evaluate(v, variables=variables) if isinstance(v, str) and v.startswith("{%") else v
            for k, v in state["Arguments"].items()}


def _promotion_variables(definition: dict[str, Any]) -> dict[str, Any]:
    """The variables after the gate and KeepModel, for a job that gained enough."""
    variables = _assign(definition["States"]["Train"], state_input={}, result=_training_job({GAIN: 0.02}))
    return {**variables, "tag": _evaluate(definition["States"]["KeepModel"]["Assign"]["tag"], variables=variables)}


def test_a_promotion_serves_the_model_it_copied(resolved):
    """What KeepModel copies and RecordPromotion writes, read back by the model stack as
    CloudFormation does on the update that follows: the endpoint serves that very object."""
    definition = _machine(resolved, "dev", "fine-tune")
    variables = _promotion_variables(definition)
    job = "semsearch-dev-ft-1767614400000"
    assert variables["tag"] == "ft-1767614400000"
    copied = _arguments(definition["States"]["KeepModel"], variables)
    assert copied == {"Bucket": BUCKET,
                      "CopySource": f"semsearch-dev-artifacts/jobs/training/{job}/output/model.tar.gz",
                      "Key": f"models/{job}/model.tar.gz"}
    record = _arguments(definition["States"]["RecordPromotion"], variables)
    assert record["Value"] == variables["tag"] and record["Overwrite"] is True

    promoted = Templates(resolved.by_stack, ssm_values={record["Name"]: record["Value"]})
    model = only(promoted, "semsearch-dev-model", "AWS::SageMaker::Model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{copied['Bucket']}/{copied['Key']}"
    endpoint = only(promoted, "semsearch-dev-model", "AWS::SageMaker::Endpoint")["EndpointName"]
    assert endpoint.endswith(f"-{variables['tag']}")
    assert promoted.ssm_value("/semsearch-dev/cpu/serving-endpoint") == endpoint  # what search and ops read
    unpromoted = only(resolved, "semsearch-dev-model", "AWS::SageMaker::Endpoint")["EndpointName"]
    assert unpromoted == endpoint.removesuffix(f"-{variables['tag']}")


def _catch_output(state: dict[str, Any], error: str, cause: str) -> Any:
    """What a Catch of ``state`` passes on for this error (AWS hands it $states.errorOutput)."""
    (catcher,) = state["Catch"]
    bindings = {"states": {"errorOutput": {"Error": error, "Cause": cause}, "context": {}}}
    output = catcher.get("Output", "{% $states.errorOutput %}")  # AWS's default for a Catch
    if isinstance(output, dict):
        return catcher["Next"], {k: states.evaluate(v.strip()[2:-2].strip(), bindings) for k, v in output.items()}
    return catcher["Next"], states.evaluate(output.strip()[2:-2].strip(), bindings)


def _describe(definition: dict[str, Any], key: str, status: str, reason: str | None = None) -> str | None:
    """Where <key>Settled goes on a DescribeStacks result with this status."""
    stack = {"StackName": "example", "StackStatus": status, "CreationTime": "2026-01-05T13:00:00Z"}
    if reason is not None:
        stack["StackStatusReason"] = reason
    result = {"Stacks": [stack]}
    variables = _assign(definition["States"][f"Describe{key}"], state_input={}, result=result)
    return states.choose(definition, f"{key}Settled", result, variables)


@pytest.mark.parametrize("stage", STAGES)
def test_the_promotion_updates_the_model_search_and_ops_stacks_in_order_with_the_execution_role(resolved, stage):
    definition = _machine(resolved, stage, "fine-tune")
    prefix = f"Semsearch{stage.capitalize()}"
    updated, name = [], definition["States"]["RecordPromotion"]["Next"]
    while name != "Promoted":
        update = definition["States"][name]
        assert update["Arguments"]["RoleARN"] == EXEC_ROLE  # CloudFormation deploys as `cdk deploy` does
        assert update["Arguments"]["UsePreviousTemplate"] is True
        key = name.removeprefix("Update")
        assert key.startswith(prefix) and update["Next"] == f"WaitFor{key}"
        for status in ("UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"):
            assert _describe(definition, key, status) == f"WaitFor{key}"
        assert _describe(definition, key, "UPDATE_COMPLETE") == f"{key}Updated"
        updated.append(update["Arguments"]["StackName"])
        name = definition["States"][f"{key}Updated"]["Next"]
    assert updated == [f"semsearch-{stage}-model", f"semsearch-{stage}-search", f"semsearch-{stage}-ops"]
    assert definition["States"]["Promoted"]["Type"] == "Succeed"


def test_a_stack_without_changes_counts_as_updated_and_other_update_errors_fail(resolved):
    definition = _machine(resolved, "dev", "fine-tune")
    update = definition["States"]["UpdateSemsearchDevSearch"]
    unchanged = _catch_output(update, "CloudFormation.CloudFormationException",
                              "No updates are to be performed. (Service: CloudFormation, Status Code: 400)")
    assert states.choose(definition, unchanged[0], unchanged[1], {}) == "SemsearchDevSearchUpdated"
    busy = _catch_output(update, "CloudFormation.CloudFormationException",
                         "Stack:semsearch-dev-search is in UPDATE_IN_PROGRESS state and can not be updated.")
    failed = states.choose(definition, busy[0], busy[1], {})
    assert definition["States"][failed]["Type"] == "Fail"
    assert _evaluate(definition["States"][failed]["Cause"], state_input=busy[1]) == (
        "semsearch-dev-search: Stack:semsearch-dev-search is in UPDATE_IN_PROGRESS state and can not be updated.")


@pytest.mark.parametrize("reason", ["Resource handler returned message: the endpoint failed its health check", None])
def test_a_stack_that_rolls_back_fails_the_promotion_and_says_why(resolved, reason):
    definition = _machine(resolved, "dev", "fine-tune")
    parameter = definition["States"]["RecordPromotion"]["Arguments"]["Name"]
    for status in ("UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED", "UPDATE_FAILED"):
        target = _describe(definition, "SemsearchDevModel", status, reason)
        assert target == "SemsearchDevModelRolledBack", status
        result = {"Stacks": [{"StackStatus": status, **({"StackStatusReason": reason} if reason else {})}]}
        variables = _assign(definition["States"]["DescribeSemsearchDevModel"], state_input={}, result=result)
        cause = _evaluate(definition["States"][target]["Cause"], variables=variables)
        assert cause.startswith(f"semsearch-dev-model ended in {status}: {reason or ''}. "
                                f"The promotion stays recorded in {parameter}"), cause


# -- batch-embed: Serving ---------------------------------------------------------------------

MODEL_PARAMETER, ENDPOINT_PARAMETER = "/semsearch-dev/cpu/serving-model", "/semsearch-dev/cpu/serving-endpoint"
SERVING = {MODEL_PARAMETER: "ModelcpuModel1A2B3C4D-x9Yz", ENDPOINT_PARAMETER: "semsearch-dev-cpu-1a2b3c4d"}


def _serving(definition: dict[str, Any], start: dict[str, Any], values: dict[str, str]
             ) -> tuple[str | None, dict[str, Any]]:
    """Where Serving goes on a GetParameters result holding ``values`` (the others invalid)."""
    result = {"Parameters": [{"Name": name, "Type": "String", "Value": value, "Version": 3,
                              "ARN": f"arn:aws:ssm:us-east-1:123456789012:parameter{name}"}
                             for name, value in values.items()],
              "InvalidParameters": [n for n in (MODEL_PARAMETER, ENDPOINT_PARAMETER) if n not in values]}
    assert definition["States"]["ServingModel"]["Arguments"]["Names"] == [MODEL_PARAMETER, ENDPOINT_PARAMETER]
    variables = _assign(definition["States"]["ServingModel"], state_input=start, result=result)
    return states.choose(definition, "Serving", result, variables), variables


UPLOAD = {"input_s3_uri": "s3://semsearch-dev-artifacts/batch/input/docs.jsonl"}  # the upload rule's input


@pytest.mark.parametrize("start", [{}, UPLOAD], ids=["manual start", "upload"])
def test_the_serving_model_from_day_one_or_the_named_one(resolved, start):
    definition = _machine(resolved, "dev", "batch-embed")
    target, variables = _serving(definition, start, SERVING)
    assert target == "Prepare"
    assert (variables["modelName"], variables["endpointName"]) == tuple(SERVING.values())
    target, variables = _serving(definition, {**start, "model_name": "my-model"}, SERVING)
    assert (target, variables["modelName"], variables["endpointName"]) == ("Prepare", "my-model",
                                                                            SERVING[ENDPOINT_PARAMETER])
    assert variables["inputUri"] == start.get("input_s3_uri", variables["inputUri"])


def test_without_what_serves_the_endpoint_the_run_stops_and_says_so(resolved):
    definition = _machine(resolved, "dev", "batch-embed")
    for values in ({}, {MODEL_PARAMETER: SERVING[MODEL_PARAMETER]}):
        assert _serving(definition, {}, values)[0] == "NotServing"
    cause = definition["States"]["NotServing"]["Cause"]
    assert MODEL_PARAMETER in cause and "deploy the model stack" in cause


# -- batch-embed: AllDocumentsIndexed --------------------------------------------------------

def _after_load(definition: dict[str, Any], report: Report, prepared: int = 500) -> str | None:
    invoke_result = {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": report.as_dict()}
    loaded = _evaluate(definition["States"]["BulkLoad"]["Output"], result=invoke_result)
    return states.choose(definition, "AllDocumentsIndexed", loaded, {"documents": prepared})


def test_every_document_indexed_succeeds(resolved):
    definition = _machine(resolved, "dev", "batch-embed")
    assert _after_load(definition, Report(documents_in=500, documents_indexed=500, requests=3, retried=2)) == "Loaded"


def test_fewer_documents_out_of_the_transform_than_prepared_fail(resolved):
    definition = _machine(resolved, "dev", "batch-embed")
    report = Report(documents_in=480, documents_indexed=480, requests=3)
    assert _after_load(definition, report, prepared=500) == "DocumentsMissing"
    cause = _evaluate(definition["States"]["DocumentsMissing"]["Cause"], state_input=report.as_dict(),
                      variables={"documents": 500})
    assert cause == "the transform output holds 480 documents; 500 were prepared"


@pytest.mark.parametrize("report", [
    Report(documents_in=500, documents_indexed=499, requests=3, failed={"doc-7": "mapper_parsing_exception"}),
    Report(documents_in=500, documents_indexed=498, requests=3),
    Report(documents_in=500, documents_indexed=500, requests=3, failed={"batch/out.jsonl line 9": "not JSON"}),
], ids=["a failure", "counts unequal", "an unreadable line"])
def test_anything_short_of_every_document_fails_with_the_counts(resolved, report):
    definition = _machine(resolved, "dev", "batch-embed")
    assert _after_load(definition, report) == "LoadIncomplete"
    cause = _evaluate(definition["States"]["LoadIncomplete"]["Cause"], state_input=report.as_dict())
    assert cause.startswith(f"{len(report.failed)} of 500 documents failed to index: "), cause
