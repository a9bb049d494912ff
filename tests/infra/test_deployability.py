"""Issue 9: what stops a first deploy or a first workflow run, checked on the synthesized templates.

Each test names the defect it guards. The four variants users deploy (default, flavor custom,
active_hours_utc, vpc) each synthesize with no unacknowledged cdk-nag finding.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

import botocore.session
import jsonata
import pytest

from app import nag_failures
from stacks.components.embedding_endpoint import weekday_schedule
from stacks.config import ConfigError, load_config
from stacks.containers import model_version
from stacks.names import promoted_model_key, promotion_parameter, versioned_endpoint_name
from tests.infra.conftest import default_context, synth
from tests.infra.resolved import PROMOTION_TAG, only, role_statements, stage_templates

SUBNET, SG = "subnet-0123456789abcdef0", "sg-0123456789abcdef0"
VARIANTS: dict[str, dict[str, Any]] = {
    "custom": {"dev.endpoints.cpu.flavor": "custom",
               "dev.endpoints.cpu.model_data_s3_uri": "s3://my-models-bucket/minilm/model.tar.gz"},
    "active_hours": {"dev.ops.active_hours_utc": "07-24"},
    "vpc": {"dev.vpc": json.dumps({"vpc_id": "vpc-0123456789abcdef0", "availability_zones": ["us-east-1a"],
                                   "subnet_ids": [SUBNET], "security_group_ids": [SG]})},
}


def _dev_variant(name: str, tmp_path_factory) -> dict[str, Any]:
    from aws_cdk import assertions

    ctx = copy.deepcopy(default_context())
    ctx["stage"] = "dev"
    ctx.update(VARIANTS[name])
    app, assembly = synth(ctx, tmp_path_factory.mktemp(f"cdk.out-{name}"))
    stage = app.node.find_child("dev")
    found: dict[str, Any] = {kind: assertions.Template.from_stack(getattr(stage, kind)).to_json()
                             for kind in ("model", "search", "jobs")}
    found["nag"] = nag_failures(assembly.directory)
    found.update(_resolved(app, "dev"))
    return found


def _resolved(app, stage: str) -> dict[str, Any]:
    """The stage's stacks as CloudFormation resolves them, before and after a promotion."""
    return {"resolved": stage_templates(app, stage),
            "promoted": stage_templates(app, stage, promotion_tag=PROMOTION_TAG)}


@pytest.fixture(scope="module")
def vpc(tmp_path_factory):
    return _dev_variant("vpc", tmp_path_factory)


@pytest.fixture(scope="module")
def active_hours(tmp_path_factory):
    return _dev_variant("active_hours", tmp_path_factory)


@pytest.fixture(scope="module")
def dev(templates, app) -> dict[str, Any]:
    return {**{kind: templates[("dev", kind)].to_json() for kind in ("model", "search", "jobs")},
            **_resolved(app, "dev")}


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def _statements(template: dict) -> list[tuple[str, dict]]:
    """(policy logical id, statement) of every AWS::IAM::Policy in the template."""
    return [(k, s) for k, p in _resources(template, "AWS::IAM::Policy").items()
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _listify(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _role_statements(template: dict, role_prefix: str) -> list[dict]:
    """Statements of the policies attached to the one role whose logical id starts with role_prefix."""
    (role_id,) = [k for k in _resources(template, "AWS::IAM::Role") if k.startswith(role_prefix)]
    return [s for p in _resources(template, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _allows(statements: list[dict], action: str) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action in _listify(s["Action"])]


def _text(value: Any) -> str:
    """A CloudFormation value as text, intrinsics flattened (for matching ARNs by their parts)."""
    return json.dumps(value)


def _definitions(template: dict) -> dict[str, dict]:
    """{state machine logical id: its ASL definition}, CloudFormation tokens replaced by 'TOKEN'."""
    found = {}
    for logical_id, machine in _resources(template, "AWS::StepFunctions::StateMachine").items():
        body = machine["Properties"]["DefinitionString"]
        if isinstance(body, dict):
            body = "".join(p if isinstance(p, str) else "TOKEN" for p in body["Fn::Join"][1])
        found[logical_id] = json.loads(body)
    return found


def _states(definition: dict) -> dict[str, dict]:
    return definition["States"]


# --- the four variants ----------------------------------------------------------------


def test_default_variant_has_no_unacknowledged_nag_finding(assembly):
    assert nag_failures(assembly.directory) == []


@pytest.mark.parametrize("variant", ["custom"])
def test_custom_variant_synthesizes_nag_clean(variant, tmp_path_factory):
    assert _dev_variant(variant, tmp_path_factory)["nag"] == []


def test_active_hours_variant_is_nag_clean(active_hours):
    assert active_hours["nag"] == []


def test_vpc_variant_is_nag_clean(vpc):
    assert vpc["nag"] == []


# --- defect 2: the domain waits for its CloudWatch Logs resource policy ----------------------


def test_domain_is_created_after_its_logs_resource_policy(dev):
    search = dev["search"]
    (policy_id,) = _resources(search, "AWS::Logs::ResourcePolicy")
    (domain,) = _resources(search, "AWS::OpenSearchService::Domain").values()
    assert policy_id in domain.get("DependsOn", [])


# --- defect 3: with a VPC, every function runs in the configured subnets ---------------------


def test_vpc_places_every_function_in_the_subnets_and_groups(vpc):
    functions = {**_resources(vpc["search"], "AWS::Lambda::Function"), **_resources(vpc["jobs"], "AWS::Lambda::Function")}
    # on_event, is_complete, watchdog, the Provider framework's three, the bulk loader and batch embed's preparer
    assert len(functions) == 8, sorted(functions)
    for logical_id, fn in functions.items():
        assert fn["Properties"].get("VpcConfig") == {"SubnetIds": [SUBNET], "SecurityGroupIds": [SG]}, logical_id


def test_vpc_functions_manage_interfaces_only_in_their_subnets(vpc):
    for kind in ("search", "jobs"):
        assert "AWSLambdaVPCAccessExecutionRole" not in json.dumps(vpc[kind]), kind
    # glue, the Provider framework's two, the bulk loader (its role lives in the search stack too)
    for role in ("GlueRole", "GlueProviderOnEventRole", "GlueProviderWaiterRole", "BulkLoaderRole"):
        statements = _role_statements(vpc["search"], role)
        (create,) = _allows(statements, "ec2:CreateNetworkInterface")
        text = _text(create["Resource"])
        assert f"subnet/{SUBNET}" in text and f"security-group/{SG}" in text and "network-interface/*" in text
        assert create["Resource"] != "*"
        for action in ("ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"):
            (statement,) = _allows(statements, action)
            assert "network-interface/*" in _text(statement["Resource"]), (role, action)
        assert _allows(statements, "ec2:DescribeNetworkInterfaces"), role


# --- defect 4: Fail states read the cause that their Catch passes on -------------------------


def _machines(*templates: dict) -> list[dict]:
    return [d for t in templates for d in _definitions(t).values()]


def _caught_fail_states(definition: dict) -> list[tuple[dict, dict]]:
    states = _states(definition)
    return [(catcher, states[catcher["Next"]]) for state in states.values()
            for catcher in state.get("Catch", []) if states[catcher["Next"]]["Type"] == "Fail"]


def _evaluate(expression: str, data: Any, **variables: Any) -> Any:
    assert expression.startswith("{%") and expression.endswith("%}"), expression
    compiled = jsonata.Jsonata(expression[2:-2].strip())
    frame = compiled.create_frame()
    for name, value in variables.items():
        frame.bind(name, value)
    return compiled.evaluate(data, frame)


def test_error_output_is_read_only_inside_a_catch(dev, active_hours):
    machines = _machines(dev["jobs"], active_hours["jobs"])
    assert len(machines) == 6  # fine-tune, batch-embed and compare, in each variant
    for definition in machines:
        for name, state in _states(definition).items():
            outside_catch = {k: v for k, v in state.items() if k != "Catch"}
            assert "$states.errorOutput" not in json.dumps(outside_catch), name


def test_caught_failure_reports_the_task_error_cause(dev, active_hours):
    """AWS hands a Catch $states.errorOutput; what the Catch outputs is the Fail state's input."""
    error_output = {"Error": "SageMaker.ValidationException", "Cause": "Could not find endpoint 'x'"}
    checked = 0
    for definition in _machines(dev["jobs"], active_hours["jobs"]):
        for catcher, fail in _caught_fail_states(definition):
            output = catcher.get("Output", "{% $states.errorOutput %}")  # AWS's default for a Catch
            fail_input = {k: _evaluate(v, {}, states={"errorOutput": error_output}) for k, v in output.items()} \
                if isinstance(output, dict) else _evaluate(output, {}, states={"errorOutput": error_output})
            cause = _evaluate(fail["Cause"], {}, states={"input": fail_input})
            assert cause == error_output["Cause"], (catcher["Next"], cause)
            checked += 1
    assert checked >= 12


# --- defect 5: scale-to-zero -------------------------------------------------------------


def test_connector_may_invoke_the_inference_component(active_hours):
    """Exactly the endpoint and component the model stack deploys, read from SSM by the search
    stack: before a promotion and after it (both names change then)."""
    names = []
    for resolved in (active_hours["resolved"], active_hours["promoted"]):
        endpoint = only(resolved, "semsearch-dev-model", "AWS::SageMaker::Endpoint")["EndpointName"]
        component = only(resolved, "semsearch-dev-model", "AWS::SageMaker::InferenceComponent")
        assert component["EndpointName"] == endpoint
        (invoke,) = _allows(role_statements(resolved, "semsearch-dev-search", "ConnectorRole"),
                            "sagemaker:InvokeEndpoint")
        arn = "arn:aws:sagemaker:us-east-1:123456789012"
        assert _listify(invoke["Resource"]) == [f"{arn}:endpoint/{endpoint}",
                                                f"{arn}:inference-component/{component['InferenceComponentName']}"]
        names.append((endpoint, component["InferenceComponentName"]))
    assert names[1] == (f"{names[0][0]}-{PROMOTION_TAG}", f"{names[0][0]}-{PROMOTION_TAG}-model")


_DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def _cron_days(field: str) -> set[int]:
    days: set[int] = set()
    for part in field.split(","):
        first, _, last = part.partition("-")
        days.update(range(_DAYS.index(first), _DAYS.index(last or first) + 1))
    return days


def _fires(schedule: str, when: dt.datetime) -> bool:
    """Stand-in for Application Auto Scaling's scheduler, for the cron form these schedules use:
    cron(minute hour ? * DAYS *), UTC."""
    minute, hour, dom, month, days, year = re.fullmatch(r"cron\((.*)\)", schedule)[1].split()  # type: ignore[index]
    assert (dom, month, year) == ("?", "*", "*"), schedule
    return when.minute == int(minute) and when.hour == int(hour) and when.weekday() in _cron_days(days)


def _capacity_by_hour(actions: list[tuple[str, int]]) -> list[int]:
    """Max capacity through the second of two weeks (the first settles the state), hour by hour."""
    monday = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
    capacity, seen = -1, []
    for hour in range(24 * 14):
        now = monday + dt.timedelta(hours=hour)
        fired = [c for schedule, c in actions if _fires(schedule, now)]
        assert len(fired) <= 1, f"two scheduled actions at {now}"
        capacity = fired[0] if fired else capacity
        seen.append(capacity)
    return seen[24 * 7:]


@pytest.mark.parametrize("start,end", [(7, 19), (7, 24), (0, 24), (0, 1), (23, 24)])
def test_schedule_runs_weekdays_inside_active_hours_only(start, end):
    (wake_hour, wake_days), (sleep_hour, sleep_days) = weekday_schedule(start, end)
    actions = [(f"cron(0 {wake_hour} ? * {wake_days} *)", 2), (f"cron(0 {sleep_hour} ? * {sleep_days} *)", 0)]
    expected = [2 if (h // 24) < 5 and start <= h % 24 < end else 0 for h in range(24 * 7)]
    assert _capacity_by_hour(actions) == expected


def test_active_hours_to_midnight_sleeps_on_friday_night(active_hours):
    (target,) = _resources(active_hours["model"], "AWS::ApplicationAutoScaling::ScalableTarget").values()
    actions = [(a["Schedule"], a["ScalableTargetAction"]["MaxCapacity"])
               for a in target["Properties"]["ScheduledActions"]]
    capacity = _capacity_by_hour(actions)
    friday_23h, saturday_noon = 4 * 24 + 23, 5 * 24 + 12
    assert capacity[friday_23h] > 0 and capacity[saturday_noon] == 0


# --- defect 6: the workflow roles can make every call their states make ----------------------


def _actions(statements: list[dict]) -> set[str]:
    """Every allowed action, lower-cased (IAM action names are case-insensitive)."""
    return {a.lower() for s in statements if s["Effect"] == "Allow" for a in _listify(s["Action"])}


def _allowing(statements: list[dict], action: str) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action.lower() in _actions([s])]


def test_fine_tune_role_promotes_through_cloudformation_only(dev, active_hours):
    """A promotion copies the model, records its tag and updates three stacks with the
    deploy role of the CDK bootstrap: the workflow itself changes no endpoint, model or alarm."""
    for variant in (dev, active_hours):
        resolved = variant["resolved"]
        statements = role_statements(resolved, "semsearch-dev-jobs", "FineTuneStateMachineRole")
        assert _allows(statements, "sagemaker:ListTags") and _allows(statements, "sagemaker:AddTags")  # .sync
        (stacks,) = _allowing(statements, "cloudformation:UpdateStack")
        assert _actions([stacks]) == {"cloudformation:updatestack", "cloudformation:describestacks"}
        assert sorted(_listify(stacks["Resource"])) == [
            f"arn:aws:cloudformation:us-east-1:123456789012:stack/semsearch-dev-{part}/*"
            for part in ("model", "ops", "search")]
        (pass_exec_role,) = [s for s in _allowing(statements, "iam:PassRole")
                             if s["Condition"]["StringEquals"]["iam:PassedToService"] == "cloudformation.amazonaws.com"]
        assert pass_exec_role["Resource"] == (
            "arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-us-east-1")
        # The parameter it writes is the one the storage stack creates and the model stack reads.
        (record,) = _allowing(statements, "ssm:PutParameter")
        (parameter,) = [p["Default"] for p in resolved.by_stack["semsearch-dev-model"]["Parameters"].values()
                        if "/promoted/" in p["Default"]]
        assert record["Resource"] == f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter}"
        assert only(resolved, "semsearch-dev-storage", "AWS::SSM::Parameter")["Name"] == parameter
        bucket = "arn:aws:s3:::semsearch-dev-artifacts-123456789012-us-east-1"
        (read,) = _allowing(statements, "s3:GetObject")
        (write,) = _allowing(statements, "s3:PutObject")
        assert (read["Resource"], write["Resource"]) == (f"{bucket}/jobs/training/*", f"{bucket}/models/*")
        assert not {"cloudwatch:describealarms", "kms:creategrant", "sagemaker:createmodel",
                    "sagemaker:updateendpoint", "sagemaker:updateinferencecomponent"} & _actions(statements)


def test_batch_embed_role_has_what_the_sync_integration_documents(dev):
    statements = _role_statements(dev["jobs"], "BatchEmbedStateMachineRole")
    for action in ("sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob",
                   "sagemaker:AddTags", "sagemaker:ListTags", "events:PutRule", "events:PutTargets",
                   "events:DescribeRule"):
        assert _allows(statements, action), action


def test_execution_role_may_create_grants_for_its_job_volumes(dev):
    statements = _role_statements(dev["jobs"], "SageMakerRole")
    (grant,) = _allows(statements, "kms:CreateGrant")
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": True}}


# --- defect 7: the deploy wait ends on every terminal status botocore lists -----------------


def _stack_statuses() -> list[str]:
    """Every StackStatus botocore's CloudFormation model lists."""
    return list(botocore.session.get_session().get_service_model("cloudformation").shape_for("StackStatus").enum)


def _choose(choice: dict, **variables: Any) -> str:
    for rule in choice["Choices"]:
        if _evaluate(rule["Condition"], {}, **variables):
            return rule["Next"]
    return choice["Default"]


@pytest.mark.parametrize("variant", ["dev", "active_hours"])
@pytest.mark.parametrize("part,after", [("model", "UpdateSemsearchDevSearch"), ("search", "UpdateSemsearchDevOps"),
                                        ("ops", "Promoted")])
def test_stack_update_wait_fails_on_every_terminal_status(variant, part, after, dev, active_hours):
    """Each stack of a promotion: UPDATE_COMPLETE goes on to the next one, a status still in
    progress waits again, any other (a rollback, a failure) fails the run naming the stack."""
    jobs = {"dev": dev, "active_hours": active_hours}[variant]["jobs"]
    (definition,) = [d for d in _machines(jobs) if "Promoted" in _states(d)]
    states = _states(definition)
    key = f"SemsearchDev{part.capitalize()}"
    statuses = _stack_statuses()
    assert {"UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"} <= set(statuses)
    for status in statuses:
        target = _choose(states[f"{key}Settled"], stackStatus=status, stackReason="")
        if status == "UPDATE_COMPLETE":
            assert (target, states[target]["Next"]) == (f"{key}Updated", after)
        elif status.endswith("_IN_PROGRESS"):
            assert target == f"WaitFor{key}", status
        else:
            assert states[target]["Type"] == "Fail", (status, target)
            cause = _evaluate(states[target]["Cause"], {}, stackStatus=status, stackReason="Resource handler failed")
            assert cause.startswith(f"semsearch-dev-{part} ended in {status}: Resource handler failed"), cause


# --- defect 9: the bulk loader writes its logs --------------------------------------------


def test_bulk_loader_may_write_exactly_its_log_group(dev):
    (loader,) = [f for f in _resources(dev["jobs"], "AWS::Lambda::Function").values()
                 if f["Properties"]["Handler"] == "bulk_loader.handler.handler"]
    (group_id,) = [k for k in _resources(dev["jobs"], "AWS::Logs::LogGroup") if k.startswith("BulkLoaderLogs")]
    group_name = dev["jobs"]["Resources"][group_id]["Properties"]["LogGroupName"]
    assert loader["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": group_id}
    statements = _role_statements(dev["search"], "BulkLoaderRole")
    (writes,) = _allows(statements, "logs:PutLogEvents")
    assert set(_listify(writes["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    (resource,) = _listify(writes["Resource"])
    assert _text(resource).endswith(f':log-group:{group_name}:*"]]}}'), resource


# --- defect 14: PassRole to one service, a connector only this domain can assume, HNSW limits ---


def test_every_pass_role_names_the_service_it_passes_to(dev, active_hours, vpc):
    checked = 0
    for variant in (dev, active_hours, vpc):
        for kind in ("model", "search", "jobs"):
            for policy_id, statement in _statements(variant[kind]):
                if "iam:PassRole" in _listify(statement["Action"]):
                    assert "iam:PassedToService" in statement.get("Condition", {}).get("StringEquals", {}), policy_id
                    checked += 1
    assert checked >= 6  # glue → connector role, fine-tune → execution role, per variant


def test_connector_trust_requires_this_account_and_this_domain(dev):
    (role,) = [r for k, r in _resources(dev["search"], "AWS::IAM::Role").items() if k.startswith("ConnectorRole")]
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    principals = set()
    for statement in statements:
        principals.update(_listify(statement["Principal"]["Service"]))
        condition = statement["Condition"]
        assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        assert _text(condition["ArnLike"]["aws:SourceArn"]).endswith(':domain/semsearch-dev"]]}')
    assert principals == {"es.amazonaws.com", "opensearchservice.amazonaws.com"}


def test_hnsw_ef_construction_above_lucene_limit_is_refused():
    ctx = default_context()
    ctx["dev.search.hnsw_ef_construction"] = "3201"
    ctx["prod.search.knn_engine"] = "faiss"
    ctx["prod.search.hnsw_ef_construction"] = "4000"  # faiss has no such limit in Lucene
    with pytest.raises(ConfigError) as raised:
        load_config(ctx)
    assert raised.value.problems == ["stages.dev.search.hnsw_ef_construction: bad value 3201; allowed: 2..3200 "
                                     "for knn_engine lucene"]
    ctx["dev.search.hnsw_ef_construction"] = "3200"
    assert load_config(ctx).stage("dev").search.hnsw_ef_construction == 3200


def test_hnsw_parameters_reach_the_glue(dev):
    (resource,) = _resources(dev["search"], "Custom::NeuralSearch").values()
    assert (resource["Properties"]["HnswM"], resource["Properties"]["HnswEfConstruction"]) == (16, 128)


# --- SageMaker's 63 characters hold for the longest names a configuration allows -----------

LONGEST_ENDPOINT = "e" * 20  # stacks/config/validators.py ENDPOINT_NAME_RE
LONGEST_TAG = "ft-zzzzzzzz"  # ft- and base-36 milliseconds: 8 digits until 2059
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@pytest.mark.parametrize("stage,active_hours_utc", [("prod", ""), ("dev", "07-19")],
                         ids=["prod", "dev scale-to-zero"])
def test_the_longest_promoted_names_fit_sagemaker(stage, active_hours_utc, tmp_path):
    """The longest stage and endpoint names, promoted: the endpoint (and the inference
    component, which adds -model, on the stage that may scale to zero) within 63 characters,
    and the model data where the workflow copies it and the endpoint role may read it."""
    ctx = copy.deepcopy(default_context())
    ctx["stage"] = stage
    config = ctx["stages"][stage]
    (endpoint_config,) = config["endpoints"].values()
    config["endpoints"] = {LONGEST_ENDPOINT: endpoint_config}
    config["search"]["endpoint"] = LONGEST_ENDPOINT
    if active_hours_utc:
        ctx[f"{stage}.ops.active_hours_utc"] = active_hours_utc
    app, _ = synth(ctx, tmp_path)
    version = model_version(load_config(ctx).stage(stage).endpoints[LONGEST_ENDPOINT])
    parameter = promotion_parameter(stage, LONGEST_ENDPOINT, version)
    resolved = stage_templates(app, stage, promotion_tag=LONGEST_TAG)
    assert resolved.ssm_values == {parameter: LONGEST_TAG}
    model_stack = f"semsearch-{stage}-model"

    endpoint = only(resolved, model_stack, "AWS::SageMaker::Endpoint")["EndpointName"]
    assert endpoint == f"{versioned_endpoint_name(stage, LONGEST_ENDPOINT, version)}-{LONGEST_TAG}"
    names = [endpoint]
    if active_hours_utc:
        names.append(only(resolved, model_stack, "AWS::SageMaker::InferenceComponent")["InferenceComponentName"])
        assert names[1] == f"{endpoint}-model"
    for name in names:
        assert len(name) <= 63 and SAGEMAKER_NAME.match(name) and name == name.lower(), (name, len(name))

    bucket = f"semsearch-{stage}-artifacts-123456789012-us-east-1"
    key = promoted_model_key(stage, LONGEST_TAG)
    assert key == f"models/semsearch-{stage}-{LONGEST_TAG}/model.tar.gz"
    model = only(resolved, model_stack, "AWS::SageMaker::Model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{bucket}/{key}"
    reads = _allowing(role_statements(resolved, model_stack, f"Endpoint{LONGEST_ENDPOINT}ExecutionRole"),
                      "s3:GetObject")
    assert f"arn:aws:s3:::{bucket}/{key}" in [r for s in reads for r in _listify(s["Resource"])]
    # The workflow copies the job's output to that key, for a job named <prefix>-<tag>.
    (fine_tune,) = [d for d in _machines(resolved.by_stack[f"semsearch-{stage}-jobs"]) if "KeepModel" in d["States"]]
    keep = fine_tune["States"]["KeepModel"]
    job = f"semsearch-{stage}-{LONGEST_TAG}"
    assert SAGEMAKER_NAME.match(job) and len(job) <= 63
    assert _evaluate(keep["Arguments"]["Key"], {}, trainingJob=job) == key
    assert _evaluate(keep["Assign"]["tag"], {}, trainingJob=job) == LONGEST_TAG
    assert fine_tune["States"]["RecordPromotion"]["Arguments"]["Name"] == parameter
