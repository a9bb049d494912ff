"""The synthesized templates against AWS's published specifications, for every synth variant.

botocore's service models (requests of CloudFormation and of every Step Functions Task), the
Step Functions JSONata scoping rules (evaluated with a real JSONata), and the Service
Authorization Reference (every policy, and every run-time call against the caller's role).
Offline; see tests/infra/specs for the oracles and what each stands in for.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.infra.conftest import SPEC_VARIANTS
from tests.infra.specs import botocore_api, callers, iam, states, tasks
from tests.infra.specs.cfn_to_api import api_calls
from tests.infra.specs.intrinsics import ACCOUNT, REGION, Templates

#: "promoted": the default templates as CloudFormation resolves them after the fine-tune
#: workflow promoted a model (the promotion parameters hold a tag instead of "none").
VARIANTS = ["default", "promoted", *SPEC_VARIANTS]
PROMOTION_TAG = "ft-mivq2c1s"  # what the workflow writes: ft- and base-36 milliseconds


def _compare_inputs(machine: str) -> list[dict[str, Any]]:
    """What `semsearch compare --remote` starts the compare workflow with (compare_remote.py):
    the run's uploads under jobs/compare/ of the stage's bucket, the base model the fine-tune job
    starts from (training/base-model/), a promoted model (models/). Not {}: pairs and models are
    required, and the path-following simulator would take the Compare branch with it too
    (tests/infra/test_compare_workflow.py checks that the InputGiven Choice refuses it)."""
    stage = machine.removeprefix("semsearch-").removesuffix("-compare")
    bucket = f"s3://semsearch-{stage}-artifacts-{ACCOUNT}-{REGION}"
    run = f"{bucket}/jobs/compare/20260105T130000Z-0a1b2c"
    return [{"pairs_s3_uri": f"{run}/pairs/", "models": [{"s3_uri": f"{run}/models/0/"}]},
            {"pairs_s3_uri": f"{run}/pairs/", "pairs_path": "qrels/dev.tsv", "batch_size": 128,
             "models": [{"s3_uri": f"{bucket}/training/base-model/", "name": "base", "catalog_id": "all-MiniLM-L6-v2"},
                        {"s3_uri": f"{bucket}/models/semsearch-{stage}-ft-mivq2c1s/model.tar.gz", "name": "tuned"}]}]


#: Representative start inputs per workflow (its docstring's contract), with {} where the
#: workflow accepts it; a function of the state machine's name where they name the stage's bucket.
START_INPUTS: dict[str, list[dict[str, Any]] | Callable[[str], list[dict[str, Any]]]] = {
    "compare": _compare_inputs,
    "fine-tune": [{}, {"train_s3_uri": "s3://example-bucket/training/train/",
                       "eval_s3_uri": "s3://example-bucket/training/eval/"},
                  # mining with an earlier job's tuned model (the miner channel)
                  {"hard_negative_model_s3_uri": "s3://example-bucket/jobs/training/semsearch-dev-ft-mivq2c1s/output/"
                                                 "model.tar.gz"}],
    "batch-embed": [{}, {"input_s3_uri": "s3://example-bucket/batch/input/docs.jsonl",
                         "model_name": "semsearch-dev-ft-1767614400000"},
                    # what the upload rule sends (its InputTransformer)
                    {"input_s3_uri": "s3://example-bucket/batch/input/docs.jsonl"}],
}


@functools.cache
def _templates(app: Any, promoted: bool = False) -> Templates:
    by_stack = {}
    for child in app.node.children:
        if hasattr(child, "synth") and hasattr(child, "stage_name"):
            for stack in child.synth().stacks:
                by_stack[stack.stack_name] = stack.template
    templates = Templates(by_stack)
    if promoted:
        names = [templates.resolve(s, r["Properties"]["Name"])
                 for s, _, r in templates.all_resources("AWS::SSM::Parameter")]
        promotions = [n for n in names if "/promoted/" in n]
        assert promotions, "no promotion parameter in the templates"
        templates = Templates(by_stack, ssm_values=dict.fromkeys(promotions, PROMOTION_TAG))
    return templates


@pytest.fixture(params=VARIANTS)
def variant(request, variant_app) -> tuple[str, Templates]:
    if request.param == "promoted":
        return request.param, _templates(variant_app("default"), promoted=True)
    return request.param, _templates(variant_app(request.param))


@functools.cache
def _simulations(templates: Templates) -> list[tuple[str, dict[str, Any], states.Run]]:
    handlers = {templates.get_att(s, lid, "Arn"): r["Properties"].get("Handler", "")
                for s, lid, r in templates.all_resources("AWS::Lambda::Function")}
    runs = []
    for stack, logical_id, resource in templates.all_resources("AWS::StepFunctions::StateMachine"):
        name = templates.get_att(stack, logical_id, "Name")
        definition = states.definition_of(templates, stack, resource)
        inputs = next((v(name) if callable(v) else v for k, v in START_INPUTS.items() if name.endswith(k)), [{}])
        simulator = states.Simulator(name, definition, lambda call: tasks.representative_result(call, handlers))
        run = simulator.run(inputs)
        assert run.visited_states == set(definition["States"]), f"{name}: unreached states"
        runs.append((f"{stack}/{logical_id}", resource, run))
    return runs


def _unique(problems: list[str]) -> list[str]:
    """Sorted, without repeats (job names carry $millis(): shown as <millis>)."""
    return sorted({re.sub(r"\d{13}", "<millis>", p) for p in problems})


# -- botocore: CloudFormation's calls and the Tasks' calls ---------------------------------------

def test_sagemaker_and_autoscaling_resources_are_valid_api_requests(variant):
    name, templates = variant
    calls = api_calls(templates)
    assert {c.operation for c in calls} >= {"CreateModel", "CreateEndpointConfig", "CreateEndpoint",
                                           "RegisterScalableTarget", "PutScalingPolicy"}
    if name == "active_hours":
        assert {"CreateInferenceComponent", "PutScheduledAction"} <= {c.operation for c in calls}
    problems = [f"{c.origin}: {p}" for c in calls for p in botocore_api.validate(c.service, c.operation, c.params)]
    assert not problems, "\n".join(problems)


def test_every_task_request_is_valid_for_its_api(variant):
    _, templates = variant
    problems = []
    for origin, _, run in _simulations(templates):
        assert run.calls, origin
        for call in run.calls:
            api = tasks.api_of(call.resource)
            for problem in botocore_api.validate(api.service, api.operation, tasks.request(call)):
                problems.append(f"{call.machine} state {call.state} (path {' > '.join(call.path)}): {problem}")
    assert not problems, "\n".join(_unique(problems))


def test_workflow_expressions_use_only_what_is_in_scope(variant):
    """$states.errorOutput only in a Catch, $states.result only after the call, variables only
    once assigned on the path; every expression evaluates, from every start input incl. {}."""
    _, templates = variant
    findings = [str(f) for _, _, run in _simulations(templates) for f in run.findings]
    assert not findings, "\n".join(_unique(findings))


#: A status still on its way somewhere: Creating, Updating, SystemUpdating, RollingBack, Deleting,
#: and CloudFormation's UPDATE_IN_PROGRESS, UPDATE_COMPLETE_CLEANUP_IN_PROGRESS, ...
TRANSITIONAL = re.compile(r"[a-z]ing(?=[A-Z]|$)|_IN_PROGRESS$")


def _status_members(shape: Any, result: dict[str, Any]) -> Iterator[tuple[str, list[str], Any]]:
    """(member, its enum, a setter) for each ``*Status`` enum of a Describe* output: top-level,
    or in the first element of a top-level list (DescribeStacks: Stacks[0].StackStatus)."""
    for member, member_shape in shape.members.items():
        if member.endswith("Status") and member_shape.enum:
            yield member, member_shape.enum, lambda status, m=member: {**result, m: status}
        elif member_shape.type_name == "list" and member_shape.member.type_name == "structure":
            for inner, inner_shape in member_shape.member.members.items():
                if inner.endswith("Status") and inner_shape.enum and result.get(member):
                    yield (f"{member}[0].{inner}", inner_shape.enum,
                           lambda status, m=member, i=inner: {**result, m: [{**result[m][0], i: status}]})


def test_deploy_wait_ends_on_every_terminal_status(variant):
    """Each Describe* poll followed by a Choice: every status botocore lists that is not a
    transition must leave the Wait loop, or the workflow spins until its timeout."""
    _, templates = variant
    checked, problems = 0, []
    for _, resource, run in _simulations(templates):
        stack = next(s for s, lid, r in templates.all_resources("AWS::StepFunctions::StateMachine") if r is resource)
        definition = states.definition_of(templates, stack, resource)
        for call in run.calls:
            api = tasks.api_of(call.resource)
            state = definition["States"][call.state]
            if not api.operation.startswith("Describe") or definition["States"].get(state.get("Next"), {}).get(
                    "Type") != "Choice":
                continue
            output = botocore_api.operation(api.service, api.operation).output_shape
            sample = tasks.representative_result(call, {})
            for member, enum, with_status in _status_members(output, sample):
                for status in enum:
                    result = with_status(status)
                    bound = {**call.variables, **{
                        k: states.evaluate(v.strip()[2:-2], {**call.variables, "states": {
                            "input": {}, "result": result, "context": {}}})
                        for k, v in state.get("Assign", {}).items()}}
                    target = states.choose(definition, state["Next"], result, bound)
                    checked += 1
                    waits = target is not None and definition["States"][target]["Type"] == "Wait"
                    if waits and not TRANSITIONAL.search(status):
                        problems.append(f"{call.machine} {call.state}: {member} {status!r} is terminal but the "
                                        f"workflow goes back to {target}")
    if any(templates.all_resources("AWS::StepFunctions::StateMachine")):
        assert checked, "no Describe/Choice wait loop found"
    assert not problems, "\n".join(_unique(problems))


# -- IAM: the Service Authorization Reference -----------------------------------------------------

def _policy_documents(templates: Templates) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for stack in templates.by_stack:
        for logical_id, resource in templates.resources(stack).items():
            props = resource.get("Properties", {})
            for key in ("PolicyDocument", "AssumeRolePolicyDocument", "KeyPolicy", "AccessPolicies"):
                if key in props:
                    document = templates.resolve(stack, props[key])
                    documents.append((f"{stack}/{logical_id}.{key}",
                                      json.loads(document) if isinstance(document, str) else document))
            for i, policy in enumerate(props.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []):
                documents.append((f"{stack}/{logical_id}.Policies[{i}]",
                                  templates.resolve(stack, policy["PolicyDocument"])))
    return documents


def test_policies_name_real_actions_resources_and_condition_keys(variant):
    _, templates = variant
    documents = _policy_documents(templates)
    assert len(documents) > 20
    problems = [p for origin, document in documents for i, statement in enumerate(document["Statement"])
                for p in iam.statement_problems(statement, f"{origin} Statement[{i}]")]
    assert not problems, "\n".join(_unique(problems))


def _callers(templates: Templates) -> list[callers.Caller]:
    """The explicit table: every run-time caller, its role, and what it calls."""
    found: list[callers.Caller] = []
    alarms = {templates.resolve(s, r["Properties"].get("AlarmName")) or templates.ref(s, lid):
              templates.get_att(s, lid, "Arn") for s, lid, r in templates.all_resources("AWS::CloudWatch::Alarm")}
    keys = {templates.ref(s, lid): templates.get_att(s, lid, "Arn")
            for s, lid, _ in templates.all_resources("AWS::KMS::Key")}
    keys.update({v: v for v in keys.values()})
    # Step Functions: each Task of each state machine, as the state machine's role.
    for origin, resource, run in _simulations(templates):
        stack = origin.split("/")[0]
        config_keys = {c.arguments["EndpointConfigName"]: c.arguments["KmsKeyId"] for c in run.calls
                       if tasks.api_of(c.resource).operation == "CreateEndpointConfig" and "KmsKeyId" in c.arguments}
        requests = [r for call in run.calls for r in callers.task_requests(call, keys, alarms, config_keys)]
        found.append(callers.Caller(origin, templates.resolve(stack, resource["Properties"]["RoleArn"]),
                                    tuple(requests)))
    # SageMaker execution roles of the models.
    for stack, logical_id, model in templates.all_resources("AWS::SageMaker::Model"):
        props = templates.resolve(stack, model["Properties"])
        endpoint = next(templates.resolve(stack, e["Properties"]["EndpointName"])
                        for e in templates.resources(stack, "AWS::SageMaker::Endpoint").values())
        found.append(callers.Caller(f"{stack}/{logical_id}", props["ExecutionRoleArn"], tuple(
            callers.model_role_requests(templates, stack, logical_id, props, endpoint))))
    # The glue custom resource: its functions, the connector role, the domain (per stage).
    vpc = bool(templates.all_resources("AWS::OpenSearchService::Domain")) and all(
        "VPCOptions" in d["Properties"] for _, _, d in templates.all_resources("AWS::OpenSearchService::Domain"))
    for stack, logical_id, glue in templates.all_resources("Custom::NeuralSearch"):
        stage = stack.rsplit("-", 1)[0]  # semsearch-<stage>
        props = templates.resolve(stack, glue["Properties"])
        (domain_id, _), = templates.resources(stack, "AWS::OpenSearchService::Domain").items()
        domain_arn = templates.get_att(stack, domain_id, "Arn")
        (key_id, _), = templates.resources(f"{stage}-storage", "AWS::KMS::Key").items()
        key_arn = templates.get_att(f"{stage}-storage", key_id, "Arn")
        bucket = next(name for lid in templates.resources(f"{stage}-storage", "AWS::S3::Bucket")
                      if "artifacts" in (name := templates.ref(f"{stage}-storage", lid)))
        found.append(callers.Caller(f"{stack}/{logical_id} connector", props["ConnectorRoleArn"],
                                    tuple(callers.connector_requests(props, "ml-commons connector"))))
        for fn_stack, fn_id, fn in templates.all_resources("AWS::Lambda::Function"):
            if not fn_stack.startswith(f"{stage}-"):
                continue
            fn_props = templates.resolve(fn_stack, fn["Properties"])
            handler = fn_props.get("Handler", "")
            if handler.startswith("search_glue."):
                requests = callers.glue_requests(domain_arn, props["ConnectorRoleArn"], f"{fn_stack}/{fn_id}")
                requests += [r for _, _, r in callers.glue_serving_calls(props, f"{fn_stack}/{fn_id}")]
            elif handler == "bulk_loader.prepare.handler":
                requests = callers.prepare_requests(bucket, key_arn, f"{fn_stack}/{fn_id}")
            elif handler == "bulk_loader.embed_bedrock.handler":
                # The model the index's connector invokes: batch embedding uses the same one.
                requests = callers.embedder_requests(bucket, key_arn, props["BedrockModelId"], f"{fn_stack}/{fn_id}")
            elif handler.startswith("bulk_loader."):
                requests = callers.loader_requests(domain_arn, bucket, key_arn,
                                                   fn_props["Environment"]["Variables"]["INDEX_NAME"],
                                                   f"{fn_stack}/{fn_id}")
            else:
                continue
            requests += callers.function_requests(templates, fn_stack, fn_id, fn_props, vpc)
            found.append(callers.Caller(f"{fn_stack}/{fn_id} ({handler})", fn_props["Role"], tuple(requests)))
        # The batch-embed transform job runs as the serving model's own role: the model of the
        # endpoint whose serving parameters the workflow reads.
        for _, _, run in _simulations(templates):
            for call in run.calls:
                names = call.arguments.get("Names", []) if isinstance(call.arguments, dict) else []
                served = [n.split("/")[2] for n in names if n.startswith(f"/{stage}/") and n.endswith("/serving-model")]
                for model_id, model in (templates.resources(f"{stage}-model", "AWS::SageMaker::Model").items()
                                        if served else ()):
                    if model_id.startswith(f"Endpoint{served[0]}"):
                        role = templates.resolve(f"{stage}-model", model["Properties"])["ExecutionRoleArn"]
                        found.append(callers.Caller(f"{stage}-model/{model_id} (batch transform)", role, tuple(
                            callers.transform_role_requests(bucket, key_arn, f"{call.machine} state {call.state}"))))
    # Processing jobs (the compare workflow's) run as the role their request passes.
    for _, _, run in _simulations(templates):
        for call in run.calls:
            if tasks.api_of(call.resource).operation == "CreateProcessingJob":
                params = tasks.request(call)
                found.append(callers.Caller(f"{call.machine} state {call.state} (processing job)", params["RoleArn"],
                                            tuple(callers.processing_job_requests(params, f"{call.machine} job"))))
    return found


def test_every_runtime_call_is_allowed_by_the_callers_role(variant):
    name, templates = variant
    table = _callers(templates)
    kinds = {c.name.split(" (")[-1] for c in table}
    assert any("bulk_loader" in k for k in kinds) and any("search_glue" in k for k in kinds), kinds
    if name == "bedrock":  # batch embedding calls the Bedrock model; no transform job runs
        assert any("embed_bedrock" in k for k in kinds) and not any("batch transform" in k for k in kinds), kinds
    else:
        assert any("batch transform" in k for k in kinds), kinds
    assert any("processing job" in k for k in kinds), kinds
    problems = []
    for caller in table:
        statements = callers.role_statements(templates, caller.role_arn)
        for request in caller.requests:
            if not iam.expand_action(request.action):
                problems.append(f"{caller.name}: {request.action} is not an action of the reference")
            elif not iam.allowed(statements, request):
                problems.append(f"{caller.name} as {caller.role_arn.rsplit('/', 1)[1]}: denied {request}")
    assert not problems, f"{name}:\n" + "\n".join(_unique(problems))


def test_glue_sagemaker_calls_are_valid_api_requests(variant):
    """serving.py's calls (granted above, with the caller table) as botocore takes them."""
    from search_glue import serving

    _, templates = variant
    glues = templates.all_resources("Custom::NeuralSearch")
    assert glues
    for stack, _, glue in glues:
        calls = callers.glue_serving_calls(templates.resolve(stack, glue["Properties"]), stack)
        assert [operation for operation, _, _ in calls] == list(serving.OPERATIONS)
        problems = [p for operation, params, _ in calls for p in botocore_api.validate("sagemaker", operation, params)]
        assert not problems, "\n".join(problems)


def test_connector_role_trusts_opensearch_calling_from_this_domain(variant):
    _, templates = variant
    for stack, _, glue in templates.all_resources("Custom::NeuralSearch"):
        props = templates.resolve(stack, glue["Properties"])
        domain = props["OpenSearchUrl"]
        (_, domain_id, _), = [d for d in templates.all_resources("AWS::OpenSearchService::Domain") if d[0] == stack]
        context = {"aws:SourceAccount": callers.ACCOUNT, "aws:SourceArn": templates.get_att(stack, domain_id, "Arn")}
        trust = callers.trust_policy(templates, props["ConnectorRoleArn"])
        assert iam.trusts(trust, "es.amazonaws.com", context), (domain, trust)
        # Confused deputy: another account's domain must not get in
        # (https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html).
        other = {"aws:SourceAccount": "999999999999",
                 "aws:SourceArn": "arn:aws:es:us-east-1:999999999999:domain/other"}
        assert not iam.trusts(trust, "es.amazonaws.com", other), trust


# -- deploy order and network reach ----------------------------------------------------------------

def _depends_on(template: dict[str, Any], logical_id: str) -> set[str]:
    """Resources ``logical_id`` waits for: DependsOn and references, transitively."""
    resources = template["Resources"]
    seen: set[str] = set()
    todo = [logical_id]
    while todo:
        current = resources[todo.pop()]
        text = json.dumps(current)
        direct = set(current.get("DependsOn", []) if isinstance(current.get("DependsOn"), list)
                     else [current["DependsOn"]] if "DependsOn" in current else [])
        direct |= {r for r in resources if f'"{r}"' in text}
        for dependency in direct - seen:
            seen.add(dependency)
            todo.append(dependency)
    return seen


def test_domain_is_created_after_its_log_resource_policy(variant):
    """CreateDomain with LogPublishingOptions fails unless CloudWatch Logs already lets
    es.amazonaws.com write those groups (https://docs.aws.amazon.com/opensearch-service/latest/
    developerguide/createdomain-configure-slow-logs.html); CDK's own L2 orders them."""
    _, templates = variant
    for stack, domain_id, domain in templates.all_resources("AWS::OpenSearchService::Domain"):
        assert domain["Properties"].get("LogPublishingOptions")
        policies = templates.resources(stack, "AWS::Logs::ResourcePolicy")
        assert policies, f"{stack}: no CloudWatch Logs resource policy"
        waits_for = _depends_on(templates.by_stack[stack], domain_id)
        assert set(policies) & waits_for, f"{stack}/{domain_id} does not wait for {sorted(policies)}"


def test_functions_that_call_a_vpc_domain_run_in_its_vpc(variant):
    name, templates = variant
    domains = templates.all_resources("AWS::OpenSearchService::Domain")
    if not any("VPCOptions" in d["Properties"] for _, _, d in domains):
        pytest.skip(f"{name}: the domain has a public endpoint")
    problems = []
    for stack, logical_id, fn in templates.all_resources("AWS::Lambda::Function"):
        props = fn["Properties"]
        calls_domain = str(props.get("Handler", "")).startswith(("search_glue.", "bulk_loader.")) or \
            "waiter" in logical_id.lower() or "framework" in logical_id.lower()
        if calls_domain and not templates.resolve(stack, props.get("VpcConfig", {})).get("SubnetIds"):
            problems.append(f"{stack}/{logical_id} ({props.get('Handler')}) is outside the VPC")
    assert not problems, "\n".join(problems)


# -- the oracles themselves catch what they claim to ---------------------------------------------

def test_request_validator_checks_enums_patterns_and_bounds():
    problems = botocore_api.validate("sagemaker", "CreateEndpointConfig", {
        "EndpointConfigName": "bad_name", "ProductionVariants": [
            {"VariantName": "AllTraffic", "InstanceType": "ml.nope.xlarge", "InitialInstanceCount": 0,
             "ModelName": "m", "Colour": "red"}]})
    text = "\n".join(problems)
    assert "EndpointConfigName: 'bad_name' does not match pattern" in text
    assert "InstanceType: 'ml.nope.xlarge' is not one of" in text
    assert "InitialInstanceCount: 0 is below the minimum 1" in text
    assert "unknown member Colour" in text
    assert botocore_api.validate("ssm", "PutParameter", {"Name": "a" * 3000, "Value": "x"}) == [
        "ssm.PutParameter.Name: 3000 characters is above the maximum 2048"]


def test_scope_check_knows_where_error_output_and_result_exist():
    assert states.scope_problems("$states.errorOutput.Cause", available=states.SCOPE_ARGUMENTS, variables=set())
    assert not states.scope_problems("$states.errorOutput.Cause", available=states.SCOPE_CATCH, variables=set())
    assert states.scope_problems("$states.result.X", available=states.SCOPE_ARGUMENTS, variables=set())
    assert states.scope_problems("$gain > 1", available=states.SCOPE_ARGUMENTS, variables={"other"})
    assert not states.scope_problems("($g := 1; $exists($g) ? $string($g) : '')",
                                     available=states.SCOPE_ARGUMENTS, variables=set())
    assert states.scope_problems("$eval('1')", available=states.SCOPE_ARGUMENTS, variables=set())


def test_scope_check_counts_arguments_against_jsonata_signatures():
    """An expression that parses can still call a function with the wrong number of arguments,
    which JSONata only reports when the state runs (the miner channel's first draft did)."""
    def problems(expression: str) -> list[str]:
        return states.scope_problems(expression, available=states.SCOPE_ARGUMENTS, variables={"a"})

    assert problems("$append($a, [1], [2])") == ["$append() takes 2 arguments, given 3"]
    assert problems("$count()") == ["$count() takes 1 argument, given 0"]
    assert problems("$join()") == ["$join() takes 1 to 2 arguments, given 0"]
    # The left side of ~> is the first argument; optional and context parameters may be left out;
    # $zip is variadic; a function the expression binds itself is not a built-in.
    for fine in ("$a ~> $join(',')", "$append($append($a, [1]), [2])", "$substring('abc', 1)", "$string()",
                 "$zip([1], [2], [3])", "($count := function($x, $y) { $x }; $count(1, 2))"):
        assert problems(fine) == [], fine
    # The same counts as the evaluator's: each call the check refuses, JSONata refuses when run.
    for refused in ("$append([1], [2], [3])", "$count()", "$join()"):
        with pytest.raises(Exception, match="does not match"):
            states.evaluate(refused, {})


def test_policy_tools_match_arns_and_conditions():
    assert iam.patterns_overlap("arn:aws:logs:us-east-1:1:log-group:/aws/x*",
                                "arn:${Partition}:logs:${Region}:${Account}:log-group:${LogGroupName}:log-stream:"
                                "${LogStreamName}")
    assert not iam.patterns_overlap("arn:aws:s3:::bucket", "arn:${Partition}:s3:::${BucketName}/${ObjectName}")
    assert iam.expand_action("s3:GetObject*") and not iam.expand_action("s3:GetObjekt")
    allow = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/r",
             "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}}
    passing = iam.Request("iam:PassRole", "arn:aws:iam::1:role/r", {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert iam.allowed([allow], passing)
    assert not iam.allowed([allow], iam.Request("iam:PassRole", "arn:aws:iam::1:role/r",
                                                {"iam:PassedToService": "ec2.amazonaws.com"}))
    assert not iam.allowed([allow, {**allow, "Effect": "Deny", "Condition": {}}], passing)
