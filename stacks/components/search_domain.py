"""A hardened Amazon OpenSearch Service domain for neural search."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from stacks.config import SearchConfig, VpcConfig

ENGINE_VERSIONS = {"2.19": opensearch.EngineVersion.OPENSEARCH_2_19}


class SearchDomain(Construct):
    """OpenSearch 2.19 with fine-grained access control and everything encrypted.

    Keyword-only properties:
      domain_name: the domain's name (3-28 lowercase characters).
      config: node types and counts, zone awareness, volume size.
      master_role: the IAM role that is FGAC's master user. Only it can manage security,
        so the glue (which maps the other roles) runs with it.
      kms_key: encrypts data at rest and the log groups.
      vpc: place the domain in these subnets (default: public endpoint, IAM-signed access).
      removal_policy: default DESTROY; RETAIN keeps the domain and its logs on stack delete.

    Always on: encryption at rest (KMS), node-to-node encryption, HTTPS only with TLS 1.2,
    slow search/index, application and audit logs to CloudWatch, an access policy that
    names the account (never an anonymous principal) with FGAC deciding per request.
    """

    def __init__(self, scope: Construct, construct_id: str, *, domain_name: str, config: SearchConfig,
                 master_role: iam.IRole, kms_key: kms.IKey, vpc: VpcConfig | None = None,
                 removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.DESTROY) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        log_groups = {
            kind: logs.LogGroup(self, f"{kind}Logs", retention=logs.RetentionDays.ONE_MONTH,
                                encryption_key=kms_key, removal_policy=removal_policy)
            for kind in ("SlowSearch", "SlowIndex", "App", "Audit")
        }
        multi_az = config.availability_zones > 1
        vpc_settings: dict[str, object] = {}
        if vpc is not None:
            imported = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=vpc.vpc_id,
                                                   availability_zones=list(vpc.availability_zones),
                                                   private_subnet_ids=list(vpc.subnet_ids))
            vpc_settings = {
                "vpc": imported,
                "vpc_subnets": [ec2.SubnetSelection(subnets=imported.private_subnets[: config.availability_zones])],
                "security_groups": [ec2.SecurityGroup.from_security_group_id(self, f"Sg{i}", sg)
                                    for i, sg in enumerate(vpc.security_group_ids)],
            }
        self.domain = opensearch.Domain(
            self, "Domain",
            domain_name=domain_name,
            version=ENGINE_VERSIONS[config.engine_version],
            capacity=opensearch.CapacityConfig(
                data_nodes=config.data_node_count,
                data_node_instance_type=config.data_node_type,
                master_nodes=config.dedicated_master_count or None,
                master_node_instance_type=config.dedicated_master_type or None,
                multi_az_with_standby_enabled=False,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(
                enabled=multi_az, availability_zone_count=config.availability_zones if multi_az else None),
            ebs=opensearch.EbsOptions(volume_size=config.volume_size_gib,
                                      volume_type=ec2.EbsDeviceVolumeType.GP3),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True, kms_key=kms_key),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=master_role.role_arn),
            logging=opensearch.LoggingOptions(
                slow_search_log_enabled=True, slow_search_log_group=log_groups["SlowSearch"],
                slow_index_log_enabled=True, slow_index_log_group=log_groups["SlowIndex"],
                app_log_enabled=True, app_log_group=log_groups["App"],
                audit_log_enabled=True, audit_log_group=log_groups["Audit"],
            ),
            removal_policy=removal_policy,
            # We write the log resource policy ourselves (below) instead of CDK's
            # Lambda-backed custom resource: one less function to run and to secure.
            suppress_logs_resource_policy=True,
            **vpc_settings,  # type: ignore[arg-type]
        )
        self.logs_resource_policy = logs.ResourcePolicy(
            self, "LogsResourcePolicy", policy_statements=[iam.PolicyStatement(
                principals=[iam.ServicePrincipal("es.amazonaws.com")],
                actions=["logs:PutLogEvents", "logs:CreateLogStream"],
                resources=[g.log_group_arn for g in log_groups.values()],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )])
        # CreateDomain with log publishing fails unless OpenSearch may already write to the
        # groups; CDK's L2 orders the domain after the policy it creates, so we do the same.
        self.domain.node.add_dependency(self.logs_resource_policy)
        # FGAC authorizes each request; the resource policy only limits callers to this
        # account's IAM principals (never "*"). Set on the CfnDomain directly: the L2's
        # add_access_policies deploys a Lambda-backed custom resource for the same thing.
        domain_arn = cdk.Stack.of(self).format_arn(service="es", resource="domain", resource_name=domain_name)
        cfn_domain = self.domain.node.default_child
        assert isinstance(cfn_domain, opensearch.CfnDomain)
        cfn_domain.access_policies = iam.PolicyDocument(statements=[iam.PolicyStatement(
            principals=[iam.AccountRootPrincipal()],
            actions=["es:ESHttp*"],
            resources=[domain_arn + "/*"],
        )]).to_json()

    @property
    def endpoint_url(self) -> str:
        return "https://" + self.domain.domain_endpoint

    def grant_http(self, grantee: iam.IGrantable) -> iam.Grant:
        """IAM side of HTTP access (es:ESHttp*); FGAC role mapping decides the rest."""
        return iam.Grant.add_to_principal(grantee=grantee, actions=["es:ESHttp*"],
                                          resource_arns=[self.domain.domain_arn, self.domain.domain_arn + "/*"])
