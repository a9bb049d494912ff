"""Lambda functions in the stage's configured subnets, with ENI permissions scoped to them."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import VpcConfig
from stacks.nag import acknowledge


class LambdaVpcPlacement(Construct):
    """Where a stage's functions run when it has a VPC: the configured subnets and security groups.

    ``function_props`` are the keyword arguments of ``lambda_.Function`` (and ``cr.Provider``)
    that place a function there; ``grant_eni`` gives a function's role exactly the network
    interface permissions Lambda uses to attach it (see the Lambda developer guide,
    https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions).
    We write them ourselves instead of the AWS-managed AWSLambdaVPCAccessExecutionRole,
    which allows them on every subnet, security group and interface in the account.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: VpcConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = vpc
        imported = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=vpc.vpc_id,
                                               availability_zones=list(vpc.availability_zones),
                                               private_subnet_ids=list(vpc.subnet_ids))
        self.function_props: dict[str, Any] = {
            "vpc": imported,
            "vpc_subnets": ec2.SubnetSelection(subnets=imported.private_subnets),
            "security_groups": [ec2.SecurityGroup.from_security_group_id(self, f"Sg{i}", sg, mutable=False)
                                for i, sg in enumerate(vpc.security_group_ids)],
        }

    def grant_eni(self, role: iam.IRole) -> None:
        """Create, describe and delete the function's network interfaces in these subnets only."""
        stack = cdk.Stack.of(self)

        def ec2_arn(resource: str, name: str) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name)

        interfaces = ec2_arn("network-interface", "*")
        role.add_to_principal_policy(iam.PolicyStatement(
            # CreateNetworkInterface authorizes the new interface, its subnet and its groups.
            actions=["ec2:CreateNetworkInterface"],
            resources=[interfaces, *(ec2_arn("subnet", s) for s in self.config.subnet_ids),
                       *(ec2_arn("security-group", g) for g in self.config.security_group_ids)]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
            resources=[interfaces]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], resources=["*"]))
        acknowledge(role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:"
                          "network-interface/*]",
                    "Lambda names the function's network interfaces when it creates them; the Lambda guide asks "
                    "for every interface of the account and region here")
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                    "ec2:DescribeNetworkInterfaces and ec2:DescribeSubnets have no resource-level permissions")
