"""CloudFormation intrinsics resolved to representative, shape-valid values.

Deploy-time values (generated names, ARNs, key ids) are unknowable offline; each is replaced
by a value of the form AWS documents for that resource's ``Ref`` / ``Fn::GetAtt`` (the
"Return values" section of each resource's CloudFormation page), in region ``us-east-1`` and
account ``123456789012``. Generated physical names follow CloudFormation's
``<stack>-<logical id>-<suffix>`` shape, cut to the resource's name limit. ``Fn::ImportValue``
is followed to the exporting stack, so one resource has one value across stacks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"


class _NoValue:
    """``AWS::NoValue``: the property is removed."""


NO_VALUE = _NoValue()


def _suffix(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12].upper()


@dataclass(eq=False)  # hashed by identity: one per synthesized variant, results cached on it
class Templates:
    """All templates of one synthesized app variant, by stack name."""

    by_stack: dict[str, dict[str, Any]]
    #: Values of SSM parameters that a workflow writes at run time (a promotion's tag), by name;
    #: any other SSM parameter has the value its AWS::SSM::Parameter resource gives it.
    ssm_values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.exports: dict[str, tuple[str, Any]] = {}
        for stack, template in self.by_stack.items():
            for output in template.get("Outputs", {}).values():
                if "Export" in output:
                    self.exports[self.resolve(stack, output["Export"]["Name"])] = (stack, output["Value"])

    def resources(self, stack: str, type_name: str | None = None) -> dict[str, dict[str, Any]]:
        found = self.by_stack[stack].get("Resources", {})
        return {k: v for k, v in found.items() if type_name is None or v["Type"] == type_name}

    def all_resources(self, type_name: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(stack, logical id, resource) of every resource of this type in every stack."""
        return [(stack, logical_id, resource) for stack in self.by_stack
                for logical_id, resource in self.resources(stack, type_name).items()]

    # -- resolution ----------------------------------------------------------------------

    def resolve(self, stack: str, value: Any) -> Any:
        """``value`` with every intrinsic replaced; ``AWS::NoValue`` entries dropped."""
        if isinstance(value, list):
            items = [self.resolve(stack, v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(stack, arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(stack, logical_id, self.resolve(stack, attribute))
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(p) for p in self.resolve(stack, parts))
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                variables = self.resolve(stack, variables)
                return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: str(self._sub_variable(stack, m.group(1), variables)),
                              text)
            if key == "Fn::Select":
                index, items = self.resolve(stack, arg)
                return items[int(index)]
            if key == "Fn::Split":
                separator, text = self.resolve(stack, arg)
                return text.split(separator)
            if key == "Fn::FindInMap":
                mapping, top, second = (self.resolve(stack, a) for a in arg[:3])
                return self.by_stack[stack]["Mappings"][mapping][top][second]
            if key == "Fn::ImportValue":
                exporter, exported = self.exports[self.resolve(stack, arg)]
                return self.resolve(exporter, exported)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(stack, when_true if self.condition(stack, condition) else when_false)
            if key == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
            if key == "Fn::Base64":
                return self.resolve(stack, arg)
            if key.startswith("Fn::") and key not in ("Fn::Transform",):
                raise ValueError(f"{stack}: intrinsic {key} is not modelled")
        return {k: v for k, v in ((k, self.resolve(stack, v)) for k, v in value.items()) if v is not NO_VALUE}

    def condition(self, stack: str, name_or_expression: Any) -> bool:
        if isinstance(name_or_expression, str):
            return self.condition(stack, self.by_stack[stack]["Conditions"][name_or_expression])
        (key, arg), = name_or_expression.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(stack, a) for a in arg)
            return bool(left == right)
        if key == "Fn::Not":
            return not self.condition(stack, arg[0])
        if key == "Fn::And":
            return all(self.condition(stack, a) for a in arg)
        if key == "Fn::Or":
            return any(self.condition(stack, a) for a in arg)
        if key == "Condition":
            return self.condition(stack, arg)
        raise ValueError(f"{stack}: condition {key} is not modelled")

    def _sub_variable(self, stack: str, name: str, variables: dict[str, Any]) -> Any:
        if name in variables:
            return variables[name]
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return self.get_att(stack, logical_id, attribute)
        return self.ref(stack, name)

    def ref(self, stack: str, name: str) -> Any:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
                  "AWS::URLSuffix": URL_SUFFIX, "AWS::StackName": stack, "AWS::NoValue": NO_VALUE,
                  "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack}/"
                                  "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
                  "AWS::NotificationARNs": []}
        if name in pseudo:
            return pseudo[name]
        template = self.by_stack[stack]
        if name in template.get("Parameters", {}):
            parameter = template["Parameters"][name]
            if str(parameter.get("Type", "")).startswith("AWS::SSM::Parameter::Value<") and "Default" in parameter:
                return self.ssm_value(parameter["Default"])
            return parameter.get("Default", f"{name}-value")
        resource = template["Resources"][name]
        return _ref_value(stack, name, resource["Type"], resource.get("Properties", {}), self)

    def ssm_value(self, name: str) -> Any:
        """What an SSM parameter type resolves to at deploy time: CloudFormation reads the
        parameter then, so its value is the one the stack that writes it (deployed earlier) set."""
        if name in self.ssm_values:
            return self.ssm_values[name]
        for stack, _, resource in self.all_resources("AWS::SSM::Parameter"):
            props = resource.get("Properties", {})
            if self.resolve(stack, props.get("Name")) == name:
                return self.resolve(stack, props["Value"])
        return name  # written outside these stacks (the CDK bootstrap version): its name stands in

    def get_att(self, stack: str, logical_id: str, attribute: str) -> Any:
        resource = self.by_stack[stack]["Resources"][logical_id]
        return _get_att_value(stack, logical_id, resource["Type"], resource.get("Properties", {}), attribute, self)

    def physical_name(self, stack: str, logical_id: str, limit: int = 64, *, lower: bool = False,
                      alnum_dash: bool = False) -> str:
        """A generated physical name of CloudFormation's shape, cut to ``limit``."""
        suffix = _suffix(stack, logical_id)
        head = f"{stack}-{logical_id}"
        if alnum_dash:
            head = re.sub(r"[^A-Za-z0-9-]", "", head)
        name = f"{head[: limit - len(suffix) - 1]}-{suffix}"
        return name.lower() if lower else name


def _prop(templates: Templates, stack: str, properties: dict[str, Any], key: str) -> Any:
    return templates.resolve(stack, properties[key]) if key in properties else None


_ARN_OF_REF = {  # types whose Ref is their ARN: (service, resource path prefix, name property)
    "AWS::SNS::Topic": ("sns", "", "TopicName"),
    "AWS::StepFunctions::StateMachine": ("states", "stateMachine:", "StateMachineName"),
    "AWS::SageMaker::Model": ("sagemaker", "model/", "ModelName"),
    "AWS::SageMaker::EndpointConfig": ("sagemaker", "endpoint-config/", "EndpointConfigName"),
    "AWS::SageMaker::Endpoint": ("sagemaker", "endpoint/", "EndpointName"),
    "AWS::SageMaker::InferenceComponent": ("sagemaker", "inference-component/", "InferenceComponentName"),
    "AWS::IAM::ManagedPolicy": ("iam", "policy/", "ManagedPolicyName"),
}
_SAGEMAKER_NAMES = {"AWS::SageMaker::Model": "ModelName", "AWS::SageMaker::EndpointConfig": "EndpointConfigName",
                    "AWS::SageMaker::Endpoint": "EndpointName",
                    "AWS::SageMaker::InferenceComponent": "InferenceComponentName"}


def _name(stack: str, logical_id: str, type_name: str, properties: dict[str, Any], templates: Templates) -> str:
    """The physical name: the name property if set, else a generated one."""
    name_props = {"AWS::IAM::Role": ("RoleName", 64), "AWS::Lambda::Function": ("FunctionName", 64),
                  "AWS::S3::Bucket": ("BucketName", 63), "AWS::SSM::Parameter": ("Name", 1011),
                  "AWS::Logs::LogGroup": ("LogGroupName", 512), "AWS::CloudWatch::Alarm": ("AlarmName", 255),
                  "AWS::OpenSearchService::Domain": ("DomainName", 28), "AWS::Events::Rule": ("Name", 64),
                  "AWS::IAM::Policy": ("PolicyName", 128), "AWS::SNS::Topic": ("TopicName", 256),
                  "AWS::StepFunctions::StateMachine": ("StateMachineName", 80),
                  "AWS::IAM::ManagedPolicy": ("ManagedPolicyName", 128),
                  **{t: (p, 63) for t, p in _SAGEMAKER_NAMES.items()}}
    prop, limit = name_props.get(type_name, ("", 64))
    given = _prop(templates, stack, properties, prop) if prop else None
    if given:
        return str(given)
    lower = type_name in ("AWS::S3::Bucket", "AWS::OpenSearchService::Domain")
    return templates.physical_name(stack, logical_id, limit, lower=lower,
                                   alnum_dash=type_name in _SAGEMAKER_NAMES or lower)


def _arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def _ref_value(stack: str, logical_id: str, type_name: str, properties: dict[str, Any], templates: Templates) -> Any:
    name = _name(stack, logical_id, type_name, properties, templates)
    if type_name in _ARN_OF_REF:
        service, prefix, _ = _ARN_OF_REF[type_name]
        if service == "sagemaker":
            name = name.lower()  # SageMaker ARNs carry lower-cased names
        if service == "iam":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:{prefix}{name}"
        return _arn(service, f"{prefix}{name}")
    if type_name == "AWS::KMS::Key":
        digest = hashlib.sha256(f"{stack}/{logical_id}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    if type_name == "AWS::ApplicationAutoScaling::ScalableTarget":
        resolved = templates.resolve(stack, properties)
        return f"{resolved['ResourceId']}|{resolved['ScalableDimension']}|{resolved['ServiceNamespace']}"
    return name


def _get_att_value(stack: str, logical_id: str, type_name: str, properties: dict[str, Any], attribute: str,
                   templates: Templates) -> Any:
    name = _name(stack, logical_id, type_name, properties, templates)
    ref = _ref_value(stack, logical_id, type_name, properties, templates)
    values: dict[str, Any] = {}
    if type_name == "AWS::IAM::Role":
        values = {"Arn": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}", "RoleId": "AROA" + _suffix(name) + "EXAMPLE"}
    elif type_name == "AWS::Lambda::Function":
        values = {"Arn": _arn("lambda", f"function:{name}")}
    elif type_name == "AWS::KMS::Key":
        values = {"Arn": _arn("kms", f"key/{ref}"), "KeyId": ref}
    elif type_name == "AWS::S3::Bucket":
        values = {"Arn": f"arn:{PARTITION}:s3:::{name}", "DomainName": f"{name}.s3.{URL_SUFFIX}",
                  "RegionalDomainName": f"{name}.s3.{REGION}.{URL_SUFFIX}"}
    elif type_name == "AWS::Logs::LogGroup":
        values = {"Arn": _arn("logs", f"log-group:{name}:*")}
    elif type_name == "AWS::StepFunctions::StateMachine":
        values = {"Arn": ref, "Name": name}
    elif type_name == "AWS::CloudWatch::Alarm":
        values = {"Arn": _arn("cloudwatch", f"alarm:{name}")}
    elif type_name == "AWS::OpenSearchService::Domain":
        arn = _arn("es", f"domain/{name}")
        values = {"Arn": arn, "DomainArn": arn, "Id": f"{ACCOUNT}/{name}",
                  "DomainEndpoint": f"search-{name}-{_suffix(name).lower()}.{REGION}.es.{URL_SUFFIX}"}
    elif type_name == "AWS::Events::Rule":
        values = {"Arn": _arn("events", f"rule/{name}")}
    elif type_name == "AWS::SNS::Topic":
        values = {"TopicArn": ref, "TopicName": name}
    elif type_name == "AWS::SSM::Parameter":
        values = {"Value": _prop(templates, stack, properties, "Value"), "Type": "String"}
    elif type_name in _SAGEMAKER_NAMES:
        arn_member = _SAGEMAKER_NAMES[type_name].replace("Name", "Arn")
        values = {_SAGEMAKER_NAMES[type_name]: name, arn_member: ref}
    elif type_name == "AWS::SQS::Queue":
        values = {"Arn": _arn("sqs", name), "QueueName": name}
    elif type_name == "AWS::CodeBuild::Project":
        values = {"Arn": _arn("codebuild", f"project/{name}")}
    elif type_name == "AWS::CodePipeline::Pipeline":
        values = {"Arn": _arn("codepipeline", name)}
    if attribute not in values:
        raise KeyError(f"{stack}: Fn::GetAtt {logical_id}.{attribute} ({type_name}) is not modelled")
    return values[attribute]
