"""The IAM role SageMaker assumes to run our containers (endpoints, training and transform jobs)."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import images
from stacks.nag import acknowledge

_LOGS_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]


class SageMakerExecutionRole(iam.Role):
    """A role only SageMaker assumes; ``allow_containers`` grants what every SageMaker container
    needs (image pull, logs, metrics, VPC network interfaces), and no more.

    A subclass of ``iam.Role`` (not a wrapper) so that the role keeps the construct path, hence
    the logical ID, it had before this class existed. Each cdk-nag finding its statements cause
    is acknowledged here, next to the statement.
    """

    def __init__(self, scope: Construct, construct_id: str, *, description: str) -> None:
        super().__init__(scope, construct_id, assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                         description=description)

    def allow_containers(self, *, images: Sequence[tuple[str, str, bool]], log_groups: Sequence[str],
                         metric_namespaces: Sequence[str], vpc: bool = False) -> None:
        """What the containers that run with this role need (a separate step from the constructor
        so that a caller's own grants keep their place in the policy).

        images: (framework, version, accelerated) of each image it pulls: exactly those ECR
          repositories, plus GetAuthorizationToken (no resource-level permissions).
        log_groups: prefixes of the log-group names under /aws/sagemaker/ its containers write
          (``Endpoints/`` for an endpoint, ``TrainingJobs`` for training jobs...).
        metric_namespaces: the CloudWatch namespaces it publishes to, as a ``StringEquals``
          condition, or a ``StringLike`` one where a name has a ``*``.
        vpc: the containers run in a VPC: SageMaker creates their network interfaces.
        """
        self._grant_image_pull(images)
        self._grant_logs(log_groups)
        self._grant_metrics(metric_namespaces)
        if vpc:
            self._grant_vpc_access()

    def _grant_image_pull(self, pulled: Sequence[tuple[str, str, bool]]) -> None:
        for framework, version, accelerated in pulled:
            self.add_to_policy(iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[images.ecr_repository_arn(self, framework, version, accelerated=accelerated)]))
        self.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        acknowledge(self, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions")

    def _grant_logs(self, log_groups: Sequence[str]) -> None:
        stack = cdk.Stack.of(self)
        self.add_to_policy(iam.PolicyStatement(
            actions=_LOGS_ACTIONS,
            resources=[stack.format_arn(service="logs", resource="log-group", resource_name=f"/aws/sagemaker/{group}*",
                                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME) for group in log_groups]))
        for group in log_groups:
            acknowledge(self, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                              f"<AWS::AccountId>:log-group:/aws/sagemaker/{group}*]",
                        "SageMaker names each log stream at run time under this fixed prefix")

    def _grant_metrics(self, namespaces: Sequence[str]) -> None:
        operator = "StringLike" if any("*" in n for n in namespaces) else "StringEquals"
        self.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={operator: {"cloudwatch:namespace": list(namespaces)}}))
        acknowledge(self, "AwsSolutions-IAM5[Resource::*]",
                    "cloudwatch:PutMetricData has no resource-level permissions; a namespace condition limits it")

    def _grant_vpc_access(self) -> None:
        self.add_to_policy(iam.PolicyStatement(
            actions=["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                     "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
                     "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                     "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"],
            resources=["*"]))
        acknowledge(self, "AwsSolutions-IAM5[Resource::*]",
                    "the VPC network-interface actions SageMaker needs have no resource-level permissions")
