"""The role the ml-commons connector assumes to call SageMaker or Amazon Bedrock."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.components.embedding_endpoint import EndpointReference

#: Both OpenSearch service principals: es.amazonaws.com, and opensearchservice.amazonaws.com
#: used by newer ml-commons features.
OPENSEARCH_PRINCIPALS = ("es.amazonaws.com", "opensearchservice.amazonaws.com")


class ConnectorRole(Construct):
    """IAM role that OpenSearch Service assumes when the connector invokes an endpoint.

    Keyword-only properties:
      endpoints: the endpoints (and their inference components) it may invoke, nothing else.
      bedrock_models: Bedrock foundation model ids it may invoke (bedrock:InvokeModel on each
        model's ARN in the stack's region, nothing else).
      domain_arn: the one domain allowed to assume it: the trust policy requires this
        account (aws:SourceAccount) and this domain (aws:SourceArn), so no other domain or
        account can make OpenSearch act with it (confused deputy).
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoints: list[EndpointReference],
                 domain_arn: str, bedrock_models: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id)
        conditions = {"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID},
                      "ArnLike": {"aws:SourceArn": domain_arn}}
        first, *others = OPENSEARCH_PRINCIPALS
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal(first, conditions=conditions),
            description="Assumed by the OpenSearch ml-commons connector to invoke the embedding endpoint",
        )
        for principal in others:
            self.role.assume_role_policy.add_statements(iam.PolicyStatement(  # type: ignore[union-attr]
                actions=["sts:AssumeRole"], principals=[iam.ServicePrincipal(principal, conditions=conditions)]))
        for endpoint in endpoints:
            endpoint.grant_invoke(self.role)
        if bedrock_models:
            # A foundation model's ARN names no account (arn:<partition>:bedrock:<region>::foundation-model/<id>).
            self.role.add_to_policy(iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=[
                cdk.Stack.of(self).format_arn(service="bedrock", account="", resource="foundation-model",
                                              resource_name=model_id) for model_id in bedrock_models]))

    def grant_pass_role(self, grantee: iam.IPrincipal) -> iam.Grant:
        """Whoever creates the connector must be allowed to pass this role, to OpenSearch only."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["iam:PassRole"], resource_arns=[self.role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": list(OPENSEARCH_PRINCIPALS)}})
