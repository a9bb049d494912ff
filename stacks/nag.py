"""cdk-nag (AwsSolutions, v3 Validations plugin) and acknowledgments next to their constructs."""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def enable_nag(app: cdk.App) -> None:
    """Synth fails on any finding not acknowledged on (or above) the construct causing it."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one finding on one construct, with a reason a reviewer would accept."""
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))


def _nag_text(value: object) -> str:
    """CloudFormation value as cdk-nag spells it inside a finding id (intrinsics as <...>)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::Join":
            return str(arg[0]).join(_nag_text(part) for part in arg[1])
        if fn == "Fn::ImportValue":
            return _nag_text(arg)
    return str(value)


@jsii.implements(cdk.IAspect)
class AcknowledgeGeneratedWildcards:
    """Acknowledge each IAM5 finding of policies that a CDK library generates (CDK Pipelines,
    the Provider framework): we cannot narrow them, so we name every one with one reason.
    Never used on policies we write ourselves: those are acknowledged one by one."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, iam.CfnPolicy):
            return
        document = cdk.Stack.of(node).resolve(node.policy_document)
        findings = set()
        for statement in document.get("Statement", []):
            actions = statement.get("Action", [])
            resources = statement.get("Resource", [])
            for action in actions if isinstance(actions, list) else [actions]:
                if "*" in action:
                    findings.add(f"Action::{action}")
            for resource in resources if isinstance(resources, list) else [resources]:
                text = _nag_text(resource)
                if "*" in text:
                    findings.add(f"Resource::{text}")
        for finding in sorted(findings):
            acknowledge(node, f"AwsSolutions-IAM5[{finding}]", self.reason)
