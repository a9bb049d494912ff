"""Who calls which AWS API at run time, and the role that makes each call.

The table is derived from the code and the templates:

- each Step Functions Task: the API of its Resource with the ARNs named by its evaluated
  Arguments, plus what AWS documents for the integration (``DOCUMENTED`` below, each with its
  source);
- the SageMaker execution role of each model: image pull, model data, logs, VPC ENIs;
- the ml-commons connector role: InvokeEndpoint (and the inference component it names), or on
  a Bedrock stage InvokeModel on the one foundation model;
- the glue functions (lambda/search_glue) and the bulk loader (lambda/bulk_loader): their
  OpenSearch REST calls, S3/KMS reads, CloudWatch Logs, VPC ENIs; on a Bedrock stage the
  batch-embed function (bulk_loader.embed_bedrock): S3/KMS and InvokeModel on the one model.

``role_statements`` gathers every identity-policy statement of a role across the stage's
templates. AWS-managed policies cannot be read offline: ``MANAGED_POLICIES`` stands in for the
ones the app attaches, with the statements AWS publishes for them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.infra.specs import tasks
from tests.infra.specs.iam import Request
from tests.infra.specs.intrinsics import ACCOUNT, PARTITION, REGION, Templates
from tests.infra.specs.states import TaskCall

#: Stand-ins for AWS-managed policies (their published policy documents).
MANAGED_POLICIES = {
    # https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaBasicExecutionRole.html
    "service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"}],
    # https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaVPCAccessExecutionRole.html
    "service-role/AWSLambdaVPCAccessExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                       "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                                       "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                                       "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
         "Resource": "*"}],
}

SAGEMAKER_PASS = {"iam:PassedToService": "sagemaker.amazonaws.com"}
CLOUDFORMATION_PASS = {"iam:PassedToService": "cloudformation.amazonaws.com"}
STACK_ID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
STEP_FUNCTIONS_SAGEMAKER_DOC = "https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html"
LAMBDA_VPC_DOC = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions"
SAGEMAKER_ROLE_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html#sagemaker-roles-createmodel-perms"


def arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    if service == "s3":  # bucket and object ARNs name no region or account
        return f"arn:{PARTITION}:s3:::{resource}"
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


@dataclass(frozen=True)
class Caller:
    """One caller: the role ARN it runs as and what it must be allowed."""

    name: str
    role_arn: str
    requests: tuple[Request, ...]


# -- Step Functions Tasks -------------------------------------------------------------------

# (service, operation) -> [(IAM action, ARN template over the request's members)]
TASK_RESOURCES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("sagemaker", "CreateModel"): [("sagemaker:CreateModel", "sagemaker:model/{ModelName}")],
    ("sagemaker", "CreateEndpointConfig"): [("sagemaker:CreateEndpointConfig",
                                             "sagemaker:endpoint-config/{EndpointConfigName}")],
    ("sagemaker", "UpdateEndpoint"): [("sagemaker:UpdateEndpoint", "sagemaker:endpoint/{EndpointName}"),
                                      ("sagemaker:UpdateEndpoint", "sagemaker:endpoint-config/{EndpointConfigName}")],
    ("sagemaker", "DescribeEndpoint"): [("sagemaker:DescribeEndpoint", "sagemaker:endpoint/{EndpointName}")],
    ("sagemaker", "UpdateInferenceComponent"): [("sagemaker:UpdateInferenceComponent",
                                                 "sagemaker:inference-component/{InferenceComponentName}")],
    ("sagemaker", "DescribeInferenceComponent"): [("sagemaker:DescribeInferenceComponent",
                                                   "sagemaker:inference-component/{InferenceComponentName}")],
    ("ssm", "GetParameter"): [("ssm:GetParameter", "ssm:parameter/{Name}")],
    ("ssm", "PutParameter"): [("ssm:PutParameter", "ssm:parameter/{Name}")],
    # A stack ARN ends in the stack's id.
    ("cloudformation", "UpdateStack"): [("cloudformation:UpdateStack", f"cloudformation:stack/{{StackName}}/{STACK_ID}")],
    ("cloudformation", "DescribeStacks"): [("cloudformation:DescribeStacks",
                                            f"cloudformation:stack/{{StackName}}/{STACK_ID}")],
    # Read the source, write the copy (S3 API Reference, CopyObject: "Permissions").
    ("s3", "CopyObject"): [("s3:GetObject", "s3:{CopySource}"), ("s3:PutObject", "s3:{Bucket}/{Key}")],
    # .sync (STEP_FUNCTIONS_SAGEMAKER_DOC; aws-stepfunctions-tasks/lib/sagemaker/create-*-job.ts):
    # create, describe and stop the job, list and add its tags, and the managed rule.
    ("sagemaker", "CreateTrainingJob"): [(f"sagemaker:{a}", "sagemaker:training-job/{TrainingJobName}") for a in
                                         ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "ListTags",
                                          "AddTags")],
    ("sagemaker", "CreateTransformJob"): [(f"sagemaker:{a}", "sagemaker:transform-job/{TransformJobName}") for a in
                                          ("CreateTransformJob", "DescribeTransformJob", "StopTransformJob",
                                           "ListTags", "AddTags")],
    ("sagemaker", "CreateProcessingJob"): [(f"sagemaker:{a}", "sagemaker:processing-job/{ProcessingJobName}") for a in
                                           ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob",
                                            "ListTags", "AddTags")],
}
SYNC_RULES = {"CreateTrainingJob": "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
              "CreateTransformJob": "StepFunctionsGetEventsForSageMakerTransformJobsRule",
              "CreateProcessingJob": "StepFunctionsGetEventsForSageMakerProcessingJobsRule"}


def _fill(template: str, params: dict[str, Any]) -> str:
    service, _, resource = template.partition(":")

    def member(match: re.Match[str]) -> str:
        value = str(params[match.group(1)])
        if service == "ssm":
            return value.lstrip("/")
        return value.lower() if service == "sagemaker" else value  # SageMaker ARNs are lower-case

    return arn(service, re.sub(r"\{(\w+)\}", member, resource))


def task_requests(call: TaskCall, key_arns: dict[str, str], alarm_arns: dict[str, str],
                  config_keys: dict[str, str]) -> list[Request]:
    """What one Task needs: its API on the resources its request names, plus the documented extras.

    ``key_arns``: key id/ARN -> key ARN; ``alarm_arns``: alarm name -> ARN; ``config_keys``:
    endpoint-config name created on this path -> its KMS key.
    """
    api = tasks.api_of(call.resource)
    params = tasks.request(call)
    why = f"{call.machine} state {call.state}"
    if api.service == "lambda":
        return [Request("lambda:InvokeFunction", str(params["FunctionName"]), why=why)]
    if (api.service, api.operation) == ("ssm", "GetParameters"):
        return [Request("ssm:GetParameters", arn("ssm", f"parameter/{name.lstrip('/')}"), why=why)
                for name in params["Names"]]
    requests = [Request(action, _fill(template, params), why=why)
                for action, template in TASK_RESOURCES[(api.service, api.operation)]]
    if api.integration == "sync":
        rule = arn("events", f"rule/{SYNC_RULES[api.operation]}")
        requests += [Request(f"events:{a}", rule, why=f"{why} (.sync: {STEP_FUNCTIONS_SAGEMAKER_DOC})")
                     for a in ("PutTargets", "PutRule", "DescribeRule")]
    for member in ("RoleArn", "ExecutionRoleArn"):
        if member in params:
            requests.append(Request("iam:PassRole", str(params[member]), SAGEMAKER_PASS,
                                    why=f"{why} passes {member} ({STEP_FUNCTIONS_SAGEMAKER_DOC})"))
    if api.service == "cloudformation" and "RoleARN" in params:
        # "To pass a role to CloudFormation, you need iam:PassRole" (CloudFormation service role docs).
        requests.append(Request("iam:PassRole", str(params["RoleARN"]), CLOUDFORMATION_PASS,
                                why=f"{why} passes RoleARN"))
    rollback = params.get("DeploymentConfig", {}).get("AutoRollbackConfiguration", {})
    for alarm in rollback.get("Alarms", []):
        # SageMaker reads the rollback alarms as the caller of the update:
        # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html
        requests.append(Request("cloudwatch:DescribeAlarms", alarm_arns.get(alarm["AlarmName"],
                                                                            arn("cloudwatch", f"alarm:{alarm['AlarmName']}")),
                                why=f"{why}: auto-rollback alarm"))
    if api.operation == "UpdateEndpoint" and params.get("EndpointConfigName") in config_keys:
        # botocore CreateEndpointConfig.KmsKeyId: "The KMS key policy must grant permission to the
        # IAM role that you specify in your CreateEndpoint, UpdateEndpoint requests"; the caller
        # needs kms:CreateGrant on the key (SageMaker API permissions reference,
        # https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html).
        key = key_arns.get(config_keys[params["EndpointConfigName"]], config_keys[params["EndpointConfigName"]])
        requests.append(Request("kms:CreateGrant", key, {"kms:GrantIsForAWSResource": "true"},
                                why=f"{why}: endpoint config volume key"))
    return requests


# -- roles ----------------------------------------------------------------------------------

def role_statements(templates: Templates, role_arn: str) -> list[dict[str, Any]]:
    """Every identity-policy statement attached to the role with this ARN, across stacks."""
    statements: list[dict[str, Any]] = []
    role_name = role_arn.rsplit("/", 1)[1]
    for stack, logical_id, role in templates.all_resources("AWS::IAM::Role"):
        if templates.get_att(stack, logical_id, "Arn") != role_arn:
            continue
        props = templates.resolve(stack, role["Properties"])
        for policy in props.get("Policies", []):
            statements += policy["PolicyDocument"]["Statement"]
        for managed in props.get("ManagedPolicyArns", []):
            name = managed.split(":policy/", 1)[1]
            if managed.startswith(f"arn:{PARTITION}:iam::aws:policy/"):
                statements += MANAGED_POLICIES[name]
    for type_name in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for stack, _, policy in templates.all_resources(type_name):
            props = templates.resolve(stack, policy["Properties"])
            if role_name in props.get("Roles", []):
                statements += props["PolicyDocument"]["Statement"]
    return statements


def trust_policy(templates: Templates, role_arn: str) -> dict[str, Any]:
    for stack, logical_id, role in templates.all_resources("AWS::IAM::Role"):
        if templates.get_att(stack, logical_id, "Arn") == role_arn:
            return dict(templates.resolve(stack, role["Properties"]["AssumeRolePolicyDocument"]))
    raise KeyError(role_arn)


# -- functions --------------------------------------------------------------------------------

def function_requests(templates: Templates, stack: str, logical_id: str, props: dict[str, Any],
                      vpc: bool) -> list[Request]:
    """CloudWatch Logs of the function's log group and, in a VPC, its ENIs (LAMBDA_VPC_DOC)."""
    name = templates.get_att(stack, logical_id, "Arn").rsplit(":", 1)[1]
    group = props.get("LoggingConfig", {}).get("LogGroup", f"/aws/lambda/{name}")
    why = f"{stack}/{logical_id} ({props['Handler']})"
    stream = arn("logs", f"log-group:{group}:log-stream:2026/01/05/[$LATEST]0123456789abcdef")
    requests = [Request("logs:CreateLogStream", stream, why=f"{why} logs"),
                Request("logs:PutLogEvents", stream, why=f"{why} logs")]
    if vpc:
        eni = arn("ec2", "network-interface/eni-0123456789abcdef0")
        config = props.get("VpcConfig", {})
        create = [eni, *(arn("ec2", f"subnet/{s}") for s in config.get("SubnetIds", ["subnet-?"])),
                  *(arn("ec2", f"security-group/{g}") for g in config.get("SecurityGroupIds", ["sg-?"]))]
        requests += [Request("ec2:CreateNetworkInterface", r, why=f"{why} in a VPC ({LAMBDA_VPC_DOC})")
                     for r in create]
        requests += [Request(f"ec2:{a}", "*", why=f"{why} in a VPC ({LAMBDA_VPC_DOC})")
                     for a in ("DescribeNetworkInterfaces", "DescribeSubnets")]
        requests += [Request(f"ec2:{a}", eni, why=f"{why} in a VPC ({LAMBDA_VPC_DOC})")
                     for a in ("DeleteNetworkInterface", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses")]
    return requests


def glue_requests(domain_arn: str, connector_role_arn: str, why: str) -> list[Request]:
    """lambda/search_glue/steps.py: REST calls on the domain (GET/PUT/POST/PATCH/DELETE under
    _plugins/_security and _plugins/_ml, the index), and passing the connector role to
    OpenSearch when it creates the connector (the caller needs iam:PassRole:
    https://docs.aws.amazon.com/opensearch-service/latest/developerguide/ml-amazon-connector.html)."""
    calls = [("ESHttpGet", "_plugins/_security/api/rolesmapping/all_access"),
             ("ESHttpPatch", "_plugins/_security/api/rolesmapping"),
             ("ESHttpPut", "_plugins/_security/api/roles/semsearch_search"),
             ("ESHttpPost", "_plugins/_ml/connectors/_create"),
             ("ESHttpPost", "_plugins/_ml/models/_register"),
             ("ESHttpPost", "_plugins/_ml/models/abc/_predict"),
             ("ESHttpDelete", "_plugins/_ml/models/abc"),
             ("ESHttpPut", "documents"), ("ESHttpHead", "documents")]
    requests = [Request(f"es:{a}", f"{domain_arn}/{path}", why=why) for a, path in calls]
    requests.append(Request("iam:PassRole", connector_role_arn, {"iam:PassedToService": "es.amazonaws.com"},
                            why=f"{why}: creates the ml-commons connector with the connector role"))
    return requests


#: lambda/search_glue/serving.py (its OPERATIONS): retiring the endpoint of an old model
#: version. SageMaker operation -> (IAM action, ARN template over the request's members).
GLUE_SERVING: dict[str, tuple[str, str]] = {
    "DescribeInferenceComponent": ("sagemaker:DescribeInferenceComponent",
                                   "sagemaker:inference-component/{InferenceComponentName}"),
    "DeleteInferenceComponent": ("sagemaker:DeleteInferenceComponent",
                                 "sagemaker:inference-component/{InferenceComponentName}"),
    "DescribeEndpoint": ("sagemaker:DescribeEndpoint", "sagemaker:endpoint/{EndpointName}"),
    "DeleteEndpoint": ("sagemaker:DeleteEndpoint", "sagemaker:endpoint/{EndpointName}"),
}


def glue_serving_calls(props: dict[str, Any], why: str) -> list[tuple[str, dict[str, Any], Request]]:
    """(operation, request, what it needs) for each SageMaker call of serving.py, on an old
    model version's names: ``<Name>-<endpoint>-<version>`` as the model stack names them
    (the version is the old one, so no template holds it), and its inference component
    (an old version may have had one where the current has none)."""
    from stacks.names import inference_component_name

    endpoint = f"{props['Name']}-cpu-0a1b2c3d"
    members = {"EndpointName": endpoint, "InferenceComponentName": inference_component_name(endpoint)}
    calls = []
    for operation, (action, template) in GLUE_SERVING.items():
        member = re.search(r"\{(\w+)\}", template).group(1)  # type: ignore[union-attr]
        calls.append((operation, {member: members[member]},
                      Request(action, _fill(template, members), why=f"{why}: retires an old endpoint")))
    return calls


JOB_FOLDER = "jobs/batch/semsearch-dev-embed-1767614400000/"


def loader_requests(domain_arn: str, bucket: str, key_arn: str, index: str, why: str) -> list[Request]:
    """lambda/bulk_loader/handler.py: lists and reads jobs/batch/<job>/output/ (S3, SSE-KMS with
    the stage key), GET /<index>/_mapping, the model-version check (bulk_loader/serving.py: the
    index's settings, its ingest pipeline, model and connector), POST /<concrete index>/_bulk."""
    prefix = f"{JOB_FOLDER}output/"
    concrete = "semsearch-dev-0123456789"
    return [Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": prefix}, why=why),
            Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{prefix}part-00000.jsonl.out", why=why),
            Request("kms:Decrypt", key_arn, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"},
                    why=f"{why}: the objects are SSE-KMS with the stage key"),
            Request("es:ESHttpGet", f"{domain_arn}/{index}/_mapping", why=why),
            Request("es:ESHttpGet", f"{domain_arn}/{index}/_settings/index.default_pipeline", why=why),
            Request("es:ESHttpGet", f"{domain_arn}/_ingest/pipeline/{concrete}", why=why),
            Request("es:ESHttpGet", f"{domain_arn}/_plugins/_ml/models/abc", why=why),
            Request("es:ESHttpGet", f"{domain_arn}/_plugins/_ml/connectors/def", why=why),
            Request("es:ESHttpPost", f"{domain_arn}/{concrete}/_bulk", why=why)]


def prepare_requests(bucket: str, key_arn: str, why: str) -> list[Request]:
    """lambda/bulk_loader/prepare.py: lists and reads the documents under batch/input/ and
    writes request lines under jobs/batch/<job>/requests/ (SSE-KMS with the stage key)."""
    via_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    return [Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": "batch/input/"}, why=why),
            Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/batch/input/docs.jsonl", why=why),
            Request("kms:Decrypt", key_arn, via_s3, why=f"{why}: reads SSE-KMS objects"),
            Request("s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{JOB_FOLDER}requests/part-00000.jsonl", why=why),
            Request("kms:GenerateDataKey", key_arn, via_s3, why=f"{why}: writes SSE-KMS objects")]


def embedder_requests(bucket: str, key_arn: str, model_id: str, why: str) -> list[Request]:
    """lambda/bulk_loader/embed_bedrock.py: lists and reads the request lines under
    jobs/batch/<job>/requests/, InvokeModel on the stage's Bedrock model (a foundation model's
    ARN names the region but no account), writes jobs/batch/<job>/output/ (SSE-KMS, stage key)."""
    via_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    return [Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": f"{JOB_FOLDER}requests/"},
                    why=why),
            Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{JOB_FOLDER}requests/part-00000.jsonl", why=why),
            Request("kms:Decrypt", key_arn, via_s3, why=f"{why}: reads SSE-KMS objects"),
            Request("bedrock:InvokeModel", arn("bedrock", f"foundation-model/{model_id}", account=""),
                    why=f"{why} (Bedrock model {model_id})"),
            Request("s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{JOB_FOLDER}output/part-00000.jsonl.out",
                    why=why),
            Request("kms:GenerateDataKey", key_arn, via_s3, why=f"{why}: writes SSE-KMS objects")]


def transform_role_requests(bucket: str, key_arn: str, why: str) -> list[Request]:
    """A batch-embed transform job, as the serving model's role (CreateTransformJob names no
    role): reads jobs/batch/<job>/requests/, writes jobs/batch/<job>/output/ with the stage
    key (TransformOutput.KmsKeyId) and a volume encrypted with it (VolumeKmsKeyId: the role
    creates the grant), its TransformJobs logs and metrics (SAGEMAKER_ROLE_DOC)."""
    via_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    group = arn("logs", "log-group:/aws/sagemaker/TransformJobs")
    return [Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": f"{JOB_FOLDER}requests/"},
                    why=why),
            Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{JOB_FOLDER}requests/part-00000.jsonl", why=why),
            Request("s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{JOB_FOLDER}output/part-00000.jsonl.out",
                    why=why),
            Request("kms:Decrypt", key_arn, via_s3, why=why),
            Request("kms:GenerateDataKey", key_arn, via_s3, why=why),
            Request("kms:CreateGrant", key_arn, {"kms:GrantIsForAWSResource": "true"}, why=f"{why}: volume key"),
            Request("logs:CreateLogGroup", group, why=why),
            Request("logs:CreateLogStream", f"{group}:log-stream:semsearch-dev-embed-1767614400000/i-0123",
                    why=why),
            Request("logs:PutLogEvents", f"{group}:log-stream:semsearch-dev-embed-1767614400000/i-0123", why=why),
            Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/TransformJobs"},
                    why=why)]


def model_role_requests(templates: Templates, stack: str, logical_id: str, props: dict[str, Any],
                        endpoint: str) -> list[Request]:
    """The SageMaker execution role of a model (SAGEMAKER_ROLE_DOC): pull the image from ECR,
    read the model data, write the endpoint's logs, and in a VPC manage its ENIs."""
    why = f"{stack}/{logical_id} (SageMaker execution role; {SAGEMAKER_ROLE_DOC})"
    container = props.get("PrimaryContainer", {})
    requests = [Request("ecr:GetAuthorizationToken", "*", why=why)]
    image = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([\w-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)[:@].*", container["Image"])
    assert image, container["Image"]
    repository = arn("ecr", f"repository/{image.group(3)}", region=image.group(2), account=image.group(1))
    requests += [Request(f"ecr:{a}", repository, why=why)
                 for a in ("BatchGetImage", "GetDownloadUrlForLayer", "BatchCheckLayerAvailability")]
    if "ModelDataUrl" in container:
        bucket, _, key = container["ModelDataUrl"].removeprefix("s3://").partition("/")
        requests.append(Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{key}", why=why))
    group = arn("logs", f"log-group:/aws/sagemaker/Endpoints/{endpoint}")
    requests += [Request("logs:CreateLogGroup", group, why=why),
                 Request("logs:CreateLogStream", f"{group}:log-stream:AllTraffic/i-0123", why=why),
                 Request("logs:PutLogEvents", f"{group}:log-stream:AllTraffic/i-0123", why=why)]
    if "VpcConfig" in props:
        requests += [Request(f"ec2:{a}", "*", why=why) for a in (
            "CreateNetworkInterface", "CreateNetworkInterfacePermission", "DeleteNetworkInterface",
            "DeleteNetworkInterfacePermission", "DescribeNetworkInterfaces", "DescribeVpcs", "DescribeDhcpOptions",
            "DescribeSubnets", "DescribeSecurityGroups")]
    return requests


def connector_requests(props: dict[str, Any], why: str) -> list[Request]:
    """The connector invokes the endpoint; with an inference component it names the component,
    which is a resource of sagemaker:InvokeEndpoint (Service Authorization Reference). On
    Bedrock it invokes the foundation model, whose ARN names the region but no account."""
    if props.get("Flavor") == "bedrock":
        model = arn("bedrock", f"foundation-model/{props['BedrockModelId']}", account="")
        return [Request("bedrock:InvokeModel", model, why=f"{why} (Bedrock model {props['BedrockModelId']})")]
    endpoint = arn("sagemaker", f"endpoint/{props['EndpointName'].lower()}")
    requests = [Request("sagemaker:InvokeEndpoint", endpoint, why=why)]
    if props.get("InferenceComponentName"):
        requests.append(Request("sagemaker:InvokeEndpoint",
                                arn("sagemaker", f"inference-component/{props['InferenceComponentName'].lower()}"),
                                why=f"{why} (names InferenceComponentName)"))
    return requests


def as_json(statements: list[dict[str, Any]]) -> str:
    return json.dumps(statements, indent=1)[:4000]


def processing_job_requests(params: dict[str, Any], why: str) -> list[Request]:
    """A processing job (the compare workflow's), as the role CreateProcessingJob passes
    (SAGEMAKER_ROLE_DOC, "CreateProcessingJob API: Execution Role Permissions"), all read
    from its request: pull the image; list and read each S3Prefix input (the code bundle in
    CDK's asset bucket; pairs and models in the stage bucket, SSE-KMS with the stage key, the
    output's KmsKeyId); write the output there with that key; create the volume key's grant
    where VolumeKmsKeyId is set; the ProcessingJobs logs and metrics."""
    app = params["AppSpecification"]
    image = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([\w-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)[:@].*", app["ImageUri"])
    assert image, app["ImageUri"]
    repository = arn("ecr", f"repository/{image.group(3)}", region=image.group(2), account=image.group(1))
    requests = [Request("ecr:GetAuthorizationToken", "*", why=why)]
    requests += [Request(f"ecr:{a}", repository, why=why)
                 for a in ("BatchGetImage", "GetDownloadUrlForLayer", "BatchCheckLayerAvailability")]
    output = params["ProcessingOutputConfig"]
    key_arn = output["KmsKeyId"]
    via_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    (result,) = output["Outputs"]
    stage_bucket = result["S3Output"]["S3Uri"].removeprefix("s3://").split("/", 1)[0]
    for item in params["ProcessingInputs"]:
        bucket, _, key = item["S3Input"]["S3Uri"].removeprefix("s3://").partition("/")
        requests.append(Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": key},
                                why=f"{why} input {item['InputName']}"))
        obj = f"{key}part-00000.jsonl" if key.endswith("/") or not key else key
        requests.append(Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{obj}",
                                why=f"{why} input {item['InputName']}"))
        if bucket == stage_bucket:
            requests.append(Request("kms:Decrypt", key_arn, via_s3, why=f"{why} input {item['InputName']}: SSE-KMS"))
    bucket, _, key = result["S3Output"]["S3Uri"].removeprefix("s3://").partition("/")
    requests += [Request("s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{key}compare.json", why=f"{why} output"),
                 Request("kms:GenerateDataKey", key_arn, via_s3, why=f"{why} output: KmsKeyId")]
    volume_key = params["ProcessingResources"]["ClusterConfig"].get("VolumeKmsKeyId")
    if volume_key:
        requests.append(Request("kms:CreateGrant", volume_key, {"kms:GrantIsForAWSResource": "true"},
                                why=f"{why}: volume key"))
    group = arn("logs", "log-group:/aws/sagemaker/ProcessingJobs")
    stream = f"{group}:log-stream:{params['ProcessingJobName']}/algo-1-1767614400"
    requests += [Request("logs:CreateLogGroup", group, why=why),
                 Request("logs:CreateLogStream", stream, why=why),
                 Request("logs:PutLogEvents", stream, why=why),
                 Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/ProcessingJobs"},
                         why=why)]
    return requests
