"""Which way the workflows' JSONata Choices go on the inputs they will see.

test_aws_specs walks every branch of every state machine (scopes, requests, roles) but does not
say which branch an input takes. Here the synthesized expressions are evaluated with a JSONata
implementation (jsonata-python, tests/infra/specs/states.py) on realistic inputs:

- fine-tune: the Train state's Assign on a DescribeTrainingJob result (what
  createTrainingJob.sync returns), then the TunedBeatsBase gate;
- batch-embed: the LatestModel state's Assign on an SSM GetParameter result holding the
  parameter's deployed value or a promoted model, then HasModel;
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
from tests.infra.specs import states
from tests.infra.specs.intrinsics import Templates

GAIN = "eval:gain:ndcg@10"
STAGES = ("dev", "prod")


@pytest.fixture(scope="module")
def resolved(app) -> Templates:
    by_stack = {stack.stack_name: stack.template for stage in STAGES
                for stack in app.node.find_child(stage).synth().stacks}
    return Templates(by_stack)


def _machine(templates: Templates, stage: str, suffix: str) -> dict[str, Any]:
    (definition,) = [states.definition_of(templates, stack, resource)
                     for stack, logical_id, resource in templates.all_resources("AWS::StepFunctions::StateMachine")
                     if templates.get_att(stack, logical_id, "Name") == f"semsearch-{stage}-{suffix}"]
    return definition


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
        assert (target, variables["gain"]) == ("CreateModel", gain)


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


# -- batch-embed: HasModel -------------------------------------------------------------------

def _latest_model_parameter(templates: Templates, stage: str) -> str:
    """The value the latest-model parameter is deployed with (before any promotion)."""
    (value,) = [templates.resolve(stack, resource["Properties"]["Value"])
                for stack, _, resource in templates.all_resources("AWS::SSM::Parameter")
                if templates.resolve(stack, resource["Properties"]["Name"]) == f"/semsearch-{stage}/latest-model"]
    return str(value)


def _has_model(definition: dict[str, Any], start: dict[str, Any], parameter_value: str) -> str | None:
    result = {"Parameter": {"Name": "/semsearch-dev/latest-model", "Type": "String", "Value": parameter_value,
                            "Version": 1, "ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/semsearch-dev/"
                                                 "latest-model"}}
    variables = _assign(definition["States"]["LatestModel"], state_input=start, result=result)
    return states.choose(definition, "HasModel", result, variables)


UPLOAD = {"input_s3_uri": "s3://semsearch-dev-artifacts/batch/input/docs.jsonl"}  # the upload rule's input


@pytest.mark.parametrize("start", [{}, UPLOAD], ids=["manual start", "upload"])
def test_no_model_until_one_is_promoted_or_named(resolved, start):
    definition = _machine(resolved, "dev", "batch-embed")
    deployed = _latest_model_parameter(resolved, "dev")
    assert _has_model(definition, start, deployed) == "NoModel"
    assert _has_model(definition, start, "semsearch-dev-ft-1767614400000") == "Transform"
    assert _has_model(definition, {**start, "model_name": "my-model"}, deployed) == "Transform"


# -- batch-embed: AllDocumentsIndexed --------------------------------------------------------

def _after_load(definition: dict[str, Any], report: Report) -> str | None:
    invoke_result = {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": report.as_dict()}
    loaded = _evaluate(definition["States"]["BulkLoad"]["Output"], result=invoke_result)
    return states.choose(definition, "AllDocumentsIndexed", loaded, {})


def test_every_document_indexed_succeeds(resolved):
    definition = _machine(resolved, "dev", "batch-embed")
    assert _after_load(definition, Report(documents_in=500, documents_indexed=500, requests=3, retried=2)) == "Loaded"


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
