"""SageMaker jobs of a stage: the fine-tune workflow and the batch-embed workflow."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks import images
from stacks.catalog import INSTANCES
from stacks.components.batch_embed_workflow import BATCH_INPUT_PREFIX, NO_MODEL, BatchEmbedWorkflow
from stacks.components.embedding_endpoint import EmbeddingEndpoint
from stacks.components.fine_tune_workflow import JOBS_PREFIX, TRAINING_PREFIX, FineTuneWorkflow
from stacks.components.lambda_vpc import LambdaVpcPlacement
from stacks.components.neural_search_glue import RUNTIME, lambda_code
from stacks.config import StageConfig
from stacks.nag import acknowledge
from stacks.storage_stack import artifacts_bucket_name, artifacts_nag_arn


class JobsStack(cdk.Stack):
    """Training, promotion and batch embedding, with a SageMaker role scoped to its prefixes."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey,
                 endpoints: dict[str, EmbeddingEndpoint], domain_url: str, index_name: str,
                 loader_role: iam.IRole, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        prefix = f"semsearch-{config.name}"
        promote = config.promote_endpoint
        endpoint = endpoints[promote]
        endpoint_config = config.endpoints[promote]

        self.stage = config.name
        # The bucket by its deterministic name: policies then spell out exact prefixes.
        artifacts = s3.Bucket.from_bucket_name(self, "Artifacts", artifacts_bucket_name(config.name))
        self.execution_role = iam.Role(self, "SageMakerRole",
                                       assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                                       description=f"{prefix}: training and batch-transform jobs")
        # Reads only its inputs, writes only under jobs/.
        self._grant_prefixes(self.execution_role, read=[TRAINING_PREFIX, BATCH_INPUT_PREFIX, JOBS_PREFIX],
                             write=[JOBS_PREFIX])
        key.grant_encrypt_decrypt(self.execution_role)
        # Training and transform volumes encrypted with the stage key: CreateTrainingJob and
        # CreateTransformJob need kms:CreateGrant unless this role has it (SageMaker API
        # permissions reference; aws-cdk-lib's create-training-job.ts grants it the same way).
        self.execution_role.add_to_policy(iam.PolicyStatement(
            actions=["kms:CreateGrant"], resources=[key.key_arn],
            conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))
        for framework, version, instance_type in (
                ("pytorch-training", "2.6.0", config.jobs.training_instance_type),
                ("pytorch-inference", endpoint_config.pytorch_version, endpoint_config.instance_type),
                ("pytorch-inference", endpoint_config.pytorch_version, config.jobs.transform_instance_type)):
            self.execution_role.add_to_policy(iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[images.ecr_repository_arn(self, framework, version,
                                                     accelerated=INSTANCES[instance_type].accelerated)]))
        self.execution_role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        self.execution_role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[self.format_arn(service="logs", resource="log-group", resource_name=f"/aws/sagemaker/{job}*",
                                       arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
                       for job in ("TrainingJobs", "TransformJobs", "Endpoints")]))
        self.execution_role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}}))

        self.latest_model = ssm.StringParameter(self, "LatestModel", parameter_name=f"/{prefix}/latest-model",
                                                string_value=NO_MODEL,
                                                description="Name of the last fine-tuned model the gate promoted")

        self.fine_tune = FineTuneWorkflow(
            self, "FineTune", name_prefix=prefix, jobs=config.jobs, endpoint_name=endpoint.endpoint_name,
            endpoint=endpoint_config, rollback_alarms=endpoint.rollback_alarms,
            execution_role=self.execution_role, artifacts=artifacts, kms_key=key, latest_model=self.latest_model,
            inference_component=(endpoint.inference_component_name, endpoint.compute_requirements)
            if endpoint.inference_component_name else None)

        # With a VPC the domain answers only inside it: the loader runs there too.
        lambda_vpc = LambdaVpcPlacement(self, "LambdaVpc", vpc=config.vpc) if config.vpc else None
        if lambda_vpc is not None:
            lambda_vpc.grant_eni(loader_role)
        # The role (search stack) has no logging policy: it may write this one group only. The
        # group has a fixed name so that the grant names it without a reference back to this stack.
        loader_log_group_name = f"/aws/lambda/{prefix}-bulk-loader"
        loader_logs = logs.LogGroup(self, "BulkLoaderLogs", log_group_name=loader_log_group_name,
                                    retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY)
        loader_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.format_arn(service="logs", resource="log-group", resource_name=loader_log_group_name,
                                       arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME) + ":*"]))
        acknowledge(loader_role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                                 f"<AWS::AccountId>:log-group:{loader_log_group_name}:*]",
                    "Lambda names the loader's log streams at run time inside its one log group")
        self.loader = lambda_.Function(
            self, "BulkLoader", runtime=RUNTIME, architecture=lambda_.Architecture.ARM_64,
            code=lambda_code("bulk_loader"), handler="bulk_loader.handler.handler", role=loader_role,
            timeout=cdk.Duration.minutes(15), memory_size=1024,
            description="Writes batch-transform embeddings into the OpenSearch index with _bulk",
            environment={"OPENSEARCH_URL": domain_url, "INDEX_NAME": index_name, "AUTH_MODE": "sigv4",
                         "EMBEDDING_FIELD": config.search.embedding_field, "TEXT_FIELD": config.search.text_field},
            log_group=loader_logs, **(lambda_vpc.function_props if lambda_vpc else {}),
        )
        self._grant_prefixes(loader_role, read=[f"{JOBS_PREFIX}batch/"], write=[])
        key.grant_decrypt(self.loader)
        self.batch_embed = BatchEmbedWorkflow(
            self, "BatchEmbed", name_prefix=prefix, jobs=config.jobs, execution_role=self.execution_role,
            artifacts=artifacts, kms_key=key, latest_model=self.latest_model, loader=self.loader)

        self._acknowledge(config)
        cdk.CfnOutput(self, "FineTuneStateMachine", value=self.fine_tune.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "BatchEmbedStateMachine", value=self.batch_embed.state_machine.state_machine_arn)

    def _grant_prefixes(self, role: iam.IRole, *, read: list[str], write: list[str]) -> None:
        """Object access to exactly these key prefixes of the artifact bucket."""
        bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{artifacts_bucket_name(self.stage)}"
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[f"{bucket_arn}/{p}*" for p in read]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in read]}}))
        if write:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[f"{bucket_arn}/{p}*" for p in write]))
        for p in sorted(set(read + write)):
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(self.stage, p + '*')}]",
                        "job inputs and outputs have per-run names: access is limited to this key prefix")

    def _acknowledge(self, config: StageConfig) -> None:
        stage = config.name
        acknowledge(self.execution_role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions; cloudwatch:PutMetricData is "
                    "limited to SageMaker namespaces by a condition")
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(self.execution_role, f"AwsSolutions-IAM5[Action::{action}]",
                        "CDK's encrypt/decrypt grant on the one stage key that encrypts job data and volumes")
        for job in ("TrainingJobs", "TransformJobs", "Endpoints"):
            acknowledge(self.execution_role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                        f"<AWS::AccountId>:log-group:/aws/sagemaker/{job}*]",
                        "SageMaker names each job's log stream at run time under this fixed prefix")
        sagemaker_arn = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"
        prefix = f"semsearch-{stage}-*"
        for machine, kinds in ((self.fine_tune.state_machine, ("training-job", "model", "endpoint-config")),
                               (self.batch_embed.state_machine, ("transform-job",))):
            for kind in kinds:
                acknowledge(machine.role, f"AwsSolutions-IAM5[Resource::{sagemaker_arn}:{kind}/{prefix}]",
                            f"each run creates a new {kind} named per run under this stage's prefix")
            acknowledge(machine.role, "AwsSolutions-IAM5[Resource::*]",
                        "X-Ray tracing (PutTraceSegments, PutTelemetryRecords) has no resource-level permissions; "
                        "the .sync SageMaker integration needs sagemaker:ListTags on '*', as AWS documents it")
        loader_id = self.resolve(self.get_logical_id(self.loader.node.default_child))  # type: ignore[arg-type]
        acknowledge(self.batch_embed.state_machine.role, f"AwsSolutions-IAM5[Resource::<{loader_id}.Arn>:*]",
                    "invokes exactly the bulk loader; ':*' covers its versions")
        acknowledge(self.loader, "AwsSolutions-L1",
                    "pinned to python3.12, the runtime this code is tested against; bump deliberately")
