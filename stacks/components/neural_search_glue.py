"""The custom resource that provisions ml-commons and neural search on the domain.

Runs lambda/search_glue behind the CDK Provider framework, with typed properties
(``GlueProperties``, the one definition the Lambda parses too): on_event starts each
request, is_complete polls the slow steps (model registration and deployment). A scheduled
watchdog re-deploys the model if the domain drops it (models can go undeployed after a
domain restart).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.components.lambda_assets import RUNTIME, lambda_code
from stacks.components.lambda_vpc import LambdaVpcPlacement
from stacks.glue_properties import GlueProperties
from stacks.nag import acknowledge

#: Upper bound for one provisioning request; CloudFormation gives up after this instead of
#: waiting its default hour for a response that never comes.
SERVICE_TIMEOUT = cdk.Duration.minutes(20)


class NeuralSearchGlue(Construct):
    """Connector → model group → remote model (deployed) → ingest pipeline → k-NN index.

    Keyword-only properties:
      role: the function's role; must be the domain's FGAC master user (it maps roles).
      properties: what to provision (lambda/search_glue/properties.py); tokens allowed. The
        custom resource carries the properties set on it; JSON-valued ones as JSON text.
      watchdog_rate: how often the watchdog checks that the model is deployed (default 15 min).
      vpc: run every function (ours and the Provider framework's) in these subnets (default: none).

    ``resource`` exposes the outputs: ``get_att_string("ModelId")``, "IndexName", ...;
    ``properties`` what it provisions.
    """

    def __init__(self, scope: Construct, construct_id: str, *, role: iam.Role, properties: GlueProperties,
                 watchdog_rate: cdk.Duration | None = None, vpc: LambdaVpcPlacement | None = None) -> None:
        super().__init__(scope, construct_id)
        self.properties = properties
        template_properties = self.template_properties(properties)
        watchdog_rate = watchdog_rate or cdk.Duration.minutes(15)
        placement: dict[str, Any] = vpc.function_props if vpc is not None else {}
        role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaBasicExecutionRole"))
        acknowledge(role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                          "AWSLambdaBasicExecutionRole]",
                    "the AWS-managed basic execution policy only lets the function write its own logs")
        # A model change deploys a new endpoint beside the old one, which CloudFormation keeps;
        # the Delete of the old version retires it (search_glue/serving.py): only this stage's
        # names (each starts with the glue's Name), whatever the model version in them.
        for kind, actions in (("endpoint", ["sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"]),
                              ("inference-component", ["sagemaker:DescribeInferenceComponent",
                                                       "sagemaker:DeleteInferenceComponent"])):
            role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[cdk.Stack.of(self).format_arn(
                service="sagemaker", resource=kind, resource_name=f"{properties.name}-*")]))
            acknowledge(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                              f"<AWS::AccountId>:{kind}/{properties.name}-*]",
                        f"each model version has its own {kind} name under this stage's prefix; the glue retires "
                        "the old one after a re-embed")
        common: dict[str, Any] = {
            "runtime": RUNTIME, "code": lambda_code("search_glue"), "role": role,
            "memory_size": 256, "architecture": lambda_.Architecture.ARM_64,
            "environment": {"LOG_LEVEL": "INFO"}, **placement,
        }
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        common["log_group"] = log_group
        # Each HTTP call is bounded at 55 s inside the function; two minutes covers a step.
        self.on_event = lambda_.Function(self, "OnEvent", handler="search_glue.handler.on_event",
                                         timeout=cdk.Duration.minutes(2),
                                         description="neural-search glue: start each request", **common)
        self.is_complete = lambda_.Function(self, "IsComplete", handler="search_glue.handler.is_complete",
                                            timeout=cdk.Duration.minutes(2),
                                            description="neural-search glue: poll model registration/deploy",
                                            **common)
        # The Provider framework's own functions run with these roles (CDK would otherwise make
        # them with the AWS-managed logging and VPC policies): each writes exactly their log
        # group. Two roles, as CDK makes them: one would be its own dependency (onEvent starts
        # the waiter state machine, which invokes isComplete).
        provider_logs = logs.LogGroup(self, "ProviderLogs", retention=logs.RetentionDays.ONE_MONTH,
                                      removal_policy=cdk.RemovalPolicy.DESTROY)
        self.provider_roles = [
            iam.Role(self, f"Provider{kind}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                     description=f"CDK Provider framework of the neural-search glue: {what}")
            for kind, what in (("OnEvent", "onEvent function"), ("Waiter", "isComplete and onTimeout functions"))]
        for provider_role in (role, *self.provider_roles):
            if provider_role is not role:
                provider_logs.grant_write(provider_role)
            if vpc is not None:
                vpc.grant_eni(provider_role)
        self.provider = cr.Provider(self, "Provider", on_event_handler=self.on_event,
                                    is_complete_handler=self.is_complete, query_interval=cdk.Duration.seconds(5),
                                    total_timeout=cdk.Duration.minutes(15), log_group=provider_logs,
                                    framework_on_event_role=self.provider_roles[0],
                                    framework_complete_and_timeout_role=self.provider_roles[1], **placement)
        self.resource = cdk.CustomResource(self, "Resource", service_token=self.provider.service_token,
                                           resource_type="Custom::NeuralSearch", properties=template_properties,
                                           service_timeout=SERVICE_TIMEOUT)

        self.watchdog = lambda_.Function(self, "Watchdog", handler="search_glue.handler.watchdog",
                                         timeout=cdk.Duration.minutes(2),
                                         description="neural-search glue: re-deploy the model if it dropped",
                                         **common)
        events.Rule(self, "WatchdogSchedule", schedule=events.Schedule.rate(watchdog_rate),
                    targets=[targets.LambdaFunction(self.watchdog, event=events.RuleTargetInput.from_object(
                        {"ResourceProperties": template_properties}), retry_attempts=0)])
        for fn in (self.on_event, self.is_complete, self.watchdog):
            acknowledge(fn, "AwsSolutions-L1",
                        "pinned to python3.12, the runtime this code is tested against; bump deliberately")
        stack = cdk.Stack.of(self)
        invoked = [self.on_event, self.is_complete,
                   *(c for c in self.provider.node.find_all() if isinstance(c, lambda_.Function))]
        for fn in invoked:
            logical_id = stack.resolve(stack.get_logical_id(fn.node.default_child))  # type: ignore[arg-type]
            acknowledge(self, f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>:*]",
                        "CDK Provider framework: invokes exactly this function; ':*' covers its versions")
        acknowledge(self.provider, "AwsSolutions-L1", "CDK Provider framework runtime is chosen by aws-cdk-lib")
        acknowledge(self.provider, "AwsSolutions-SF1", "CDK Provider framework waiter state machine")
        acknowledge(self.provider, "AwsSolutions-SF2", "CDK Provider framework waiter state machine")

    def output(self, name: str) -> str:
        return self.resource.get_att_string(name)

    def template_properties(self, properties: GlueProperties) -> dict[str, Any]:
        """The properties as the template carries them: JSON-valued ones as JSON text, which may
        contain tokens (role ARNs) and which the glue parses back."""
        stack = cdk.Stack.of(self)
        return {name: stack.to_json_string(value) if isinstance(value, (dict, list)) else value
                for name, value in properties.to_properties().items()}
