"""Dashboards, alarms and the deploy pipeline as synthesized."""

from __future__ import annotations

import copy
import json

import pytest

from stacks.config import ConfigError, load_config
from tests.infra.conftest import default_context, synth

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


def test_pipeline_synth_step_runs_make_test_then_make_synth(pipeline):
    projects = pipeline.find_resources("AWS::CodeBuild::Project")
    specs = [json.loads(p["Properties"]["Source"]["BuildSpec"]) for p in projects.values()
             if "BuildSpec" in p["Properties"]["Source"]]
    commands = [s["phases"]["build"]["commands"] for s in specs if "build" in s.get("phases", {})]
    assert ["make test", "make synth"] in commands


def test_pipeline_is_self_mutating(pipeline):
    assert any(s["Name"] == "UpdatePipeline" for s in _stages(pipeline))


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
    return {kind: assertions.Template.from_stack(getattr(stage, kind)) for kind in ("model", "search", "jobs")}


def test_active_hours_host_the_model_as_a_component_that_scales_to_zero(scale_to_zero):
    model = scale_to_zero["model"]
    (config,) = model.find_resources("AWS::SageMaker::EndpointConfig").values()
    variant = config["Properties"]["ProductionVariants"][0]
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}
    assert "ModelName" not in variant
    (component,) = model.find_resources("AWS::SageMaker::InferenceComponent").values()
    assert component["Properties"]["InferenceComponentName"] == "semsearch-dev-cpu-model"
    requirements = component["Properties"]["Specification"]["ComputeResourceRequirements"]
    assert requirements == {"NumberOfCpuCoresRequired": 3, "MinMemoryRequiredInMb": 6144}  # ml.c6i.xlarge


def test_schedule_wakes_up_and_sleeps_on_weekdays(scale_to_zero):
    (target,) = scale_to_zero["model"].find_resources("AWS::ApplicationAutoScaling::ScalableTarget").values()
    props = target["Properties"]
    assert props["ResourceId"] == "inference-component/semsearch-dev-cpu-model"
    assert props["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    actions = {a["ScheduledActionName"]: a for a in props["ScheduledActions"]}
    wake = next(a for name, a in actions.items() if "WakeUp" in name)
    sleep = next(a for name, a in actions.items() if "Sleep" in name)
    assert wake["Schedule"] == "cron(0 7 ? * MON-FRI *)"
    assert wake["ScalableTargetAction"] == {"MinCapacity": 1, "MaxCapacity": 2}
    assert sleep["Schedule"] == "cron(0 19 ? * MON-FRI *)"
    assert sleep["ScalableTargetAction"] == {"MinCapacity": 0, "MaxCapacity": 0}


def test_connector_and_promotion_name_the_component(scale_to_zero):
    (resource,) = scale_to_zero["search"].find_resources("Custom::NeuralSearch").values()
    assert resource["Properties"]["InferenceComponentName"] == "semsearch-dev-cpu-model"
    machines = scale_to_zero["jobs"].find_resources("AWS::StepFunctions::StateMachine")
    text = json.dumps([m["Properties"]["DefinitionString"] for m in machines.values()])
    assert "updateInferenceComponent" in text and "describeInferenceComponent" in text
    assert "updateEndpoint" not in text
