"""The compare workflow as synthesized (stacks/components/compare_workflow.py): which starts it
refuses, the processing job's request as Step Functions evaluates it (the arguments and inputs
semsearch/compare_job.py reads), isolation, the job role's reach. Every request is also checked
against botocore's model and the Service Authorization Reference in test_aws_specs.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from semsearch import compare_job
from tests.infra.resolved import stage_templates, state_machine
from tests.infra.specs import botocore_api, callers, iam, states, tasks
from tests.infra.specs.intrinsics import ACCOUNT, REGION, Templates

STAGES = ("dev", "prod")


@pytest.fixture(scope="module")
def resolved(app) -> Templates:
    return stage_templates(app, *STAGES)


def _machine(templates: Templates, stage: str) -> dict[str, Any]:
    return state_machine(templates, f"semsearch-{stage}-compare")


def _bucket(stage: str) -> str:
    return f"semsearch-{stage}-artifacts-{ACCOUNT}-{REGION}"


def _start(stage: str, models: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"pairs_s3_uri": f"s3://{_bucket(stage)}/jobs/compare/run-1/pairs/", "models": models, **extra}


def _job(resolved: Templates, stage: str, start: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The CreateProcessingJob request and the execution's output, for one start input."""
    definition = _machine(resolved, stage)
    (run,) = [r for r in [states.Simulator(f"semsearch-{stage}-compare", definition,
                                           lambda call: tasks.representative_result(call, {})).run([start])]]
    (call,) = run.calls
    assert not run.findings, run.findings
    params = tasks.request(call)
    variables = dict(call.variables)
    output = {key: states.evaluate(value.strip()[2:-2], {**variables, "states": {
        "input": start, "result": tasks.representative_result(call, {}), "context": {}}})
        for key, value in definition["States"]["Compare"]["Output"].items()}
    return params, output


@pytest.mark.parametrize("start", [
    {}, {"pairs_s3_uri": "s3://b/p/"}, {"models": [{"s3_uri": "s3://b/m/"}]},
    {"pairs_s3_uri": "s3://b/p/", "models": []},
    {"pairs_s3_uri": "s3://b/p/", "models": [{"s3_uri": f"s3://b/m{i}/"} for i in range(9)]},
    {"pairs_s3_uri": "s3://b/p/", "models": [{"name": "no uri"}]},
    {"pairs_s3_uri": "s3://b/p/", "models": "s3://b/m/"},
])
def test_a_start_without_pairs_or_with_no_usable_models_is_refused(resolved, start):
    definition = _machine(resolved, "dev")
    assert states.choose(definition, "InputGiven", start, {}) == "BadInput"
    assert definition["States"]["BadInput"]["Type"] == "Fail"


@pytest.mark.parametrize("count", [1, 8])
def test_one_to_eight_models_are_accepted(resolved, count):
    start = _start("dev", [{"s3_uri": f"s3://b/m{i}/"} for i in range(count)])
    assert states.choose(_machine(resolved, "dev"), "InputGiven", start, {}) == "Compare"


@pytest.mark.parametrize("stage", STAGES)
def test_the_job_gets_the_pairs_and_each_model_where_compare_job_reads_them(resolved, stage):
    bucket = _bucket(stage)
    models = [{"s3_uri": f"s3://{bucket}/training/base-model/", "name": "base", "catalog_id": "all-MiniLM-L6-v2"},
              {"s3_uri": f"s3://{bucket}/models/semsearch-{stage}-ft-mivq2c1s/model.tar.gz", "name": "tuned"},
              {"s3_uri": f"s3://{bucket}/jobs/compare/run-1/models/2/"}]
    params, output = _job(resolved, stage, _start(stage, models, pairs_path="qrels/dev.tsv", batch_size=128))
    assert not botocore_api.validate("sagemaker", "CreateProcessingJob", params)
    app = params["AppSpecification"]
    assert app["ContainerEntrypoint"] == compare_job.entrypoint()
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[\w-]+\.amazonaws\.com/pytorch-training:2\.6\.0-gpu-py312.*",
                        app["ImageUri"]), app["ImageUri"]
    assert app["ContainerArguments"] == [
        "--pairs", f"{compare_job.PAIRS_DIR}/qrels/dev.tsv", "--out", compare_job.OUTPUT_DIR, "--batch-size", "128",
        f"--model={compare_job.MODELS_DIR}/0,name=base,model=all-MiniLM-L6-v2",
        f"--model={compare_job.MODELS_DIR}/1,name=tuned", f"--model={compare_job.MODELS_DIR}/2"]
    # The arguments are what compare_job's parser takes.
    parsed = compare_job.parse_args(app["ContainerArguments"])
    assert parsed.batch_size == 128 and len(parsed.model) == 3
    inputs = {i["InputName"]: i["S3Input"] for i in params["ProcessingInputs"]}
    assert list(inputs) == ["code", "pairs", "model-0", "model-1", "model-2"]
    assert inputs["code"]["LocalPath"] == compare_job.CODE_DIR
    assert re.fullmatch(r"s3://cdk-\w+-assets-\d{12}-[\w-]+/[0-9a-f]{64}\.gz", inputs["code"]["S3Uri"])
    assert inputs["pairs"] == {"S3Uri": f"s3://{bucket}/jobs/compare/run-1/pairs/", "LocalPath": compare_job.PAIRS_DIR,
                               "S3DataType": "S3Prefix", "S3InputMode": "File",
                               "S3DataDistributionType": "FullyReplicated"}
    assert [(inputs[f"model-{i}"]["S3Uri"], inputs[f"model-{i}"]["LocalPath"]) for i in range(3)] == [
        (m["s3_uri"], f"{compare_job.MODELS_DIR}/{i}") for i, m in enumerate(models)]
    (out,) = params["ProcessingOutputConfig"]["Outputs"]
    job = params["ProcessingJobName"]
    assert re.fullmatch(rf"semsearch-{stage}-cmp-[0-9a-z]+", job)
    assert out["S3Output"] == {"S3Uri": f"s3://{bucket}/jobs/compare/{job}/", "LocalPath": compare_job.OUTPUT_DIR,
                               "S3UploadMode": "EndOfJob"}
    assert params["ProcessingOutputConfig"]["KmsKeyId"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    # What `semsearch compare --remote` reads from the execution's output.
    assert output == {"processing_job_name": job,
                      "compare_json_s3_uri": f"s3://{bucket}/jobs/compare/{job}/{compare_job.RESULT_FILE}"}


@pytest.mark.parametrize("stage", STAGES)
def test_one_model_and_defaults(resolved, stage):
    params, _ = _job(resolved, stage, _start(stage, [{"s3_uri": f"s3://{_bucket(stage)}/jobs/compare/r/models/0/"}]))
    assert params["AppSpecification"]["ContainerArguments"] == [
        "--pairs", compare_job.PAIRS_DIR, "--out", compare_job.OUTPUT_DIR, "--batch-size", "64",
        f"--model={compare_job.MODELS_DIR}/0"]
    assert [i["InputName"] for i in params["ProcessingInputs"]] == ["code", "pairs", "model-0"]


def test_network_isolation_follows_the_training_job(resolved):
    # prod: jobs.network_isolation in cdk.json; dev: off. Nothing may reach the Hub in either.
    for stage, isolated in (("dev", False), ("prod", True)):
        params, _ = _job(resolved, stage, _start(stage, [{"s3_uri": "s3://b/m/"}]))
        assert params["NetworkConfig"] == {"EnableNetworkIsolation": isolated}
        assert params["Environment"]["HF_HUB_OFFLINE"] == "1"


def test_the_job_role_reads_only_its_prefixes_and_writes_only_jobs_compare(resolved):
    stage = "dev"
    bucket = _bucket(stage)
    params, _ = _job(resolved, stage, _start(stage, [{"s3_uri": f"s3://{bucket}/training/base-model/"}]))
    statements = callers.role_statements(resolved, params["RoleArn"])
    for key in ("jobs/compare/r/pairs/a.jsonl", "training/base-model/config.json", "models/m/model.tar.gz",
                "jobs/training/semsearch-dev-ft-x/output/model.tar.gz"):
        assert iam.allowed(statements, iam.Request("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}"))
    for key in ("batch/input/docs.jsonl", "jobs/batch/x/output/a.out", "jobs/checkpoints/x"):
        assert not iam.allowed(statements, iam.Request("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")), key
    assert iam.allowed(statements, iam.Request("s3:PutObject", f"arn:aws:s3:::{bucket}/jobs/compare/j/compare.json"))
    for key in ("models/m/model.tar.gz", "training/base-model/x", "jobs/training/x"):
        assert not iam.allowed(statements, iam.Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}")), key
    # Another stage's bucket is out of reach.
    assert not iam.allowed(statements, iam.Request("s3:GetObject",
                                                   f"arn:aws:s3:::{_bucket('prod')}/jobs/compare/r/pairs/a.jsonl"))


def test_what_semsearch_compare_remote_starts_runs_the_job(resolved):
    """compare_remote.start_input, the CLI's start input, passes the InputGiven Choice and makes
    a valid request whose arguments name each of its models."""
    from semsearch import compare_remote

    bucket = _bucket("dev")
    start = compare_remote.start_input(
        f"s3://{bucket}/jobs/compare/run/pairs/",
        [{"s3_uri": f"s3://{bucket}/jobs/compare/run/models/0/", "name": "all-MiniLM-L6-v2",
          "catalog_id": "all-MiniLM-L6-v2"}, {"s3_uri": f"s3://{bucket}/training/base-model/", "name": "base"}],
        batch_size=32, pairs_path="qrels/dev.tsv")
    assert states.choose(_machine(resolved, "dev"), "InputGiven", start, {}) == "Compare"
    params, _ = _job(resolved, "dev", start)
    assert not botocore_api.validate("sagemaker", "CreateProcessingJob", params)
    assert params["AppSpecification"]["ContainerArguments"][-2:] == [
        f"--model={compare_job.MODELS_DIR}/0,name=all-MiniLM-L6-v2,model=all-MiniLM-L6-v2",
        f"--model={compare_job.MODELS_DIR}/1,name=base"]
