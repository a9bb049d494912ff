"""The role the ml-commons connector assumes to call SageMaker."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.components.embedding_endpoint import EmbeddingEndpoint


class ConnectorRole(Construct):
    """IAM role that OpenSearch Service assumes when the connector invokes an endpoint.

    Trusted by both OpenSearch service principals (es.amazonaws.com, and
    opensearchservice.amazonaws.com used by newer ml-commons features), allowed
    sagemaker:InvokeEndpoint on exactly the endpoints it fronts and nothing else.
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoints: list[EmbeddingEndpoint]) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.CompositePrincipal(iam.ServicePrincipal("es.amazonaws.com"),
                                              iam.ServicePrincipal("opensearchservice.amazonaws.com")),
            description="Assumed by the OpenSearch ml-commons connector to invoke the embedding endpoint",
        )
        for endpoint in endpoints:
            endpoint.grant_invoke(self.role)

    def grant_pass_role(self, grantee: iam.IPrincipal) -> iam.Grant:
        """Whoever creates the connector must be allowed to pass this role to OpenSearch."""
        return self.role.grant_pass_role(grantee)
