"""OpenSearch domain, the connector and glue roles, and (issue 5) the neural-search glue."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.connector_role import ConnectorRole
from stacks.components.embedding_endpoint import EmbeddingEndpoint
from stacks.components.lambda_vpc import LambdaVpcPlacement
from stacks.components.neural_search_glue import NeuralSearchGlue
from stacks.components.search_domain import SearchDomain
from stacks.config import BedrockConfig, StageConfig
from stacks.glue_properties import GlueProperties, index_properties
from stacks.nag import acknowledge
from stacks.names import SearchOutputs


def domain_name(stage: str) -> str:
    return f"semsearch-{stage}"


def _bedrock_embedding(bedrock: BedrockConfig) -> dict[str, Any]:
    """The glue's embedding properties for a Bedrock model: the model, its dimension and
    normalization; Cohere's query and passage models follow from the model (input_type)."""
    model = bedrock.model
    return dict(
        flavor="bedrock",
        bedrock_model_id=bedrock.model_id,
        bedrock_normalize=bedrock.normalize,
        dimension=bedrock.embedding_dimension,
        # Texts per processor batch: Cohere takes 96 a call; Titan one, which ml-commons calls
        # once per text whatever the batch.
        ingest_batch_size=model.max_texts if model.max_texts > 1 else 32,
    )


class SearchStack(cdk.Stack):
    """The search side of a stage: domain + IAM for the connector and the glue."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey,
                 endpoints: dict[str, EmbeddingEndpoint], **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        removal = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        # Read at deploy time, not imported: the name changes with every model version. A stage
        # on Bedrock calls the model by API: no endpoint is read, invoked or waited for.
        bedrock = config.bedrock if config.on_bedrock else None
        fronted = None if bedrock else endpoints[config.search.endpoint].reference_in(
            self, stage=config.name, endpoint=config.search.endpoint)

        # The glue provisions ml-commons objects and maps roles, so it is FGAC's master user.
        self.glue_role = iam.Role(
            self, "GlueRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Neural-search glue: FGAC master user that creates the connector, model, pipeline, index")
        self.connector = ConnectorRole(self, "Connector", endpoints=[fronted] if fronted else [],
                                       bedrock_models=[bedrock.model_id] if bedrock else [],
                                       domain_arn=self.format_arn(service="es", resource="domain",
                                                                  resource_name=domain_name(config.name)))
        self.connector.grant_pass_role(self.glue_role)

        self.domain = SearchDomain(self, "Search", domain_name=domain_name(config.name), config=config.search,
                                   master_role=self.glue_role, kms_key=key, vpc=config.vpc, removal_policy=removal)
        self.domain.grant_http(self.glue_role)
        cfn_domain = self.domain.domain.node.default_child
        assert isinstance(cfn_domain, cdk.CfnElement)
        domain_logical_id = self.resolve(self.get_logical_id(cfn_domain))
        acknowledge(self.glue_role, f"AwsSolutions-IAM5[Resource::<{domain_logical_id}.Arn>/*]",
                    "the glue calls many REST paths of this one domain; FGAC (where this role is master) "
                    "authorizes each path")
        acknowledge(self.glue_role, "AwsSolutions-IAM5[Action::es:ESHttp*]",
                    "the glue uses GET, PUT, POST, PATCH and DELETE on the domain's REST API")
        if config.search.data_node_count == 1 or config.search.dedicated_master_count == 0:
            acknowledge(self.domain.domain, "AwsSolutions-OS4",
                        f"stage {config.name} runs a single small data node without dedicated masters to keep "
                        "dev cheap; prod config uses three dedicated masters")
        if config.search.availability_zones == 1:
            acknowledge(self.domain.domain, "AwsSolutions-OS7",
                        f"stage {config.name} is single-AZ by configuration; prod spreads over three AZs")
        if config.vpc is None:
            acknowledge(self.domain.domain, "AwsSolutions-OS1",
                        "no VPC configured for this stage: the endpoint is public but every request must be "
                        "SigV4-signed by an account principal and pass fine-grained access control")
        acknowledge(self.domain.domain, "AwsSolutions-OS3",
                    "access is limited to this account's SigV4-signed IAM principals and FGAC (plus security "
                    "groups when in a VPC) instead of IP allowlists, which do not fit Lambda and SageMaker callers")

        # Whoever writes vectors in bulk (the batch-embed loader) gets its own role, mapped by
        # the glue; it lives here so the mapping has no dependency on a later stack.
        self.loader_role = iam.Role(self, "BulkLoaderRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                                    description="Batch-embed bulk loader: writes vectors into the index")
        self.domain.grant_http(self.loader_role)
        acknowledge(self.loader_role, f"AwsSolutions-IAM5[Resource::<{domain_logical_id}.Arn>/*]",
                    "the loader posts to _bulk of the index on this one domain; FGAC maps its role")
        acknowledge(self.loader_role, "AwsSolutions-IAM5[Action::es:ESHttp*]",
                    "the loader uses GET (index check) and POST (_bulk) on the domain")

        ep = config.connector_endpoint
        search = config.search
        embedding = _bedrock_embedding(bedrock) if bedrock else dict(
            flavor=ep.flavor,
            endpoint_name=fronted.endpoint_name if fronted else "",
            dimension=ep.model.dimension,
            # The catalog's prompts: different ones register a query model beside the passage model.
            query_prefix=ep.model.query_prefix,
            passage_prefix=ep.model.passage_prefix,
            endpoint_instance_count=ep.initial_instance_count,
            ingest_batch_size=ep.max_client_batch_size,
            inference_component=fronted.inference_component_name or "" if fronted else "",
        )
        # With a VPC the domain answers only inside it: the glue must run there too.
        self.lambda_vpc = LambdaVpcPlacement(self, "LambdaVpc", vpc=config.vpc) if config.vpc else None
        self.glue = NeuralSearchGlue(self, "Glue", role=self.glue_role, vpc=self.lambda_vpc, properties=GlueProperties(
            opensearch_url=self.domain.endpoint_url,
            auth_mode="sigv4",
            region=self.region,
            role_mappings={
                "all_access": [self.glue_role.role_arn, *search.admin_role_arns],
                "ml_full_access": [self.glue_role.role_arn],
            },
            # Least privilege: the glue makes one FGAC role for neural search on the index and
            # one for bulk writes into it, each mapped to exactly these IAM roles.
            loader_backend_roles=(self.loader_role.role_arn,),
            search_backend_roles=search.search_role_arns,
            name=f"semsearch-{config.name}",
            connector_role_arn=self.connector.role.role_arn,
            **embedding,
            **index_properties(search),
            space_type=config.space_type,
            number_of_replicas=0 if search.data_node_count == 1 else 1,
            hybrid_search=search.hybrid_search,
            retired_index_retention_hours=search.retired_index_hours,
        ))
        # The connector calls the endpoint during the smoke test: it must be InService first,
        # and its name in SSM (served_model) must be the new one.
        if not bedrock:
            self.add_stack_dependency(cdk.Stack.of(endpoints[config.search.endpoint]))

        # What the semsearch CLI reads to reach this stage (stacks/names.py).
        cdk.CfnOutput(self, SearchOutputs.MODEL_ID, value=self.glue.output("ModelId"))
        # Neural queries need no model id (the index's search pipeline names it); for clients that pass one.
        cdk.CfnOutput(self, SearchOutputs.QUERY_MODEL_ID, value=self.glue.output("QueryModelId"))
        cdk.CfnOutput(self, SearchOutputs.INDEX_NAME, value=self.glue.output("IndexName"))
        cdk.CfnOutput(self, SearchOutputs.DOMAIN_ENDPOINT, value=self.domain.endpoint_url)
        cdk.CfnOutput(self, SearchOutputs.TEXT_FIELD, value=search.text_field)
        cdk.CfnOutput(self, SearchOutputs.EMBEDDING_FIELD, value=search.embedding_field)
        cdk.CfnOutput(self, "ConnectorRoleArn", value=self.connector.role.role_arn)
        cdk.CfnOutput(self, "GlueRoleArn", value=self.glue_role.role_arn)
