"""The API calls CloudFormation makes with a resource's properties.

Each SageMaker and Application Auto Scaling resource type maps to the create call of its
CloudFormation handler. Property names equal API member names except where listed; a property
with no counterpart in the create call is dropped with the reason next to it. Names that
CloudFormation generates when the template leaves them out are filled in the way it does
(``intrinsics.Templates.physical_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.infra.specs.intrinsics import Templates


@dataclass(frozen=True)
class ApiCall:
    service: str
    operation: str
    params: dict[str, Any]
    origin: str  # "<stack>/<logical id> (<type>)"


# type -> (service, operation, the name member CloudFormation generates when absent)
CREATE_CALLS = {
    "AWS::SageMaker::Model": ("sagemaker", "CreateModel", "ModelName"),
    "AWS::SageMaker::EndpointConfig": ("sagemaker", "CreateEndpointConfig", "EndpointConfigName"),
    "AWS::SageMaker::Endpoint": ("sagemaker", "CreateEndpoint", "EndpointName"),
    "AWS::SageMaker::InferenceComponent": ("sagemaker", "CreateInferenceComponent", "InferenceComponentName"),
    "AWS::ApplicationAutoScaling::ScalableTarget": ("application-autoscaling", "RegisterScalableTarget", None),
    "AWS::ApplicationAutoScaling::ScalingPolicy": ("application-autoscaling", "PutScalingPolicy", None),
}

# Properties without a member in the create call.
NOT_IN_CREATE_CALL = {
    # UpdateEndpoint members: CloudFormation uses them when it updates the endpoint.
    "AWS::SageMaker::Endpoint": {"RetainAllVariantProperties", "ExcludeRetainedVariantProperties",
                                 "RetainDeploymentConfig", "DeploymentConfig"},
    # EndpointArn is an alternative to EndpointName for CloudFormation only; DeploymentConfig
    # is a member of UpdateInferenceComponent, used on updates.
    "AWS::SageMaker::InferenceComponent": {"EndpointArn", "DeploymentConfig"},
    # ScheduledActions become PutScheduledAction calls (scheduled_action_calls); SuspendedState
    # is a RegisterScalableTarget member and stays.
    "AWS::ApplicationAutoScaling::ScalableTarget": {"ScheduledActions"},
    # ScalingTargetId names the target whose ServiceNamespace/ResourceId/ScalableDimension
    # CloudFormation passes instead.
    "AWS::ApplicationAutoScaling::ScalingPolicy": {"ScalingTargetId"},
}


def _tags_as_map(tags: list[dict[str, str]]) -> dict[str, str]:
    """Application Auto Scaling takes tags as a map; CloudFormation writes a Key/Value list."""
    return {tag["Key"]: tag["Value"] for tag in tags}


def api_calls(templates: Templates) -> list[ApiCall]:
    """Every create call CloudFormation makes for the SageMaker / Auto Scaling resources."""
    calls: list[ApiCall] = []
    for type_name, (service, operation, name_member) in CREATE_CALLS.items():
        for stack, logical_id, resource in templates.all_resources(type_name):
            props = templates.resolve(stack, resource.get("Properties", {}))
            origin = f"{stack}/{logical_id} ({type_name})"
            for dropped in NOT_IN_CREATE_CALL.get(type_name, ()):
                props.pop(dropped, None)
            if name_member and name_member not in props:
                props[name_member] = templates.get_att(stack, logical_id, name_member)
            if type_name == "AWS::ApplicationAutoScaling::ScalableTarget":
                raw = templates.resolve(stack, resource["Properties"])
                if "Tags" in props:
                    props["Tags"] = _tags_as_map(props["Tags"])
                calls.extend(scheduled_action_calls(raw, origin))
            if type_name == "AWS::ApplicationAutoScaling::ScalingPolicy" and "ScalingTargetId" in resource["Properties"]:
                target_ref = resource["Properties"]["ScalingTargetId"]
                target = templates.resolve(stack, target_ref).split("|")
                props.update(ResourceId=target[0], ScalableDimension=target[1], ServiceNamespace=target[2])
            calls.append(ApiCall(service, operation, props, origin))
    return calls


def scheduled_action_calls(target: dict[str, Any], origin: str) -> list[ApiCall]:
    """One PutScheduledAction per ScheduledActions entry of a ScalableTarget."""
    calls = []
    for action in target.get("ScheduledActions", []):
        params = {"ServiceNamespace": target["ServiceNamespace"], "ResourceId": target["ResourceId"],
                  "ScalableDimension": target["ScalableDimension"], **action}
        calls.append(ApiCall("application-autoscaling", "PutScheduledAction", params,
                             f"{origin} ScheduledActions[{action.get('ScheduledActionName')}]"))
    return calls
