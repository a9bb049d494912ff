"""Dashboards, alarms and the deploy pipeline as synthesized."""

from __future__ import annotations

import copy
import json

import pytest

from stacks.config import ConfigError, load_config
from stacks.containers import model_version
from stacks.names import versioned_endpoint_name
from tests.infra.conftest import default_context, synth
from tests.infra.resolved import PROMOTION_TAG, only, stage_templates

STAGES = ["dev", "prod"]


def _alarms(template) -> dict[str, dict]:
    return {a["Properties"]["MetricName"]: a["Properties"]
            for a in template.find_resources("AWS::CloudWatch::Alarm").values()}


@pytest.mark.parametrize("stage", STAGES)
def test_every_ops_alarm_notifies_the_stage_topic(templates, stage):
    alarms = _alarms(templates[(stage, "ops")])
    assert {"ClusterStatus.red", "ClusterStatus.yellow", "FreeStorageSpace", "JVMMemoryPressure",
            "ExecutionsFailed", "ExecutionsTimedOut"} <= set(alarms)
    for props in templates[(stage, "ops")].find_resources("AWS::CloudWatch::Alarm").values():
        assert props["Properties"]["AlarmActions"], props
        assert "Alarms" in json.dumps(props["Properties"]["AlarmActions"])  # the storage stack's topic
    assert alarms["JVMMemoryPressure"]["Threshold"] == 85
    assert alarms["FreeStorageSpace"]["ComparisonOperator"] == "LessThanOrEqualToThreshold"


@pytest.mark.parametrize("stage", STAGES)
def test_endpoint_latency_and_5xx_alarms_notify_too(templates, stage):
    alarms = _alarms(templates[(stage, "model")])
    for metric in ("ModelLatency", "Invocation5XXErrors"):
        assert alarms[metric]["AlarmActions"] and alarms[metric]["OKActions"]


@pytest.mark.parametrize("stage", STAGES)
def test_alarm_topic_is_encrypted_and_tls_only(templates, stage):
    template = templates[(stage, "storage")]
    (topic,) = template.find_resources("AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    (policy,) = template.find_resources("AWS::SNS::TopicPolicy").values()
    assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Properties"]["PolicyDocument"]["Statement"])


@pytest.mark.parametrize("stage", STAGES)
def test_dashboard_covers_endpoint_domain_and_workflows(templates, stage):
    (dashboard,) = templates[(stage, "ops")].find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in ("Invocations", "ModelLatency", "Invocation4XXErrors", "Invocation5XXErrors", "CPUUtilization",
                   "MemoryUtilization", "ClusterStatus.red", "JVMMemoryPressure", "SearchLatency", "IndexingLatency",
                   "ThreadpoolWriteRejected", "ExecutionsStarted", "ExecutionsFailed"):
        assert metric in body, metric
    assert ("GPUUtilization" in body) == (stage == "prod")  # g5 in prod, c6i in dev


def test_alarm_email_subscribes_when_configured(tmp_path):
    from aws_cdk import assertions

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx["dev.ops.alarm_email"] = "oncall@example.com"
    app, _ = synth(ctx, tmp_path)
    template = assertions.Template.from_stack(app.node.find_child("dev").storage)
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email",
                                                                "Endpoint": "oncall@example.com"})


def test_bad_ops_config_is_named():
    ctx = default_context()
    ctx["dev.ops.active_hours_utc"] = "19-07"
    ctx["prod.ops.active_hours_utc"] = "07-19"
    ctx["dev.ops.alarm_email"] = "not-an-address"
    with pytest.raises(ConfigError) as raised:
        load_config(ctx)
    text = "\n".join(raised.value.problems)
    assert "stages.dev.ops.active_hours_utc: bad value '19-07'" in text
    assert "stages.prod.ops.active_hours_utc: prod never scales to zero" in text
    assert "stages.dev.ops.alarm_email: bad value 'not-an-address'" in text


# --- Pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(app):
    from aws_cdk import assertions

    return assertions.Template.from_stack(app.node.find_child("Pipeline"))


def _stages(pipeline) -> list[dict]:
    (resource,) = pipeline.find_resources("AWS::CodePipeline::Pipeline").values()
    return resource["Properties"]["Stages"]


def test_pipeline_runs_source_synth_selfmutation_dev_approval_prod(pipeline):
    names = [s["Name"] for s in _stages(pipeline)]
    assert names[:3] == ["Source", "Build", "UpdatePipeline"]
    assert names.index("dev") < names.index("prod")
    prod = next(s for s in _stages(pipeline) if s["Name"] == "prod")
    approvals = [a for a in prod["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]
    assert len(approvals) == 1 and approvals[0]["RunOrder"] == 1
    dev = next(s for s in _stages(pipeline) if s["Name"] == "dev")
    assert not [a for a in dev["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]


def test_pipeline_source_is_the_configured_codestar_connection(pipeline):
    source = _stages(pipeline)[0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    config = source["Configuration"]
    assert config["FullRepositoryId"] == "my-org/semsearch" and config["BranchName"] == "main"
    assert config["ConnectionArn"].startswith("arn:aws:codeconnections:")


def test_pipeline_synth_step_runs_the_template_tests_then_synth_on_a_sized_image(pipeline):
    projects = pipeline.find_resources("AWS::CodeBuild::Project")
    (synth,) = [p["Properties"] for p in projects.values() if "BuildSpec" in p["Properties"]["Source"]
                and "make synth" in json.loads(p["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]]
    spec = json.loads(synth["Source"]["BuildSpec"])
    # `make test` would need torch and a JVM; the template tests need neither.
    assert spec["phases"]["build"]["commands"] == ["make test-infra", "make synth"]
    assert spec["phases"]["install"]["runtime-versions"] == {"python": "3.11"}
    assert synth["Environment"]["Image"] == "aws/codebuild/standard:7.0"
    assert synth["Environment"]["ComputeType"] == "BUILD_GENERAL1_MEDIUM"


def test_make_test_infra_exists_and_needs_no_dev_install():
    import subprocess

    from tests.infra.conftest import REPO_ROOT

    database = subprocess.run(["make", "-C", str(REPO_ROOT), "-pn", "test-infra"], capture_output=True, text=True).stdout
    (rule,) = [line for line in database.splitlines() if line.startswith("test-infra:")]
    assert ".infra-deps" in rule and "dev" not in rule.split(":", 1)[1].split()


def test_pipeline_is_self_mutating(pipeline):
    assert any(s["Name"] == "UpdatePipeline" for s in _stages(pipeline))


# --- One deploy path: cdk.json's "deploy" picks the CDK pipeline or GitHub Actions ---------------


def test_default_config_deploys_through_the_pipeline_only(app):
    assert load_config(default_context()).deploy == "pipeline"
    assert app.node.try_find_child("Pipeline") is not None


def test_deploy_github_builds_no_pipeline():
    from app import build_app

    ctx = copy.deepcopy(default_context())
    ctx["deploy"] = "github"
    assert load_config(ctx).pipeline is None
    assert build_app(ctx).node.try_find_child("Pipeline") is None  # constructs only, no synth


def test_bad_deploy_path_is_named():
    ctx = default_context()
    ctx["deploy"] = "jenkins"
    with pytest.raises(ConfigError) as raised:
        load_config(ctx)
    assert raised.value.problems == ["deploy: bad value 'jenkins'; allowed: pipeline, github"]
    del ctx["pipeline"]
    ctx["deploy"] = "pipeline"
    with pytest.raises(ConfigError) as raised:
        load_config(ctx)
    assert [p.split(";")[0] for p in raised.value.problems] == ["pipeline: missing"]


@pytest.mark.parametrize("deploy", ["pipeline", "github"])
def test_deploy_path_command_prints_the_configured_path(tmp_path, deploy):
    import subprocess
    import sys

    from tests.infra.conftest import REPO_ROOT

    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    cdk_json["context"]["deploy"] = deploy
    (tmp_path / "cdk.json").write_text(json.dumps(cdk_json))
    done = subprocess.run([sys.executable, "-m", "stacks.deploy_path"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO_ROOT)})
    assert (done.returncode, done.stdout) == (0, f"deploy={deploy}\n"), done.stderr


def test_deploy_workflow_deploys_only_when_the_config_says_github():
    import yaml

    from tests.infra.conftest import REPO_ROOT

    jobs = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text())["jobs"]
    (read,) = [s for s in jobs["deploy-path"]["steps"] if "run" in s]
    assert read["run"] == 'python -m stacks.deploy_path >> "$GITHUB_OUTPUT"'
    assert jobs["deploy-path"]["outputs"] == {"deploy": "${{ steps." + read["id"] + ".outputs.deploy }}"}
    assert not any("aws-actions" in s.get("uses", "") for s in jobs["deploy-path"]["steps"])
    assert jobs["deploy-dev"]["needs"] == "deploy-path"
    assert jobs["deploy-dev"]["if"] == "needs.deploy-path.outputs.deploy == 'github'"
    # Every job that deploys waits for deploy-dev (so for the gate); none runs on its own.
    for name, job in jobs.items():
        if name not in ("deploy-path", "deploy-dev"):
            assert job["needs"] == "deploy-dev", name


def test_bad_pipeline_config_is_named():
    ctx = default_context()
    ctx["pipeline.connection_arn"] = "arn:aws:s3:::not-a-connection"
    ctx["pipeline.stages"] = '["dev", "qa"]'
    with pytest.raises(ConfigError) as raised:
        load_config(ctx)
    text = "\n".join(raised.value.problems)
    assert "pipeline.connection_arn: bad value 'arn:aws:s3:::not-a-connection'" in text
    assert "pipeline.stages: unknown stage 'qa'" in text


# --- Dev scale-to-zero outside active hours ---------------------------------------------


@pytest.fixture(scope="module")
def scale_to_zero(tmp_path_factory):
    from aws_cdk import assertions

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx["dev.ops.active_hours_utc"] = "07-19"
    app, _ = synth(ctx, tmp_path_factory.mktemp("cdk.out"))
    stage = app.node.find_child("dev")
    found = {kind: assertions.Template.from_stack(getattr(stage, kind)) for kind in ("model", "search", "jobs")}
    #: The endpoint's name for its model version, and as resolved before and after a promotion.
    version = model_version(load_config(ctx).stage("dev").endpoints["cpu"])
    found["endpoint"] = versioned_endpoint_name("dev", "cpu", version)
    found["resolved"] = stage_templates(app, "dev")
    found["promoted"] = stage_templates(app, "dev", promotion_tag=PROMOTION_TAG)
    return found


def test_active_hours_host_the_model_as_a_component_that_scales_to_zero(scale_to_zero):
    model = scale_to_zero["model"]
    (config,) = model.find_resources("AWS::SageMaker::EndpointConfig").values()
    variant = config["Properties"]["ProductionVariants"][0]
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}
    assert "ModelName" not in variant
    (component,) = model.find_resources("AWS::SageMaker::InferenceComponent").values()
    endpoint = scale_to_zero["endpoint"]
    for resolved, name in ((scale_to_zero["resolved"], endpoint),
                           (scale_to_zero["promoted"], f"{endpoint}-{PROMOTION_TAG}")):
        deployed = only(resolved, "semsearch-dev-model", "AWS::SageMaker::InferenceComponent")
        assert (deployed["InferenceComponentName"], deployed["EndpointName"]) == (f"{name}-model", name)
    # A new version is a new component beside the old one, which serves until the glue flips.
    assert (component["UpdateReplacePolicy"], component["DeletionPolicy"]) == ("Retain", "Delete")
    requirements = component["Properties"]["Specification"]["ComputeResourceRequirements"]
    assert requirements == {"NumberOfCpuCoresRequired": 3, "MinMemoryRequiredInMb": 6144}  # ml.c6i.xlarge


def test_schedule_wakes_up_and_sleeps_on_weekdays(scale_to_zero):
    (target,) = scale_to_zero["model"].find_resources("AWS::ApplicationAutoScaling::ScalableTarget").values()
    props = target["Properties"]
    for resolved, name in ((scale_to_zero["resolved"], scale_to_zero["endpoint"]),
                           (scale_to_zero["promoted"], f"{scale_to_zero['endpoint']}-{PROMOTION_TAG}")):
        deployed = only(resolved, "semsearch-dev-model", "AWS::ApplicationAutoScaling::ScalableTarget")
        assert deployed["ResourceId"] == f"inference-component/{name}-model"
    assert props["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    actions = {a["ScheduledActionName"]: a for a in props["ScheduledActions"]}
    wake = next(a for name, a in actions.items() if "WakeUp" in name)
    sleep = next(a for name, a in actions.items() if "Sleep" in name)
    assert wake["Schedule"] == "cron(0 7 ? * MON-FRI *)"
    assert wake["ScalableTargetAction"] == {"MinCapacity": 1, "MaxCapacity": 2}
    assert sleep["Schedule"] == "cron(0 19 ? * MON-FRI *)"
    assert sleep["ScalableTargetAction"] == {"MinCapacity": 0, "MaxCapacity": 0}


def test_connector_names_the_component_the_model_stack_deploys_before_and_after_a_promotion(scale_to_zero):
    """The search stack reads the endpoint's name from SSM: the glue's connector names the
    component that serves now; the promotion redeploys it through the stacks, never in place."""
    for resolved in (scale_to_zero["resolved"], scale_to_zero["promoted"]):
        component = only(resolved, "semsearch-dev-model", "AWS::SageMaker::InferenceComponent")
        glue = only(resolved, "semsearch-dev-search", "Custom::NeuralSearch")
        assert (glue["EndpointName"], glue["InferenceComponentName"]) == (
            component["EndpointName"], component["InferenceComponentName"])
    machines = scale_to_zero["jobs"].find_resources("AWS::StepFunctions::StateMachine")
    text = json.dumps([m["Properties"]["DefinitionString"] for m in machines.values()])
    assert "cloudformation:updateStack" in text
    assert "updateInferenceComponent" not in text and "updateEndpoint" not in text
