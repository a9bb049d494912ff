"""Which API a Step Functions Task calls, and a representative result of that call.

Resources (https://docs.aws.amazon.com/step-functions/latest/dg/integrate-services.html):
``arn:aws:states:::aws-sdk:<service>:<action>`` calls the SDK action; the optimized
integrations ``arn:aws:states:::<service>:<action>[.sync]`` call the API of that name (with
``.sync`` the result is the job's Describe* response); a Lambda function ARN invokes it.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from tests.infra.specs import botocore_api
from tests.infra.specs.states import TaskCall

#: SDK-integration service names that differ from botocore's.
SDK_SERVICES = {"sfn": "stepfunctions", "opensearch": "opensearch", "applicationautoscaling": "application-autoscaling"}
#: .sync integrations: the Describe call whose response becomes the Task result.
SYNC_RESULT = {("sagemaker", "CreateTrainingJob"): "DescribeTrainingJob",
               ("sagemaker", "CreateTransformJob"): "DescribeTransformJob",
               ("sagemaker", "CreateProcessingJob"): "DescribeProcessingJob"}


@dataclass(frozen=True)
class TaskApi:
    service: str
    operation: str
    integration: str  # "sdk", "optimized", "sync", "lambda-arn"


def api_of(resource: str) -> TaskApi:
    sdk = re.fullmatch(r"arn:aws[\w-]*:states:::aws-sdk:([\w.-]+):(\w+)", resource)
    if sdk:
        service = SDK_SERVICES.get(sdk.group(1), sdk.group(1))
        return TaskApi(service, sdk.group(2)[0].upper() + sdk.group(2)[1:], "sdk")
    optimized = re.fullmatch(r"arn:aws[\w-]*:states:::([\w-]+):(\w+)(\.sync(?::2)?|\.waitForTaskToken)?", resource)
    if optimized:
        action = optimized.group(2)[0].upper() + optimized.group(2)[1:]
        return TaskApi(optimized.group(1), action, "sync" if optimized.group(3) == ".sync" else "optimized")
    if re.fullmatch(r"arn:aws[\w-]*:lambda:[\w-]+:\d{12}:function:[\w-]+(:[\w$-]+)?", resource):
        return TaskApi("lambda", "Invoke", "lambda-arn")
    raise ValueError(f"unknown Task resource {resource}")


def request(call: TaskCall) -> dict[str, Any]:
    """The API request a Task makes from its evaluated Arguments."""
    api = api_of(call.resource)
    if api.integration == "lambda-arn":
        return {"FunctionName": call.resource, "Payload": json.dumps(call.arguments)}
    params = copy.deepcopy(call.arguments) if isinstance(call.arguments, dict) else {}
    if (api.service, api.operation) == ("lambda", "Invoke") and "Payload" in params and not isinstance(
            params["Payload"], str):
        # The Lambda integration serializes a JSON Payload itself (lambda-invoke docs).
        params["Payload"] = json.dumps(params["Payload"])
    return params


# Hand-written samples of what the functions return, from their handlers' docstrings.
FUNCTION_RESULTS = {
    # lambda/bulk_loader/handler.py: "Returns {documents_in, documents_indexed, ...}"
    "bulk_loader.handler.handler": {"documents_in": 3, "documents_indexed": 3, "documents_failed": 0, "retried": 0,
                                    "requests": 1, "complete": True, "failures": [], "objects": 1,
                                    "index": "documents"},
    # lambda/bulk_loader/embed_bedrock.py: "Returns {objects, embedded, records, retried, next, complete}"
    "bulk_loader.embed_bedrock.handler": {"objects": 1, "embedded": 1, "records": 3, "retried": 0, "next": None,
                                          "complete": True},
    # lambda/bulk_loader/prepare.py: "Returns {documents, requests, objects, inputs}"
    "bulk_loader.prepare.handler": {"documents": 3, "requests": 1,
                                    "objects": ["s3://example-bucket/jobs/batch/job/requests/part-00000.jsonl"],
                                    "inputs": ["s3://example-bucket/batch/input/docs.jsonl"]},
}


def representative_result(call: TaskCall, handlers: dict[str, str]) -> Any:
    """botocore's minimal response of the call, plus hand-written samples (marked) of the
    optional members the workflows read; ``handlers`` maps function ARNs to handlers."""
    api = api_of(call.resource)
    args = call.arguments if isinstance(call.arguments, dict) else {}
    if api.integration == "lambda-arn" or (api.service, api.operation) == ("lambda", "Invoke"):
        function = args.get("FunctionName", call.resource)
        payload = FUNCTION_RESULTS.get(handlers.get(str(function), ""), {})
        if api.integration == "lambda-arn":
            return payload
        return {**botocore_api.sample_output("lambda", "Invoke"), "StatusCode": 200, "ExecutedVersion": "$LATEST",
                "Payload": payload}
    operation = SYNC_RESULT.get((api.service, api.operation), api.operation) if api.integration == "sync" \
        else api.operation
    result = botocore_api.sample_output(api.service, operation)
    # Hand-written samples: the optional members the workflows read, as the job reports them.
    if operation == "DescribeTrainingJob":
        name = args.get("TrainingJobName", "example")
        metrics = args.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        result.update(TrainingJobName=name, TrainingJobStatus="Completed",
                      ModelArtifacts={"S3ModelArtifacts": f"{args['OutputDataConfig']['S3OutputPath']}{name}"
                                                          "/output/model.tar.gz"},
                      FinalMetricDataList=[{"MetricName": m["Name"], "Value": 0.05,
                                            "Timestamp": "2026-01-05T13:00:00Z"} for m in metrics])
    elif operation == "DescribeTransformJob":
        result.update(TransformJobName=args.get("TransformJobName", "example"), TransformJobStatus="Completed")
    elif operation == "DescribeProcessingJob":
        result.update(ProcessingJobName=args.get("ProcessingJobName", "example"), ProcessingJobStatus="Completed")
    elif (api.service, operation) == ("ssm", "GetParameter"):
        result["Parameter"] = {"Name": args.get("Name"), "Type": "String", "Version": 2,
                               "Value": "semsearch-dev-ft-1767614400000"}
    elif (api.service, operation) == ("ssm", "GetParameters"):
        # What the model stack writes for the endpoint (stacks.names.serving_parameter).
        result["Parameters"] = [{"Name": name, "Type": "String", "Version": 2,
                                 "Value": "semsearch-dev-cpu-1a2b3c4d" if name.endswith("-endpoint")
                                 else "EndpointcpuModel1A2B3C4D-x9Yz"} for name in args.get("Names", [])]
        result["InvalidParameters"] = []
    elif (api.service, operation) == ("cloudformation", "DescribeStacks"):
        result["Stacks"] = [{"StackName": args.get("StackName", "example"), "StackStatus": "UPDATE_COMPLETE",
                             "CreationTime": "2026-01-05T13:00:00Z"}]
    elif operation == "DescribeEndpoint":
        result.update(EndpointConfigName="semsearch-dev-ft-1767614400000")
    elif operation == "DescribeInferenceComponent":
        result["Specification"] = {"ModelName": "semsearch-dev-ft-1767614400000"}
    return result
